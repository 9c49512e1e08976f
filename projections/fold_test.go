package projections

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
)

// seededStream is a stream as a replay meets it: projects, keys created, renamed and revoked
// in interleaved rounds, events the aggregate rejects (out of order, for unknown keys,
// duplicate creations, another project's creation twice) and messages that are not events,
// each event encoded and decoded back as the bulk reader decodes it (sharing its bytes).
func seededStream(t testing.TB, keys, rounds int) []eventstore.RecordedEvent {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	n := 0
	meta := domain.Meta{Time: at, Actor: domain.Actor{Type: domain.ActorAdmin, ID: "a"}, NewID: func() string { n++; return fmt.Sprint("e", n) }}
	var events []domain.Event
	projects := []string{newUUID(), newUUID(), "odd-project"}
	for i, p := range projects {
		e, err := domain.DecideCreateProject(domain.CreateProject{ProjectID: p, Name: fmt.Sprint("project ", i), ServerKeyID: "s", ServerKeyHash: "h"}, meta)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, e, e) // a second creation changes nothing
	}
	state := make([]*domain.Key, keys)
	for k := range keys {
		id := newUUID()
		if k%17 == 0 {
			id = fmt.Sprint("odd-key-", k)
		}
		e, err := domain.DecideCreateKey(domain.CreateKey{ProjectID: projects[k%len(projects)], KeyID: id, UserID: fmt.Sprint("user-", k%7),
			Description: fmt.Sprint("key ", k), SecretHash: strings.Repeat("ab", 32), LastFour: "wxyz"}, meta)
		if err != nil {
			t.Fatal(err)
		}
		state[k], _ = domain.EvolveKey(nil, e)
		events = append(events, e)
		if k%11 == 0 {
			events = append(events, e) // a duplicate creation
		}
	}
	for r := range rounds {
		meta.Time = meta.Time.Add(time.Second)
		for k := range keys {
			u := domain.UpdateKey{Description: ptrTo(fmt.Sprintf("key %d round %d", k, r))}
			if r == rounds-1 && k%10 == 0 {
				u.Revoked = ptrTo(true)
			}
			next, err := state[k].DecideUpdate(u, meta)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range next {
				state[k], _ = domain.EvolveKey(state[k], e)
			}
			events = append(events, next...)
			if k%13 == 0 { // replayed out of order: rejected
				events = append(events, next[0])
			}
		}
	}
	out := make([]eventstore.RecordedEvent, 0, len(events)+2)
	for _, e := range events {
		b, err := domain.MarshalEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		d, err := domain.UnmarshalEventShared(b)
		out = append(out, eventstore.RecordedEvent{Seq: uint64(len(out) + 1), Event: d, Err: err, Raw: b})
		if len(out)%1000 == 0 {
			out = append(out, eventstore.RecordedEvent{Seq: uint64(len(out) + 1), Err: domain.ErrInvalidEvent})
		}
	}
	return out
}

func ptrTo[T any](v T) *T { return &v }

// Folding on shards gives what one Memory gives, key for key and in each user's order.
func TestShardedFoldEqualsOneMemory(t *testing.T) {
	ctx := context.Background()
	stream := seededStream(t, 600, 3)
	one := NewMemory()
	for b := range slices.Chunk(stream, 100) {
		if _, err := one.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []int{1, 2, 3} {
		f := newShardedMemory(n, FoldConfig{})
		for b := range slices.Chunk(stream, 37) {
			if _, err := f.Apply(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		f.wait()
		if f.checkpoint() != uint64(len(stream)) {
			t.Fatalf("%d shards: checkpoint %d, want %d", n, f.checkpoint(), len(stream))
		}
		var want, got []KeyView
		_ = one.EachKey(ctx, func(v KeyView) error { want = append(want, v); return nil })
		_ = f.EachKey(ctx, func(v KeyView) error { got = append(got, v); return nil })
		byID := func(a, b KeyView) int { return strings.Compare(a.ProjectID+a.ID, b.ProjectID+b.ID) }
		slices.SortFunc(want, byID)
		slices.SortFunc(got, byID)
		if len(want) != 600 || !reflect.DeepEqual(got, want) {
			t.Fatalf("%d shards: %d keys differ from one Memory's %d", n, len(got), len(want))
		}
		for _, v := range want {
			k, err := f.Key(ctx, v.ProjectID, v.ID)
			if err != nil || !reflect.DeepEqual(k, v) {
				t.Fatalf("%d shards: Key(%s) = %+v, %v; want %+v", n, v.ID, k, err, v)
			}
		}
		wk, wp := one.counts()
		if gk, gp := f.counts(); gk != wk || gp != wp {
			t.Fatalf("%d shards: %d keys %d projects, want %d and %d", n, gk, gp, wk, wp)
		}
		for _, p := range []string{stream[0].Event.ProjectID} {
			for u := range 7 {
				w, _ := one.KeysByUser(ctx, p, fmt.Sprint("user-", u))
				var g []KeyView
				for _, s := range f.shards {
					part, _ := s.KeysByUser(ctx, p, fmt.Sprint("user-", u))
					g = append(g, part...)
				}
				if len(g) != len(w) {
					t.Fatalf("%d shards: user-%d has %d keys, want %d", n, u, len(g), len(w))
				}
			}
		}
	}
}

// What the fold keeps must not keep the messages' bytes alive: a kept string is a copy.
func TestFoldKeepsNoBytesOfTheMessages(t *testing.T) {
	ctx := context.Background()
	stream := seededStream(t, 50, 1)
	m := NewMemory()
	if _, err := m.Apply(ctx, stream); err != nil {
		t.Fatal(err)
	}
	project := strings.Clone(stream[0].Event.ProjectID)
	var before []KeyView
	_ = m.EachKey(ctx, func(v KeyView) error { before = append(before, v); return nil })
	for _, r := range stream {
		for i := range r.Raw {
			r.Raw[i] = '#'
		}
	}
	var after []KeyView
	_ = m.EachKey(ctx, func(v KeyView) error { after = append(after, v); return nil })
	p, err := m.Project(ctx, project)
	byID := func(a, b KeyView) int { return strings.Compare(a.ProjectID+a.ID, b.ProjectID+b.ID) }
	slices.SortFunc(before, byID)
	slices.SortFunc(after, byID)
	if !reflect.DeepEqual(before, after) || err != nil || strings.Contains(p.Name+p.ID, "#") {
		t.Fatal("the read model's strings changed with the messages' bytes")
	}
}

// BenchmarkFold: folding the seeded stream's kind of events into one Memory (one core),
// per event. Allocations are those of what the fold keeps: a record, its user id and
// description for a creation, a description for a rename.
func BenchmarkFold(b *testing.B) {
	stream := seededStream(b, 2000, 3)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		m := NewMemory()
		for batch := range slices.Chunk(stream, 512) {
			_, _ = m.Apply(context.Background(), batch)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(stream)), "ns/event")
}

// The shards find the refusals that a check of every message in stream order against the
// versions of the keys finds: the messages that are not events and the key events out of
// their key's version order, in stream order, on any number of shards, also when the last
// batches are applied after the fold (a rebuild's catch-up).
func TestShardedFoldFindsTheRefusals(t *testing.T) {
	ctx := context.Background()
	stream := seededStream(t, 600, 3)
	var want []Refusal
	versions := map[keyRef]int{}
	for i := range stream {
		r := &stream[i]
		switch {
		case r.Err != nil:
			want = append(want, notAnEvent(r))
		case isKeyEvent(r.Event):
			k := keyRef{r.Event.ProjectID, r.Event.KeyID}
			if refusal, ok := outOfOrder(r, versions[k]); ok {
				want = append(want, refusal)
			} else {
				versions[k] = r.Event.Version
			}
		}
	}
	if len(want) < 100 {
		t.Fatalf("the seeded stream has only %d refusals", len(want))
	}
	tail := len(stream) - 200
	for _, n := range []int{1, 2, 3} {
		f := newShardedMemory(n, FoldConfig{})
		for b := range slices.Chunk(stream[:tail], 37) {
			if _, err := f.Apply(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		f.wait()
		got := f.takeRefusals()
		for b := range slices.Chunk(stream[tail:], 50) {
			got = append(got, f.applyNow(b)...)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%d shards: %d refusals, want %d", n, len(got), len(want))
		}
		if more := f.takeRefusals(); len(more) != 0 {
			t.Fatalf("%d shards: refusals taken twice: %v", n, more)
		}
	}
}

// A fold with a memory limit stops once its keys would need more than the limit, with an
// error that says how many keys it held and how many fit.
func TestFoldStopsAtItsMemoryLimit(t *testing.T) {
	ctx := context.Background()
	stream := seededStream(t, 600, 1)
	limit := int64(FoldReserve + 100*FoldBytesPerKey)
	f := newShardedMemory(2, FoldConfig{MemoryLimit: limit})
	var err error
	for b := range slices.Chunk(stream, 20) {
		if _, err = f.Apply(ctx, b); err != nil {
			break
		}
		time.Sleep(time.Millisecond) // let the shards count what they hold
	}
	f.wait()
	if err == nil {
		err = f.overLimit()
	}
	var tooLarge *ErrFoldTooLarge
	if !errors.As(err, &tooLarge) {
		t.Fatalf("fold of 600 keys within room for 100: %v, want ErrFoldTooLarge", err)
	}
	if tooLarge.Keys <= 100 || tooLarge.Limit != limit || FoldKeyCapacity(limit) != 100 {
		t.Fatalf("stopped at %+v (capacity %d), want past 100 keys", tooLarge, FoldKeyCapacity(limit))
	}
	if msg := err.Error(); !strings.Contains(msg, "memory limit of 128 MiB") || !strings.Contains(msg, "100 at most") {
		t.Fatalf("error %q does not name the limit and the capacity", msg)
	}
	// Without a limit, or with room, the same stream folds.
	for _, cfg := range []FoldConfig{{}, {MemoryLimit: FoldReserve + 1000*FoldBytesPerKey}} {
		f := newShardedMemory(2, cfg)
		for b := range slices.Chunk(stream, 20) {
			if _, err := f.Apply(ctx, b); err != nil {
				t.Fatalf("%+v: %v", cfg, err)
			}
		}
		f.wait()
		if err := f.overLimit(); err != nil {
			t.Fatalf("%+v: %v", cfg, err)
		}
	}
	// After the fold, the keys it holds are held against the limit whatever the batches.
	f = newShardedMemory(2, FoldConfig{MemoryLimit: FoldReserve + 10*FoldBytesPerKey})
	if _, err := f.Apply(ctx, stream); err != nil {
		t.Fatal(err)
	}
	f.wait()
	if err := f.overLimit(); !errors.As(err, &tooLarge) || tooLarge.Keys != 600 {
		t.Fatalf("one batch of 600 keys within room for 10: %v", err)
	}
}

// TestFoldMemoryPerKey measures the live heap a fold on two shards keeps per key, for keys
// like keysd's, and holds FoldBytesPerKey, which the memory limit is computed with, above it.
func TestFoldMemoryPerKey(t *testing.T) {
	testenv.Heavy(t, "a large fold")
	const n = 50_000
	project := newUUID()
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	meta := domain.Meta{Time: at, Actor: domain.Actor{Type: domain.ActorServerKey, ID: "k"}, RequestID: "r", NewID: newUUID}
	before := liveHeap()
	events := make([]eventstore.RecordedEvent, 0, 2*n)
	for i := range n {
		var expires *time.Time
		if i%4 == 0 {
			e := at.Add(90 * 24 * time.Hour)
			expires = &e
		}
		e, err := domain.DecideCreateKey(domain.CreateKey{
			ProjectID: project, KeyID: newUUID(), UserID: fmt.Sprintf("user_%08d", i/3),
			Description: fmt.Sprintf("deploy key %d of the build pipeline", i), ExpiresAt: expires,
			SecretHash: fmt.Sprintf("%064x", i), LastFour: fmt.Sprintf("%04x", i%65536),
		}, meta)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, eventstore.RecordedEvent{Seq: uint64(len(events) + 1), Event: e})
		k, _ := domain.EvolveKey(nil, e)
		next, err := k.DecideUpdate(domain.UpdateKey{Description: ptrTo(fmt.Sprintf("deploy key %d, renamed", i))}, meta)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, eventstore.RecordedEvent{Seq: uint64(len(events) + 1), Event: next[0]})
	}
	f := newShardedMemory(2, FoldConfig{})
	for b := range slices.Chunk(events, 512) {
		if _, err := f.Apply(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	f.wait()
	events = nil
	after := liveHeap()
	runtime.KeepAlive(f)
	perKey := float64(after-before) / n
	t.Logf("fold on 2 shards: %.0f bytes of live heap per key (%d keys); the limit counts %d", perKey, n, FoldBytesPerKey)
	if perKey > FoldBytesPerKey {
		t.Errorf("%.0f bytes per key, more than FoldBytesPerKey (%d)", perKey, FoldBytesPerKey)
	}
}

// VersionOrder keeps no bytes of the messages it checked: neither a key's first message
// nor its last (an update must not replace the map's key with the ids of its message).
func TestVersionOrderKeepsNoBytesOfTheMessages(t *testing.T) {
	stream := seededStream(t, 50, 3)
	o := NewVersionOrder(false)
	refused := 0
	for _, r := range stream {
		if o.Refuse(r) != "" {
			refused++
		}
	}
	if refused == 0 || len(o.index) == 0 {
		t.Fatalf("%d refused, %d keys: the stream should have both", refused, len(o.index))
	}
	for _, r := range stream {
		for i := range r.Raw {
			r.Raw[i] = '#'
		}
	}
	for k := range o.index {
		if strings.Contains(k.project+k.key, "#") {
			t.Fatalf("a key's ids share a message's bytes: %q %q", k.project, k.key)
		}
	}
}

// eachKeyInOrder gives every key eachState gives, once, those of canonical UUIDs in the
// order of the primary key (project id, key id) and the others after them.
func TestEachKeyInOrder(t *testing.T) {
	m := NewMemory()
	if _, err := m.Apply(context.Background(), seededStream(t, 300, 1)); err != nil {
		t.Fatal(err)
	}
	var all, ordered []string
	_ = m.eachState(func(s keyState) error { all = append(all, s.ProjectID+" "+s.ID); return nil }, nil, true)
	odd := false
	_ = m.eachKeyInOrder(func(s keyState) error {
		k := s.ProjectID + " " + s.ID
		_, isUUID := parseUUID(s.ID)
		switch {
		case !isUUID:
			odd = true
		case odd:
			t.Fatalf("%s after a key whose id is not a UUID", k)
		case len(ordered) > 0 && ordered[len(ordered)-1] >= k:
			t.Fatalf("%s after %s", k, ordered[len(ordered)-1])
		}
		ordered = append(ordered, k)
		return nil
	})
	slices.Sort(all)
	slices.Sort(ordered)
	if !odd || len(all) != 300 || !slices.Equal(all, ordered) {
		t.Fatalf("%d keys in order, %d in all (odd ones: %v)", len(ordered), len(all), odd)
	}
}
