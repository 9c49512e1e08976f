package projections

import (
	"context"
	"hash/maphash"
	"runtime"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

// This file folds a whole stream into memory on every core, for Rebuild and Verify: the keys
// are split into shards by a hash of their identity, each shard is an in-process Memory read
// model of its own, and each is folded by a goroutine of its own that sees every batch in
// stream order and applies the events of its keys. A key's events stay in order (one shard
// folds them all), and the rules are Memory's, so the shards together hold exactly what one
// Memory would.
//
// Memory: the fold keeps every key, about 150 bytes each plus its user id and description
// (memKey) and its share of the maps (see docs/performance.md, "Replay"); nothing spills to
// disk, so the keys of the stream must fit in memory.

// shardedMemory is a stream folded into shards.
type shardedMemory struct {
	shards []*Memory
	seed   maphash.Seed
	in     []chan []eventstore.RecordedEvent
	done   chan struct{}
}

// newShardedMemory starts a fold on n shards (n < 1: one a core).
func newShardedMemory(n int) *shardedMemory {
	if n < 1 {
		n = runtime.GOMAXPROCS(0)
	}
	f := &shardedMemory{seed: maphash.MakeSeed(), done: make(chan struct{})}
	finished := make(chan struct{}, n)
	for i := range n {
		m := NewMemory()
		in := make(chan []eventstore.RecordedEvent, 64)
		f.shards, f.in = append(f.shards, m), append(f.in, in)
		go func() {
			for batch := range in {
				m.applyShard(batch, func(r *eventstore.RecordedEvent) bool { return f.shardOf(r) == i })
			}
			finished <- struct{}{}
		}()
	}
	go func() {
		for range n {
			<-finished
		}
		close(f.done)
	}()
	return f
}

// shardOf is the shard that folds r: by its key, or the first for a project's event and
// for a message that is not an event.
func (f *shardedMemory) shardOf(r *eventstore.RecordedEvent) int {
	if r.Err != nil || !isKeyEvent(r.Event) || len(f.shards) == 1 {
		return 0
	}
	return f.keyShard(r.Event.ProjectID, r.Event.KeyID)
}

func (f *shardedMemory) keyShard(projectID, keyID string) int {
	var h maphash.Hash
	h.SetSeed(f.seed)
	h.WriteString(projectID)
	h.WriteByte(0)
	h.WriteString(keyID)
	return int(h.Sum64() % uint64(len(f.shards)))
}

// Apply hands a batch, in stream order after the previous one, to every shard; it does not
// wait for them. The batch must not change afterwards.
func (f *shardedMemory) Apply(_ context.Context, batch []eventstore.RecordedEvent) (uint64, error) {
	if len(batch) == 0 {
		return 0, nil
	}
	for _, in := range f.in {
		in <- batch
	}
	return batch[len(batch)-1].Seq, nil
}

// wait ends the fold: it returns when every shard has applied every batch.
func (f *shardedMemory) wait() {
	for _, in := range f.in {
		close(in)
	}
	<-f.done
}

// Key is a key of the folded stream (after wait).
func (f *shardedMemory) Key(ctx context.Context, projectID, keyID string) (KeyView, error) {
	return f.shards[f.keyShard(projectID, keyID)].Key(ctx, projectID, keyID)
}

// EachKey calls fn for every key of the folded stream (after wait).
func (f *shardedMemory) EachKey(ctx context.Context, fn func(KeyView) error) error {
	for _, m := range f.shards {
		if err := m.EachKey(ctx, fn); err != nil {
			return err
		}
	}
	return nil
}

// counts returns how many keys and projects the folded stream has (after wait).
func (f *shardedMemory) counts() (keys, projects int) {
	for _, m := range f.shards {
		k, p := m.counts()
		keys, projects = keys+k, projects+p
	}
	return keys, projects
}

// checkpoint is the last sequence the shards applied (after wait).
func (f *shardedMemory) checkpoint() uint64 {
	cp, _ := f.shards[0].Checkpoint(context.Background())
	return cp
}

// applyShard applies the events of a batch that mine selects and moves the checkpoint past
// the whole batch: Apply for one shard of a fold, whose batches come in stream order.
func (m *Memory) applyShard(events []eventstore.RecordedEvent, mine func(*eventstore.RecordedEvent) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range events {
		r := &events[i]
		if r.Seq <= m.checkpoint {
			continue
		}
		m.checkpoint = r.Seq
		if r.Err != nil || !mine(r) {
			continue
		}
		m.applyOne(r)
	}
}

// applyOne applies one event past the checkpoint and reports whether it changed the read
// model (false: a key event evolveKey refuses; a project's creation is a project's first
// one, and a later one is not counted as refused); the caller holds m.mu.
func (m *Memory) applyOne(r *eventstore.RecordedEvent) bool {
	if isKeyEvent(r.Event) {
		return m.applyKey(*r)
	} else if p, ok := projectOf(*r); ok {
		idx := m.intern(p.ID)
		if m.projects[idx].snap == nil {
			p = domain.ProjectSnapshot{ID: m.projects[idx].id, Name: clone(p.Name), ServerKeyID: clone(p.ServerKeyID),
				ServerKeyHash: clone(p.ServerKeyHash), CreatedAt: p.CreatedAt}
			m.projects[idx].snap = &p
			m.projects[idx].seq = r.Seq
		}
	}
	return true
}
