package api

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestStreamPositionIsSharedAndNeverEarlierThanTheRead: reads that arrive while a request for
// the stream's last sequence is in flight do not take its answer (it may predate a write
// acknowledged before they arrived) but share the next request, sent once it is answered;
// NATS sees one request at a time.
func TestStreamPositionIsSharedAndNeverEarlierThanTheRead(t *testing.T) {
	t.Parallel()
	asked := make(chan chan uint64, 4)
	p := &streamPosition{timeout: 10 * time.Second, ask: func(ctx context.Context) (uint64, error) {
		answer := make(chan uint64)
		asked <- answer
		select {
		case seq := <-answer:
			return seq, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}}
	request := func() chan uint64 {
		t.Helper()
		select {
		case a := <-asked:
			return a
		case <-time.After(10 * time.Second):
			t.Fatal("no request was sent")
			return nil
		}
	}
	ctx := context.Background()
	first := make(chan uint64, 1)
	go func() {
		seq, _ := p.last(ctx)
		first <- seq
	}()
	inFlight := request()
	// Reads arriving now, while the first request is in flight.
	const later = 20
	var wg sync.WaitGroup
	got := make(chan uint64, later)
	for range later {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seq, err := p.last(ctx)
			if err != nil {
				t.Error(err)
			}
			got <- seq
		}()
	}
	for p.reads.Load() < later+1 {
		time.Sleep(time.Millisecond)
	}
	inFlight <- 10 // answered with the stream as it was before they arrived
	if seq := <-first; seq != 10 {
		t.Fatalf("the first read got %d, want 10", seq)
	}
	select {
	case seq := <-got:
		t.Fatalf("a read that arrived during the first request took an answer (%d) before the next request", seq)
	case <-time.After(20 * time.Millisecond):
	}
	request() <- 20 // the next request, sent after they all arrived
	wg.Wait()
	close(got)
	for seq := range got {
		if seq != 20 {
			t.Fatalf("a later read got %d, want the next request's 20", seq)
		}
	}
	if n := p.requests.Load(); n != 2 {
		t.Fatalf("%d requests for %d reads, want 2", n, later+1)
	}
	select {
	case <-asked:
		t.Fatal("a request was sent with no read waiting")
	case <-time.After(20 * time.Millisecond):
	}
}
