package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

// ProjectorConfig configures a Projector. Zero fields take their defaults.
type ProjectorConfig struct {
	// MaxBatch is the most events applied in one transaction. Default 1000.
	MaxBatch int
	// BatchWait is how long to wait for the next event while the stream says more are
	// pending, before applying what has arrived. Default 10ms. A batch is applied as soon as
	// nothing more has arrived and nothing more is pending, so an idle system projects each
	// event immediately and a busy one projects everything that arrived during the previous
	// transaction at once (see pump).
	BatchWait time.Duration
	// IdleWait is how long one read waits for a new event when the projector has caught up.
	// It bounds nothing a caller sees; it only paces the loop. Default 1s.
	IdleWait time.Duration
	// ApplyTimeout bounds one Apply, so that a database that stops answering is retried
	// rather than waited for. Default 30s.
	ApplyTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failure (the database or NATS
	// down), doubling from one to the other. Defaults 50ms and 2s.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives failures and poison messages. Default slog.Default().
	Logger *slog.Logger
	// Name is the consumer name the projector sets poison messages aside under on the
	// dead-letter stream (eventstore.Store.SetAside). Default "projector".
	Name string
	// StallTimeout is how long the projector may receive nothing while the stream's last
	// sequence is ahead of its checkpoint before it drops its consumer and reads again from
	// the checkpoint: the consumer was lost (its NATS node died, it was deleted) without an
	// error reaching the projector. Default 3s.
	StallTimeout time.Duration
}

func (c *ProjectorConfig) setDefaults() {
	if c.MaxBatch <= 0 {
		c.MaxBatch = 1000
	}
	if c.BatchWait <= 0 {
		c.BatchWait = 10 * time.Millisecond
	}
	if c.IdleWait <= 0 {
		c.IdleWait = time.Second
	}
	if c.ApplyTimeout <= 0 {
		c.ApplyTimeout = 30 * time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 50 * time.Millisecond
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(2*time.Second, c.MinBackoff)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Name == "" {
		c.Name = "projector"
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = 3 * time.Second
	}
}

// Projector keeps a read model up to date with the event stream: it reads from the read
// model's checkpoint on, applies events in batches, and survives the database or NATS
// going away by backing off and reading again from the checkpoint. Commands wait on it
// (WaitFor) so that a client reads its own writes.
type Projector struct {
	store *eventstore.Store
	rm    ReadModel
	cfg   ProjectorConfig
	log   *slog.Logger

	mu       sync.Mutex
	advanced chan struct{} // closed and replaced whenever position changes
	position atomic.Uint64
	ready    atomic.Bool
	target   atomic.Uint64 // the stream's last sequence when the projector (re)started reading

	applied, batches, poison, failures atomic.Uint64
	deadLettered, deadLetterFailures   atomic.Uint64
	refused                            atomic.Uint64
	lastBatch, lag                     atomic.Uint64
	resets                             atomic.Uint64

	streamLast atomic.Uint64 // the stream's last sequence as last learned
	healthyAt  atomic.Int64  // unix ns when the projector last advanced or was caught up
	readStored atomic.Int64  // unix ns when the last event applied was stored
}

// ProjectorStats are a projector's counters since it was created, for metrics.
type ProjectorStats struct {
	// Position is the read model's checkpoint as last seen.
	Position uint64
	// Ready tells whether the projector has caught up with the stream since it started.
	Ready bool
	// EventsApplied counts the valid events of the batches this projector applied. When
	// several instances share a read model, an event another instance applied first may be
	// counted here too.
	EventsApplied uint64
	// Batches counts the transactions that applied them.
	Batches uint64
	// LastBatchSize is the number of events in the latest batch.
	LastBatchSize uint64
	// Poison counts messages that were not valid events: set aside, not applied.
	Poison uint64
	// Refused counts valid events the read model did not apply (out of their key's version
	// order), set aside like poison.
	Refused uint64
	// DeadLettered counts poison messages this projector copied to the dead-letter stream
	// (one already there, set aside before a restart or by another instance, is not counted).
	DeadLettered uint64
	// DeadLetterFailures counts poison messages it could not copy there; they were skipped
	// all the same, and stay in the event stream at the logged sequence.
	DeadLetterFailures uint64
	// Failures counts failed reads and applies (each followed by a retry).
	Failures uint64
	// Lag is how many events of the stream the read model has not applied, as last learned
	// (from the messages read, and from the stream when the projector is idle).
	Lag uint64
	// LagTime is how long ago the last event applied was stored while more are behind it:
	// at least the age of the oldest event not applied yet. 0 when caught up.
	LagTime time.Duration
	// ConsumerResets counts the times the projector dropped its consumer and read again from
	// the checkpoint because the consumer failed or stalled behind the stream.
	ConsumerResets uint64
}

// NewProjector returns a projector of the store's events into rm; Run starts it.
func NewProjector(store *eventstore.Store, rm ReadModel, cfg ProjectorConfig) *Projector {
	cfg.setDefaults()
	p := &Projector{store: store, rm: rm, cfg: cfg, log: cfg.Logger, advanced: make(chan struct{})}
	p.healthyAt.Store(time.Now().UnixNano())
	return p
}

// Position is the read model's checkpoint as the projector last saw it: every event up to
// it is visible in the read model.
func (p *Projector) Position() uint64 { return p.position.Load() }

// Ready tells whether the projector has caught up with the stream at least once since it
// started, so that the read model is recent enough to serve.
func (p *Projector) Ready() bool { return p.ready.Load() }

// Stalled returns how long the projector has neither advanced nor been caught up, if the
// stream's last sequence streamLast is ahead of it; 0 when it is not behind.
func (p *Projector) Stalled(streamLast uint64) time.Duration {
	p.learnStreamLast(streamLast)
	if streamLast <= p.position.Load() {
		p.markHealthy()
		return 0
	}
	return time.Since(time.Unix(0, p.healthyAt.Load()))
}

func (p *Projector) markHealthy() { p.healthyAt.Store(time.Now().UnixNano()) }

// learnStreamLast records a stream last sequence if it is the highest seen.
func (p *Projector) learnStreamLast(seq uint64) {
	for {
		cur := p.streamLast.Load()
		if seq <= cur || p.streamLast.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// behind is how many events the read model lacks, as last learned.
func (p *Projector) behind() uint64 {
	pos, last := p.position.Load(), p.streamLast.Load()
	return max(p.lag.Load(), last-min(last, pos))
}

// Stats returns the projector's counters.
func (p *Projector) Stats() ProjectorStats {
	var lagTime time.Duration
	if p.behind() > 0 {
		if t := p.readStored.Load(); t > 0 {
			lagTime = max(0, time.Since(time.Unix(0, t)))
		}
	}
	return ProjectorStats{
		Position:           p.position.Load(),
		Ready:              p.ready.Load(),
		EventsApplied:      p.applied.Load(),
		Batches:            p.batches.Load(),
		LastBatchSize:      p.lastBatch.Load(),
		Poison:             p.poison.Load(),
		Refused:            p.refused.Load(),
		DeadLettered:       p.deadLettered.Load(),
		DeadLetterFailures: p.deadLetterFailures.Load(),
		Failures:           p.failures.Load(),
		Lag:                p.behind(),
		LagTime:            lagTime,
		ConsumerResets:     p.resets.Load(),
	}
}

// WaitFor blocks until the read model holds every event up to stream sequence seq, or ctx
// is done. Any number of callers may wait at once.
func (p *Projector) WaitFor(ctx context.Context, seq uint64) error {
	for {
		p.mu.Lock()
		ch, pos := p.advanced, p.position.Load()
		p.mu.Unlock()
		if pos >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for event %d to be projected (at %d): %w", seq, pos, ctx.Err())
		}
	}
}

// setPosition records the read model's checkpoint and wakes the waiters. It may go back:
// a rebuilt read model swapped in under a running projector starts where its rebuild ended.
func (p *Projector) setPosition(pos uint64) {
	if p.position.Load() == pos {
		return
	}
	p.markHealthy()
	p.mu.Lock()
	p.position.Store(pos)
	close(p.advanced)
	p.advanced = make(chan struct{})
	p.mu.Unlock()
}

// Run projects until ctx is done, and then returns ctx's error. Failures never stop it:
// they are logged, counted, and retried after a backoff from the read model's checkpoint.
// A projector runs once at a time; several instances share a read model by each running
// their own.
func (p *Projector) Run(ctx context.Context) error {
	backoff := p.cfg.MinBackoff
	var (
		from    uint64 // where to read from next; 0: from the read model's checkpoint
		lastGap *GapError
	)
	for ctx.Err() == nil {
		progressed, next, err := p.follow(ctx, from)
		from = next
		if err == nil || ctx.Err() != nil {
			continue
		}
		var lost *consumerLost
		if errors.As(err, &lost) {
			// The consumer failed or stalled: read again from the checkpoint at once, with a
			// new consumer (on a node that is up); back off only if that keeps failing.
			p.resets.Add(1)
			p.log.Warn("projector: recreating its consumer from the checkpoint", "reason", lost.err, "checkpoint", p.position.Load())
			if progressed || lost.stalled {
				continue
			}
		}
		var gap *GapError
		if errors.As(err, &gap) {
			// The read model went back (a rebuild was swapped in): read again from its
			// checkpoint, at once. The same gap twice in a row means the stream itself
			// lacks the events in between, which nothing here can repair.
			repeated := !progressed && lastGap != nil && *lastGap == *gap
			lastGap = gap
			if !repeated {
				p.log.Info("projector: the read model is behind what was read; reading again from its checkpoint",
					"checkpoint", gap.Checkpoint, "offered", gap.Offered)
				continue
			}
			p.log.Error("projector: the stream has no events between the read model's checkpoint and the next one",
				"checkpoint", gap.Checkpoint, "next", gap.Offered)
		}
		p.failures.Add(1)
		if progressed {
			backoff = p.cfg.MinBackoff
		}
		p.log.Warn("projector: retrying", "error", err, "after", backoff)
		sleep(ctx, jitter(backoff))
		backoff = min(2*backoff, p.cfg.MaxBackoff)
	}
	return ctx.Err()
}

// follow reads the stream from `from` (0: the read model's checkpoint + 1) and applies it
// until something fails. It returns whether it applied anything, and where to read from
// next (0: the read model's checkpoint again).
func (p *Projector) follow(ctx context.Context, from uint64) (progressed bool, next uint64, err error) {
	if from == 0 {
		cp, err := p.rm.Checkpoint(ctx)
		if err != nil {
			return false, 0, err
		}
		p.setPosition(cp)
		from = cp + 1
	}
	if !p.ready.Load() {
		last, err := p.store.LastSeq(ctx)
		if err != nil {
			return false, 0, err
		}
		p.target.Store(last)
		p.markReadyIfCaughtUp()
		if pos := p.position.Load(); pos > last {
			p.log.Warn("projector: the read model is ahead of the stream: is it the read model of another stream?",
				"checkpoint", pos, "stream_last_seq", last)
		}
	}
	sub, err := p.store.Subscribe(ctx, from)
	if err != nil {
		return false, 0, err
	}
	events := startPump(ctx, sub, p.cfg.MaxBatch, p.cfg.IdleWait)
	defer events.stopWith(sub)
	batch := make([]eventstore.RecordedEvent, 0, p.cfg.MaxBatch)
	received := time.Now()
	for ctx.Err() == nil {
		batch, err = events.collect(ctx, batch[:0], p.cfg.MaxBatch, p.cfg.IdleWait, p.cfg.BatchWait,
			func(r eventstore.RecordedEvent) {
				p.lag.Store(r.Pending)
				p.learnStreamLast(r.Seq + r.Pending)
			})
		if err != nil {
			return progressed, 0, &consumerLost{err: err}
		}
		if len(batch) == 0 {
			if stalled := p.checkStalled(ctx, received); stalled != nil {
				return progressed, 0, stalled
			}
			continue
		}
		received = time.Now()
		_, err = p.apply(ctx, batch)
		var gap *GapError
		if errors.As(err, &gap) {
			p.setPosition(gap.Checkpoint)
			return progressed, gap.Checkpoint + 1, gap
		}
		if err != nil {
			return progressed, 0, err
		}
		progressed = true
		last := batch[len(batch)-1]
		p.readStored.Store(last.Time.UnixNano())
		if last.Pending == 0 {
			p.ready.Store(true)
			p.markHealthy()
		}
		p.markReadyIfCaughtUp()
	}
	return progressed, 0, nil
}

// consumerLost is a subscription that failed (its consumer deleted, heartbeats missed, the
// connection gone) or stalled: nothing arrived while the stream moved on.
type consumerLost struct {
	err     error
	stalled bool // no error: nothing arrived for StallTimeout
}

func (e *consumerLost) Error() string { return "consumer lost: " + e.err.Error() }
func (e *consumerLost) Unwrap() error { return e.err }

// checkStalled asks the stream for its last sequence when nothing has arrived for a while:
// behind it with nothing received for StallTimeout means the consumer is lost, though no
// error said so. An unreachable stream is not a stall (readiness reports it; the
// subscription's own heartbeats notice a dead connection).
func (p *Projector) checkStalled(ctx context.Context, received time.Time) error {
	if time.Since(received) < p.cfg.IdleWait {
		return nil
	}
	last, err := p.store.LastSeq(ctx)
	if err != nil {
		return nil
	}
	p.learnStreamLast(last)
	pos := p.position.Load()
	if last <= pos {
		p.lag.Store(0)
		p.markHealthy()
		return nil
	}
	if silent := time.Since(received); silent >= p.cfg.StallTimeout {
		return &consumerLost{err: fmt.Errorf("nothing received for %s while the stream is at %d and the read model at %d",
			silent.Round(time.Millisecond), last, pos), stalled: true}
	}
	return nil
}

// markReadyIfCaughtUp sets ready once the position has reached the stream's last sequence
// as it was when the projector started reading.
func (p *Projector) markReadyIfCaughtUp() {
	if p.position.Load() >= p.target.Load() {
		p.ready.Store(true)
	}
}

// apply hands a batch to the read model and counts what it did.
func (p *Projector) apply(ctx context.Context, batch []eventstore.RecordedEvent) (uint64, error) {
	before := p.position.Load()
	// Poison goes to the dead-letter stream before the checkpoint passes it, so a crash in
	// between sets it aside again on the next read (SetAside is idempotent) rather than never.
	for _, r := range batch {
		if r.Err != nil && r.Seq > before {
			p.setAside(ctx, r)
		}
	}
	// Valid events the read model does not apply (out of their key's version order: a
	// genuine event published again later, a version gap) are reported by it during Apply,
	// and set aside once it has committed: a crash in between leaves them in the stream,
	// listed by keysctl verify and replay, without a dead letter.
	var refused []uint64
	actx, cancel := context.WithTimeout(withRefusedReport(ctx, func(seq uint64) { refused = append(refused, seq) }), p.cfg.ApplyTimeout)
	cp, err := p.rm.Apply(actx, batch)
	cancel()
	if err != nil {
		return cp, err
	}
	p.setAsideRefused(ctx, batch, refused, before, cp)
	var applied uint64
	for _, r := range batch {
		if r.Seq <= before || r.Seq > cp {
			continue
		}
		if r.Err != nil {
			p.poison.Add(1)
			continue
		}
		applied++
	}
	p.applied.Add(applied)
	p.batches.Add(1)
	p.lastBatch.Store(uint64(len(batch)))
	p.setPosition(cp)
	return cp, nil
}

// setAsideRefused sets aside the valid events of a batch, beyond before and up to cp, that
// the read model reported it did not apply, and counts them.
func (p *Projector) setAsideRefused(ctx context.Context, batch []eventstore.RecordedEvent, refused []uint64, before, cp uint64) {
	if len(refused) == 0 {
		return
	}
	for _, r := range batch {
		if r.Seq <= before || r.Seq > cp || r.Err != nil || !slices.Contains(refused, r.Seq) {
			continue
		}
		p.refused.Add(1)
		r.Err = fmt.Errorf("%w: %s version %d of key %s does not follow the key's state (out of its version order: a genuine event published again, or a version gap); not applied",
			domain.ErrInvalidEvent, r.Event.Type, r.Event.Version, r.Event.KeyID)
		p.setAside(ctx, r)
	}
}

// setAside copies a poison message to the dead-letter stream. A failure is logged and
// counted, never retried in a loop: the message stays in the event stream regardless, and
// the projector must not stop for it.
func (p *Projector) setAside(ctx context.Context, r eventstore.RecordedEvent) {
	d := eventstore.DeadLetterOf(r, p.cfg.Name)
	already, err := p.store.SetAside(ctx, d)
	switch {
	case err != nil:
		p.deadLetterFailures.Add(1)
		p.log.Error("projector: skipping a message that is not a valid event, but could not set it aside on the dead-letter stream",
			"seq", r.Seq, "subject", r.Subject, "reason", d.Reason, "dlq_stream", p.store.DeadLetterStream(), "error", err)
	case already:
		p.log.Info("projector: skipping a message that is not a valid event, already on the dead-letter stream",
			"seq", r.Seq, "subject", r.Subject, "dlq_stream", p.store.DeadLetterStream())
	default:
		p.deadLettered.Add(1)
		p.log.Warn("projector: set aside a message it does not apply on the dead-letter stream",
			"seq", r.Seq, "subject", r.Subject, "reason", d.Reason, "dlq_stream", p.store.DeadLetterStream())
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// jitter spreads retries of several instances over ±20% of d.
func jitter(d time.Duration) time.Duration {
	return d - d/5 + rand.N(2*d/5+1)
}
