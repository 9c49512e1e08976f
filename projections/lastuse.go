package projections

import (
	"cmp"
	"context"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyledger/keyledger/eventstore"
)

// LastUse keeps each key's last successful check: recorded in memory on the check's path
// (a map write, never a wait on I/O and never an error), written to the event store's
// last-use bucket by Run, and read back, for every keysd's writes, from a watch of that
// bucket. Run flushes every FlushInterval, but a key whose record in the bucket is younger
// than its rewrite age (RewriteAge: four intervals, at most 45 s less one interval) keeps its
// newer use pending: a key checked without pause costs one write per rewrite age, not one
// per interval, and a key's first use is written at the first flush. A key's last use shown
// by any instance is thus at most RewriteAge plus FlushInterval plus a watch delivery behind
// a check made anywhere (25 s at the default 5 s, 45 s at most), and always exact on the
// instance that served the check.
//
// It is not part of the read model proper: last use is not an event (see
// eventstore.LastUseBucket), so a replay neither reads nor rebuilds it.
type LastUse struct {
	store    *eventstore.LastUseStore
	interval time.Duration
	rewrite  time.Duration // RewriteAge(interval)
	now      func() time.Time
	log      *slog.Logger
	seed     maphash.Seed
	shards   [lastUseShards]lastUseShard
	caughtUp chan struct{}
	once     sync.Once
	stats    lastUseCounters
}

// lastUseCounters count what LastUse does, for /metrics (LastUseStats).
type lastUseCounters struct {
	touches, flushes, written, writeErrors, learned atomic.Uint64
}

// LastUseStats are LastUse's counts since start.
type LastUseStats struct {
	// Touches are the successful checks recorded (Touch).
	Touches uint64
	// Flushes are the flushes that had something to write.
	Flushes uint64
	// Written are the records written to the bucket: at most one per key per flush.
	Written uint64
	// WriteErrors are the writes to the bucket that failed (each retried at the next flush).
	WriteErrors uint64
	// Learned are the records read from the bucket's watch (this and other instances').
	Learned uint64
	// Keys is how many keys this instance knows a last use of.
	Keys int
}

// Stats returns the counts since start.
func (l *LastUse) Stats() LastUseStats {
	st := LastUseStats{
		Touches: l.stats.touches.Load(), Flushes: l.stats.flushes.Load(), Written: l.stats.written.Load(),
		WriteErrors: l.stats.writeErrors.Load(), Learned: l.stats.learned.Load(),
	}
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		st.Keys += len(s.keys) + len(s.other)
		s.mu.Unlock()
	}
	return st
}

const lastUseShards = 64

// lastUseBatch is how many writes to the bucket a flush has in flight at once (pipelined
// publishes, eventstore.LastUseStore.RecordAll).
const lastUseBatch = 1024

type useRef struct{ projectID, keyID string }

type recordedUse struct {
	at       time.Time
	revision uint64
}

// useEntry is one key's last use as this instance knows it. A check finds it with one map
// lookup on its key id and changes it in place (the shard's lock held): the check path's
// whole cost of recording.
type useEntry struct {
	projectID, keyID string
	known            recordedUse // the bucket's latest, as watched or written (revision 0: none)
	pending          time.Time   // the latest check here not yet written (zero: none)
}

type lastUseShard struct {
	mu    sync.Mutex
	keys  map[string]*useEntry // by key id
	other map[useRef]*useEntry // a key id already held for another project (random ids: never seen)
	dirty []*useEntry          // the entries with a pending use, for the next flush
}

// entry returns the key's entry, creating it when create is set (else nil when none).
func (s *lastUseShard) entry(projectID, keyID string, create bool) *useEntry {
	e := s.keys[keyID]
	if e != nil && e.projectID == projectID {
		return e
	}
	if e == nil {
		if !create {
			return nil
		}
		e = &useEntry{projectID: projectID, keyID: keyID}
		s.keys[keyID] = e
		return e
	}
	ref := useRef{projectID, keyID}
	if o := s.other[ref]; o != nil || !create {
		return o
	}
	if s.other == nil {
		s.other = map[useRef]*useEntry{}
	}
	o := &useEntry{projectID: projectID, keyID: keyID}
	s.other[ref] = o
	return o
}

// markPending records a use not yet written; the shard's lock is held.
func (s *lastUseShard) markPending(e *useEntry, at time.Time) {
	if e.pending.IsZero() {
		s.dirty = append(s.dirty, e)
	}
	if at.After(e.pending) {
		e.pending = at
	}
}

// latest is the key's last use as this instance knows it.
func (e *useEntry) latest() (time.Time, bool) {
	if e.known.revision != 0 && !e.pending.After(e.known.at) {
		return e.known.at, true
	}
	return e.pending, !e.pending.IsZero()
}

// LastUseConfig configures LastUse.
type LastUseConfig struct {
	// FlushInterval is how often the checks recorded in memory are written to the bucket.
	// Default 5 seconds; it must stay well under the contract's 60 seconds.
	FlushInterval time.Duration
	// Logger receives failed flushes. Default slog.Default().
	Logger *slog.Logger
}

// NewLastUse returns a LastUse writing to and watching store; Run must be running for the
// records to reach the bucket and for other instances' records to be seen.
func NewLastUse(store *eventstore.LastUseStore, cfg LastUseConfig) *LastUse {
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	l := &LastUse{store: store, interval: cfg.FlushInterval, rewrite: RewriteAge(cfg.FlushInterval),
		now: time.Now, log: cfg.Logger, seed: maphash.MakeSeed(), caughtUp: make(chan struct{})}
	for i := range l.shards {
		l.shards[i] = lastUseShard{keys: map[string]*useEntry{}}
	}
	return l
}

// RewriteAge is how old a key's record in the bucket must be before a newer use of the key
// is written over it, for a flush interval: four intervals, so that a key checked without
// pause costs a quarter of the writes, but never so long that a use would wait more than 45
// seconds in all (the contract allows 60 behind a check; the rest is for the watch's
// delivery and the instances' clocks), and never less than one interval.
func RewriteAge(interval time.Duration) time.Duration {
	return max(interval, min(4*interval, 45*time.Second-interval))
}

func (l *LastUse) shard(projectID, keyID string) *lastUseShard {
	return &l.shards[maphash.String(l.seed, keyID)%lastUseShards]
}

// Touch records a successful check of a key at a time, and returns the key's last use as At
// would now tell it (at, or a later one recorded elsewhere), so that a check's own response
// costs no second lookup. It only writes to memory.
func (l *LastUse) Touch(projectID, keyID string, at time.Time) time.Time {
	l.stats.touches.Add(1)
	s := l.shard(projectID, keyID)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(projectID, keyID, true)
	s.markPending(e, at)
	latest, _ := e.latest()
	return latest
}

// At returns a key's last successful check as this instance knows it, or ok false if it
// was never checked.
func (l *LastUse) At(projectID, keyID string) (at time.Time, ok bool) {
	s := l.shard(projectID, keyID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entry(projectID, keyID, false); e != nil {
		return e.latest()
	}
	return time.Time{}, false
}

// CaughtUp is closed once the bucket's entries present at start have been read.
func (l *LastUse) CaughtUp() <-chan struct{} { return l.caughtUp }

// Run watches the bucket and flushes the recorded checks every FlushInterval until ctx
// ends, then flushes once more.
func (l *LastUse) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { l.watch(ctx) })
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			l.flush(final, true)
			cancel()
			wg.Wait()
			return
		case <-t.C:
			l.flush(ctx, false)
		}
	}
}

// watch follows the bucket, restarting the watch after a failure.
func (l *LastUse) watch(ctx context.Context) {
	for ctx.Err() == nil {
		err := l.store.Watch(ctx, l.learn, func() { l.once.Do(func() { close(l.caughtUp) }) })
		if ctx.Err() != nil {
			return
		}
		l.log.Warn("last-use watch failed; restarting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// learn keeps a use recorded in the bucket, unless a later one is known.
func (l *LastUse) learn(u eventstore.LastUse) {
	l.stats.learned.Add(1)
	s := l.shard(u.ProjectID, u.KeyID)
	s.mu.Lock()
	if e := s.entry(u.ProjectID, u.KeyID, true); u.Revision > e.known.revision {
		e.known = recordedUse{at: u.At, revision: u.Revision}
	}
	s.mu.Unlock()
}

// flush writes the pending checks to the bucket: one write per key, none for a key whose
// recorded use is already as late, and, unless all (the last flush, at shutdown), none for a
// key whose record is younger than the rewrite age: that use stays pending for a later
// flush. A failed write stays pending for the next flush.
func (l *LastUse) flush(ctx context.Context, all bool) {
	var entries []*useEntry
	var uses []eventstore.LastUse // uses[i] is entries[i]'s pending use, to write
	now := l.now()
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		keep := s.dirty[:0] // every entry in dirty has a pending use (markPending)
		for _, e := range s.dirty {
			recorded := e.known.revision != 0
			switch {
			case recorded && !e.pending.After(e.known.at):
				e.pending = time.Time{} // the bucket already holds this use or a later one
			case recorded && !all && now.Sub(e.known.at) < l.rewrite:
				keep = append(keep, e) // written recently: stays pending until the record is old enough
			default:
				entries = append(entries, e)
				uses = append(uses, eventstore.LastUse{ProjectID: e.projectID, KeyID: e.keyID, At: e.pending, Revision: e.known.revision})
				e.pending = time.Time{}
			}
		}
		clear(s.dirty[len(keep):])
		s.dirty = keep
		s.mu.Unlock()
	}
	if len(uses) == 0 {
		return
	}
	l.stats.flushes.Add(1)
	var failed error
	for start := 0; start < len(uses); start += lastUseBatch {
		batch := uses[start:min(start+lastUseBatch, len(uses))]
		recs, errs := l.store.RecordAll(ctx, batch)
		for i, u := range batch {
			e := entries[start+i]
			s := l.shard(u.ProjectID, u.KeyID)
			s.mu.Lock()
			if errs[i] != nil {
				l.stats.writeErrors.Add(1)
				s.markPending(e, u.At)
				failed = cmp.Or(failed, errs[i])
			} else {
				l.stats.written.Add(1)
				if recs[i].Revision > e.known.revision {
					e.known = recordedUse{at: recs[i].At, revision: recs[i].Revision}
				}
			}
			s.mu.Unlock()
		}
	}
	if failed != nil {
		l.log.Warn("last use not recorded; retrying at the next flush", "err", failed)
	}
}
