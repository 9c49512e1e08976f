package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/projections"
)

// Watermill adapters over the event store. The store, not Watermill, knows JetStream: the
// subscriber reads through eventstore's ordered subscription and the publisher writes
// through eventstore's dead-letter method, so that Watermill's router (recovery, retries,
// correlation ids, poison queue) runs over keyledger's stream without a second JetStream
// client with its own ideas of subjects and consumers.

// Metadata keys the subscriber puts on every message.
const (
	metaSeq         = "stream_seq"   // the message's stream sequence
	metaSubject     = "subject"      // its subject
	metaStoredAt    = "stored_at"    // when the server stored it, RFC 3339
	metaPending     = "pending"      // messages after it in the subscription when delivered
	metaDecodeError = "decode_error" // set when the message is not a valid event: why
	metaLines       = "lines"        // set on a run of valid events: how many lines its payload holds
)

// storeSubscriber is a Watermill Subscriber of the event stream. Subscribe's topic is a
// subject filter. The stream is read in batches decoded on every core
// (eventstore.FollowBatches), and the router gets, in stream order, one message for each run
// of valid events, its payload their lines as events tail prints them (metaLines set), and one
// message for each message that is not an event, its payload the raw bytes, so that the
// poison queue sets it aside exactly as before. Messages are delivered one at a time: the
// next only after the previous was acknowledged. A message nacked more than maxRedeliveries
// times is skipped (reported through onGiveUp) so that one message can never stall the
// reader. Every message still passes the router's middleware (recovery, retries,
// correlation ids, poison queue); only the cost of a router round trip per event is gone.
type storeSubscriber struct {
	store *eventstore.Store
	// from is the first stream sequence to read (1: the beginning), opts narrow the read
	// further (eventstore.FromTime).
	from uint64
	opts []eventstore.SubscribeOption
	// until, when not 0, ends the subscription after the message at or past this sequence
	// (closing the channel); 0 follows the stream until the context ends.
	until           uint64
	maxRedeliveries int
	onGiveUp        func(seq uint64, subject string)
	// since is the FromTime start, if any: a filter whose last message is older has nothing
	// to deliver.
	since time.Time
	// onReset is told each time a follow is dropped and read again after the last sequence
	// delivered, and why (a lost consumer, a stall).
	onReset func(reason error, after uint64)
	// order, when set, refuses key events out of their key's version order like messages
	// that are not events (set aside, reported on stderr, not printed).
	order *projections.VersionOrder

	mu     sync.Mutex
	err    error // why a subscription ended early
	cancel []context.CancelFunc
	wg     sync.WaitGroup
}

// Subscribe starts reading the stream on the subject filter topic.
func (s *storeSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	ctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.cancel = append(s.cancel, cancel)
	s.mu.Unlock()
	out := make(chan *message.Message)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		defer cancel()
		s.read(ctx, topic, out)
	}()
	return out, nil
}

// maxResubscribes bounds how often in a row a failed bounded read is started again (the NATS
// server restarting, a connection lost) before the reader gives up. A follow never gives up:
// it reads again from where delivery stopped, backing off up to 2 s, until interrupted, so
// that a failover of the cluster never leaves it hanging.
const maxResubscribes = 5

// stallTimeout is how long a follow may receive nothing while its subject filter has
// messages beyond the last one delivered before it takes its consumer for lost.
const stallTimeout = 3 * time.Second

// errReachedEnd ends a bounded read at the subscriber's until.
var errReachedEnd = errors.New("reached the end")

func (s *storeSubscriber) read(ctx context.Context, topic string, out chan<- *message.Message) {
	var last uint64 // the last sequence delivered
	lines := make([]byte, 0, 64<<10)
	failures, backoff := 0, 100*time.Millisecond
	handle := func(batch []eventstore.RecordedEvent) error {
		failures, backoff = 0, 100*time.Millisecond
		run := 0 // where the current run of printable events starts
		flush := func(end int) bool {
			if end == run {
				return true
			}
			msg := linesMessage(batch[run:end], lines)
			run = end
			return s.deliver(ctx, msg, batch[end-1].Seq, batch[end-1].Subject, out)
		}
		for i, r := range batch {
			if reason := s.order.Refuse(r); reason != "" {
				// A genuine event out of its key's version order: refused like garbage.
				r.Err = fmt.Errorf("%w: %s", domain.ErrInvalidEvent, reason)
			}
			if r.Err == nil {
				n := len(lines)
				var err error
				if lines, err = domain.AppendEvent(lines, r.Event); err == nil {
					lines = append(lines, '\n')
					continue
				}
				lines = lines[:n] // the handler refuses it, on its own
			}
			if !flush(i) {
				return ctx.Err()
			}
			lines = lines[:0]
			run = i + 1
			if !s.deliver(ctx, toMessage(r), r.Seq, r.Subject, out) {
				return ctx.Err()
			}
		}
		if !flush(len(batch)) {
			return ctx.Err()
		}
		lines = lines[:0]
		last = batch[len(batch)-1].Seq
		if s.until != 0 && last >= s.until {
			return errReachedEnd
		}
		return nil
	}
	opts := append([]eventstore.SubscribeOption{eventstore.WithSubjects(topic)}, s.opts...)
	from := s.from
	for ctx.Err() == nil {
		var err error
		if s.until != 0 {
			_, err = s.store.ReadBatches(ctx, from, s.until, handle, opts...)
			if err == nil {
				return
			}
		} else {
			err = s.followWatched(ctx, topic, from, handle, opts)
		}
		if errors.Is(err, errReachedEnd) || ctx.Err() != nil {
			return
		}
		if s.until == 0 && s.onReset != nil {
			s.onReset(err, last)
		}
		// Read again from where delivery stopped (a bounded number of times when bounded).
		failures++
		if s.until != 0 && failures > maxResubscribes {
			s.fail(fmt.Errorf("read the event stream: %w", err))
			return
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, 2*time.Second)
		if last != 0 {
			from, opts = last+1, opts[:1]
		}
	}
}

// followWatched follows the stream with FollowBatches, and ends the follow with an error
// when it stalls: nothing handled for stallTimeout while the filter has messages beyond the
// last one delivered (a consumer lost without an error reaching the reader).
func (s *storeSubscriber) followWatched(ctx context.Context, topic string, from uint64, handle func([]eventstore.RecordedEvent) error, opts []eventstore.SubscribeOption) error {
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var seen atomic.Int64
	var delivered atomic.Uint64
	seen.Store(time.Now().UnixNano())
	delivered.Store(from - 1)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-fctx.Done():
				return
			case <-tick.C:
			}
			if time.Since(time.Unix(0, seen.Load())) < stallTimeout {
				continue
			}
			if err := s.stalled(fctx, topic, delivered.Load()); err != nil {
				cancel(err)
				return
			}
			seen.Store(time.Now().UnixNano())
		}
	}()
	_, err := s.store.FollowBatches(fctx, from, func(b []eventstore.RecordedEvent) error {
		seen.Store(time.Now().UnixNano())
		if err := handle(b); err != nil {
			return err
		}
		delivered.Store(b[len(b)-1].Seq)
		return nil
	}, opts...)
	cancel(nil)
	<-watched
	if cause := context.Cause(fctx); ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if err == nil && ctx.Err() == nil {
		return errors.New("the follow ended")
	}
	return err
}

// stalled is an error when the subject filter has a message beyond the last one delivered:
// nothing arrived though something should have. A stream it cannot ask is no stall (the
// subscription's heartbeats notice a dead connection).
func (s *storeSubscriber) stalled(ctx context.Context, topic string, delivered uint64) error {
	lastSeq, stored, err := s.store.LastOf(ctx, topic)
	if err != nil || lastSeq <= delivered || stored.Before(s.since) {
		return nil
	}
	return fmt.Errorf("nothing received for %s while the stream has messages up to %d on %s", stallTimeout, lastSeq, topic)
}

// deliver hands one message to the router and waits for its ack, redelivering a nacked one a
// bounded number of times. It returns false when ctx ended first.
func (s *storeSubscriber) deliver(ctx context.Context, msg *message.Message, seq uint64, subject string, out chan<- *message.Message) bool {
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			msg = msg.Copy()
		}
		msg.SetContext(ctx)
		select {
		case out <- msg:
		case <-ctx.Done():
			return false
		}
		select {
		case <-msg.Acked():
			return true
		case <-msg.Nacked():
			if attempt >= s.maxRedeliveries {
				if s.onGiveUp != nil {
					s.onGiveUp(seq, subject)
				}
				return true
			}
		case <-ctx.Done():
			return false
		}
	}
}

// linesMessage is the message of a run of valid events: their lines, printed as they are.
// Its payload is lines itself, not a copy: the subscriber delivers one message at a time and
// writes the next run into lines only after the router acknowledged this one (a copy per run
// was a large allocation each time, and a fifth of tail's CPU went to collecting them and
// giving their memory back).
func linesMessage(run []eventstore.RecordedEvent, lines []byte) *message.Message {
	first, last := run[0], run[len(run)-1]
	msg := message.NewMessage("seq-"+strconv.FormatUint(first.Seq, 10)+"-"+strconv.FormatUint(last.Seq, 10), lines)
	msg.Metadata.Set(metaLines, strconv.Itoa(len(run)))
	msg.Metadata.Set(metaSeq, strconv.FormatUint(last.Seq, 10))
	msg.Metadata.Set(metaPending, strconv.FormatUint(last.Pending, 10))
	return msg
}

func toMessage(r eventstore.RecordedEvent) *message.Message {
	id := r.Event.ID
	if r.Err != nil || id == "" {
		id = "seq-" + strconv.FormatUint(r.Seq, 10)
	}
	msg := message.NewMessage(id, r.Raw)
	msg.Metadata.Set(metaSeq, strconv.FormatUint(r.Seq, 10))
	msg.Metadata.Set(metaSubject, r.Subject)
	msg.Metadata.Set(metaStoredAt, r.Time.UTC().Format(time.RFC3339Nano))
	msg.Metadata.Set(metaPending, strconv.FormatUint(r.Pending, 10))
	if r.Err != nil {
		msg.Metadata.Set(metaDecodeError, r.Err.Error())
	} else if r.Event.RequestID != "" {
		// The request that caused the event: what CorrelationID carries to anything the
		// handler produces (here, dead letters).
		middleware.SetCorrelationID(r.Event.RequestID, msg)
	}
	return msg
}

func (s *storeSubscriber) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// Err is why a subscription ended before its end or its context (nil if none did).
func (s *storeSubscriber) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends every subscription and waits for their readers.
func (s *storeSubscriber) Close() error {
	s.mu.Lock()
	for _, c := range s.cancel {
		c()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// deadLetterPublisher is a Watermill Publisher onto the event store's dead-letter stream,
// for the PoisonQueue middleware: the topic is the consumer name the message is set aside
// under, and the original sequence, subject and reason come from the message's metadata.
type deadLetterPublisher struct {
	store *eventstore.Store
	// onSetAside reports each message set aside (already: it was there before).
	onSetAside func(d eventstore.DeadLetter, already bool)
}

// Publish sets each message aside; the first failure is returned (the router then nacks).
func (p *deadLetterPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, msg := range msgs {
		seq, err := strconv.ParseUint(msg.Metadata.Get(metaSeq), 10, 64)
		if err != nil {
			return fmt.Errorf("dead letter %s: no stream sequence in its metadata", msg.UUID)
		}
		stored, _ := time.Parse(time.RFC3339Nano, msg.Metadata.Get(metaStoredAt))
		d := eventstore.DeadLetter{
			Seq: seq, Subject: msg.Metadata.Get(metaSubject), Time: stored, Raw: msg.Payload,
			Reason: msg.Metadata.Get(middleware.ReasonForPoisonedKey), Consumer: topic,
		}
		already, err := p.store.SetAside(msg.Context(), d)
		if err != nil {
			return err
		}
		if p.onSetAside != nil {
			p.onSetAside(d, already)
		}
	}
	return nil
}

// Close releases nothing: the store's connection belongs to the caller.
func (p *deadLetterPublisher) Close() error { return nil }
