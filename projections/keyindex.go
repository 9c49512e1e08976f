package projections

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

// KeyIndex is this process's one cache of keys' states: a bounded index in memory, in front
// of a read model, of each key's state versioned by the stream sequence of its last event.
// Checks and reads (the API), loads (the command side, through Remember and KeyState) and
// the PostgreSQL apply (the prior state of the rows a batch changes) all use it.
//
// The projector keeps it current: Apply applies a batch to the read model, then folds every
// event of the batch into the index, those another keysd had already applied to a shared
// database included (the read model skips them; the index does not), so that every keysd
// serves its keys from memory. Its Checkpoint is the position up to which the index has
// folded the stream (never beyond the read model's): the projector reads on from there, so
// it sees the whole stream in every topology.
//
// Entries never go back in sequence. A key the index does not hold is read from the read
// model and kept (a fill) unless the index cannot tell that the row is still current: the
// freshness rules are on keep, and the read-model conformance suite tests them
// (readmodeltest.TestKeyIndex).
type KeyIndex struct {
	ReadModel // the read model behind it; KeysByUser, Project, EachKey, Ping and Close pass through
	max       int

	mu sync.RWMutex
	// position: every event of the stream up to it has been folded into the entries. Set
	// from the read model's checkpoint when the index starts (started); nothing is kept before.
	position   uint64
	started    bool
	projectIdx map[string]uint32 // interned project ids
	projects   []string
	keys       map[memKeyRef]*memKey // a record is never changed in place: a change stores a new one
	// touched holds, by slot of a key id, the highest sequence of an event folded while its key
	// was not held, and of an entry evicted: a fill older than that may have missed the event
	// (several keys share a slot, which only costs a refused fill).
	touched []uint64

	hits, misses, evictions, refused atomic.Uint64
}

// touchedSlots is the size of KeyIndex.touched (512 KiB of sequences).
const touchedSlots = 1 << 16

// DefaultKeyIndexSize is the number of keys an index holds unless configured otherwise.
const DefaultKeyIndexSize = 200_000

var _ ReadModel = (*KeyIndex)(nil)

// NewKeyIndex returns an index of at most size keys in front of rm. With size 0 it holds
// none: every read goes to rm, and its position still tells how far the stream is folded.
func NewKeyIndex(rm ReadModel, size int) *KeyIndex {
	return &KeyIndex{
		ReadModel:  rm,
		max:        max(size, 0),
		projectIdx: make(map[string]uint32),
		keys:       make(map[memKeyRef]*memKey, min(size, 1<<16)),
		touched:    make([]uint64, touchedSlots),
	}
}

// KeyIndexStats are an index's counters since it was created, for metrics.
type KeyIndexStats struct {
	// Keys is how many keys it holds now; Capacity the most it holds.
	Keys, Capacity int
	// Hits and Misses count the lookups answered from memory and from the read model.
	Hits, Misses uint64
	// Evictions counts the keys dropped to make room for another.
	Evictions uint64
	// FillsRefused counts the states read from the read model (or written by a command) that
	// were not kept because an event on the key (or on a key of the same slot) was folded
	// while they were being read: the state might be older than the index.
	FillsRefused uint64
}

// Stats returns the index's counters.
func (ix *KeyIndex) Stats() KeyIndexStats {
	ix.mu.RLock()
	n := len(ix.keys)
	ix.mu.RUnlock()
	return KeyIndexStats{
		Keys: n, Capacity: ix.max,
		Hits: ix.hits.Load(), Misses: ix.misses.Load(),
		Evictions: ix.evictions.Load(), FillsRefused: ix.refused.Load(),
	}
}

// Position is the stream sequence up to which the index has folded every event.
func (ix *KeyIndex) Position() uint64 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.position
}

// Checkpoint implements ReadModel: the position up to which both the read model and the
// index hold every event. The first call starts the index at the read model's checkpoint.
func (ix *KeyIndex) Checkpoint(ctx context.Context) (uint64, error) {
	cp, err := ix.ReadModel.Checkpoint(ctx)
	if err != nil {
		return 0, err
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if !ix.started {
		// Nothing is held yet, so nothing can be stale: the index is current at cp.
		ix.position, ix.started = cp, true
	}
	// Below the read model's checkpoint when another keysd applied events to a shared
	// database that this one has not folded yet; below the index's when the read model went
	// back (a rebuild swapped in): the projector reads on from the lower.
	return min(ix.position, cp), nil
}

// Apply implements ReadModel: the batch goes to the read model, then into the index, and the
// new checkpoint is where both are (the read model's may be further, when another keysd
// applied more already; the index folds those events when the projector reads them).
func (ix *KeyIndex) Apply(ctx context.Context, events []eventstore.RecordedEvent) (uint64, error) {
	ix.mu.RLock()
	pos, started := ix.position, ix.started
	ix.mu.RUnlock()
	if !started || len(events) == 0 {
		if _, err := ix.Checkpoint(ctx); err != nil || len(events) == 0 { // starts the index
			return ix.Position(), err
		}
		pos = ix.Position()
	}
	if first := events[0].Seq; first > pos+1 {
		// The index would skip the events in between.
		return pos, &GapError{Checkpoint: pos, Offered: first}
	}
	var (
		cp  uint64
		err error
	)
	if pa, ok := ix.ReadModel.(priorApplier); ok {
		cp, err = pa.applyWithPrior(ctx, events, ix.prior)
	} else {
		cp, err = ix.ReadModel.Apply(ctx, events)
	}
	if err != nil {
		// Nothing was folded: the projector reads again from the index's position, and a
		// batch the read model did commit is skipped there and folded here then.
		return cp, err
	}
	upTo := min(cp, events[len(events)-1].Seq)
	ix.fold(events, upTo)
	return upTo, nil
}

// fold applies the events of a batch up to upTo, beyond the position, to the keys held, and
// advances the position. Events on keys not held are only marked (touched): a key enters the
// index from the read model or a command, never from an event alone, since an event cannot
// tell whether its key already exists (a second creation is ignored by read models).
func (ix *KeyIndex) fold(events []eventstore.RecordedEvent, upTo uint64) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for i := range events {
		r := events[i]
		if r.Seq <= ix.position || r.Seq > upTo || r.Err != nil || !isKeyEvent(r.Event) {
			continue
		}
		u, ok := parseUUID(r.Event.KeyID)
		if !ok {
			continue // never held (keep refuses it)
		}
		idx, held := ix.projectIdx[r.Event.ProjectID]
		var rec *memKey
		if held {
			rec = ix.keys[memKeyRef{idx, u}]
		}
		if rec == nil {
			ix.touch(u, r.Seq)
			continue
		}
		if rec.lastSeq >= r.Seq {
			continue // a command of this process wrote this state already, or a fill newer still
		}
		cur := rec.state(ix.projects[idx])
		if next, ok := evolveKey(&cur, r); ok {
			ix.keys[memKeyRef{idx, u}] = encode(idx, next)
		}
	}
	ix.position = max(ix.position, upTo)
}

// Key implements ReadModel: from memory, or from the read model, whose answer is kept if
// keep's rules allow.
func (ix *KeyIndex) Key(ctx context.Context, projectID, keyID string) (KeyView, error) {
	if s, ok := ix.lookup(projectID, keyID); ok {
		ix.hits.Add(1)
		return s.view(), nil
	}
	ix.misses.Add(1)
	ix.mu.RLock()
	since, started := ix.position, ix.started
	ix.mu.RUnlock()
	v, err := ix.ReadModel.Key(ctx, projectID, keyID)
	if err != nil || !started {
		return v, err
	}
	ix.keep(keyState{KeySnapshot: v.KeySnapshot, LastSeq: v.LastSeq, CreatedSeq: v.CreatedSeq}, since)
	return v, nil
}

// KeyState is Key for the command side (commands.KeyStates): a key's state and the stream
// sequence of its last event.
func (ix *KeyIndex) KeyState(ctx context.Context, projectID, keyID string) (domain.KeySnapshot, uint64, error) {
	v, err := ix.Key(ctx, projectID, keyID)
	if err != nil {
		return domain.KeySnapshot{}, 0, err
	}
	return v.KeySnapshot, v.LastSeq, nil
}

// Remember records a key's state after this process appended its events, seq being the
// stream sequence of the key's last one (commands.KeyStates), and createdSeq that of its
// creation if the caller knows it (0 otherwise). It is the exact state as of seq: the
// append's concurrency check proved that no other event on the key came in between.
func (ix *KeyIndex) Remember(key domain.KeySnapshot, seq, createdSeq uint64) {
	key.CreatedAt = toMillis(key.CreatedAt)
	key.ExpiresAt = toMillisPtr(key.ExpiresAt)
	key.RevokedAt = toMillisPtr(key.RevokedAt)
	ix.keep(keyState{KeySnapshot: key, LastSeq: seq, CreatedSeq: createdSeq}, 0)
}

// lookup returns a key held in memory.
func (ix *KeyIndex) lookup(projectID, keyID string) (keyState, bool) {
	u, ok := parseUUID(keyID)
	if !ok {
		return keyState{}, false
	}
	ix.mu.RLock()
	idx, ok := ix.projectIdx[projectID]
	var rec *memKey
	if ok {
		rec = ix.keys[memKeyRef{idx, u}]
	}
	ix.mu.RUnlock()
	if rec == nil {
		return keyState{}, false
	}
	s := rec.stateWithID(projectID, keyID)
	return s, true
}

// keep stores s, the state of a key as of its last event s.LastSeq, read when the index was
// at position since (0 for a command's own write), unless the index cannot be sure it is
// current. The rules, and why they suffice:
//
//   - An entry never goes back: one at s.LastSeq or later stays.
//   - A key not held is kept only if no event on its slot beyond max(since, s.LastSeq) was
//     folded while it was not held, and no entry of its slot that recent was evicted.
//
// Let e be an event on the key with sequence n ≤ the index's position now. If n ≤ since, the
// index had folded it before the read began; the projector folds a batch only after the read
// model has it, so the read's answer includes it. If n > since and the answer does not
// include it, the read model applied it after the read, so n > s.LastSeq as well, and the
// index folded it after since: into the entry then held (which is at n or later, so the first
// rule keeps it, or was evicted since, which marked its slot with n or later) or, with no
// entry, by marking the slot with n. Either way s is refused. A command's write (since 0) is
// exact as of s.LastSeq, so only events beyond it can be missing, and the same marks catch
// those the index folded already; the projector folds later ones onto it.
func (ix *KeyIndex) keep(s keyState, since uint64) {
	u, ok := parseUUID(s.ID)
	if !ok || !storable(s.ProjectID, s.UserID, s.TeamID, s.Description, s.SecretHash, s.LastFour) {
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if !ix.started || ix.max == 0 {
		return
	}
	idx := ix.intern(s.ProjectID)
	ref := memKeyRef{idx, u}
	if cur := ix.keys[ref]; cur != nil {
		if cur.lastSeq >= s.LastSeq {
			return
		}
		if s.CreatedSeq == 0 {
			s.CreatedSeq = cur.createdSeq
		}
		ix.keys[ref] = encode(idx, s)
		return
	}
	if ix.touched[touchedSlot(u)] > max(since, s.LastSeq) {
		ix.refused.Add(1)
		return
	}
	if len(ix.keys) >= ix.max {
		ix.evictOne()
	}
	ix.keys[ref] = encode(idx, s)
}

// evictOne drops an arbitrary key (the map's iteration starts anywhere) and marks its slot.
func (ix *KeyIndex) evictOne() {
	for ref, rec := range ix.keys {
		delete(ix.keys, ref)
		ix.touch(ref.id, rec.lastSeq)
		ix.evictions.Add(1)
		return
	}
}

func (ix *KeyIndex) touch(u [16]byte, seq uint64) {
	slot := touchedSlot(u)
	ix.touched[slot] = max(ix.touched[slot], seq)
}

// touchedSlot spreads key ids over the touched slots, time-ordered UUIDs too.
func touchedSlot(u [16]byte) uint64 {
	h := (binary.LittleEndian.Uint64(u[:8]) ^ binary.LittleEndian.Uint64(u[8:])) * 0x9E3779B97F4A7C15
	return h >> (64 - 16)
}

func (ix *KeyIndex) intern(projectID string) uint32 {
	if idx, ok := ix.projectIdx[projectID]; ok {
		return idx
	}
	idx := uint32(len(ix.projects))
	projectID = clone(projectID)
	ix.projects = append(ix.projects, projectID)
	ix.projectIdx[projectID] = idx
	return idx
}

// priorApplier is a read model whose Apply can start from the states the index holds instead
// of reading them back (the PostgreSQL read model).
type priorApplier interface {
	applyWithPrior(ctx context.Context, events []eventstore.RecordedEvent, prior priorStates) (uint64, error)
}

// priorStates returns, among the keys named by projects and ids, the states the index holds
// as of its position at (each key's state after every event on it up to at), and the keys it
// does not hold. They are the read model's rows only if its checkpoint is at too.
type priorStates func(projects, ids []string) (held map[keyRef]*keyState, missP, missI []string, at uint64)

// prior is the index's priorStates. A state written by a command beyond the position is not
// the row yet, and one whose creation sequence is unknown cannot be written back as a row.
func (ix *KeyIndex) prior(projects, ids []string) (map[keyRef]*keyState, []string, []string, uint64) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if !ix.started || len(ix.keys) == 0 {
		return nil, projects, ids, 0
	}
	held := make(map[keyRef]*keyState, len(ids))
	var missP, missI []string
	for i := range ids {
		var rec *memKey
		if u, ok := parseUUID(ids[i]); ok {
			if idx, ok := ix.projectIdx[projects[i]]; ok {
				rec = ix.keys[memKeyRef{idx, u}]
			}
		}
		if rec == nil || rec.lastSeq > ix.position || rec.createdSeq == 0 {
			missP, missI = append(missP, projects[i]), append(missI, ids[i])
			continue
		}
		st := rec.state(projects[i])
		held[keyRef{projects[i], ids[i]}] = &st
	}
	return held, missP, missI, ix.position
}
