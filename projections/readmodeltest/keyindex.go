package readmodeltest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/keyledger/keyledger/projections"
)

// TestKeyIndex runs the key index (projections.KeyIndex) against the read models newRM makes:
// the read-model suite through an index (a large one and one of two keys, which evicts all
// the time; heavy: skipped in -short mode), then the index's freshness rules, each of which a
// wrong rule fails:
//
//   - a fill racing an apply is not kept (the fill read the row before the event);
//   - an evicted key is read again from the read model, and a fill that began before an
//     event folded into a key that was evicted since is not kept;
//   - a command's write is served at once and not applied twice when the projector brings
//     the same event;
//   - events that another instance already applied to a shared read model are folded all
//     the same, so that the index serves them without asking the read model;
//   - the PostgreSQL apply's prior states from the index give the rows the fold says.
func TestKeyIndex(t *testing.T, newRM func(t *testing.T) projections.ReadModel) {
	t.Run("ReadModelLarge", func(t *testing.T) {
		if testing.Short() {
			t.Skip("heavy: the read-model suite again; skipped in -short mode")
		}
		TestReadModel(t, func(t *testing.T) projections.ReadModel { return projections.NewKeyIndex(newRM(t), 10_000) })
	})
	t.Run("ReadModelTiny", func(t *testing.T) {
		if testing.Short() {
			t.Skip("heavy: the read-model suite again; skipped in -short mode")
		}
		TestReadModel(t, func(t *testing.T) projections.ReadModel { return projections.NewKeyIndex(newRM(t), 2) })
	})
	tests := []struct {
		name string
		run  func(t *testing.T, rm projections.ReadModel)
	}{
		{"FillRacingAnApplyIsRefused", testFillRacingAnApply},
		{"EvictionThenMiss", testEvictionThenMiss},
		{"FillRacingAnEvictedChangeIsRefused", testFillRacingAnEvictedChange},
		{"CommandWriteThenApplyOfTheSameSequence", testCommandWriteThenApply},
		{"EventsAppliedByAnotherInstance", testEventsAppliedByAnotherInstance},
		{"ChangesOfHeldKeysMatchTheFold", testChangesOfHeldKeysMatchTheFold},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, newRM(t))
		})
	}
}

// gated is a read model whose Key, once armed, reads the row and then waits for release
// before answering: a fill caught between its read and its keep.
type gated struct {
	projections.ReadModel
	armed   chan struct{} // a value: the next Key is held
	read    chan struct{} // the held Key has read its row
	release chan struct{}
}

func newGated(rm projections.ReadModel) *gated {
	return &gated{ReadModel: rm, armed: make(chan struct{}, 1), read: make(chan struct{}), release: make(chan struct{})}
}

func (g *gated) Key(ctx context.Context, projectID, keyID string) (projections.KeyView, error) {
	v, err := g.ReadModel.Key(ctx, projectID, keyID)
	select {
	case <-g.armed:
		close(g.read)
		select {
		case <-g.release:
		case <-time.After(10 * time.Second):
		}
	default:
	}
	return v, err
}

// fillInBackground starts a read of key through ix that is held after reading its row, and
// returns once the row is read; calling the result releases it and waits for its answer.
func fillInBackground(t *testing.T, g *gated, ix *projections.KeyIndex, project, key string) func() projections.KeyView {
	t.Helper()
	g.armed <- struct{}{}
	answer := make(chan projections.KeyView, 1)
	go func() {
		v, err := ix.Key(context.Background(), project, key)
		if err != nil {
			t.Errorf("held fill: %v", err)
		}
		answer <- v
	}()
	select {
	case <-g.read:
	case <-time.After(10 * time.Second):
		t.Fatal("the held fill never read its row")
	}
	return func() projections.KeyView {
		close(g.release)
		select {
		case v := <-answer:
			return v
		case <-time.After(10 * time.Second):
			t.Fatal("the held fill never answered")
			return projections.KeyView{}
		}
	}
}

// startIndex makes an index of size keys over rm, started at rm's checkpoint as the
// projector starts it.
func startIndex(t *testing.T, rm projections.ReadModel, size int) *projections.KeyIndex {
	t.Helper()
	ix := projections.NewKeyIndex(rm, size)
	if _, err := ix.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ix
}

func assertIndexed(t *testing.T, h *History, ix *projections.KeyIndex, project, key string, wantHit bool) {
	t.Helper()
	before := ix.Stats()
	h.AssertKey(ix, project, key)
	after := ix.Stats()
	if hit := after.Hits > before.Hits; hit != wantHit {
		t.Fatalf("lookup of %s: hit %v, want %v (stats %+v)", h.names[key], hit, wantHit, after)
	}
}

func testFillRacingAnApply(t *testing.T, rm projections.ReadModel) {
	g := newGated(rm)
	ix := startIndex(t, g, 100)
	h := NewHistory(t)
	p := h.CreateProject("race")
	k := h.CreateKey(p, "u", "v0")
	h.ApplyAll(ix)
	finish := fillInBackground(t, g, ix, p, k) // reads the active key...
	h.Revoke(p, k)
	h.ApplyAll(ix) // ...the revocation is applied meanwhile...
	if v := finish(); v.RevokedAt != nil {
		t.Fatalf("the fill read its row before the revocation, yet answered %s", describeKey(v))
	}
	if ix.Stats().FillsRefused != 1 {
		t.Fatalf("the fill that raced the revocation was not refused: %+v", ix.Stats())
	}
	// ...so the index does not serve the active key: the next read asks the read model.
	assertIndexed(t, h, ix, p, k, false)
	assertIndexed(t, h, ix, p, k, true)
}

func testEvictionThenMiss(t *testing.T, rm projections.ReadModel) {
	ix := startIndex(t, rm, 1)
	h := NewHistory(t)
	p := h.CreateProject("evict")
	k1, k2 := h.CreateKey(p, "u", "one"), h.CreateKey(p, "u", "two")
	h.ApplyAll(ix)
	assertIndexed(t, h, ix, p, k1, false)
	assertIndexed(t, h, ix, p, k1, true)
	assertIndexed(t, h, ix, p, k2, false) // evicts k1
	if s := ix.Stats(); s.Evictions != 1 || s.Keys != 1 {
		t.Fatalf("an index of one key holding two: %+v", s)
	}
	h.Revoke(p, k1)
	h.ApplyAll(ix)                        // k1 is not held: only its slot is marked
	assertIndexed(t, h, ix, p, k1, false) // read again, revoked, and kept (the mark is older than the read)
	assertIndexed(t, h, ix, p, k1, true)
	if s := ix.Stats(); s.FillsRefused != 0 {
		t.Fatalf("a fill after the revocation was applied was refused: %+v", s)
	}
}

func testFillRacingAnEvictedChange(t *testing.T, rm projections.ReadModel) {
	g := newGated(rm)
	ix := startIndex(t, g, 1)
	h := NewHistory(t)
	p := h.CreateProject("evicted change")
	k1, k2 := h.CreateKey(p, "u", "one"), h.CreateKey(p, "u", "two")
	h.ApplyAll(ix)
	finish := fillInBackground(t, g, ix, p, k1) // reads k1 active
	// Meanwhile a command of this process revokes k1 (held at once), the projector applies it,
	// and k2 evicts k1.
	h.Revoke(p, k1)
	want := h.Want(k1)
	ix.Remember(want.KeySnapshot, want.LastSeq, want.CreatedSeq) // a command that loaded k1 knows its creation
	h.ApplyAll(ix)
	assertIndexed(t, h, ix, p, k1, true)
	assertIndexed(t, h, ix, p, k2, false)
	if v := finish(); v.RevokedAt != nil {
		t.Fatalf("the held fill answered %s, read before the revocation", describeKey(v))
	}
	if s := ix.Stats(); s.FillsRefused != 1 || s.Evictions == 0 {
		t.Fatalf("the fill older than the evicted revocation was kept: %+v", s)
	}
	assertIndexed(t, h, ix, p, k1, false)
	assertIndexed(t, h, ix, p, k1, true)
}

func testCommandWriteThenApply(t *testing.T, rm projections.ReadModel) {
	ix := startIndex(t, rm, 100)
	h := NewHistory(t)
	p := h.CreateProject("command")
	k := h.CreateKey(p, "u", "v0")
	created := h.Want(k)
	ix.Remember(created.KeySnapshot, created.LastSeq, created.LastSeq) // as CreateKey does
	h.ApplyAll(ix)
	assertIndexed(t, h, ix, p, k, true)
	h.Rename(p, k, "v1")
	renamed := h.Want(k)
	ix.Remember(renamed.KeySnapshot, renamed.LastSeq, 0) // the command's state after its append
	assertIndexed(t, h, ix, p, k, true)                  // served before the projector has it
	ix.Remember(created.KeySnapshot, created.LastSeq, 0) // an older state is ignored
	assertIndexed(t, h, ix, p, k, true)
	h.ApplyAll(ix) // the same event: not applied a second time
	assertIndexed(t, h, ix, p, k, true)
	h.AssertKey(rm, p, k)
	h.Rename(p, k, "v2") // the next event folds onto the command's state
	h.ApplyAll(ix)
	assertIndexed(t, h, ix, p, k, true)
	h.AssertKey(rm, p, k)
}

func testEventsAppliedByAnotherInstance(t *testing.T, rm projections.ReadModel) {
	ctx := context.Background()
	ix := startIndex(t, rm, 100)
	h := NewHistory(t)
	p := h.CreateProject("shared")
	k := h.CreateKey(p, "u", "v0")
	h.ApplyAll(ix)
	assertIndexed(t, h, ix, p, k, false)
	at := uint64(len(h.Events()))
	// Another keysd applies the next events to the shared read model first.
	h.Rename(p, k, "v1")
	h.Revoke(p, k)
	h.ApplyAll(rm)
	cp, err := ix.Checkpoint(ctx)
	if err != nil || cp != at {
		t.Fatalf("the index's checkpoint is %d, %v; want %d, where it has folded the stream (the read model is at %d)", cp, err, at, h.seq)
	}
	// Until this instance's projector brings them, the index serves what it has folded.
	// Then the read model skips them and the index folds them.
	got, err := ix.Apply(ctx, h.Events()[at:])
	if err != nil || got != h.seq {
		t.Fatalf("Apply of the events another instance applied: %d, %v; want %d", got, err, h.seq)
	}
	assertIndexed(t, h, ix, p, k, true)
	if s := ix.Stats(); s.Misses != 1 {
		t.Fatalf("the index asked the read model again: %+v", s)
	}
	// A batch beyond what the index has folded is refused, as a read model refuses a gap.
	h.Rename(p, k, "v2")
	h.Rename(p, k, "v3")
	if _, err := ix.Apply(ctx, h.Events()[h.seq-1:]); err == nil {
		t.Fatal("the index applied a batch that skips an event")
	}
}

func testChangesOfHeldKeysMatchTheFold(t *testing.T, rm projections.ReadModel) {
	ctx := context.Background()
	ix := startIndex(t, rm, 1000)
	h := NewHistory(t)
	p := h.CreateProject("held")
	var keys []string
	for i := range 20 {
		keys = append(keys, h.CreateKey(p, fmt.Sprint("u", i%3), fmt.Sprint("k", i)))
	}
	h.ApplyAll(ix)
	for _, k := range keys {
		h.AssertKey(ix, p, k) // held from now on
	}
	// Batches of changes on held keys: the PostgreSQL apply starts from the index's states.
	for round := range 5 {
		for i, k := range keys {
			switch {
			case i%5 == round:
				h.Revoke(p, k)
			case i%2 == round%2:
				h.Rename(p, k, fmt.Sprintf("k%d r%d", i, round))
			}
		}
		h.ApplyAll(ix)
	}
	for _, k := range keys {
		assertIndexed(t, h, ix, p, k, true)
		h.AssertKey(rm, p, k)
	}
	h.assertKeysByUser(rm, p, "u1")
	if err := ctx.Err(); err != nil {
		t.Fatal(err)
	}
}
