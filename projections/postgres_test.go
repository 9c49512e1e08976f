package projections

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyledger/keyledger/internal/testenv"
)

// What only the PostgreSQL read model has: its schema, migrations and configuration. Its
// behaviour as a read model is in the conformance suite.

func TestPostgresInstancesStartingTogetherMigrateOnce(t *testing.T) {
	t.Parallel()
	url := testenv.Postgres(t)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			pg, err := OpenPostgres(ctx, url, PostgresConfig{MaxConns: 2})
			if err != nil {
				t.Errorf("OpenPostgres while others start: %v", err)
				return
			}
			pg.Close()
		})
	}
	wg.Wait()

	pg := openPostgres(t, url, PostgresConfig{}) // and once more, on a migrated schema
	ctx := context.Background()
	rows, _ := pg.pool.Query(ctx, `SELECT version, name FROM keyledger.schema_migrations ORDER BY version`)
	type applied struct {
		Version int32
		Name    string
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[applied])
	if err != nil {
		t.Fatal(err)
	}
	migs, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(migs) || got[0] != (applied{1, "001_init"}) {
		t.Fatalf("schema_migrations = %v, want each of %d migrations once", got, len(migs))
	}
	var rowsInCheckpoint int
	if err := pg.pool.QueryRow(ctx, `SELECT count(*) FROM keyledger.checkpoint`).Scan(&rowsInCheckpoint); err != nil || rowsInCheckpoint != 1 {
		t.Fatalf("checkpoint has %d rows, %v; want 1", rowsInCheckpoint, err)
	}
}

func TestPostgresConfig(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		cfg     PostgresConfig
		wantErr string // "" for valid
	}{
		{PostgresConfig{}, ""},
		{PostgresConfig{Schema: "keyledger_asof", MaxConns: 8}, ""},
		{PostgresConfig{Schema: "_tmp2"}, ""},
		{PostgresConfig{Schema: "KeyLedger"}, "lowercase"},
		{PostgresConfig{Schema: `x"; DROP TABLE y; --`}, "lowercase"},
		{PostgresConfig{Schema: "2fast"}, "lowercase"},
		{PostgresConfig{Schema: strings.Repeat("k", 64)}, "63 bytes"},
		{PostgresConfig{Schema: "pg_keys"}, "reserved"},
		{PostgresConfig{MaxConns: -1}, "max conns"},
	} {
		c.cfg.setDefaults()
		err := c.cfg.Validate()
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%+v: %v, want valid", c.cfg, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%+v: %v, want an error about %q", c.cfg, err, c.wantErr)
		}
	}
	// Every problem at once.
	err := PostgresConfig{Schema: "Bad", MaxConns: -1}.Validate()
	if err == nil || !strings.Contains(err.Error(), "lowercase") || !strings.Contains(err.Error(), "max conns") {
		t.Errorf("Validate = %v, want both problems", err)
	}
}

func TestOpenPostgresFailsClearly(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := OpenPostgres(ctx, testenv.PostgresAdminURL(), PostgresConfig{Schema: "Bad"}); err == nil {
		t.Error("OpenPostgres with an invalid schema name succeeded")
	}
	if _, err := OpenPostgres(ctx, "postgres://%zz", PostgresConfig{}); err == nil {
		t.Error("OpenPostgres with a malformed URL succeeded")
	}
	admin := testenv.PostgresAdminURL()
	missing := admin[:strings.LastIndex(admin, "/")] + "/keyledger_no_such_database?sslmode=disable"
	_, err := OpenPostgres(ctx, missing, PostgresConfig{})
	if err == nil || !strings.Contains(err.Error(), "create the database first") {
		t.Errorf("OpenPostgres of a missing database = %v, want advice to create it", err)
	}
}

// TestPostgresKeyLookupPlanIsTheIndex: the projector's per-batch lookup of the keys it
// changes must read them through the primary key even in the generic plan that a pooled
// connection keeps after a few runs. Made while the table is empty and never analyzed (as
// where autovacuum is off), the plain IN (unnest ...) form's generic plan scanned the whole
// table on every batch, and the projector slowed as the table grew.
func TestPostgresKeyLookupPlanIsTheIndex(t *testing.T) {
	t.Parallel()
	pg := openPostgres(t, testenv.Postgres(t), PostgresConfig{})
	ctx := context.Background()
	conn, err := pg.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, `RESET plan_cache_mode`)
	if _, err := conn.Exec(ctx, `PREPARE lookup(text[], text[]) AS `+pg.sql.selectKeysByRef); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, `DEALLOCATE lookup`)
	rows, _ := conn.Query(ctx, `EXPLAIN EXECUTE lookup('{p}', '{k}')`, pgx.QueryExecModeSimpleProtocol)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	plan := strings.Join(lines, "\n")
	if !strings.Contains(plan, "Index Scan using api_keys_pkey") || strings.Contains(plan, "Seq Scan on api_keys") {
		t.Fatalf("generic plan of the key lookup on an empty table:\n%s\nwant an index scan of api_keys_pkey and no sequential scan", plan)
	}
}
