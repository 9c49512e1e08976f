package eventstore

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
)

// maxGroupMsgs bounds one group commit; nats-server refuses atomic batches of more than 1,000
// messages by default.
const maxGroupMsgs = 256

// groupCommit gathers the appends of concurrent commands on different keys into one atomic
// batch. On a server that syncs every write (sync_interval: always, or keysd --sync-always),
// nats-server 2.15 stores an atomic batch with one disk flush for all of its messages instead
// of one per message, so concurrent commands share the flush, as concurrent commits share
// PostgreSQL's WAL flush. Each command keeps its own per-key expectation inside the batch; the
// server checks every one and commits the batch only if all hold.
//
// One committer at a time sends the batches: while one is in flight the next gathers. An
// append that arrives alone is sent alone, so an idle store adds no wait. Without syncing
// every write a batch costs the server more than the messages one by one (it stages each
// batch in a store of its own), which is why this is off unless configured.
type groupCommit struct {
	s *Store

	mu      sync.Mutex
	queue   []*groupAppend
	running bool

	batches  atomic.Uint64 // batches of more than one command sent
	commands atomic.Uint64 // commands sent in them
	retried  atomic.Uint64 // commands sent again alone after their batch was refused
}

// groupAppend is one command's messages, the expectation on the first.
type groupAppend struct {
	ctx      context.Context
	msgs     []*nats.Msg
	expected uint64
	filter   string

	done chan struct{}
	seq  uint64
	err  error
}

func (g *groupCommit) append(ctx context.Context, msgs []*nats.Msg, expected uint64, filter string) (uint64, error) {
	a := &groupAppend{ctx: ctx, msgs: msgs, expected: expected, filter: filter, done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, a)
	if !g.running {
		g.running = true
		go g.run()
	}
	g.mu.Unlock()
	select {
	case <-a.done:
		return a.seq, a.err
	case <-ctx.Done():
		// The committer may still send it: the caller treats this as an unknown outcome.
		return 0, ctx.Err()
	}
}

// run sends what has gathered until nothing is left, then ends; the next append starts it
// again.
func (g *groupCommit) run() {
	for {
		g.mu.Lock()
		// Take appends in order while they fit, and stop at a second append to a key already
		// in the batch: nats-server checks each message's per-subject expectation against the
		// stream as it was before the batch, not against the batch's own earlier messages, so
		// two appends expecting the same sequence of one key would both pass. (keysd's
		// per-key lock never sends two at once; the store does not rely on it.)
		n, size := 0, 0
		keys := make(map[string]struct{}, len(g.queue))
		for _, a := range g.queue {
			_, dup := keys[a.filter]
			if n > 0 && (dup || size+len(a.msgs) > maxGroupMsgs) {
				break
			}
			keys[a.filter] = struct{}{}
			size += len(a.msgs)
			n++
		}
		if n == 0 {
			g.running = false
			g.queue = nil
			g.mu.Unlock()
			return
		}
		batch := make([]*groupAppend, n)
		copy(batch, g.queue)
		g.queue = g.queue[n:]
		g.mu.Unlock()
		g.commit(batch)
	}
}

// commit sends one gathered batch and answers each of its appends.
func (g *groupCommit) commit(batch []*groupAppend) {
	live := batch[:0:0]
	for _, a := range batch {
		if err := a.ctx.Err(); err != nil {
			a.finish(0, err)
			continue
		}
		live = append(live, a)
	}
	switch len(live) {
	case 0:
		return
	case 1:
		a := live[0]
		a.finish(g.s.publish(a.ctx, a.msgs, a.expected, a.filter))
		return
	}

	var msgs []*nats.Msg
	for _, a := range live {
		for i, m := range a.msgs {
			c := nats.NewMsg(m.Subject)
			c.Data = m.Data
			for k, v := range m.Header {
				c.Header[k] = v
			}
			if i == 0 {
				c.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(a.expected, 10))
				c.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, a.filter)
			}
			msgs = append(msgs, c)
		}
	}
	msgs[0].Header.Set(jetstream.ExpectedStreamHeader, g.s.cfg.Stream)
	ctx, cancel := context.WithTimeout(context.Background(), g.s.cfg.Timeout)
	ack, err := jetstreamext.PublishMsgBatch(ctx, g.s.js, msgs,
		jetstreamext.BatchFlowControl{AckFirst: false, AckTimeout: g.s.cfg.Timeout})
	cancel()
	g.batches.Add(1)
	g.commands.Add(uint64(len(live)))
	if err == nil && ack.BatchSize != uint64(len(msgs)) {
		err = fmt.Errorf("%w: batch of %d messages acknowledged as %d", ErrUnavailable, len(msgs), ack.BatchSize)
	}
	if err == nil {
		// The batch's messages are stored one after another, ending at ack.Sequence.
		seq := ack.Sequence - uint64(len(msgs))
		for _, a := range live {
			seq += uint64(len(a.msgs))
			a.finish(seq, nil)
		}
		return
	}
	if isWrongLastSequence(err) || isDuplicateInBatch(err) {
		// The server refused the whole batch for one of its commands (another writer got to
		// a key first, or an append is a retry of one that landed): nothing of it was
		// stored. Each command goes again alone and gets its own answer.
		g.retried.Add(uint64(len(live)))
		var wg sync.WaitGroup
		for _, a := range live {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a.finish(g.s.publish(a.ctx, a.msgs, a.expected, a.filter))
			}()
		}
		wg.Wait()
		return
	}
	// Unknown outcome for all of them; each caller looks for its own last event.
	for _, a := range live {
		a.finish(0, err)
	}
}

func (a *groupAppend) finish(seq uint64, err error) {
	a.seq, a.err = seq, err
	close(a.done)
}

// GroupCommitStats counts the group commits of a store.
type GroupCommitStats struct {
	Enabled bool
	// Batches is how many atomic batches carried more than one command; Commands, how many
	// commands they carried; Retried, how many of those were sent again alone because the
	// server refused their batch for one of its commands.
	Batches, Commands, Retried uint64
}

// GroupCommitStats reports the store's group commits (all zero unless Config.GroupCommit).
func (s *Store) GroupCommitStats() GroupCommitStats {
	if s.gc == nil {
		return GroupCommitStats{}
	}
	return GroupCommitStats{Enabled: true, Batches: s.gc.batches.Load(), Commands: s.gc.commands.Load(), Retried: s.gc.retried.Load()}
}
