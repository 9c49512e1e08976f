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

// The key index in front of each read model behaves as the read model does, and keeps its
// freshness rules over both (readmodeltest.TestKeyIndex).
func TestKeyIndexOverPostgres(t *testing.T) {
	t.Parallel()
	readmodeltest.TestKeyIndex(t, newPostgres)
}

func TestKeyIndexOverMemory(t *testing.T) {
	t.Parallel()
	readmodeltest.TestKeyIndex(t, func(t *testing.T) projections.ReadModel { return projections.NewMemory() })
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

// TestKeyIndexesOfInstancesSharingPostgres: two keysd, each with its key index, apply one
// stream to one database in turns, each from its own checkpoint as its projector does. The
// PostgreSQL apply starts from the index's states only where the database is at the index's
// position; after the other instance moved it on, it reads the rows back. Both indexes and
// the database end as the whole stream says, every rename applied once.
func TestKeyIndexesOfInstancesSharingPostgres(t *testing.T) {
	t.Parallel()
	url := testenv.Postgres(t)
	pgA, pgB := openPostgres(t, url, projections.PostgresConfig{}), openPostgres(t, url, projections.PostgresConfig{})
	a, b := projections.NewKeyIndex(pgA, 100), projections.NewKeyIndex(pgB, 100)
	ctx := context.Background()
	h := readmodeltest.NewHistory(t)
	p := h.CreateProject("turns")
	key := h.CreateKey(p, "u", "v0")
	catchUp := func(ix *projections.KeyIndex) {
		t.Helper()
		cp, err := ix.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ix.Apply(ctx, h.Events()[cp:]); err != nil || got != uint64(len(h.Events())) {
			t.Fatalf("apply from %d: %d, %v", cp, got, err)
		}
		h.AssertKey(ix, p, key) // held from the first turn on
	}
	catchUp(a)
	catchUp(b)
	for i, ix := range []*projections.KeyIndex{b, a, a, b, a, b, b} {
		h.Rename(p, key, fmt.Sprint("v", i+1))
		catchUp(ix)
	}
	catchUp(a)
	h.AssertKey(pgA, p, key)
	for name, ix := range map[string]*projections.KeyIndex{"a": a, "b": b} {
		if s := ix.Stats(); s.Misses != 1 || s.Hits == 0 {
			t.Fatalf("instance %s read its key from PostgreSQL more than once: %+v", name, s)
		}
	}
	h.AssertCheckpoint(a, uint64(len(h.Events())))
}
