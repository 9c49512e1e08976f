package projections

import (
	"context"
	"sync"

	"github.com/keyledger/keyledger/eventstore"
)

// KeyCache is a read model with the keys it served kept in process memory, so that checks and
// reads of a key do not query PostgreSQL each time (profiled: a query per check put keysd at a
// quarter of the HTTP floor's rate).
//
// Apply goes through the cache: once the underlying read model has applied a batch, every key
// the batch touched is dropped from the cache before Apply returns, so before the projector
// advances its position and before any request waiting for those events is answered. A
// revoked key is therefore never served as valid from the cache after its revocation's 200
// from this keysd. A change applied to a shared database by another keysd reaches this cache
// when this keysd's own projector applies it (usually within milliseconds), so keysd enables
// the cache only when it is the only writer or reads wait for the stream's end (the read
// barrier); see cmd/keysd.
type KeyCache struct {
	ReadModel // the underlying read model; every method but Apply and Key passes through

	mu      sync.RWMutex
	entries map[keyRef]keyCacheEntry
	max     int
	// applied counts the batches applied, so that a fill that raced with one is not kept.
	applied uint64
}

// keyCacheEntry is a cached key, or (valid false) the mark of a key changed by an applied
// batch: a fill is kept only if it is at least as recent as that change.
type keyCacheEntry struct {
	view   KeyView
	valid  bool
	minSeq uint64
}

var _ ReadModel = (*KeyCache)(nil)

// NewKeyCache returns rm with a cache of at most size keys in front of its Key lookups.
func NewKeyCache(rm ReadModel, size int) *KeyCache {
	return &KeyCache{ReadModel: rm, entries: make(map[keyRef]keyCacheEntry), max: max(size, 1)}
}

// Apply implements ReadModel: the underlying Apply, then the keys of the batch are dropped.
func (c *KeyCache) Apply(ctx context.Context, events []eventstore.RecordedEvent) (uint64, error) {
	cp, err := c.ReadModel.Apply(ctx, events)
	if err != nil {
		// Nothing was applied (a transaction either commits or not; a commit whose answer was
		// lost is applied again, and dropped then).
		return cp, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.applied++
	for _, r := range events {
		if r.Seq > cp || r.Err != nil || !isKeyEvent(r.Event) {
			continue
		}
		ref := keyRef{r.Event.ProjectID, r.Event.KeyID}
		c.makeRoom(ref)
		c.entries[ref] = keyCacheEntry{minSeq: r.Seq}
	}
	return cp, nil
}

// Key implements ReadModel from the cache, or from the underlying read model on a miss.
func (c *KeyCache) Key(ctx context.Context, projectID, keyID string) (KeyView, error) {
	ref := keyRef{projectID, keyID}
	c.mu.RLock()
	e, ok := c.entries[ref]
	applied := c.applied
	c.mu.RUnlock()
	if ok && e.valid {
		return e.view, nil
	}
	v, err := c.ReadModel.Key(ctx, projectID, keyID)
	if err != nil {
		return v, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, ok := c.entries[ref]
	switch {
	case ok && cur.valid && cur.view.LastSeq >= v.LastSeq:
		// Filled meanwhile with the same or newer state.
	case ok && !cur.valid && v.LastSeq < cur.minSeq:
		// Read before a batch that changed the key was applied: too old to keep.
	case !ok && c.applied != applied:
		// A batch was applied while reading; its mark may have been evicted: do not keep.
	default:
		c.makeRoom(ref)
		c.entries[ref] = keyCacheEntry{view: v, valid: true}
	}
	return v, nil
}

// makeRoom evicts an arbitrary entry when the cache is full and ref is not in it.
func (c *KeyCache) makeRoom(ref keyRef) {
	if _, ok := c.entries[ref]; ok || len(c.entries) < c.max {
		return
	}
	for k := range c.entries {
		delete(c.entries, k)
		return
	}
}
