package projections

// This file creates and upgrades the read model's tables from the embedded migrations.

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

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

// The SQL of the migrations' own bookkeeping. {schema} stands for the quoted schema name.
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
)

// secondaryIndexes are the migrations' indexes of api_keys (as 002 leaves them), dropped before a
// rebuild's bulk load and created again after it.
var secondaryIndexes = []struct{ name, create string }{
	{"api_keys_by_user", `CREATE INDEX api_keys_by_user ON {schema}.api_keys (project_id, user_id, created_at DESC, created_seq DESC) WHERE team_id = ''`},
	{"api_keys_by_team", `CREATE INDEX api_keys_by_team ON {schema}.api_keys (project_id, team_id, created_at DESC, created_seq DESC) WHERE team_id <> ''`},
}
