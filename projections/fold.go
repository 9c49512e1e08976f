package projections

import (
	"cmp"
	"context"
	"fmt"
	"hash/maphash"
	"runtime"
	"slices"
	"sync/atomic"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

// This file folds a whole stream into memory on every core, for Rebuild and Verify: the keys
// are split into shards by a hash of their identity, each shard is an in-process Memory read
// model of its own, and each is folded by a goroutine of its own that sees every batch in
// stream order and applies the events of its keys. A key's events stay in order (one shard
// folds them all), and the rules are Memory's, so the shards together hold exactly what one
// Memory would. The shards also find the refusals (refused.go): the version a key event is
// checked against is the one its shard holds, so no goroutine keeps a second map of keys.
//
// Memory: the fold keeps every key, about FoldBytesPerKey each (measured by
// TestFoldMemoryPerKey), and nothing spills to disk. A fold with a memory limit (FoldConfig)
// refuses to go on, with ErrFoldTooLarge, as soon as the keys it holds would need more than
// the limit, instead of growing until the kernel kills the process.

// FoldBytesPerKey is what the fold needs per key of the stream, at most, for keys like
// keysd's (a UUID, a user id and a description of a few dozen bytes each): the record, its
// strings and its share of the maps, about 280 bytes of live heap when measured, with room
// for longer text.
const FoldBytesPerKey = 400

// FoldReserve is the memory a fold needs besides its keys: the batches in flight between
// the reader, the decoders and the shards, nats.go's buffers, the runtime.
const FoldReserve = 128 << 20

// FoldConfig bounds a fold of the whole stream (Rebuild, Verify).
type FoldConfig struct {
	// MemoryLimit, when positive, is the memory in bytes the fold may need: FoldReserve plus
	// FoldBytesPerKey for each key. Past it the fold stops with ErrFoldTooLarge.
	MemoryLimit int64
}

// FoldKeyCapacity is how many keys a fold fits in a memory limit of limit bytes.
func FoldKeyCapacity(limit int64) int64 { return max(0, (limit-FoldReserve)/FoldBytesPerKey) }

// ErrFoldTooLarge is a fold that stopped at its memory limit.
type ErrFoldTooLarge struct {
	Keys  int64 // keys held when it stopped
	Limit int64 // the limit, bytes
}

func (e *ErrFoldTooLarge) Error() string {
	return fmt.Sprintf("the stream's keys do not fit the memory limit of %d MiB: %d keys so far, %d at most (%d bytes a key, %d MiB for the reading besides)",
		e.Limit>>20, e.Keys, FoldKeyCapacity(e.Limit), FoldBytesPerKey, FoldReserve>>20)
}

// shardedMemory is a stream folded into shards.
type shardedMemory struct {
	shards []*Memory
	seed   maphash.Seed
	in     []chan []eventstore.RecordedEvent
	done   chan struct{}
	// keys is how many keys each shard holds, updated after each batch; capacity how many
	// all may hold (0: no limit).
	keys     []atomic.Int64
	capacity int64
	limit    int64 // 0: none
	// refused is each shard's refusals in stream order, since takeRefusals last took them.
	refused [][]Refusal
}

// newShardedMemory starts a fold on n shards (n < 1: one a core).
func newShardedMemory(n int, cfg FoldConfig) *shardedMemory {
	if n < 1 {
		n = runtime.GOMAXPROCS(0)
	}
	f := &shardedMemory{seed: maphash.MakeSeed(), done: make(chan struct{}), keys: make([]atomic.Int64, n),
		refused: make([][]Refusal, n), limit: cfg.MemoryLimit}
	f.capacity = FoldKeyCapacity(cfg.MemoryLimit)
	finished := make(chan struct{}, n)
	for i := range n {
		in := make(chan []eventstore.RecordedEvent, 64)
		f.shards, f.in = append(f.shards, NewMemory()), append(f.in, in)
		go func() {
			for batch := range in {
				f.applyShard(i, batch)
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

// applyShard applies the events of a batch that are shard i's.
func (f *shardedMemory) applyShard(i int, batch []eventstore.RecordedEvent) {
	f.refused[i] = f.shards[i].applyShard(batch, func(r *eventstore.RecordedEvent) bool { return f.shardOf(r) == i }, i == 0, f.refused[i])
	k, _ := f.shards[i].counts()
	f.keys[i].Store(int64(k))
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
// wait for them. The batch must not change afterwards. It fails with ErrFoldTooLarge once
// the shards hold more keys than the memory limit allows (counted after the batches they
// have applied; the batches in flight are within FoldReserve).
func (f *shardedMemory) Apply(_ context.Context, batch []eventstore.RecordedEvent) (uint64, error) {
	if len(batch) == 0 {
		return 0, nil
	}
	if err := f.overLimit(); err != nil {
		return 0, err
	}
	for _, in := range f.in {
		in <- batch
	}
	return batch[len(batch)-1].Seq, nil
}

// overLimit is ErrFoldTooLarge when the shards hold more keys than the memory limit allows;
// after wait, it is the fold's final word on it.
func (f *shardedMemory) overLimit() error {
	if f.limit <= 0 {
		return nil
	}
	if n := f.keyCount(); n > f.capacity {
		return &ErrFoldTooLarge{Keys: n, Limit: f.limit}
	}
	return nil
}

func (f *shardedMemory) keyCount() int64 {
	var n int64
	for i := range f.keys {
		n += f.keys[i].Load()
	}
	return n
}

// wait ends the fold: it returns when every shard has applied every batch. The fold then
// only answers, or applies batches on the caller's goroutine (applyNow).
func (f *shardedMemory) wait() {
	for _, in := range f.in {
		close(in)
	}
	<-f.done
}

// applyNow applies a batch on the caller's goroutine, after wait (the catch-up of a rebuild),
// and returns the refusals among it and any not yet taken, in stream order.
func (f *shardedMemory) applyNow(batch []eventstore.RecordedEvent) []Refusal {
	for i := range f.shards {
		f.applyShard(i, batch)
	}
	return f.takeRefusals()
}

// takeRefusals returns the refusals found since it was last called, in stream order (after
// wait).
func (f *shardedMemory) takeRefusals() []Refusal {
	var all []Refusal
	for i, r := range f.refused {
		all = append(all, r...)
		f.refused[i] = nil
	}
	slices.SortFunc(all, func(a, b Refusal) int { return cmp.Compare(a.Seq, b.Seq) })
	return all
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
// the whole batch: Apply for one shard of a fold, whose batches come in stream order. It
// appends to refused, and returns, the refusals among the events it selects (key events out
// of their key's version order, which it does not apply) and, when first, the messages
// that are not events.
func (m *Memory) applyShard(events []eventstore.RecordedEvent, mine func(*eventstore.RecordedEvent) bool, first bool, refused []Refusal) []Refusal {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range events {
		r := &events[i]
		if r.Seq <= m.checkpoint {
			continue
		}
		m.checkpoint = r.Seq
		if r.Err != nil {
			if first && !r.Control {
				refused = append(refused, notAnEvent(r))
			}
			continue
		}
		if r.Control || !mine(r) {
			continue
		}
		if !isKeyEvent(r.Event) {
			m.applyOne(r)
			continue
		}
		idx := m.intern(r.Event.ProjectID)
		rec := m.lookup(idx, r.Event.KeyID)
		v := 0
		if rec != nil {
			v = int(rec.version)
		}
		if refusal, ok := outOfOrder(r, v); ok {
			refused = append(refused, refusal)
			continue
		}
		m.applyKeyTo(idx, rec, *r)
	}
	return refused
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
