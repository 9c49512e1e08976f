package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Subscription delivers the stream's messages in order from a starting sequence, through an
// ordered consumer: ephemeral, in memory on the server, recreated by the client after a gap
// or a reconnect. Readers keep their own position (a checkpoint), so nothing durable lives on
// the server.
type Subscription struct {
	cons jetstream.Consumer
	iter jetstream.MessagesContext
}

// SubscribeOption narrows a subscription.
type SubscribeOption func(*jetstream.OrderedConsumerConfig)

// WithSubjects limits a subscription to subject filters (see docs/events.md).
func WithSubjects(filters ...string) SubscribeOption {
	return func(c *jetstream.OrderedConsumerConfig) { c.FilterSubjects = filters }
}

// FromTime starts a subscription at the first message stored at or after t.
func FromTime(t time.Time) SubscribeOption {
	return func(c *jetstream.OrderedConsumerConfig) {
		c.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		c.OptStartSeq = 0
		c.OptStartTime = &t
	}
}

// Subscribe reads every event from stream sequence from (1: the beginning) onward.
func (s *Store) Subscribe(ctx context.Context, from uint64, opts ...SubscribeOption) (*Subscription, error) {
	if from == 0 {
		from = 1
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{s.subj.all()},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		InactiveThreshold: time.Minute,
	}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	cons, err := s.js.OrderedConsumer(ctx, s.cfg.Stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("subscribe from %d: %w: %v", from, ErrUnavailable, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return nil, fmt.Errorf("subscribe from %d: %w: %v", from, ErrUnavailable, err)
	}
	return &Subscription{cons: cons, iter: it}, nil
}

// ErrNoMessage is returned by Next when nothing arrived within its wait.
var ErrNoMessage = errors.New("no message within the wait")

// Next returns the next message, waiting at most wait (and no longer than ctx allows).
func (sub *Subscription) Next(ctx context.Context, wait time.Duration) (RecordedEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	m, err := sub.iter.Next(jetstream.NextContext(ctx))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrMsgIteratorClosed) && ctx.Err() != nil {
			if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return RecordedEvent{}, ErrNoMessage
			}
		}
		if ctx.Err() != nil {
			return RecordedEvent{}, ErrNoMessage
		}
		return RecordedEvent{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	md, err := m.Metadata()
	if err != nil {
		return RecordedEvent{}, fmt.Errorf("message metadata: %w", err)
	}
	r := decode(md.Sequence.Stream, m.Subject(), md.Timestamp, m.Data())
	r.Pending = md.NumPending
	return r, nil
}

// Stop ends the subscription; its consumer disappears from the server.
func (sub *Subscription) Stop() { sub.iter.Stop() }

// ReadRange calls fn for each message with sequence from..until (until 0: up to the stream's
// last sequence when ReadRange starts), in order, and returns the last sequence it read.
// It is what replay tools use: bounded, with no server-side state left behind.
func (s *Store) ReadRange(ctx context.Context, from, until uint64, fn func(RecordedEvent) error, opts ...SubscribeOption) (uint64, error) {
	last, err := s.LastSeq(ctx)
	if err != nil {
		return 0, err
	}
	if until == 0 || until > last {
		until = last
	}
	if from == 0 {
		from = 1
	}
	if from > until {
		return from - 1, nil
	}
	sub, err := s.Subscribe(ctx, from, opts...)
	if err != nil {
		return 0, err
	}
	defer sub.Stop()
	read := from - 1
	for read < until {
		r, err := sub.Next(ctx, 10*time.Second)
		if errors.Is(err, ErrNoMessage) {
			if ctx.Err() != nil {
				return read, ctx.Err()
			}
			// A filtered subscription may have nothing more below until.
			if len(opts) > 0 {
				return read, nil
			}
			continue
		}
		if err != nil {
			return read, err
		}
		if r.Seq > until {
			return read, nil
		}
		read = r.Seq
		if err := fn(r); err != nil {
			return read, err
		}
		if r.Pending == 0 {
			return read, nil
		}
	}
	return read, nil
}
