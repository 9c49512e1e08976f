package eventstore

// This file appends events: one key's events under its per-key expectation, a project's
// creation, and the classification of what an append's failure means.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/keyledger/keyledger/domain"
)

// AppendKeyEvents appends the events of one command on one key, all or none, if the key's
// last event is still at stream sequence expected (0: the key has no events yet). It returns
// the stream sequence of the last event appended.
//
// ErrConflict means another writer got there first. Any other error leaves the outcome
// unknown; AppendKeyEvents resolves the common case itself (a lost acknowledgement of an
// append that landed) by looking for its own last event id on the key.
func (s *Store) AppendKeyEvents(ctx context.Context, expected uint64, events []domain.Event) (uint64, error) {
	if len(events) == 0 {
		return 0, errors.New("append: no events")
	}
	if err := s.writable(); err != nil {
		return 0, err
	}
	first := events[0]
	if !validToken(first.ProjectID) || !validToken(first.KeyID) {
		return 0, fmt.Errorf("append: invalid key address %q/%q", first.ProjectID, first.KeyID)
	}
	msgs := make([]*nats.Msg, len(events))
	for i, e := range events {
		if e.ProjectID != first.ProjectID || e.KeyID != first.KeyID {
			return 0, errors.New("append: events of one command must share one key")
		}
		m, err := s.msg(s.subj.keyEvent(e), e)
		if err != nil {
			return 0, err
		}
		msgs[i] = m
	}
	keyFilter := s.subj.key(first.ProjectID, first.KeyID)
	var seq uint64
	var err error
	if s.gc != nil {
		seq, err = s.gc.append(ctx, msgs, expected, keyFilter)
	} else {
		seq, err = s.publish(ctx, msgs, expected, keyFilter)
	}
	if err == nil {
		return seq, nil
	}
	conflict := isWrongLastSequence(err) || isDuplicateInBatch(err)
	if !conflict {
		s.recheck() // a stream deleted, sealed or given limits refuses appends
	}
	// A conflict, or any other answer, is resolved from the stream before it is believed: an
	// error reply may come from another subscriber of the reply subject rather than from the
	// server (a forged "stream not found" while the real append landed), so every failure
	// is an unknown outcome until the key's last message says whether ours is there.
	lastID := events[len(events)-1].ID
	if seq, found, lerr := s.resolveAppend(ctx, keyFilter, lastID, expected); lerr == nil && found {
		return seq, nil
	} else if lerr != nil {
		// A refusal we cannot check (the leader gone mid-way) is an outage, not a race:
		// reloading the key would fail the same way.
		return 0, fmt.Errorf("append to key %s: %w: %w", first.KeyID, ErrUnavailable, errors.Join(err, lerr))
	}
	if conflict {
		return 0, ErrConflict
	}
	return 0, fmt.Errorf("append to key %s: %w: %w", first.KeyID, ErrUnavailable, err)
}

// publish sends one message, or several as one atomic batch, with the per-subject
// expectation on the first.
func (s *Store) publish(ctx context.Context, msgs []*nats.Msg, expected uint64, filter string) (uint64, error) {
	// Never longer than the store's timeout, even under a caller's longer deadline: without a
	// stream leader nothing answers, and the client should get its 503 promptly.
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if len(msgs) == 1 {
		ack, err := s.js.PublishMsg(ctx, msgs[0],
			jetstream.WithExpectStream(s.cfg.Stream),
			jetstream.WithExpectLastSequenceForSubject(expected, filter))
		if err != nil {
			return 0, err
		}
		return ack.Sequence, nil
	}
	msgs[0].Header.Set(jetstream.ExpectedStreamHeader, s.cfg.Stream)
	msgs[0].Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(expected, 10))
	msgs[0].Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, filter)
	// No flow-control ack on the first message: a command's batch is two or three small
	// messages, and waiting for that ack cost a round trip per PATCH that renames and revokes.
	ack, err := jetstreamext.PublishMsgBatch(ctx, s.js, msgs,
		jetstreamext.BatchFlowControl{AckFirst: false, AckTimeout: s.cfg.Timeout})
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// resolveAppend tells whether a failed append landed after all: whether the last message on
// filter, whose last message was at expected when the append was sent, carries the append's
// message id. While the filter's last message is still at expected, the append may still be
// on its way (an error reply forged by another subscriber of its reply subject arrives
// before the server's answer, and before the server has stored it): it looks again, for at
// most resolveWait. Once another message is there, the append can never land (its
// expectation fails), and the answer is final.
func (s *Store) resolveAppend(ctx context.Context, filter, id string, expected uint64) (uint64, bool, error) {
	return s.resolveAppendWithin(ctx, filter, id, expected, min(s.cfg.Timeout, resolveWait))
}

// resolveAppendWithin is resolveAppend waiting at most wait for an append on its way.
func (s *Store) resolveAppendWithin(ctx context.Context, filter, id string, expected uint64, wait time.Duration) (uint64, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	deadline := time.Now().Add(wait)
	pause := 5 * time.Millisecond
	for {
		m, err := s.getLast(ctx, filter)
		var last uint64
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return 0, false, err
		case m.Header.Get(jetstream.MsgIDHeader) == id:
			return m.Sequence, true, nil
		default:
			last = m.Sequence
		}
		if last != expected || time.Now().Add(pause).After(deadline) {
			return last, false, nil
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return last, false, nil
		}
		pause = min(2*pause, 200*time.Millisecond)
	}
}

// resolveWait bounds how long resolveAppend waits for an append still on its way.
const resolveWait = 2 * time.Second

// AppendProjectEvent appends a project's creation. It fails with domain.ErrProjectExists if
// the project already has events.
func (s *Store) AppendProjectEvent(ctx context.Context, e domain.Event) (uint64, error) {
	if !validToken(e.ProjectID) {
		return 0, fmt.Errorf("append: invalid project id %q", e.ProjectID)
	}
	if err := s.writable(); err != nil {
		return 0, err
	}
	m, err := s.msg(s.subj.projectEvent(e), e)
	if err != nil {
		return 0, err
	}
	filter := s.subj.project(e.ProjectID)
	seq, err := s.publish(ctx, []*nats.Msg{m}, 0, filter)
	if err == nil {
		return seq, nil
	}
	if !isWrongLastSequence(err) {
		s.recheck()
	}
	if seq, found, lerr := s.resolveAppend(ctx, filter, e.ID, 0); lerr == nil && found {
		return seq, nil
	}
	if isWrongLastSequence(err) {
		return 0, domain.ErrProjectExists
	}
	return 0, fmt.Errorf("append project %s: %w: %w", e.ProjectID, ErrUnavailable, err)
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// isDuplicateInBatch: an atomic batch re-sent with message ids the stream has seen; with a
// per-key expectation on it, that means our earlier attempt landed or someone else's did.
func isDuplicateInBatch(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstreamext.JSErrCodeBatchPublishDuplicateMsgID
}

// isUncertain: the request may have reached the server and been applied.
func isUncertain(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, context.Canceled) ||
		errors.Is(err, nats.ErrReconnectBufExceeded) || isNoQuorum(err)
}
