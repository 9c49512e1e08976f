package projections

import (
	"context"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
)

// A key checked without pause is written once per rewrite age, not once per flush: its first
// use at the first flush, a newer use only once the record is RewriteAge old (kept pending
// meanwhile, and shown by the instance that served it), and every pending use at shutdown.
// What reaches the bucket is read back by a second LastUse watching it, as another keysd's.
func TestLastUseRewritesAKeyOncePerRewriteAge(t *testing.T) {
	env := newStreamEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bucket, err := env.store.OpenLastUse(ctx)
	if err != nil {
		t.Fatalf("open the last-use bucket: %v", err)
	}
	const interval = time.Second
	writer := NewLastUse(bucket, LastUseConfig{FlushInterval: interval})
	clock := time.Now().UTC().Truncate(time.Millisecond)
	writer.now = func() time.Time { return clock }

	reader := NewLastUse(bucket, LastUseConfig{FlushInterval: interval})
	watchCtx, stopWatch := context.WithCancel(ctx)
	var watching sync.WaitGroup
	watching.Go(func() { reader.watch(watchCtx) })
	defer func() { stopWatch(); watching.Wait() }()
	<-reader.CaughtUp()

	seen := func(what string, want time.Time) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if at, ok := reader.At("p", "k"); ok && at.Equal(want) {
				return
			}
			if time.Now().After(deadline) {
				at, ok := reader.At("p", "k")
				t.Fatalf("%s: the bucket shows %v (%v), want %v", what, at, ok, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	written := func(what string, want uint64) {
		t.Helper()
		if got := writer.Stats().Written; got != want {
			t.Fatalf("%s: %d records written, want %d", what, got, want)
		}
	}

	first := clock
	writer.Touch("p", "k", first)
	writer.flush(ctx, false)
	written("first use", 1)
	seen("first use", first)

	// Checked again at every interval up to the rewrite age: nothing written, the newest use
	// shown here and kept pending.
	age := RewriteAge(interval)
	var last time.Time
	for clock.Sub(first) < age {
		clock = clock.Add(interval / 2)
		last = clock
		writer.Touch("p", "k", last)
		if clock.Sub(first) < age {
			writer.flush(ctx, false)
			written("within the rewrite age", 1)
			if at, _ := writer.At("p", "k"); !at.Equal(last) {
				t.Fatalf("the serving instance shows %v, want its own latest check %v", at, last)
			}
		}
	}
	// The record is now RewriteAge old: the pending use is written.
	writer.flush(ctx, false)
	written("at the rewrite age", 2)
	seen("at the rewrite age", last)

	// Touch tells the key's last use, as At does: an older check does not move it back.
	if got := writer.Touch("p", "k", first); !got.Equal(last) {
		t.Fatalf("Touch of an older check returned %v, want the latest %v", got, last)
	}

	// A use not yet old enough is still written by the last flush.
	clock = clock.Add(interval)
	writer.Touch("p", "k", clock)
	writer.flush(ctx, false)
	written("right after a write", 2)
	writer.flush(ctx, true)
	written("at shutdown", 3)
	seen("at shutdown", clock)
}

// The rewrite age keeps a use within the contract's 60 seconds for every allowed interval.
func TestRewriteAgeBoundsTheDelay(t *testing.T) {
	for interval := time.Second; interval <= 30*time.Second; interval += time.Second {
		age := RewriteAge(interval)
		if age < interval || age+interval > 45*time.Second && age != interval {
			t.Fatalf("interval %v: rewrite age %v", interval, age)
		}
		if age+interval > 60*time.Second {
			t.Fatalf("interval %v: a use may wait %v to be written", interval, age+interval)
		}
	}
	if got := RewriteAge(5 * time.Second); got != 20*time.Second {
		t.Fatalf("RewriteAge(5s) = %v, want 20s", got)
	}
}

// BenchmarkLastUseTouch is the check path's cost of recording a use, over 200,000 keys
// checked in a random order (each Touch a cache miss, as under real traffic).
func BenchmarkLastUseTouch(b *testing.B) {
	l := NewLastUse(nil, LastUseConfig{})
	const keys = 200_000
	ids := make([]string, keys)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	order := rand.New(rand.NewPCG(1, 2)).Perm(keys)
	at := time.Now()
	for _, id := range ids {
		l.Touch("project", id, at)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		l.Touch("project", ids[order[i%keys]], at.Add(time.Duration(i)*time.Millisecond))
	}
}

// BenchmarkLastUseFlush is the cost of writing first uses to the bucket (a nats-server
// process, so that what is measured is keysd's side), per key: what a burst of newly checked
// keys costs keysd.
func BenchmarkLastUseFlush(b *testing.B) {
	ns := testenv.ExternalNATS(b)
	nc := ns.Connect(b)
	ctx := context.Background()
	store, err := eventstore.Open(ctx, nc, eventstore.Config{})
	if err != nil {
		b.Fatal(err)
	}
	bucket, err := store.OpenLastUse(ctx)
	if err != nil {
		b.Fatal(err)
	}
	l := NewLastUse(bucket, LastUseConfig{})
	at := time.Now()
	for range b.N {
		l.Touch("project", uuid.NewString(), at)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	l.flush(ctx, false)
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	if got := l.Stats().Written; got != uint64(b.N) {
		b.Fatalf("%d written, want %d", got, b.N)
	}
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
