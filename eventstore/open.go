package eventstore

// This file opens the store: it checks the server, creates or updates the stream and holds
// the store's accessors.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// minServer is the oldest nats-server with wildcard per-subject expectations (2.11) and
// atomic batch publish (2.12); 2.14.? and later fix batches with per-subject checks.
const minMajor, minMinor = 2, 12

// Store appends and reads keyledger's events on one JetStream stream.
type Store struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	cfg  Config
	log  *slog.Logger
	subj subjects
	gc   *groupCommit // nil unless Config.GroupCommit
	mac  *eventMAC    // nil unless Config.EventKey
	// authFrom is the stream sequence of the cut-over marker: from it on, every message
	// must carry a valid MAC (see mac.go).
	authFrom uint64

	guard guard // the stream's configuration as last checked (guard.go)

	replicas      int         // the event stream's, when opened
	positionOff   atomic.Bool // Position asks STREAM.INFO: its probe does not work here
	leaderChanges atomic.Uint64
	disconnects   atomic.Uint64
}

// Open checks that the server behind nc can serve as the event store, creates the stream or
// brings its configuration up to date, and returns the store. A server too old or without
// JetStream is ErrServerUnsupported with one line saying why.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkServer(nc); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(cfg.Timeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	s := &Store{nc: nc, js: js, cfg: cfg, log: cfg.Logger, subj: subjects{prefix: cfg.SubjectPrefix}, mac: newEventMAC(cfg.EventKey)}
	if cfg.GroupCommit {
		s.gc = &groupCommit{s: s}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return nil, fmt.Errorf("%w: JetStream is not enabled on %s (start nats-server with -js): %w", ErrServerUnsupported, RedactURLs(nc.ConnectedUrl()), err)
		}
		return nil, fmt.Errorf("%w: JetStream account info: %w", ErrUnavailable, err)
	}
	if err := s.ensureStream(ctx); err != nil {
		return nil, err
	}
	// The dead-letter stream only receives the rare poison message: one that cannot be
	// reached now (an R1 stream on a node that is down) must not keep the store from serving.
	// SetAside tries to create it again when it is needed.
	if err := s.ensureDeadLetterStream(ctx); err != nil {
		s.log.Warn("event store: the dead-letter stream is unavailable; poison messages will be skipped and logged until it is back",
			"stream", s.DeadLetterStream(), "error", err)
	}
	s.countDisconnects()
	if _, err := s.watchLeader(); err != nil {
		return nil, fmt.Errorf("%w: watch the stream's leader elections: %w", ErrUnavailable, err)
	}
	if err := s.ensureMarker(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// ensureStream creates the stream when it is missing. An existing stream is left as its
// operator made it (replicas, placement) except for the properties the store depends on,
// which are switched on; a stream that can drop events is refused, since JetStream cannot
// turn a limit into "no limit" safely behind the operator's back.
func (s *Store) ensureStream(ctx context.Context) error {
	str, err := s.js.Stream(ctx, s.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		created, err := s.js.CreateStream(ctx, s.streamConfig())
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another keysd created it at the same moment: adopt it as it is.
			created, err = s.js.Stream(ctx, s.cfg.Stream)
		}
		if err != nil {
			return fmt.Errorf("%w: create stream %s: %w", unavailableIf(err), s.cfg.Stream, err)
		}
		s.replicas = max(1, created.CachedInfo().Config.Replicas)
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: stream %s: %v", ErrUnavailable, s.cfg.Stream, err)
	}
	cur := str.CachedInfo().Config
	s.replicas = max(1, cur.Replicas)
	if cur.MaxAge != 0 || cur.MaxMsgs > 0 || cur.MaxBytes > 0 || cur.MaxMsgsPerSubject > 0 ||
		cur.Retention != jetstream.LimitsPolicy || cur.AllowMsgTTL || cur.AllowRollup {
		return fmt.Errorf("stream %s exists with limits, TTLs, rollups or a retention policy that can drop events; keyledger needs an append-only stream", s.cfg.Stream)
	}
	if cur.DenyDelete && cur.DenyPurge && cur.AllowDirect && cur.AllowAtomicPublish && cur.Discard == jetstream.DiscardNew {
		return nil
	}
	cur.DenyDelete, cur.DenyPurge, cur.AllowDirect, cur.AllowAtomicPublish = true, true, true, true
	cur.Discard = jetstream.DiscardNew
	if _, err := s.js.UpdateStream(ctx, cur); err != nil {
		return fmt.Errorf("%w: update stream %s: %w", unavailableIf(err), s.cfg.Stream, err)
	}
	return nil
}

// errSetup marks a failure to set the stream up that waiting will not cure.
var errSetup = errors.New("event store setup failed")

// unavailableIf is ErrUnavailable for an error that may pass (no quorum, no answer), so that
// a caller waiting for the cluster at start knows to retry, and errSetup otherwise.
func unavailableIf(err error) error {
	if isNoQuorum(err) || isUncertain(err) {
		return ErrUnavailable
	}
	return errSetup
}

func checkServer(nc *nats.Conn) error {
	return checkVersion(nc.ConnectedServerVersion(), RedactURLs(nc.ConnectedUrl()))
}

// checkVersion refuses a server older than the store needs, in one line.
func checkVersion(v, url string) error {
	major, minor, ok := parseVersion(v)
	if !ok || major < minMajor || (major == minMajor && minor < minMinor) {
		return fmt.Errorf("%w: nats-server %s at %s is too old: keyledger needs %d.%d or later (atomic batch publish and per-subject concurrency checks)",
			ErrServerUnsupported, v, url, minMajor, minMinor)
	}
	return nil
}

func parseVersion(v string) (major, minor int, ok bool) {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	return major, minor, err1 == nil && err2 == nil
}

// streamConfig is the append-only stream: nothing is ever removed, by limits, TTLs, deletes,
// purges or rollups.
func (s *Store) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:               s.cfg.Stream,
		Description:        "keyledger events (append-only)",
		Subjects:           []string{s.subj.all()},
		Retention:          jetstream.LimitsPolicy,
		Storage:            jetstream.FileStorage,
		Replicas:           s.cfg.Replicas,
		MaxMsgs:            -1,
		MaxBytes:           -1,
		MaxAge:             0,
		MaxMsgsPerSubject:  -1,
		MaxMsgSize:         1 << 20,
		Discard:            jetstream.DiscardNew,
		Duplicates:         s.cfg.Duplicates,
		DenyDelete:         true,
		DenyPurge:          true,
		AllowRollup:        false,
		AllowDirect:        true,
		AllowAtomicPublish: true,
	}
}

// StreamName is the name of the stream holding the events.
func (s *Store) StreamName() string { return s.cfg.Stream }

// SubjectPrefix is the first token of every event subject.
func (s *Store) SubjectPrefix() string { return s.cfg.SubjectPrefix }

// Conn is the store's NATS connection.
func (s *Store) Conn() *nats.Conn { return s.nc }

// JetStream is the store's JetStream context, for readers such as the Watermill subscriber.
func (s *Store) JetStream() jetstream.JetStream { return s.js }
