package commands

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestKeyLockTimeoutIsErrKeyBusy: a command that gives up waiting behind another command on
// the same key says so, rather than blaming the event store.
func TestKeyLockTimeoutIsErrKeyBusy(t *testing.T) {
	t.Parallel()
	l := newKeyLocks()
	unlock, err := l.lock(context.Background(), "p", "k")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = l.lock(ctx, "p", "k")
	if !errors.Is(err, ErrKeyBusy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock on a held key: %v, want ErrKeyBusy wrapping the deadline", err)
	}
}
