package eventstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The stream's configuration guard. keyledger depends on an append-only stream (see
// streamConfig and docs/architecture.md, "Append-only"): nothing may remove an event, and
// every append must be able to land. Anyone allowed to change the stream (an operator, a
// NATS client with the rights) can break that under a running keysd: a max_age erases the
// history, a max_msgs_per_subject drops a key's older events, a sealed stream refuses every
// write, a deleted stream holds nothing. GuardStream checks the configuration at once and then
// periodically; while it does not hold, every append is refused before anything is sent
// (ErrStreamUnsafe, a 503 with Retry-After at the API), one error line is logged per change of
// state, and GuardState says why (for /metrics and /readyz). Writes resume by themselves when
// the configuration is put right.

// ErrStreamUnsafe refuses an append while the stream's configuration does not keep events
// (GuardStream). It is an ErrUnavailable: retrying later is safe.
var ErrStreamUnsafe = fmt.Errorf("%w: writes are suspended: the event stream's configuration does not keep events", ErrUnavailable)

// DefaultGuardInterval is how often GuardStream checks the stream's configuration.
const DefaultGuardInterval = 2 * time.Second

// GuardState is what the latest check of the stream's configuration found.
type GuardState struct {
	// Checked tells whether a check has completed (false before the first one).
	Checked bool
	// Unsafe lists what no longer holds ("max_age is 1s", "the stream does not exist");
	// empty when the stream is as keysd needs it. While it is not empty appends are refused.
	Unsafe []string
	// Trips counts the times the configuration went from safe to unsafe since start.
	Trips uint64
	// Lost is how many of the events the stream held once are gone, as far as the stream's
	// state tells (its first sequence moved past where it was, or interior messages deleted).
	Lost uint64
	// Since is when the current state began.
	Since time.Time
}

// guard is the store's record of the stream's configuration; its zero value lets writes
// through (a store nobody guards: keysctl, tests).
type guard struct {
	unsafe atomic.Pointer[string] // nil: writes allowed; else why not
	kick   chan struct{}          // an append failure that may mean the stream changed

	mu       sync.Mutex
	state    GuardState
	firstSeq uint64 // the stream's first sequence when first seen (1 for a fresh stream)
}

// writable refuses an append while the guard has found the stream unsafe.
func (s *Store) writable() error {
	if why := s.guard.unsafe.Load(); why != nil {
		return fmt.Errorf("%w (%s)", ErrStreamUnsafe, *why)
	}
	return nil
}

// recheck asks a running GuardStream to check again now: an append failed in a way that may
// mean the stream changed (deleted, sealed, limits that refuse it).
func (s *Store) recheck() {
	if s.guard.kick == nil {
		return
	}
	select {
	case s.guard.kick <- struct{}{}:
	default:
	}
}

// GuardState returns what the latest check of the stream's configuration found.
func (s *Store) GuardState() GuardState {
	s.guard.mu.Lock()
	defer s.guard.mu.Unlock()
	st := s.guard.state
	st.Unsafe = slices.Clone(st.Unsafe)
	return st
}

// StreamSafe is nil when the latest check found the stream's configuration as keyledger needs
// it, else an error saying what is wrong (the /readyz check).
func (s *Store) StreamSafe(context.Context) error {
	st := s.GuardState()
	switch {
	case !st.Checked:
		return errors.New("the event stream's configuration has not been checked yet")
	case len(st.Unsafe) > 0:
		return fmt.Errorf("writes suspended since %s: %s", st.Since.UTC().Format(time.RFC3339), strings.Join(st.Unsafe, "; "))
	}
	return nil
}

// GuardStream checks the stream's configuration now, then every interval (0: the default)
// and after any append failure that may mean it changed, until ctx ends. One store is
// guarded by one GuardStream at a time; a second call returns at once with an error.
func (s *Store) GuardStream(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultGuardInterval
	}
	s.guard.mu.Lock()
	if s.guard.kick != nil {
		s.guard.mu.Unlock()
		return errors.New("event store: the stream is guarded already")
	}
	kick := make(chan struct{}, 1)
	s.guard.kick = kick
	s.guard.mu.Unlock()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.checkGuard(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-kick:
		}
	}
}

// checkGuard runs one check and records its outcome, logging a change of state.
func (s *Store) checkGuard(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	str, err := s.js.Stream(cctx, s.cfg.Stream)
	var problems []string
	var info *jetstream.StreamInfo
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		problems = []string{"the stream does not exist"}
	case err != nil:
		// No answer (an outage, no leader) says nothing of the configuration: readiness and
		// the appends themselves report an outage. Keep the last verdict.
		return
	default:
		info = str.CachedInfo()
		problems = s.unsafeConfig(info.Config)
	}
	if ctx.Err() != nil {
		return
	}

	g := &s.guard
	g.mu.Lock()
	defer g.mu.Unlock()
	var lost uint64
	if info != nil {
		if g.firstSeq == 0 {
			g.firstSeq = max(1, info.State.FirstSeq)
		}
		lost = lostEvents(g.firstSeq, info.State)
		if lost > g.state.Lost {
			s.log.Error("event store: events are missing from the stream: its history was cut or messages were deleted",
				"stream", s.cfg.Stream, "missing", lost, "first_seq", info.State.FirstSeq, "first_seq_at_start", g.firstSeq,
				"messages", info.State.Msgs, "last_seq", info.State.LastSeq, "deleted", info.State.NumDeleted)
		}
		g.state.Lost = max(g.state.Lost, lost)
	}
	wasUnsafe := len(g.state.Unsafe) > 0
	nowUnsafe := len(problems) > 0
	changed := !g.state.Checked || wasUnsafe != nowUnsafe || !slices.Equal(g.state.Unsafe, problems)
	g.state.Checked = true
	if !changed {
		return
	}
	g.state.Unsafe = problems
	g.state.Since = time.Now()
	if nowUnsafe {
		why := strings.Join(problems, "; ")
		g.unsafe.Store(&why)
		if !wasUnsafe {
			g.state.Trips++
		}
		s.log.Error("event store: writes suspended: the event stream's configuration does not keep events; put it back (docs/operations.md)",
			"stream", s.cfg.Stream, "problems", why)
		return
	}
	g.unsafe.Store(nil)
	if wasUnsafe {
		s.log.Warn("event store: writes resumed: the event stream's configuration keeps events again", "stream", s.cfg.Stream)
	}
}

// unsafeConfig lists what a stream configuration lacks of the append-only stream keyledger
// needs (streamConfig): nothing may remove an event, and an append must be able to land.
func (s *Store) unsafeConfig(c jetstream.StreamConfig) []string {
	var p []string
	if c.Sealed {
		p = append(p, "the stream is sealed")
	}
	if !c.DenyDelete {
		p = append(p, "deny_delete is off")
	}
	if !c.DenyPurge {
		p = append(p, "deny_purge is off")
	}
	if c.AllowRollup {
		p = append(p, "rollups are allowed")
	}
	if c.AllowMsgTTL {
		p = append(p, "per-message TTLs are allowed")
	}
	if c.MaxAge != 0 {
		p = append(p, fmt.Sprintf("max_age is %s", c.MaxAge))
	}
	if c.MaxMsgs > 0 {
		p = append(p, fmt.Sprintf("max_msgs is %d", c.MaxMsgs))
	}
	if c.MaxBytes > 0 {
		p = append(p, fmt.Sprintf("max_bytes is %d", c.MaxBytes))
	}
	if c.MaxMsgsPerSubject > 0 {
		p = append(p, fmt.Sprintf("max_msgs_per_subject is %d", c.MaxMsgsPerSubject))
	}
	if c.Discard != jetstream.DiscardNew {
		p = append(p, "discard is not new")
	}
	if c.Retention != jetstream.LimitsPolicy {
		p = append(p, fmt.Sprintf("retention is %s, not limits", c.Retention))
	}
	if !c.AllowAtomicPublish {
		p = append(p, "atomic batch publish is off")
	}
	if !c.AllowDirect {
		p = append(p, "direct get is off")
	}
	if !slices.Contains(c.Subjects, s.subj.all()) {
		p = append(p, fmt.Sprintf("the stream's subjects %v no longer include %s", c.Subjects, s.subj.all()))
	}
	return p
}

// lostEvents is how many messages the stream no longer holds of those it held once: those
// below its first sequence that were there when the guard first saw it, and those deleted
// inside it. An append-only stream loses none.
func lostEvents(firstAtStart uint64, st jetstream.StreamState) uint64 {
	var lost uint64
	if st.FirstSeq > firstAtStart { // an emptied stream's first sequence is its last + 1
		lost = st.FirstSeq - firstAtStart
	}
	return lost + uint64(max(0, st.NumDeleted))
}
