package commands

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"

	"github.com/keyledger/keyledger/domain"
)

// keyLocks serialises commands on one key within this process, so that local requests queue
// instead of racing each other through the event store's concurrency check; writers in other
// processes are still caught by that check. Locks are striped: two keys may share a stripe,
// which only costs a little waiting.
type keyLocks struct {
	seed    maphash.Seed
	stripes [1024]chan struct{}
}

func newKeyLocks() *keyLocks {
	l := &keyLocks{seed: maphash.MakeSeed()}
	for i := range l.stripes {
		l.stripes[i] = make(chan struct{}, 1)
	}
	return l
}

// lock waits for the key's stripe, or until ctx ends: a queue of commands behind a slow
// append (the event store gone, say) gives up with the request instead of piling up. Giving
// up is ErrKeyBusy wrapping ctx's error.
func (l *keyLocks) lock(ctx context.Context, projectID, keyID string) (unlock func(), err error) {
	h := maphash.String(l.seed, projectID+"/"+keyID)
	stripe := l.stripes[h%uint64(len(l.stripes))]
	select {
	case stripe <- struct{}{}:
		return func() { <-stripe }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrKeyBusy, ctx.Err())
	}
}

// recentWrites remembers the state of the keys this process last wrote or loaded, with the
// stream sequence of their last event: a command starts from it without asking the read
// model. An entry is stale only when another process wrote the key since; the append's
// concurrency check refuses the command then, and the retry reloads the key from the store.
// It holds at most max keys (a bounded cache: an evicted key is loaded again).
type recentWrites struct {
	mu      sync.Mutex
	entries map[string]recentWrite
	max     int
}

type recentWrite struct {
	key domain.KeySnapshot
	seq uint64
}

func newRecentWrites(max int) *recentWrites {
	return &recentWrites{entries: make(map[string]recentWrite), max: max}
}

func (r *recentWrites) get(projectID, keyID string) (recentWrite, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.entries[projectID+"/"+keyID]
	return w, ok
}

func (r *recentWrites) put(key domain.KeySnapshot, seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.entries) >= r.max {
		for k := range r.entries { // drop an arbitrary entry; it is only a shortcut
			delete(r.entries, k)
			break
		}
	}
	r.entries[key.ProjectID+"/"+key.ID] = recentWrite{key: key, seq: seq}
}
