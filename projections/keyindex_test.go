package projections_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/internal/testenv"
	"github.com/keyledger/keyledger/projections"
)

// TestKeyIndexMemoryPerKey measures the key index's memory at a million keys (the Go heap
// after a collection, before and after filling it), each key with a user id of its own (a
// UUID, not shared: the worst case) and a short description, and holds it to the ceiling
// docs/performance.md and docs/operations.md give: at most 300 bytes per key.
// go test ./projections -run KeyIndexMemoryPerKey -v
func TestKeyIndexMemoryPerKey(t *testing.T) {
	testenv.Heavy(t, "a million keys in memory")
	const n = 1_000_000
	ix := projections.NewKeyIndex(projections.NewMemory(), n)
	if _, err := ix.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	projects := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	expires := time.UnixMilli(1_900_000_000_000).UTC()
	snap := func(i int) domain.KeySnapshot {
		s := domain.KeySnapshot{
			ID: uuid.NewString(), ProjectID: projects[i%len(projects)], UserID: uuid.NewString(),
			Description: fmt.Sprintf("key %d", i), CreatedAt: time.UnixMilli(1_750_000_000_000 + int64(i)).UTC(),
			SecretHash: fmt.Sprintf("%064x", i), LastFour: "abcd", Version: 1 + i%3,
		}
		if i%4 == 0 {
			s.ExpiresAt = &expires
		}
		return s
	}
	before := heap()
	for i := range n {
		ix.Remember(snap(i), uint64(i+1), uint64(i+1))
	}
	after := heap()
	if got := ix.Stats().Keys; got != n {
		t.Fatalf("the index holds %d keys, want %d", got, n)
	}
	perKey := float64(after-before) / n
	t.Logf("key index: %d keys in %.1f MB of heap: %.0f bytes per key", n, float64(after-before)/1e6, perKey)
	if perKey > 300 {
		t.Errorf("%.0f bytes per key, over the documented ceiling of 300", perKey)
	}
	runtime.KeepAlive(ix)
}

func heap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkKeyIndexKey is a check's lookup of a key the index holds.
// go test ./projections -run '^$' -bench KeyIndexKey -benchmem
func BenchmarkKeyIndexKey(b *testing.B) {
	ix := projections.NewKeyIndex(projections.NewMemory(), 1000)
	if _, err := ix.Checkpoint(context.Background()); err != nil {
		b.Fatal(err)
	}
	project := uuid.NewString()
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = uuid.NewString()
		ix.Remember(domain.KeySnapshot{ID: ids[i], ProjectID: project, UserID: "user", Description: "key",
			CreatedAt: time.UnixMilli(1_750_000_000_000), SecretHash: fmt.Sprintf("%064x", i), LastFour: "abcd", Version: 1}, uint64(i+1), uint64(i+1))
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := ix.Key(ctx, project, ids[i%len(ids)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
