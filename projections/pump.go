package projections

import (
	"context"
	"errors"
	"time"

	"github.com/keyledger/keyledger/eventstore"
)

// pump reads a subscription in its own goroutine into a buffered channel, so that the
// projector can take every event that has already arrived without waiting for more.
//
// Why: the stream's pending count on a message says how many followed it when the server
// delivered it, not when the projector reads it. Under load the server pushes each event as
// it is appended, with nothing pending yet, while the projector is busy in a transaction; a
// batch cut at "nothing pending" was then one event long, and the projector committed one
// transaction per event (profiled: 9,687 batches for 9,775 events at 64 clients). Draining
// what is buffered makes the next batch everything that arrived during the previous commit:
// group commit, with no added wait when the system is idle.
type pump struct {
	ch     chan pumped
	cancel context.CancelFunc
	done   chan struct{}
}

type pumped struct {
	r   eventstore.RecordedEvent
	err error
}

// startPump reads sub until ctx is done or the subscription fails; the failure is delivered
// as the last item. idle paces the reads when nothing arrives.
func startPump(ctx context.Context, sub *eventstore.Subscription, buffer int, idle time.Duration) *pump {
	ctx, cancel := context.WithCancel(ctx)
	p := &pump{ch: make(chan pumped, buffer), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for ctx.Err() == nil {
			r, err := sub.Next(ctx, idle)
			if errors.Is(err, eventstore.ErrNoMessage) {
				continue
			}
			select {
			case p.ch <- pumped{r, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return p
}

// stopWith ends the pump's goroutine and the subscription it reads. The subscription is
// stopped first so that a read blocked inside it (a consumer being recreated against a
// cluster without a leader) returns; the goroutine is waited for a bounded time only, so
// that a read that ignores both can never wedge the projector (it ends by itself later).
func (p *pump) stopWith(sub *eventstore.Subscription) {
	p.cancel()
	sub.Stop()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
	}
}

// collect reads one batch: it waits up to idle for a first event, then takes every event
// that has already arrived, up to max; while the stream says more are pending (catching up
// after a start or a lag) it waits up to batchWait for them. It returns an empty batch when
// nothing arrived, and an error only when the subscription failed.
func (p *pump) collect(ctx context.Context, batch []eventstore.RecordedEvent, max int, idle, batchWait time.Duration,
	seen func(eventstore.RecordedEvent)) ([]eventstore.RecordedEvent, error) {
	timer := time.NewTimer(idle)
	defer timer.Stop()
	// take adds a received item to the batch; false means the subscription failed.
	var err error
	take := func(it pumped) bool {
		if it.err != nil {
			err = it.err
			return false
		}
		batch = append(batch, it.r)
		seen(it.r)
		return true
	}
	select {
	case it := <-p.ch:
		if !take(it) {
			return batch, err
		}
	case <-timer.C:
		return batch, nil
	case <-ctx.Done():
		return batch, nil
	}
	for len(batch) < max {
		select {
		case it := <-p.ch: // already arrived: no waiting
			if !take(it) {
				return batch, err
			}
			continue
		default:
		}
		if batch[len(batch)-1].Pending == 0 {
			return batch, nil
		}
		timer.Reset(batchWait)
		select {
		case it := <-p.ch:
			if !take(it) {
				return batch, err
			}
		case <-timer.C:
			return batch, nil
		case <-ctx.Done():
			return batch, nil
		}
	}
	return batch, nil
}
