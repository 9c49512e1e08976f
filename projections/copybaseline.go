package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyledger/keyledger/domain"
)

// MeasureCopy times a plain COPY of n synthetic rows into an api_keys table as the
// migrations create it (primary key and index included), in a scratch schema dropped
// afterwards. It is the baseline keysctl replay --compare-copy reports next to a rebuild:
// what PostgreSQL alone needs to take in that many rows.
func MeasureCopy(ctx context.Context, databaseURL string, n int) (time.Duration, error) {
	pool, err := pgxpool.New(ctx, databaseURL)
	if err != nil {
		return 0, fmt.Errorf("read model database: %w", err)
	}
	defer pool.Close()
	name := fmt.Sprintf("%s_copy_baseline_%d", DefaultSchema, time.Now().UnixNano())
	scratch := &Postgres{pool: pool, schema: name, sql: newStatements(name)}
	if err := scratch.migrate(ctx); err != nil {
		return 0, fmt.Errorf("create schema %s: %w", name, explain(err))
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		_, _ = pool.Exec(dctx, "DROP SCHEMA "+scratch.sql.schema+" CASCADE")
		// The scratch rows' WAL and dirty pages are written out now, not by the checkpointer
		// during whatever is measured next (a 5,000,000-row baseline is gigabytes of it). Only
		// a superuser or a pg_checkpoint member may; otherwise it is left to the checkpointer.
		_, _ = pool.Exec(dctx, "CHECKPOINT")
		cancel()
	}()
	created := time.UnixMilli(time.Now().UnixMilli()).UTC()
	row := make([]any, len(keyColumns))
	i := 0
	start := time.Now()
	_, err = pool.CopyFrom(ctx, pgx.Identifier{name, "api_keys"}, keyColumnNames, pgx.CopyFromFunc(func() ([]any, error) {
		if i == n {
			return nil, nil
		}
		i++
		return rowValues(keyState{
			KeySnapshot: domain.KeySnapshot{
				ProjectID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i%10), ID: fmt.Sprintf("%08x-0000-4000-8000-000000000000", i),
				UserID: fmt.Sprintf("user-%d", i%1000), Description: fmt.Sprintf("seeded key %d, rename %d", i, i%7),
				CreatedAt: created, SecretHash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", LastFour: "abcd", Version: 4,
			},
			LastSeq: uint64(i), CreatedSeq: uint64(i),
		}, row), nil
	}))
	if err != nil {
		return 0, fmt.Errorf("copy: %w", err)
	}
	return time.Since(start), nil
}
