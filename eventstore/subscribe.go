package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
)

// Subscription delivers the stream's messages in order from a starting sequence, through an
// ordered consumer: ephemeral, in memory on the server, recreated by the client after a gap
// or a reconnect. Readers keep their own position (a checkpoint), so nothing durable lives on
// the server.
type Subscription struct {
	s    *Store
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
	cons, err := s.orderedConsumer(ctx, from, opts)
	if err != nil {
		return nil, err
	}
	// Short pulls with frequent heartbeats: a consumer whose node died, or that the server
	// dropped, is noticed by its missing heartbeats within about two seconds and recreated
	// by nats.go, instead of at JetStream's default 30-second pull expiry.
	it, err := cons.Messages(jetstream.PullMaxMessages(1024),
		jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return nil, fmt.Errorf("subscribe from %d: %w: %w", from, ErrUnavailable, err)
	}
	return &Subscription{s: s, cons: cons, iter: it}, nil
}

// ErrNoMessage is returned by Next when nothing arrived within its wait.
var ErrNoMessage = errors.New("no message within the wait")

// Next returns the next message, waiting at most wait (and no longer than ctx allows).
func (sub *Subscription) Next(ctx context.Context, wait time.Duration) (RecordedEvent, error) {
	m, err := sub.nextRaw(ctx, wait)
	if err != nil {
		return RecordedEvent{}, err
	}
	return sub.s.decode(m), nil
}

// rawMsg is a message as read, before its body is decoded.
type rawMsg struct {
	seq, pending uint64
	subject      string
	stored       time.Time
	data         []byte
	header       nats.Header // for checks of the message's bytes in the decoding stage
}

func (s *Store) decode(m rawMsg) RecordedEvent {
	r := s.decodeMsg(m.seq, m.subject, m.stored, m.header, m.data)
	r.Pending = m.pending
	return r
}

// decodeShared is decode whose event shares the message's bytes.
func (s *Store) decodeShared(m rawMsg) RecordedEvent {
	r := s.decodeWith(domain.UnmarshalEventShared, m.seq, m.subject, m.stored, m.header, m.data)
	r.Pending = m.pending
	return r
}

// nextRaw is Next without decoding, so that decoding can happen elsewhere.
func (sub *Subscription) nextRaw(ctx context.Context, wait time.Duration) (rawMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	m, err := sub.iter.Next(jetstream.NextContext(ctx))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrMsgIteratorClosed) && ctx.Err() != nil {
			if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return rawMsg{}, ErrNoMessage
			}
		}
		if ctx.Err() != nil {
			return rawMsg{}, ErrNoMessage
		}
		return rawMsg{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	md, err := ackMetadata(m) // from the reply subject without allocating, as the bulk reader does
	if err != nil {
		return rawMsg{}, fmt.Errorf("message metadata: %w", err)
	}
	return rawMsg{seq: md.seq, pending: md.pending, subject: m.Subject(), stored: md.stored, data: m.Data(), header: m.Headers()}, nil
}

// Stop ends the subscription; its consumer disappears from the server.
func (sub *Subscription) Stop() { sub.iter.Stop() }

// ReadRange calls fn for each message with sequence from..until (until 0: up to the stream's
// last sequence when ReadRange starts), in order, and returns the last sequence it read.
// It is what replay tools use: bounded, with no server-side state left behind; ReadBatches
// is the same read a batch at a time.
func (s *Store) ReadRange(ctx context.Context, from, until uint64, fn func(RecordedEvent) error, opts ...SubscribeOption) (uint64, error) {
	var last uint64
	read, err := s.ReadBatches(ctx, from, until, func(b []RecordedEvent) error {
		for _, r := range b {
			last = r.Seq
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}, opts...)
	if err != nil && last > 0 {
		return last, err
	}
	return read, err
}
