package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"
	flag "github.com/spf13/pflag"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/projections"
)

// tailConsumer is the name events tail sets messages aside under on the dead-letter stream.
const tailConsumer = "events-tail"

// errOutput marks a failure to write stdout: the tail ends, nothing is retried or set aside.
var errOutput = errors.New("write events")

// eventsTail prints the key events of the stream (one project's with --project), oldest
// first, one JSON document per line, in the current schema version. Without --follow it
// stops after the last event present when it started; with it, at SIGINT or SIGTERM.
func eventsTail(fs *flag.FlagSet) func(*invocation) error {
	project := fs.String("project", "", "only the key events of project `ID`")
	since := fs.String("since", "", "start with the first event stored at or after `RFC3339` time")
	fromSeq := fs.Uint64("from-seq", 0, "start at stream sequence `N` (default: the beginning)")
	follow := fs.Bool("follow", false, "keep printing new events until interrupted")
	return func(inv *invocation) error {
		var start time.Time
		switch {
		case *since != "" && *fromSeq != 0:
			return usagef("events tail: --since and --from-seq cannot be combined")
		case *since != "":
			t, err := time.Parse(time.RFC3339Nano, *since)
			if err != nil {
				return usagef("events tail: --since %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", *since)
			}
			start = t
		}
		if *project != "" {
			id, err := uuid.Parse(*project)
			if err != nil || id.String() != *project {
				return usagef("events tail: --project %q is not a project id (a lowercase UUID)", *project)
			}
		}
		if err := checkNATSURLs(inv.settings); err != nil {
			return err
		}
		nc, err := connectNATS(inv.settings)
		if err != nil {
			return err
		}
		defer nc.Close()
		// Only events keysd wrote are events: the secret's event key checks each one.
		hasher, err := loadHasher(inv.secretFile)
		if err != nil {
			return err
		}
		store, err := eventstore.Open(inv.ctx, nc, eventstore.Config{EventKey: hasher.EventKey()})
		if err != nil {
			return fmt.Errorf("open event store on NATS at %s: %w", eventstore.RedactURLs(inv.natsURL), err)
		}
		defaultMemorySources(inv.getenv).tuneBulkRead(0)
		t := &tail{inv: inv, store: store, out: bufio.NewWriterSize(inv.stdout, 256<<10)} // few writes; flushed whenever caught up
		return t.run(store.KeySubjectFilter(*project), max(*fromSeq, 1), start, *follow)
	}
}

// tail is one run of events tail.
type tail struct {
	inv   *invocation
	store *eventstore.Store

	outMu    sync.Mutex
	out      *bufio.Writer
	outErr   error
	setAside atomic.Uint64 // messages set aside on the dead-letter stream
	skipped  atomic.Uint64 // messages that could not be set aside, skipped
	resets   atomic.Uint64 // subscriptions dropped and read again
}

func (t *tail) run(filter string, from uint64, since time.Time, follow bool) error {
	ctx, cancel := context.WithCancel(t.inv.ctx)
	defer cancel()
	// Each key's version is followed from where the tail starts: exactly from the stream's
	// beginning, from the first event seen of each key otherwise.
	sub := &storeSubscriber{store: t.store, from: from, maxRedeliveries: 3, onGiveUp: t.gaveUp, since: since, onReset: t.reset,
		order: projections.NewVersionOrder(from > 1 || !since.IsZero())}
	if !since.IsZero() {
		sub.opts = append(sub.opts, eventstore.FromTime(since))
	}
	if !follow {
		// The end is the last message on the filter now; nothing after it is waited for.
		last, stored, err := t.store.LastOf(ctx, filter)
		if err != nil {
			return err
		}
		if last == 0 || last < from || stored.Before(since) {
			return nil
		}
		sub.until = last
	}

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, watermill.NopLogger{})
	if err != nil {
		return err
	}
	poison, err := middleware.PoisonQueueWithFilter(
		&deadLetterPublisher{store: t.store, onSetAside: t.reportSetAside}, tailConsumer,
		func(err error) bool { return errors.Is(err, domain.ErrInvalidEvent) })
	if err != nil {
		return err
	}
	router.AddMiddleware(
		middleware.CorrelationID,
		poison,
		middleware.Retry{
			MaxRetries:      3,
			InitialInterval: 100 * time.Millisecond,
			MaxInterval:     time.Second,
			Multiplier:      2,
			// An invalid event stays invalid and a closed stdout stays closed: only the
			// unexpected (a recovered panic) is worth another try.
			ShouldRetry: func(p middleware.RetryParams) bool {
				return !errors.Is(p.Err, domain.ErrInvalidEvent) && !errors.Is(p.Err, errOutput)
			},
		}.Middleware,
		middleware.Recoverer,
	)
	router.AddConsumerHandler(tailConsumer, filter, sub, func(msg *message.Message) error {
		if err := t.print(msg); err != nil {
			if errors.Is(err, errOutput) {
				cancel()
			}
			return err
		}
		return nil
	})
	runErr := router.Run(ctx)
	flushErr := t.flush()
	switch {
	case t.outputErr() != nil:
		return t.outputErr()
	case sub.Err() != nil:
		return sub.Err()
	case runErr != nil:
		return runErr
	}
	return flushErr
}

// print writes one event as a line of JSON, or refuses a message that is not an event.
func (t *tail) print(msg *message.Message) error {
	var lines []byte
	if msg.Metadata.Get(metaLines) != "" {
		lines = msg.Payload // a run of valid events, printed by the subscriber
	} else {
		if reason := msg.Metadata.Get(metaDecodeError); reason != "" {
			return notAnEvent(reason)
		}
		e, err := domain.UnmarshalEvent(msg.Payload)
		if err != nil {
			return notAnEvent(err.Error())
		}
		line, err := domain.MarshalEvent(e) // the current schema version, whatever was stored
		if err != nil {
			return notAnEvent(err.Error())
		}
		lines = append(line, '\n')
	}
	t.outMu.Lock()
	defer t.outMu.Unlock()
	if t.outErr != nil {
		return t.outErr
	}
	_, err := t.out.Write(lines)
	if err == nil && msg.Metadata.Get(metaPending) == "0" {
		err = t.out.Flush() // caught up: show what there is now
	}
	if err != nil {
		t.outErr = fmt.Errorf("%w: %v", errOutput, err)
	}
	return t.outErr
}

func (t *tail) flush() error {
	t.outMu.Lock()
	defer t.outMu.Unlock()
	if t.outErr != nil {
		return t.outErr
	}
	return t.out.Flush()
}

func (t *tail) outputErr() error {
	t.outMu.Lock()
	defer t.outMu.Unlock()
	return t.outErr
}

// reportSetAside logs one line on stderr for each message that is not an event.
func (t *tail) reportSetAside(d eventstore.DeadLetter, already bool) {
	n := t.setAside.Add(1)
	where := "set aside on " + t.store.DeadLetterStream()
	if already {
		where = "already on " + t.store.DeadLetterStream()
	}
	t.stderrf("skipped stream sequence %d on %s, not an event (%s; %d so far): %s",
		d.Seq, d.Subject, where, n, oneLine(d.Reason))
}

// gaveUp reports a message that could not be handled nor set aside.
func (t *tail) gaveUp(seq uint64, subject string) {
	n := t.skipped.Add(1)
	t.stderrf("skipped stream sequence %d on %s: could not handle it nor set it aside on %s (%d so far)",
		seq, subject, t.store.DeadLetterStream(), n)
}

// reset reports a subscription dropped and read again after sequence after (a lost consumer
// or a stall, in a failover of the cluster), with how many so far.
func (t *tail) reset(reason error, after uint64) {
	n := t.resets.Add(1)
	t.stderrf("warning: reading the stream again after sequence %d (consumer resets: %d): %v", after, n, reason)
}

func (t *tail) stderrf(format string, a ...any) {
	fmt.Fprintf(t.inv.stderr, "keysctl: events tail: "+format+"\n", a...)
}

// notAnEvent is a handler's refusal of a message that is not a valid event; its text is the
// reason recorded on the dead letter (the sequence and subject travel as headers).
type notAnEvent string

func (e notAnEvent) Error() string { return string(e) }
func (e notAnEvent) Unwrap() error { return domain.ErrInvalidEvent }
