package projections_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/testenv"
	"github.com/keyledger/keyledger/projections"
	"github.com/keyledger/keyledger/projections/readmodeltest"
)

// The read-model conformance suite (projections/readmodeltest) against every read model,
// and the PostgreSQL tests that build their streams with its History.

func TestMemoryReadModel(t *testing.T) {
	t.Parallel()
	readmodeltest.TestReadModel(t, func(t *testing.T) projections.ReadModel { return projections.NewMemory() })
}

func TestPostgresReadModel(t *testing.T) {
	t.Parallel()
	readmodeltest.TestReadModel(t, newPostgres)
}

// The cache in front of PostgreSQL must behave as the read model does, reads right after each
// Apply included; a tiny cache also exercises eviction.
func TestKeyCacheOverPostgres(t *testing.T) {
	testenv.Heavy(t, "the suite twice more on PostgreSQL (its parts run alone in TestPostgresReadModel and TestKeyCacheOverMemory)")
	t.Run("large", func(t *testing.T) {
		readmodeltest.TestReadModel(t, func(t *testing.T) projections.ReadModel { return projections.NewKeyCache(newPostgres(t), 10_000) })
	})
	t.Run("tiny", func(t *testing.T) {
		readmodeltest.TestReadModel(t, func(t *testing.T) projections.ReadModel { return projections.NewKeyCache(newPostgres(t), 2) })
	})
}

func TestKeyCacheOverMemory(t *testing.T) {
	readmodeltest.TestReadModel(t, func(t *testing.T) projections.ReadModel {
		return projections.NewKeyCache(projections.NewMemory(), 10_000)
	})
}

// newPostgres opens a read model in a fresh database of its own.
func newPostgres(t *testing.T) projections.ReadModel {
	t.Helper()
	return openPostgres(t, testenv.Postgres(t), projections.PostgresConfig{})
}

// openPostgres opens a PostgreSQL read model for a test and closes it after.
func openPostgres(t testing.TB, url string, cfg projections.PostgresConfig) *projections.Postgres {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pg, err := projections.OpenPostgres(ctx, url, cfg)
	if err != nil {
		t.Fatalf("open PostgreSQL read model: %v", err)
	}
	t.Cleanup(pg.Close)
	return pg
}

func TestPostgresSchemasAreIndependent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testenv.Postgres(t)
	live := openPostgres(t, url, projections.PostgresConfig{})
	asOf := openPostgres(t, url, projections.PostgresConfig{Schema: "keyledger_asof"})
	if asOf.Schema() != "keyledger_asof" || live.Schema() != projections.DefaultSchema {
		t.Fatalf("schemas %q and %q", live.Schema(), asOf.Schema())
	}

	h := readmodeltest.NewHistory(t)
	p := h.CreateProject("acme")
	k := h.CreateKey(p, "u", "one")
	h.ApplyAll(asOf)
	h.AssertKey(asOf, p, k)
	h.AssertCheckpoint(live, 0)
	if _, err := live.Key(ctx, p, k); err == nil {
		t.Fatal("a key applied to one schema shows in the other")
	}
}

// BenchmarkPostgresApply measures how fast the PostgreSQL read model takes batches of a
// busy stream (creations and changes of recent keys), in the projector's batch sizes under
// load (about 20 events) and when catching up (1,000):
// go test ./projections -run '^$' -bench PostgresApply -benchmem
func BenchmarkPostgresApply(b *testing.B) {
	for _, size := range []int{20, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) { benchmarkPostgresApply(b, size) })
	}
}

func benchmarkPostgresApply(b *testing.B, size int) {
	ctx := context.Background()
	pg, err := projections.OpenPostgres(ctx, testenv.Postgres(b), projections.PostgresConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer pg.Close()
	h := readmodeltest.NewHistory(b)
	p := h.CreateProject("bench")
	var keys []string
	for i := 0; len(h.Events()) < 100_000; i++ {
		if i%3 == 2 {
			h.Rename(p, keys[len(keys)-1-i%min(50, len(keys))], fmt.Sprint("renamed ", i))
		} else {
			keys = append(keys, h.CreateKey(p, fmt.Sprint("user-", i%1000), "key"))
		}
	}
	events := h.Events()
	b.ResetTimer()
	start := time.Now()
	applied := 0
	for i := 0; i < b.N; i++ {
		if applied == len(events) {
			b.Fatal("benchmark ran out of events; lower -benchtime")
		}
		end := min(applied+size, len(events))
		if _, err := pg.Apply(ctx, events[applied:end]); err != nil {
			b.Fatal(err)
		}
		applied = end
	}
	b.ReportMetric(float64(applied)/time.Since(start).Seconds(), "events/s")
}

// TestPostgresWrittenRowsAreDroppedWhenAnotherWriterMovedOn: an instance reuses the rows it
// wrote instead of reading them back, but only while the checkpoint is the one it committed.
// Two instances applying one stream in turns must each read what the other wrote: the key
// ends as the whole stream says, every rename applied.
func TestPostgresWrittenRowsAreDroppedWhenAnotherWriterMovedOn(t *testing.T) {
	t.Parallel()
	url := testenv.Postgres(t)
	a, b := openPostgres(t, url, projections.PostgresConfig{}), openPostgres(t, url, projections.PostgresConfig{})
	ctx := context.Background()
	h := readmodeltest.NewHistory(t)
	p := h.CreateProject("turns")
	key := h.CreateKey(p, "u", "v0")
	h.ApplyAll(a) // a knows the key's row as it wrote it
	for i, pg := range []*projections.Postgres{b, a, a, b, a} {
		h.Rename(p, key, fmt.Sprint("v", i+1))
		h.ApplyAll(pg)
	}
	got, err := b.Key(ctx, p, key)
	if err != nil {
		t.Fatal(err)
	}
	if got.Description != "v5" || got.Version != 6 {
		t.Fatalf("key after renames through two instances: %q version %d, want v5 version 6", got.Description, got.Version)
	}
	h.AssertCheckpoint(a, uint64(len(h.Events())))
}
