package commands

import (
	"context"
	"fmt"
	"hash/maphash"
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
