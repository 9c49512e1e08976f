package projections

// This file holds the read model's SQL, the one definition of an api_keys row, and the
// queries that read it.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyledger/keyledger/domain"
)

// keyColumns are the columns of api_keys in the one order that every statement, COPY and
// scan of a key's row in this package uses, with the type of each.
var keyColumns = []struct{ name, sqlType string }{
	{"project_id", "text"}, {"id", "text"}, {"user_id", "text"}, {"description", "text"},
	{"expires_at", "timestamptz"}, {"manually_revoked_at", "timestamptz"}, {"created_at", "timestamptz"},
	{"is_public", "boolean"}, {"secret_hash", "text"}, {"last_four", "text"},
	{"version", "integer"}, {"last_seq", "bigint"}, {"created_seq", "bigint"},
	{"team_id", "text"},
}

var (
	// keyColumnNames are keyColumns' names, for COPY.
	keyColumnNames = func() []string {
		names := make([]string, len(keyColumns))
		for i, c := range keyColumns {
			names[i] = c.name
		}
		return names
	}()
	// keyColumnList is keyColumns' names as a select list.
	keyColumnList = strings.Join(keyColumnNames, ", ")
	// keyColumnArrays is one array parameter per column, $1 onwards, for unnest.
	keyColumnArrays = func() string {
		params := make([]string, len(keyColumns))
		for i, c := range keyColumns {
			params[i] = "$" + strconv.Itoa(i+1) + "::" + c.sqlType + "[]"
		}
		return strings.Join(params, ", ")
	}()
)

// keyRow is a row of api_keys, its fields in keyColumns' order.
type keyRow struct {
	ProjectID         string     `db:"project_id"`
	ID                string     `db:"id"`
	UserID            string     `db:"user_id"`
	Description       string     `db:"description"`
	ExpiresAt         *time.Time `db:"expires_at"`
	ManuallyRevokedAt *time.Time `db:"manually_revoked_at"`
	CreatedAt         time.Time  `db:"created_at"`
	IsPublic          bool       `db:"is_public"`
	SecretHash        string     `db:"secret_hash"`
	LastFour          string     `db:"last_four"`
	Version           int32      `db:"version"`
	LastSeq           int64      `db:"last_seq"`
	CreatedSeq        int64      `db:"created_seq"`
	TeamID            string     `db:"team_id"`
}

// targets are the scan targets of the row's columns, in keyColumns' order.
func (r *keyRow) targets() []any {
	return []any{&r.ProjectID, &r.ID, &r.UserID, &r.Description, &r.ExpiresAt, &r.ManuallyRevokedAt, &r.CreatedAt,
		&r.IsPublic, &r.SecretHash, &r.LastFour, &r.Version, &r.LastSeq, &r.CreatedSeq, &r.TeamID}
}

// rowValues fills row (len(keyColumns) long) with the column values of s, in keyColumns'
// order, for COPY.
func rowValues(s keyState, row []any) []any {
	row[0], row[1], row[2], row[3] = s.ProjectID, s.ID, s.UserID, s.Description
	row[4], row[5], row[6] = s.ExpiresAt, s.RevokedAt, s.CreatedAt
	row[7], row[8], row[9] = s.IsPublic, s.SecretHash, s.LastFour
	row[10], row[11], row[12] = int32(s.Version), int64(s.LastSeq), int64(s.CreatedSeq)
	row[13] = s.TeamID
	return row
}

func (r keyRow) state() keyState {
	return keyState{
		KeySnapshot: domain.KeySnapshot{
			ID: r.ID, ProjectID: r.ProjectID, UserID: r.UserID, TeamID: r.TeamID, Description: r.Description,
			ExpiresAt: utc(r.ExpiresAt), RevokedAt: utc(r.ManuallyRevokedAt), CreatedAt: r.CreatedAt.UTC(),
			IsPublic: r.IsPublic, SecretHash: r.SecretHash, LastFour: r.LastFour, Version: int(r.Version),
		},
		LastSeq:    uint64(r.LastSeq),
		CreatedSeq: uint64(r.CreatedSeq),
	}
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// projectColumnNames are the columns of projects, for COPY.
var projectColumnNames = []string{"id", "name", "server_key_id", "server_key_hash", "created_at", "seq"}

type projectRow struct {
	ID            string    `db:"id"`
	Name          string    `db:"name"`
	ServerKeyID   string    `db:"server_key_id"`
	ServerKeyHash string    `db:"server_key_hash"`
	CreatedAt     time.Time `db:"created_at"`
}

// The SQL of the read model. {schema} stands for the quoted schema name.
const (
	selectCheckpoint = `SELECT position FROM {schema}.checkpoint`
	// lockCheckpoint serialises writers: whoever holds the row applies, the others wait and
	// then see its new position.
	lockCheckpoint   = `SELECT position FROM {schema}.checkpoint FOR UPDATE`
	updateCheckpoint = `UPDATE {schema}.checkpoint SET position = $1`

	insertProjects = `INSERT INTO {schema}.projects (id, name, server_key_id, server_key_hash, created_at, seq)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::bigint[])
ON CONFLICT (id) DO NOTHING`
	selectProject = `SELECT id, name, server_key_id, server_key_hash, created_at FROM {schema}.projects WHERE id = $1`
)

// The SQL of api_keys, on keyColumns.
var (
	selectKey      = `SELECT ` + keyColumnList + ` FROM {schema}.api_keys WHERE project_id = $1 AND id = $2`
	selectUserKeys = `SELECT ` + keyColumnList + ` FROM {schema}.api_keys WHERE project_id = $1 AND user_id = $2 AND team_id = '' ORDER BY created_at DESC, created_seq DESC`
	selectTeamKeys = `SELECT ` + keyColumnList + ` FROM {schema}.api_keys WHERE project_id = $1 AND team_id = $2 AND team_id <> '' ORDER BY created_at DESC, created_seq DESC`
	// selectKeysByRef looks each key up by its primary key, and the lateral subquery with
	// LIMIT 1 (which the planner cannot flatten) leaves it no other plan. The plain form,
	// (project_id, id) IN (SELECT * FROM unnest(...)), got a generic plan made while the
	// table was empty (a hash join over a sequential scan) and kept it on that connection as
	// the table grew, with nothing to replan it where autovacuum is off, as on the benchmark
	// machine: the projector's queries took longer with every run.
	selectKeysByRef = `SELECT k.* FROM unnest($1::text[], $2::text[]) AS r(project_id, id)
CROSS JOIN LATERAL (SELECT ` + keyColumnList + ` FROM {schema}.api_keys
    WHERE project_id = r.project_id AND id = r.id LIMIT 1) AS k`
	// selectKeysAfter pages through every key in primary-key order.
	selectKeysAfter = `SELECT ` + keyColumnList + ` FROM {schema}.api_keys
WHERE (project_id, id) > ($1, $2) ORDER BY project_id, id LIMIT $3`
	// selectAllKeys reads every key, for verification.
	selectAllKeys = `SELECT ` + keyColumnList + ` FROM {schema}.api_keys`
	// upsertKeys writes the state of the keys a batch changed, one row per key. The guards
	// repeat the aggregate's rules (first revocation wins, versions only grow) so that a
	// row can never go back, whatever writes it.
	upsertKeys = `INSERT INTO {schema}.api_keys AS k (` + keyColumnList + `)
SELECT * FROM unnest(` + keyColumnArrays + `)
ON CONFLICT (project_id, id) DO UPDATE SET
    description = excluded.description,
    expires_at = excluded.expires_at,
    manually_revoked_at = COALESCE(k.manually_revoked_at, excluded.manually_revoked_at),
    version = excluded.version,
    last_seq = excluded.last_seq
WHERE k.version < excluded.version`
)

// pgStatements is the read model's SQL with the schema filled in.
type pgStatements struct {
	schema string // quoted
	selectCheckpoint, lockCheckpoint, updateCheckpoint,
	selectKey, selectUserKeys, selectTeamKeys, selectKeysByRef, selectKeysAfter, selectAllKeys,
	upsertKeys, insertProjects, selectProject string
}

func newStatements(schema string) pgStatements {
	s := pgStatements{schema: pgx.Identifier{schema}.Sanitize()}
	s.selectCheckpoint = s.q(selectCheckpoint)
	s.lockCheckpoint = s.q(lockCheckpoint)
	s.updateCheckpoint = s.q(updateCheckpoint)
	s.selectKey = s.q(selectKey)
	s.selectUserKeys = s.q(selectUserKeys)
	s.selectTeamKeys = s.q(selectTeamKeys)
	s.selectKeysByRef = s.q(selectKeysByRef)
	s.selectKeysAfter = s.q(selectKeysAfter)
	s.selectAllKeys = s.q(selectAllKeys)
	s.upsertKeys = s.q(upsertKeys)
	s.insertProjects = s.q(insertProjects)
	s.selectProject = s.q(selectProject)
	return s
}

// q qualifies the tables of a statement with the schema.
func (s pgStatements) q(sql string) string { return strings.ReplaceAll(sql, "{schema}", s.schema) }

// Checkpoint implements ReadModel.
func (p *Postgres) Checkpoint(ctx context.Context) (uint64, error) {
	var pos int64
	if err := p.pool.QueryRow(ctx, p.sql.selectCheckpoint).Scan(&pos); err != nil {
		return 0, fmt.Errorf("read checkpoint: %w", err)
	}
	return uint64(pos), nil
}

// Key implements ReadModel.
func (p *Postgres) Key(ctx context.Context, projectID, keyID string) (KeyView, error) {
	rows, _ := p.pool.Query(ctx, p.sql.selectKey, projectID, keyID)
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[keyRow])
	if errors.Is(err, pgx.ErrNoRows) {
		return KeyView{}, fmt.Errorf("key %s of project %s: %w", keyID, projectID, domain.ErrKeyNotFound)
	}
	if err != nil {
		return KeyView{}, fmt.Errorf("read key %s: %w", keyID, err)
	}
	return row.state().view(), nil
}

// KeysByUser implements ReadModel.
func (p *Postgres) KeysByUser(ctx context.Context, projectID, userID string) ([]KeyView, error) {
	return p.keysByOwner(ctx, p.sql.selectUserKeys, "user", projectID, userID)
}

// KeysByTeam implements ReadModel.
func (p *Postgres) KeysByTeam(ctx context.Context, projectID, teamID string) ([]KeyView, error) {
	return p.keysByOwner(ctx, p.sql.selectTeamKeys, "team", projectID, teamID)
}

// keysByOwner runs the query of a user's or a team's keys.
func (p *Postgres) keysByOwner(ctx context.Context, query, kind, projectID, owner string) ([]KeyView, error) {
	rows, _ := p.pool.Query(ctx, query, projectID, owner)
	found, err := pgx.CollectRows(rows, pgx.RowToStructByName[keyRow])
	if err != nil {
		return nil, fmt.Errorf("read keys of %s %s: %w", kind, owner, err)
	}
	out := make([]KeyView, len(found))
	for i, row := range found {
		out[i] = row.state().view()
	}
	return out, nil
}

// Project implements ReadModel.
func (p *Postgres) Project(ctx context.Context, projectID string) (domain.ProjectSnapshot, error) {
	rows, _ := p.pool.Query(ctx, p.sql.selectProject, projectID)
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[projectRow])
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.ProjectSnapshot{}, fmt.Errorf("project %s: %w", projectID, domain.ErrProjectNotFound)
	}
	if err != nil {
		return domain.ProjectSnapshot{}, fmt.Errorf("read project %s: %w", projectID, err)
	}
	return domain.ProjectSnapshot{
		ID: row.ID, Name: row.Name, ServerKeyID: row.ServerKeyID,
		ServerKeyHash: row.ServerKeyHash, CreatedAt: row.CreatedAt.UTC(),
	}, nil
}

// eachKeyPage is how many keys EachKey reads per query.
const eachKeyPage = 1000

// EachKey implements ReadModel, a page at a time in primary-key order, with no connection
// held while fn runs.
func (p *Postgres) EachKey(ctx context.Context, fn func(KeyView) error) error {
	var after keyRef
	for {
		rows, _ := p.pool.Query(ctx, p.sql.selectKeysAfter, after.project, after.key, eachKeyPage)
		page, err := pgx.CollectRows(rows, pgx.RowToStructByName[keyRow])
		if err != nil {
			return fmt.Errorf("read keys: %w", err)
		}
		for _, row := range page {
			if err := fn(row.state().view()); err != nil {
				return err
			}
		}
		if len(page) < eachKeyPage {
			return nil
		}
		last := page[len(page)-1]
		after = keyRef{last.ProjectID, last.ID}
	}
}
