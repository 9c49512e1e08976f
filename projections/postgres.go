package projections

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

// PostgresConfig configures the PostgreSQL read model.
type PostgresConfig struct {
	// Schema holds the read model's tables. Default "keyledger". Rebuilds (keysctl replay)
	// fill another schema and swap it in, so the name must be a plain lowercase identifier.
	Schema string
	// MaxConns caps the connection pool. 0 keeps pool_max_conns from the URL, or pgxpool's
	// default (the greater of 4 and the number of CPUs).
	MaxConns int32
}

// DefaultSchema is the schema of the live read model.
const DefaultSchema = "keyledger"

func (c *PostgresConfig) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
}

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// Validate reports every problem with the configuration at once.
func (c PostgresConfig) Validate() error {
	var errs []error
	switch {
	case !schemaName.MatchString(c.Schema):
		errs = append(errs, fmt.Errorf("schema %q must be lowercase letters, digits and underscores, not starting with a digit", c.Schema))
	case len(c.Schema) > 63:
		errs = append(errs, fmt.Errorf("schema %q is longer than PostgreSQL's 63 bytes", c.Schema))
	case strings.HasPrefix(c.Schema, "pg_"):
		errs = append(errs, fmt.Errorf("schema %q: names starting with pg_ are reserved by PostgreSQL", c.Schema))
	}
	if c.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("max conns must not be negative, got %d", c.MaxConns))
	}
	return errors.Join(errs...)
}

// Postgres is the read model in PostgreSQL, shared by every keysd instance of a deployment.
// Each instance's projector writes to it; the checkpoint row's lock makes them take turns,
// and whichever applies an event first makes the others skip it.
type Postgres struct {
	pool   *pgxpool.Pool
	schema string
	sql    pgStatements
	rows   writtenRows
}

// writtenRows keeps the rows of api_keys this instance's projector last wrote or read, so
// that the next batch need not read them back. They are the table's rows only while the
// checkpoint is still the one this instance committed with them: every writer moves the
// checkpoint under its row lock, so a checkpoint that moved otherwise means another writer
// (another keysd, a rebuild's swap) may have changed them, and they are dropped.
type writtenRows struct {
	mu   sync.Mutex
	at   uint64               // the checkpoint committed with these rows; 0: none are known
	keys map[keyRef]*keyState // never changed in place: a batch's fold makes new states
}

// maxWrittenRows bounds writtenRows; past it the cache starts again empty.
const maxWrittenRows = 100_000

// lookup returns the cached rows among refs, the refs it does not have, and the checkpoint
// the cached rows belong to.
func (w *writtenRows) lookup(projects, ids []string) (map[keyRef]*keyState, []string, []string, uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.at == 0 || len(w.keys) == 0 {
		return nil, projects, ids, 0
	}
	hits := make(map[keyRef]*keyState, len(ids))
	var missP, missI []string
	for i := range ids {
		ref := keyRef{projects[i], ids[i]}
		if st, ok := w.keys[ref]; ok {
			hits[ref] = st
			continue
		}
		missP, missI = append(missP, projects[i]), append(missI, ids[i])
	}
	return hits, missP, missI, w.at
}

// remember records rows as of checkpoint at, which this instance just committed; the rows
// it already had stay only if they belonged to the checkpoint this commit started from.
func (w *writtenRows) remember(from, at uint64, rows map[keyRef]*keyState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.at != from || w.keys == nil || len(w.keys)+len(rows) > maxWrittenRows {
		w.keys = make(map[keyRef]*keyState, len(rows))
	}
	for ref, st := range rows {
		if st != nil {
			w.keys[ref] = st
		}
	}
	w.at = at
}

// forget drops every row: after a failure, the table's state is not known.
func (w *writtenRows) forget() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.at, w.keys = 0, nil
}

var _ ReadModel = (*Postgres)(nil)

// OpenPostgres connects to PostgreSQL, brings the schema up to date (several instances may
// do so at once) and returns the read model.
func OpenPostgres(ctx context.Context, databaseURL string, cfg PostgresConfig) (*Postgres, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("read model database URL: %w", err)
	}
	if cfg.MaxConns > 0 {
		pcfg.MaxConns = cfg.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("read model database: %w", err)
	}
	p := &Postgres{pool: pool, schema: cfg.Schema, sql: newStatements(cfg.Schema)}
	if err := p.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("read model schema %s on %s:%d: %w", cfg.Schema, pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, explain(err))
	}
	return p, nil
}

// explain adds what an operator should do to the PostgreSQL errors that opening can meet.
func explain(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch pgErr.Code {
	case "3D000": // invalid_catalog_name
		return fmt.Errorf("%w (create the database first)", err)
	case "42501": // insufficient_privilege
		return fmt.Errorf("%w (the role needs CREATE on the database, or an existing schema it owns)", err)
	case "28P01", "28000": // invalid_password, invalid_authorization_specification
		return fmt.Errorf("%w (check the user and password of the database URL)", err)
	}
	return err
}

// Schema is the schema holding this read model's tables.
func (p *Postgres) Schema() string { return p.schema }

// Close implements ReadModel.
func (p *Postgres) Close() { p.pool.Close() }

//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations reads the embedded migrations, numbered 001_name.sql onwards without gaps.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	var out []migration
	for i, name := range names {
		base := path.Base(name)
		num, _, _ := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v != i+1 {
			return nil, fmt.Errorf("migration %s: want number %03d", base, i+1)
		}
		b, err := migrationFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: strings.TrimSuffix(base, ".sql"), sql: string(b)})
	}
	return out, nil
}

// migrationLock is the first key of the advisory lock taken while migrating a schema (the
// second is the hash of the schema name): "kldg".
const migrationLock = 0x6b6c6467

// migrate applies the migrations this schema lacks, in one transaction. The advisory lock
// makes instances that start together migrate one after the other; the later ones find
// nothing left to do. A schema migrated by a newer keysd is left as it is: migrations only
// add, so older code keeps working on it.
func (p *Postgres) migrate(ctx context.Context) error {
	migs, err := migrations()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, hashtext($2))", int32(migrationLock), p.schema); err != nil {
			return fmt.Errorf("lock for migration: %w", err)
		}
		if _, err := tx.Exec(ctx, p.sql.q(createMigrationsTable)); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		rows, _ := tx.Query(ctx, p.sql.q(selectMigrations))
		applied, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		for _, m := range migs {
			if slices.Contains(applied, int32(m.version)) {
				continue
			}
			if _, err := tx.Exec(ctx, p.sql.q(m.sql)); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, p.sql.q(insertMigration), m.version, m.name); err != nil {
				return fmt.Errorf("record migration %s: %w", m.name, err)
			}
		}
		return nil
	})
}

// The SQL of the read model. {schema} stands for the quoted schema name.
const (
	createMigrationsTable = `
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`
	selectMigrations = `SELECT version FROM {schema}.schema_migrations`
	insertMigration  = `INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)`

	selectCheckpoint = `SELECT position FROM {schema}.checkpoint`
	// lockCheckpoint serialises writers: whoever holds the row applies, the others wait and
	// then see its new position.
	lockCheckpoint   = `SELECT position FROM {schema}.checkpoint FOR UPDATE`
	updateCheckpoint = `UPDATE {schema}.checkpoint SET position = $1`

	keyColumns = `project_id, id, user_id, description, expires_at, manually_revoked_at, created_at,
is_public, secret_hash, last_four, version, last_seq, created_seq`
	selectKey      = `SELECT ` + keyColumns + ` FROM {schema}.api_keys WHERE project_id = $1 AND id = $2`
	selectUserKeys = `SELECT ` + keyColumns + ` FROM {schema}.api_keys WHERE project_id = $1 AND user_id = $2 ORDER BY created_at DESC, created_seq DESC`
	// selectKeysByRef looks each key up by its primary key, and the lateral subquery with
	// LIMIT 1 (which the planner cannot flatten) leaves it no other plan. The plain form,
	// (project_id, id) IN (SELECT * FROM unnest(...)), got a generic plan made while the
	// table was empty (a hash join over a sequential scan) and kept it on that connection as
	// the table grew, with nothing to replan it where autovacuum is off, as on the benchmark
	// machine: the projector's queries took longer with every run.
	selectKeysByRef = `SELECT k.* FROM unnest($1::text[], $2::text[]) AS r(project_id, id)
CROSS JOIN LATERAL (SELECT ` + keyColumns + ` FROM {schema}.api_keys
    WHERE project_id = r.project_id AND id = r.id LIMIT 1) AS k`
	// selectKeysAfter pages through every key in primary-key order.
	selectKeysAfter = `SELECT ` + keyColumns + ` FROM {schema}.api_keys
WHERE (project_id, id) > ($1, $2) ORDER BY project_id, id LIMIT $3`
	// upsertKeys writes the state of the keys a batch changed, one row per key. The guards
	// repeat the aggregate's rules (first revocation wins, versions only grow) so that a
	// row can never go back, whatever writes it.
	upsertKeys = `INSERT INTO {schema}.api_keys AS k (` + keyColumns + `)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[],
    $7::timestamptz[], $8::boolean[], $9::text[], $10::text[], $11::integer[], $12::bigint[], $13::bigint[])
ON CONFLICT (project_id, id) DO UPDATE SET
    description = excluded.description,
    manually_revoked_at = COALESCE(k.manually_revoked_at, excluded.manually_revoked_at),
    version = excluded.version,
    last_seq = excluded.last_seq
WHERE k.version < excluded.version`
	insertProjects = `INSERT INTO {schema}.projects (id, name, server_key_id, server_key_hash, created_at, seq)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::bigint[])
ON CONFLICT (id) DO NOTHING`
	selectProject = `SELECT id, name, server_key_id, server_key_hash, created_at FROM {schema}.projects WHERE id = $1`
)

// pgStatements is the read model's SQL with the schema filled in.
type pgStatements struct {
	schema string // quoted
	selectCheckpoint, lockCheckpoint, updateCheckpoint,
	selectKey, selectUserKeys, selectKeysByRef, selectKeysAfter,
	upsertKeys, insertProjects, selectProject string
}

func newStatements(schema string) pgStatements {
	s := pgStatements{schema: pgx.Identifier{schema}.Sanitize()}
	s.selectCheckpoint = s.q(selectCheckpoint)
	s.lockCheckpoint = s.q(lockCheckpoint)
	s.updateCheckpoint = s.q(updateCheckpoint)
	s.selectKey = s.q(selectKey)
	s.selectUserKeys = s.q(selectUserKeys)
	s.selectKeysByRef = s.q(selectKeysByRef)
	s.selectKeysAfter = s.q(selectKeysAfter)
	s.upsertKeys = s.q(upsertKeys)
	s.insertProjects = s.q(insertProjects)
	s.selectProject = s.q(selectProject)
	return s
}

// q qualifies the tables of a statement with the schema.
func (s pgStatements) q(sql string) string { return strings.ReplaceAll(sql, "{schema}", s.schema) }

// keyRow is a row of api_keys.
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
}

func (r keyRow) state() keyState {
	return keyState{
		KeySnapshot: domain.KeySnapshot{
			ID: r.ID, ProjectID: r.ProjectID, UserID: r.UserID, Description: r.Description,
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

type projectRow struct {
	ID            string    `db:"id"`
	Name          string    `db:"name"`
	ServerKeyID   string    `db:"server_key_id"`
	ServerKeyHash string    `db:"server_key_hash"`
	CreatedAt     time.Time `db:"created_at"`
}

// Apply implements ReadModel in one transaction: lock the checkpoint, read the keys the
// batch touches, evolve them in memory, and write the changed rows, new projects and the
// new checkpoint with one statement each. The statements go in two pipelined round trips,
// BEGIN with the lock and the read, then the writes with COMMIT, whatever the batch's size.
// A failure anywhere leaves the transaction open, and the pool closes such a connection
// instead of reusing it: nothing of the batch is committed.
func (p *Postgres) Apply(ctx context.Context, events []eventstore.RecordedEvent) (uint64, error) {
	if len(events) == 0 {
		return p.Checkpoint(ctx)
	}
	checkpoint, err := p.applyPipelined(ctx, events)
	if err != nil {
		var gap *GapError
		if errors.As(err, &gap) {
			return gap.Checkpoint, gap
		}
		return 0, fmt.Errorf("apply events %d..%d: %w", events[0].Seq, events[len(events)-1].Seq, err)
	}
	return checkpoint, nil
}

func (p *Postgres) applyPipelined(ctx context.Context, events []eventstore.RecordedEvent) (uint64, error) {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release() // closed rather than reused if still in the transaction
	c := conn.Conn()

	// Read the keys of every event in the batch, before knowing which are beyond the
	// checkpoint (the rows of the others are read and not used), except those this instance
	// wrote last: they are still the table's rows if the checkpoint is still its own.
	allProjects, allIDs := keyRefs(events)
	cached, projects, ids, cachedAt := p.rows.lookup(allProjects, allIDs)
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(p.sql.lockCheckpoint)
	if len(ids) > 0 {
		b.Queue(p.sql.selectKeysByRef, projects, ids)
	}
	br := c.SendBatch(ctx, b)
	var pos int64
	var found []keyRow
	_, err = br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&pos)
	}
	if err == nil && len(ids) > 0 {
		rows, qerr := br.Query()
		found, err = pgx.CollectRows(rows, pgx.RowToStructByName[keyRow])
		if qerr != nil && err == nil {
			err = qerr
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		p.rows.forget()
		return 0, fmt.Errorf("lock checkpoint and read keys: %w", err)
	}
	checkpoint := uint64(pos)
	if len(cached) > 0 && checkpoint != cachedAt {
		// Someone else moved the checkpoint since this instance wrote those rows: read them.
		p.rows.forget()
		var cp, ci []string
		for ref := range cached {
			cp, ci = append(cp, ref.project), append(ci, ref.key)
		}
		rows, _ := c.Query(ctx, p.sql.selectKeysByRef, cp, ci)
		more, err := pgx.CollectRows(rows, pgx.RowToStructByName[keyRow])
		if err != nil {
			return 0, fmt.Errorf("read keys: %w", err)
		}
		found, cached = append(found, more...), nil
	}
	todo, err := unapplied(checkpoint, events)
	if err != nil || len(todo) == 0 {
		if _, rerr := c.Exec(ctx, "ROLLBACK"); rerr != nil && err == nil {
			err = rerr
		}
		return checkpoint, err
	}
	keys := make(map[keyRef]*keyState, len(found)+len(cached))
	for ref, st := range cached {
		keys[ref] = st
	}
	for _, row := range found {
		st := row.state()
		keys[keyRef{st.ProjectID, st.ID}] = &st
	}
	from := checkpoint
	w, checkpoint := fold(checkpoint, todo, keys)
	b = &pgx.Batch{}
	w.queue(b, p.sql)
	b.Queue(p.sql.updateCheckpoint, int64(checkpoint))
	b.Queue("COMMIT")
	if err := c.SendBatch(ctx, b).Close(); err != nil {
		p.rows.forget()
		return 0, err
	}
	// keys now holds the rows as committed: those read and those the batch changed.
	p.rows.remember(from, checkpoint, keys)
	return checkpoint, nil
}

// applyTx is Apply within tx, which it leaves open: lock the checkpoint, apply what lies
// beyond it, move it. Rebuild uses it to apply the last events under the swap's lock.
func (p *Postgres) applyTx(ctx context.Context, tx pgx.Tx, events []eventstore.RecordedEvent) (uint64, error) {
	var pos int64
	if err := tx.QueryRow(ctx, p.sql.lockCheckpoint).Scan(&pos); err != nil {
		return 0, fmt.Errorf("lock checkpoint: %w", err)
	}
	checkpoint := uint64(pos)
	todo, err := unapplied(checkpoint, events)
	if err != nil || len(todo) == 0 {
		return checkpoint, err
	}
	keys, err := p.loadKeys(ctx, tx, todo)
	if err != nil {
		return 0, err
	}
	w, checkpoint := fold(checkpoint, todo, keys)
	b := &pgx.Batch{}
	w.queue(b, p.sql)
	b.Queue(p.sql.updateCheckpoint, int64(checkpoint))
	return checkpoint, tx.SendBatch(ctx, b).Close()
}

// fold evolves the keys (their rows as read, nil for keys without one) by the events beyond
// checkpoint and returns what to write and the new checkpoint.
func fold(checkpoint uint64, todo []eventstore.RecordedEvent, keys map[keyRef]*keyState) (pgWrites, uint64) {
	var w pgWrites
	for _, r := range todo {
		if r.Seq <= checkpoint {
			continue
		}
		checkpoint = r.Seq
		if r.Err != nil {
			continue
		}
		if isKeyEvent(r.Event) {
			ref := keyRef{r.Event.ProjectID, r.Event.KeyID}
			if next, ok := evolveKey(keys[ref], r); ok {
				if _, seen := w.changed[ref]; !seen {
					w.order = append(w.order, ref)
				}
				w.key(ref, next)
				keys[ref] = &next
			}
		} else if proj, ok := projectOf(r); ok {
			w.project(proj, r.Seq)
		}
	}
	return w, checkpoint
}

type keyRef struct{ project, key string }

// loadKeys reads the current rows of the keys that events touch.
func (p *Postgres) loadKeys(ctx context.Context, tx pgx.Tx, events []eventstore.RecordedEvent) (map[keyRef]*keyState, error) {
	keys := make(map[keyRef]*keyState)
	projects, ids := keyRefs(events)
	if len(ids) == 0 {
		return keys, nil
	}
	rows, _ := tx.Query(ctx, p.sql.selectKeysByRef, projects, ids)
	found, err := pgx.CollectRows(rows, pgx.RowToStructByName[keyRow])
	if err != nil {
		return nil, fmt.Errorf("read keys: %w", err)
	}
	for _, row := range found {
		s := row.state()
		keys[keyRef{s.ProjectID, s.ID}] = &s
	}
	return keys, nil
}

// keyRefs lists the keys that events touch, each once, as the two arrays of the lookup.
func keyRefs(events []eventstore.RecordedEvent) (projects, ids []string) {
	seen := make(map[keyRef]struct{}, len(events))
	for _, r := range events {
		if r.Err != nil || !isKeyEvent(r.Event) {
			continue
		}
		ref := keyRef{r.Event.ProjectID, r.Event.KeyID}
		if _, ok := seen[ref]; !ok {
			seen[ref] = struct{}{}
			projects = append(projects, ref.project)
			ids = append(ids, ref.key)
		}
	}
	return projects, ids
}

// pgWrites collects what one batch writes: the final state of each changed key and each new
// project, as the columns of one multi-row statement apiece.
type pgWrites struct {
	changed  map[keyRef]keyState
	order    []keyRef
	projects []domain.ProjectSnapshot
	projSeqs []int64
}

func (w *pgWrites) key(ref keyRef, s keyState) {
	if w.changed == nil {
		w.changed = make(map[keyRef]keyState)
	}
	w.changed[ref] = s
}

func (w *pgWrites) project(p domain.ProjectSnapshot, seq uint64) {
	if slices.ContainsFunc(w.projects, func(q domain.ProjectSnapshot) bool { return q.ID == p.ID }) {
		return // the first creation wins, as in the database
	}
	w.projects = append(w.projects, p)
	w.projSeqs = append(w.projSeqs, int64(seq))
}

func (w *pgWrites) queue(b *pgx.Batch, sql pgStatements) {
	if n := len(w.order); n > 0 {
		var (
			projectIDs, ids, userIDs, descriptions = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
			expires, revoked                       = make([]*time.Time, n), make([]*time.Time, n)
			created                                = make([]time.Time, n)
			public                                 = make([]bool, n)
			hashes, lastFours                      = make([]string, n), make([]string, n)
			versions                               = make([]int32, n)
			lastSeqs, createdSeqs                  = make([]int64, n), make([]int64, n)
		)
		for i, ref := range w.order {
			s := w.changed[ref]
			projectIDs[i], ids[i], userIDs[i], descriptions[i] = s.ProjectID, s.ID, s.UserID, s.Description
			expires[i], revoked[i], created[i] = s.ExpiresAt, s.RevokedAt, s.CreatedAt
			public[i], hashes[i], lastFours[i] = s.IsPublic, s.SecretHash, s.LastFour
			versions[i], lastSeqs[i], createdSeqs[i] = int32(s.Version), int64(s.LastSeq), int64(s.CreatedSeq)
		}
		b.Queue(sql.upsertKeys, projectIDs, ids, userIDs, descriptions, expires, revoked, created,
			public, hashes, lastFours, versions, lastSeqs, createdSeqs)
	}
	if n := len(w.projects); n > 0 {
		ids, names, keyIDs, keyHashes := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		created := make([]time.Time, n)
		for i, p := range w.projects {
			ids[i], names[i], keyIDs[i], keyHashes[i], created[i] = p.ID, p.Name, p.ServerKeyID, p.ServerKeyHash, p.CreatedAt
		}
		b.Queue(sql.insertProjects, ids, names, keyIDs, keyHashes, created, w.projSeqs)
	}
}

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
	rows, _ := p.pool.Query(ctx, p.sql.selectUserKeys, projectID, userID)
	found, err := pgx.CollectRows(rows, pgx.RowToStructByName[keyRow])
	if err != nil {
		return nil, fmt.Errorf("read keys of user %s: %w", userID, err)
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
