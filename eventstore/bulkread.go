package eventstore

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
)

// Reading the stream in bulk, for replays, verification and catching up (keysctl replay,
// verify, events tail). One goroutine, nats.go's delivery of an ordered consumer, gathers
// the raw messages into batches; every core decodes batches side by side (decoding, and any
// check of a message's bytes, is the parallel stage); the caller gets the batches back in
// stream order. Nothing is decoded or handed over one message at a time, and the decoded
// strings share the message's bytes (domain.UnmarshalEventShared) instead of copying them.

// ReadBatchSize is how many messages a batch holds at most.
const ReadBatchSize = 512

// ReadPull is how many messages the bulk reader's ordered consumer asks for at a time
// (jetstream.PullMaxMessages; nats.go asks for more when half have arrived). Larger pulls
// cost the server and nats.go less a message: reading the 1,000,000-event stream of
// docs/performance.md, nats-server's CPU 5.2-8.3 s at 1024, 4.3-4.5 s at 8192, the reader's
// 4.0-4.7 s and 3.4-3.7 s (load 6 to 10). At most about 4 MB of events of keysd's size.
const ReadPull = 8192

// readIdle is how long a bounded read on a subject filter waits for a message before it
// takes it that nothing more matches below its end.
const readIdle = 10 * time.Second

// ReadBatches calls fn with the messages from..until (until 0: up to the stream's last
// sequence when it starts), in stream order, in batches of at most ReadBatchSize, and returns
// the last sequence it read. A batch is the caller's: fn may keep it and hand it on. A read
// on a subject filter (WithSubjects) ends at the last matching message before until.
func (s *Store) ReadBatches(ctx context.Context, from, until uint64, fn func([]RecordedEvent) error, opts ...SubscribeOption) (uint64, error) {
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
	return s.readBatches(ctx, from, until, len(opts) > 0, fn, opts)
}

// ReadKeyBatches is ReadBatches of one key's events up to stream sequence until (0: the
// stream's last), for a history too long to read with direct gets (LoadKey): fn gets them
// oldest first, in batches, as they are decoded. A key without any event is
// domain.ErrKeyNotFound (nothing read); one whose events all come after until gets no batch.
func (s *Store) ReadKeyBatches(ctx context.Context, projectID, keyID string, until uint64, fn func([]RecordedEvent) error) error {
	if !validToken(projectID) || !validToken(keyID) {
		return domain.ErrKeyNotFound
	}
	filter := s.subj.key(projectID, keyID)
	// A filtered read ends at the filter's last message, or at the first one past until; a
	// filter without any message would only end after readIdle.
	last, _, err := s.LastOf(ctx, filter)
	if err != nil {
		return fmt.Errorf("read key %s: %w", keyID, err)
	}
	if last == 0 {
		return domain.ErrKeyNotFound
	}
	if until == 0 || until > last {
		until = last
	}
	if _, err := s.ReadBatches(ctx, 1, until, fn, WithSubjects(filter)); err != nil {
		return fmt.Errorf("read key %s: %w", keyID, err)
	}
	return nil
}

// FollowBatches is ReadBatches without an end: it hands on every message from sequence from
// on, a batch as soon as the reader has caught up, until ctx ends (nil error) or reading
// fails. It returns the last sequence it handed on.
func (s *Store) FollowBatches(ctx context.Context, from uint64, fn func([]RecordedEvent) error, opts ...SubscribeOption) (uint64, error) {
	if from == 0 {
		from = 1
	}
	last, err := s.readBatches(ctx, from, 0, false, fn, opts)
	if err != nil && ctx.Err() != nil {
		err = nil
	}
	return last, err
}

// batch is one batch on its way through the stages.
type batch struct {
	raw  []rawMsg
	out  []RecordedEvent
	done chan struct{}
}

// readBatches runs the stages; until 0 follows the stream.
func (s *Store) readBatches(ctx context.Context, from, until uint64, filtered bool, fn func([]RecordedEvent) error, opts []SubscribeOption) (uint64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cons, keep, err := s.bulkConsumer(ctx, from, opts)
	if err != nil {
		return 0, err
	}
	workers := max(1, runtime.GOMAXPROCS(0))
	jobs := make(chan *batch, 2*workers)
	ordered := make(chan *batch, 4*workers)

	// The reader: nats.go calls gather on its delivery goroutine, one message at a time.
	var (
		mu       sync.Mutex
		cur      *batch
		ended    bool
		readErr  error
		lastSeen = time.Now()
		end      = make(chan struct{})
	)
	finish := func(err error) { // under mu
		if ended {
			return
		}
		ended, readErr = true, err
		close(end)
	}
	send := func(b *batch) bool {
		select {
		case jobs <- b:
		case <-ctx.Done():
			return false
		}
		select {
		case ordered <- b:
			return true
		case <-ctx.Done():
			return false
		}
	}
	gather := func(m jetstream.Msg) {
		md, err := ackMetadata(m)
		mu.Lock()
		defer mu.Unlock()
		if ended {
			return
		}
		lastSeen = time.Now()
		if err != nil {
			finish(fmt.Errorf("message metadata: %w", err))
			return
		}
		seq := md.seq
		if until != 0 && seq > until {
			if cur != nil && !send(cur) {
				finish(ctx.Err())
				return
			}
			cur = nil
			finish(nil)
			return
		}
		if subject := m.Subject(); keep == "" || strings.HasPrefix(subject, keep) {
			if cur == nil {
				cur = &batch{raw: make([]rawMsg, 0, ReadBatchSize), done: make(chan struct{})}
			}
			cur.raw = append(cur.raw, rawMsg{seq: seq, pending: md.pending, subject: subject, stored: md.stored, data: m.Data(), header: m.Headers()})
		}
		atEnd := until != 0 && (seq >= until || md.pending == 0)
		if cur != nil && (len(cur.raw) == ReadBatchSize || md.pending == 0 || atEnd) {
			if !send(cur) {
				finish(ctx.Err())
				return
			}
			cur = nil
		}
		if atEnd {
			finish(nil)
		}
	}
	cc, err := cons.Consume(gather, jetstream.PullMaxMessages(ReadPull),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			// The ordered consumer recreates itself after anything but a closed connection.
			if errors.Is(err, jetstream.ErrConnectionClosed) {
				mu.Lock()
				finish(fmt.Errorf("%w: %w", ErrUnavailable, err))
				mu.Unlock()
			}
		}))
	if err != nil {
		return 0, fmt.Errorf("read from %d: %w: %w", from, ErrUnavailable, err)
	}

	// The watcher ends the reader: at the end, when ctx ends, or when a bounded filtered
	// read has had nothing for readIdle. Then it closes the stages' channels.
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-end:
			case <-ctx.Done():
				mu.Lock()
				finish(ctx.Err())
				mu.Unlock()
			case <-tick.C:
				mu.Lock()
				if until != 0 && filtered && time.Since(lastSeen) > readIdle {
					if cur != nil && send(cur) {
						cur = nil
					}
					finish(nil)
				}
				mu.Unlock()
				continue
			}
			cc.Stop()
			mu.Lock() // a gather still running has finished with the channels
			close(jobs)
			close(ordered)
			mu.Unlock()
			return
		}
	}()

	for range workers {
		go func() {
			for b := range jobs {
				b.out = make([]RecordedEvent, len(b.raw))
				for i, m := range b.raw {
					b.out[i] = s.decodeShared(m)
				}
				b.raw = nil
				close(b.done)
			}
		}()
	}

	read := from - 1
	var fnErr error
	for b := range ordered {
		<-b.done
		if fnErr != nil {
			continue // let the stages drain
		}
		if err := fn(b.out); err != nil {
			fnErr = err
			cancel()
			continue
		}
		read = b.out[len(b.out)-1].Seq
	}
	<-watched
	switch {
	case fnErr != nil:
		return read, fnErr
	case readErr != nil:
		return read, readErr
	}
	return read, nil
}

// bulkConsumer is the consumer a bulk read goes through, and the subject prefix the reader
// keeps of what it delivers ("": everything). A read of every project's key events
// (KeySubjectFilter("")) asks the server for every message of the stream and drops the
// few others itself: a filter of the stream's own subject costs the server nothing, but
// one of part of it is matched against every message's subject, and that costs more the
// more subjects the stream has (one a key and type): reading the 5,000,000-event stream of
// docs/performance.md, nats-server's CPU 45 s on the key events' filter, 30 s on none.
func (s *Store) bulkConsumer(ctx context.Context, from uint64, opts []SubscribeOption) (jetstream.Consumer, string, error) {
	var cfg jetstream.OrderedConsumerConfig
	for _, o := range opts {
		o(&cfg)
	}
	keys := slices.Equal(cfg.FilterSubjects, []string{s.subj.keys()})
	if keys {
		opts = append(slices.Clip(opts), WithSubjects(s.subj.all()))
	}
	cons, err := s.orderedConsumer(ctx, from, opts)
	if err != nil || !keys {
		return cons, "", err
	}
	return cons, strings.TrimSuffix(s.subj.keys(), ">"), nil
}

// orderedConsumer is the consumer Subscribe reads through, not yet started.
func (s *Store) orderedConsumer(ctx context.Context, from uint64, opts []SubscribeOption) (jetstream.Consumer, error) {
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
		return nil, fmt.Errorf("subscribe from %d: %w: %w", from, ErrUnavailable, err)
	}
	return cons, nil
}

// ackMeta is what the bulk reader takes from a message's metadata.
type ackMeta struct {
	seq, pending uint64
	stored       time.Time
}

// ackMetadata reads a message's stream sequence, pending count and time from its reply
// subject, as jetstream.Msg.Metadata does but without allocating:
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>                        (9 tokens)
//	$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>[.<token>...] (11 or more)
//
// Anything else goes to Metadata, which knows every form and reports what is wrong.
func ackMetadata(m jetstream.Msg) (ackMeta, error) {
	reply := m.Reply()
	if md, ok := parseAckReply(reply); ok {
		return md, nil
	}
	md, err := m.Metadata()
	if err != nil {
		return ackMeta{}, err
	}
	return ackMeta{seq: md.Sequence.Stream, pending: md.NumPending, stored: md.Timestamp}, nil
}

func parseAckReply(reply string) (ackMeta, bool) {
	const prefix = "$JS.ACK."
	if !strings.HasPrefix(reply, prefix) {
		return ackMeta{}, false
	}
	var tokens [12]string // after the prefix: at most the v2 form's 10 and its extra tokens
	n := 0
	for rest := reply[len(prefix):]; n < len(tokens); n++ {
		var ok bool
		tokens[n], rest, ok = strings.Cut(rest, ".")
		if !ok {
			n++
			break
		}
	}
	var seq, tm, pending string
	switch {
	case n == 7: // v1: stream consumer delivered sseq cseq tm pending
		seq, tm, pending = tokens[3], tokens[5], tokens[6]
	case n >= 9 && n < len(tokens): // v2: domain hash stream consumer delivered sseq cseq tm pending ...
		seq, tm, pending = tokens[5], tokens[7], tokens[8]
	default:
		return ackMeta{}, false
	}
	s, err1 := strconv.ParseUint(seq, 10, 64)
	t, err2 := strconv.ParseInt(tm, 10, 64)
	p, err3 := strconv.ParseUint(pending, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return ackMeta{}, false
	}
	return ackMeta{seq: s, pending: p, stored: time.Unix(0, t)}, true
}
