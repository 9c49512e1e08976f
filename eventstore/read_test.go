package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
)

// A key's history read under a deadline is all of it or ErrUnavailable, never a part: the
// batched direct gets end quietly when their context does (the request helper under them
// reports no error then), which once answered a 200 with only the first events of a key and a
// 404 for a key whose first batch timed out.
func TestKeyHistoryIsWholeOrUnavailable(t *testing.T) {
	s := openStore(t, testenv.NATS(t), eventstore.Config{})
	ctx := context.Background()
	project := "p-history"
	history := []domain.Event{newKeyEvent(t, project)}
	seq, err := s.AppendKeyEvents(ctx, 0, history)
	if err != nil {
		t.Fatalf("append the creation: %v", err)
	}
	const renames = 700 // three batches of the reader's 256
	for i := range renames {
		evs := update(t, history, domain.UpdateKey{Description: ptr(fmt.Sprintf("rename %d", i))})
		if seq, err = s.AppendKeyEvents(ctx, seq, evs); err != nil {
			t.Fatalf("append rename %d: %v", i, err)
		}
		history = append(history, evs...)
	}
	keyID := history[0].KeyID
	start := time.Now()
	if got, err := s.LoadKey(ctx, project, keyID); err != nil || len(got) != len(history) {
		t.Fatalf("without a deadline: %d events, %v; want %d", len(got), err, len(history))
	}
	t.Logf("a whole read without a deadline took %v", time.Since(start))

	whole, partial, unavailable := 0, 0, 0
	for i := range 100 {
		deadline := time.Duration(100+i*i*20) * time.Microsecond // 0.1 to 200 ms, most of them short
		dctx, cancel := context.WithTimeout(ctx, deadline)
		got, err := s.LoadKey(dctx, project, keyID)
		cancel()
		switch {
		case err == nil && len(got) == len(history):
			whole++
		case err == nil:
			partial++
			t.Errorf("deadline %v: LoadKey returned %d of the key's %d events without an error", deadline, len(got), len(history))
		case errors.Is(err, eventstore.ErrUnavailable):
			unavailable++
		default:
			t.Errorf("deadline %v: LoadKey: %v, want the history or ErrUnavailable", deadline, err)
		}
		if partial > 3 {
			break
		}
	}
	// The server may still be answering the batches the interrupted reads left behind (their
	// inboxes gone): a whole read comes once it has, well within the test's patience.
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := s.LoadKey(ctx, project, keyID)
		if err == nil && len(got) == len(history) {
			break
		}
		if err == nil || !errors.Is(err, eventstore.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("after the interrupted reads: %d events, %v; want %d", len(got), err, len(history))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("100 reads under deadlines: %d whole, %d unavailable, %d partial", whole, unavailable, partial)
	if unavailable == 0 {
		t.Fatalf("no deadline was short enough to interrupt a read: the test tested nothing")
	}
}
