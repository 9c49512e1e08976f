package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Dead letters: a message on an event subject that is not a valid event (garbage published by
// a misbehaving client) is never removed from the append-only event stream, and never stops a
// reader. A reader sets it aside instead: a copy goes to a separate dead-letter stream, with
// headers saying where it came from and why it was refused, so that an operator can inspect
// it without reading the whole event stream.

// Headers of a dead letter (see docs/events.md).
const (
	HeaderOriginalStream  = "Keyledger-Original-Stream"
	HeaderOriginalSubject = "Keyledger-Original-Subject"
	HeaderOriginalSeq     = "Keyledger-Original-Seq"
	HeaderOriginalTime    = "Keyledger-Original-Time"
	HeaderReason          = "Keyledger-Reason"
	HeaderConsumer        = "Keyledger-Consumer"
)

// maxReason bounds the reason header: it is a one-line explanation, not a dump.
const maxReason = 1024

// DeadLetter is a message read from the event stream that a consumer refused.
type DeadLetter struct {
	// Seq, Subject, Time and Raw are the original message's.
	Seq     uint64
	Subject string
	Time    time.Time
	Raw     []byte
	// Reason says why the consumer refused it (for garbage: why it is not an event).
	Reason string
	// Consumer names the reader that set it aside ("projector", "events-tail"): one token of
	// letters, digits, '-' and '_'.
	Consumer string
}

// DeadLetterOf is the dead letter of a message that failed to decode (r.Err set).
func DeadLetterOf(r RecordedEvent, consumer string) DeadLetter {
	reason := "not a valid event"
	if r.Err != nil {
		reason = r.Err.Error()
	}
	return DeadLetter{Seq: r.Seq, Subject: r.Subject, Time: r.Time, Raw: r.Raw, Reason: reason, Consumer: consumer}
}

// DeadLetterStream is the name of the stream that holds dead letters.
func (s *Store) DeadLetterStream() string { return s.cfg.Stream + "_DLQ" }

// DeadLetterSubjects is the subject filter of every dead letter; one consumer's are on
// DeadLetterSubjects' prefix followed by "<consumer>.<original stream sequence>".
func (s *Store) DeadLetterSubjects() string { return s.dlqPrefix() + ".>" }

// dlqPrefix is "<prefix>_dlq": a first token of its own, so that no filter of the event
// stream ("<prefix>.>") matches a dead letter and the two streams never overlap.
func (s *Store) dlqPrefix() string { return s.cfg.SubjectPrefix + "_dlq" }

// dlqConfig is the dead-letter stream: kept until an operator removes what was handled
// (unlike the event stream, deletes and purges are allowed; nothing expires on its own).
func (s *Store) dlqConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              s.DeadLetterStream(),
		Description:       "keyledger: messages on event subjects that readers refused (dead letters)",
		Subjects:          []string{s.DeadLetterSubjects()},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          s.cfg.Replicas,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgsPerSubject: -1,
		MaxMsgSize:        2 << 20,
		Discard:           jetstream.DiscardNew,
		Duplicates:        s.cfg.Duplicates,
		AllowDirect:       true,
	}
}

// ensureDeadLetterStream creates the dead-letter stream when it is missing.
func (s *Store) ensureDeadLetterStream(ctx context.Context) error {
	_, err := s.js.Stream(ctx, s.DeadLetterStream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = s.js.CreateStream(ctx, s.dlqConfig())
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("dead-letter stream %s: %w", s.DeadLetterStream(), err)
	}
	return nil
}

// SetAside copies a refused message to the dead-letter stream, on subject
// <prefix>_dlq.<consumer>.<original sequence>. It is idempotent: a consumer that sets the same
// message aside again (after a crash, or several instances reading one stream) leaves one
// dead letter, and SetAside reports already = true.
func (s *Store) SetAside(ctx context.Context, d DeadLetter) (already bool, err error) {
	if !validConsumer(d.Consumer) {
		return false, fmt.Errorf("set aside message %d: consumer name %q must be letters, digits, '-' or '_'", d.Seq, d.Consumer)
	}
	if d.Seq == 0 {
		return false, fmt.Errorf("set aside: no stream sequence")
	}
	subject := s.dlqPrefix() + "." + d.Consumer + "." + strconv.FormatUint(d.Seq, 10)
	m := nats.NewMsg(subject)
	m.Data = d.Raw
	m.Header.Set(jetstream.MsgIDHeader, d.Consumer+"-"+strconv.FormatUint(d.Seq, 10))
	m.Header.Set(HeaderOriginalStream, s.cfg.Stream)
	m.Header.Set(HeaderOriginalSubject, d.Subject)
	m.Header.Set(HeaderOriginalSeq, strconv.FormatUint(d.Seq, 10))
	if !d.Time.IsZero() {
		m.Header.Set(HeaderOriginalTime, d.Time.UTC().Format(time.RFC3339Nano))
	}
	m.Header.Set(HeaderReason, headerValue(d.Reason))
	m.Header.Set(HeaderConsumer, d.Consumer)

	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	// The subject is unique per consumer and message, so "no message on it yet" makes the
	// write idempotent for good, beyond the de-duplication window of the message id.
	ack, err := s.js.PublishMsg(ctx, m, jetstream.WithExpectStream(s.DeadLetterStream()),
		jetstream.WithExpectLastSequencePerSubject(0))
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		// No dead-letter stream answered: it could not be created at start, or it was lost.
		if s.ensureDeadLetterStream(ctx) == nil {
			ack, err = s.js.PublishMsg(ctx, m, jetstream.WithExpectStream(s.DeadLetterStream()),
				jetstream.WithExpectLastSequencePerSubject(0))
		}
	}
	switch {
	case isWrongLastSequence(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("set aside message %d on %s: %w: %w", d.Seq, s.DeadLetterStream(), ErrUnavailable, err)
	case ack.Duplicate:
		return true, nil
	}
	return false, nil
}

func validConsumer(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if !(r == '-' || r == '_' || r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r))) {
			return false
		}
	}
	return true
}

// headerValue makes a reason fit a NATS header: one line, bounded.
func headerValue(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxReason {
		s = s[:maxReason]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}

// DeadLetters reads every dead letter, oldest first, without creating a consumer: for
// operators and tests. Use a consumer on DeadLetterStream to follow them instead.
func (s *Store) DeadLetters(ctx context.Context) ([]DeadLetter, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var out []DeadLetter
	err := s.directBatches(ctx, s.DeadLetterStream(), "", 1, 0, func(m *jetstream.RawStreamMsg) {
		seq, _ := strconv.ParseUint(m.Header.Get(HeaderOriginalSeq), 10, 64)
		stored, _ := time.Parse(time.RFC3339Nano, m.Header.Get(HeaderOriginalTime))
		out = append(out, DeadLetter{
			Seq: seq, Subject: m.Header.Get(HeaderOriginalSubject), Time: stored, Raw: m.Data,
			Reason: m.Header.Get(HeaderReason), Consumer: m.Header.Get(HeaderConsumer),
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	return out, nil
}
