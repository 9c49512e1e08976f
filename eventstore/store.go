package eventstore

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
)

// Errors a caller must tell apart.
var (
	// ErrConflict: the key changed since the expected sequence; reload and decide again.
	ErrConflict = errors.New("event store: concurrent append to the same aggregate")
	// ErrUnavailable: the NATS server did not answer; the append may or may not have landed
	// only when the error says so (see AppendKeyEvents).
	ErrUnavailable = errors.New("event store unavailable")
	// ErrServerUnsupported: the NATS server cannot provide what the store needs.
	ErrServerUnsupported = errors.New("NATS server unsupported")
)

// Config is the store's configuration.
type Config struct {
	// Stream is the JetStream stream name. Default "KEYLEDGER".
	Stream string
	// SubjectPrefix is the first token of every event subject. Default "keyledger".
	SubjectPrefix string
	// Replicas is the stream's replication factor (1, or 3 on a cluster). Default 1.
	Replicas int
	// Duplicates is the stream's de-duplication window for message ids. Default 1 second.
	//
	// The store does not depend on it: every append carries a per-subject expectation, so a
	// re-sent append is refused by that check whatever the window, and the message id only
	// tells the store whether a refused or unanswered append was its own. A long window costs
	// a lot: the server keeps every id of the window in memory (about 600,000 at 5,000
	// appends/s over JetStream's default 2 minutes), and keysd's throughput fell by a third
	// over three benchmark runs with it (docs/performance.md).
	Duplicates time.Duration
	// Timeout bounds each request to the server, an append included whatever the caller's
	// deadline: with no stream leader (a failover, no quorum) nothing answers, and the client
	// should get its 503 promptly rather than at its own deadline. Default 3 seconds.
	Timeout time.Duration
	// Logger receives the store's failover events (leader elections, an unreachable
	// dead-letter stream). Default: discarded.
	Logger *slog.Logger
	// GroupCommit sends the appends of concurrent commands on different keys as one atomic
	// batch, so that a server syncing every write flushes once for all of them. Turn it on
	// when the server runs with sync_interval: always (keysd --sync-always); on a server that
	// syncs in the background it costs more than it saves.
	GroupCommit bool
	// EventKey authenticates events: every append carries a MAC under it, and every read
	// refuses a message without a valid one (see mac.go). keysd and keysctl derive it from the
	// server-side secret (domain.Hasher.EventKey). Empty: events are neither authenticated nor
	// checked, for tests of other behaviour only.
	EventKey []byte
}

func (c *Config) setDefaults() {
	if c.Stream == "" {
		c.Stream = "KEYLEDGER"
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = "keyledger"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Duplicates == 0 {
		c.Duplicates = time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 3 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if strings.ContainsAny(c.Stream, ".*> \t") {
		errs = append(errs, fmt.Errorf("stream name %q must not contain '.', '*', '>' or spaces", c.Stream))
	}
	if c.SubjectPrefix != "" && strings.ContainsAny(c.SubjectPrefix, "*> \t") {
		errs = append(errs, fmt.Errorf("subject prefix %q must not contain '*', '>' or spaces", c.SubjectPrefix))
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas must be 1 to 5, got %d", c.Replicas))
	}
	if c.Duplicates < 0 || (c.Duplicates > 0 && c.Duplicates < 100*time.Millisecond) {
		errs = append(errs, fmt.Errorf("duplicates window must be at least 100ms, got %s", c.Duplicates))
	}
	return errors.Join(errs...)
}

// RecordedEvent is one message read from the stream. Err is set, and Event is zero, when the
// message is not a valid event (garbage published onto an event subject): readers set it
// aside rather than stop.
type RecordedEvent struct {
	Seq     uint64
	Subject string
	Time    time.Time // when the server stored it
	Raw     []byte
	Event   domain.Event
	Err     error
	// Control marks a message of the store's own, not an event (the cut-over marker of
	// mac.go): Event and Err are zero, and readers pass over it.
	Control bool
	// Pending is how many messages followed this one in the stream when it was delivered
	// (subscriptions only); 0 means the reader has caught up.
	Pending uint64
}

// decodeMsg turns one stored message into a RecordedEvent: every reader's messages go
// through it, so that what is refused is refused everywhere. A message is an event only if
// keyledger wrote it (checkMAC), it decodes, and its subject names the aggregate its envelope
// does. The cut-over marker decodes to a RecordedEvent with neither Event nor Err (Control):
// nothing to apply, nothing to set aside.
func (s *Store) decodeMsg(seq uint64, subject string, stored time.Time, hdr nats.Header, data []byte) RecordedEvent {
	return s.decodeWith(domain.UnmarshalEvent, seq, subject, stored, hdr, data)
}

// decodeWith is decodeMsg with the given decoder of the body: domain.UnmarshalEvent, or
// domain.UnmarshalEventShared for bulk reads whose events share the message's bytes.
func (s *Store) decodeWith(unmarshal func([]byte) (domain.Event, error), seq uint64, subject string, stored time.Time, hdr nats.Header, data []byte) RecordedEvent {
	r := RecordedEvent{Seq: seq, Subject: subject, Time: stored, Raw: data}
	if r.Err = s.checkMAC(seq, subject, hdr, data); r.Err != nil {
		return r
	}
	if s.isMarker(subject) {
		r.Control = true
		return r
	}
	r.Event, r.Err = unmarshal(data)
	if r.Err == nil && subject != "" {
		if err := matchesSubject(subject, r.Event); err != nil {
			r.Err, r.Event = err, domain.Event{}
		}
	}
	return r
}

// matchesSubject checks that an event's envelope names the aggregate its subject does:
// "<prefix>.key.<project>.<key>.<type>" or "<prefix>.project.<project>.<type>". An event
// re-addressed to another key or project (its bytes copied onto another subject) fails it.
// It reads the subject from its end, so that any prefix works, and allocates only to report.
func matchesSubject(subject string, e domain.Event) error {
	rest, typ := cutLast(subject)
	if typ != string(e.Type) {
		return fmt.Errorf("%w: %s event on subject %s", domain.ErrInvalidEvent, e.Type, subject)
	}
	var kind, project, key string
	if e.Type == domain.TypeProjectCreated {
		rest, project = cutLast(rest)
		_, kind = cutLast(rest)
		if kind == "project" && project == e.ProjectID && e.KeyID == "" {
			return nil
		}
	} else {
		rest, key = cutLast(rest)
		rest, project = cutLast(rest)
		_, kind = cutLast(rest)
		if kind == "key" && project == e.ProjectID && key == e.KeyID {
			return nil
		}
	}
	return fmt.Errorf("%w: %s event of project %q key %q on subject %s", domain.ErrInvalidEvent, e.Type, e.ProjectID, e.KeyID, subject)
}

// cutLast splits a subject before its last token.
func cutLast(subject string) (rest, last string) {
	i := strings.LastIndexByte(subject, '.')
	if i < 0 {
		return "", subject
	}
	return subject[:i], subject[i+1:]
}

// subjects names the stream's subjects under one prefix.
type subjects struct{ prefix string }

func (s subjects) all() string      { return s.prefix + ".>" }
func (s subjects) keys() string     { return s.prefix + ".key.>" }
func (s subjects) projects() string { return s.prefix + ".project.>" }

// positionProbe is the subject of Store.Position's probe: among the key events' subjects
// (which keysd may publish on) but one no event has. The probe is never stored anyway.
func (s subjects) positionProbe() string { return s.prefix + ".key.position.probe.barrier" }

func (s subjects) keyEvent(e domain.Event) string {
	return s.prefix + ".key." + e.ProjectID + "." + e.KeyID + "." + string(e.Type)
}
func (s subjects) key(projectID, keyID string) string {
	return s.prefix + ".key." + projectID + "." + keyID + ".*"
}
func (s subjects) projectEvent(e domain.Event) string {
	return s.prefix + ".project." + e.ProjectID + "." + string(e.Type)
}
func (s subjects) project(projectID string) string {
	return s.prefix + ".project." + projectID + ".*"
}

// KeySubjectFilter is the subject filter of one project's key events ("" for all projects),
// for consumers outside this package such as keysctl events tail.
func (s *Store) KeySubjectFilter(projectID string) string {
	if projectID == "" {
		return s.subj.keys()
	}
	return s.subj.prefix + ".key." + projectID + ".>"
}

// validToken reports whether an id can be a subject token (ids are UUIDs; this guards the
// store against anything else reaching it).
func validToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, ".*> \t\r\n")
}

// IsUnavailable reports whether err means the server could not be reached or did not answer.
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) || isUncertain(err) }
