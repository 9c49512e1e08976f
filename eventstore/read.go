package eventstore

// This file reads events: one key's or project's messages, the stream's last sequence, and
// the last message on a subject from the stream leader.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/keyledger/keyledger/domain"
)

// LoadKey reads one key's events, oldest first, without creating a consumer. An unknown key
// is domain.ErrKeyNotFound.
func (s *Store) LoadKey(ctx context.Context, projectID, keyID string) ([]RecordedEvent, error) {
	if !validToken(projectID) || !validToken(keyID) {
		return nil, domain.ErrKeyNotFound
	}
	evs, err := s.getAll(ctx, s.subj.key(projectID, keyID), 1, 0)
	if err != nil {
		return nil, fmt.Errorf("load key %s: %w", keyID, err)
	}
	if len(evs) == 0 {
		return nil, domain.ErrKeyNotFound
	}
	return evs, nil
}

// LoadKeyAfter reads the events of one key after stream sequence after, oldest first: the
// tail to fold onto a snapshot of the key taken at that sequence (none when it is current).
func (s *Store) LoadKeyAfter(ctx context.Context, projectID, keyID string, after uint64) ([]RecordedEvent, error) {
	if !validToken(projectID) || !validToken(keyID) {
		return nil, domain.ErrKeyNotFound
	}
	evs, err := s.getAll(ctx, s.subj.key(projectID, keyID), after+1, 0)
	if err != nil {
		return nil, fmt.Errorf("load key %s after %d: %w", keyID, after, err)
	}
	return evs, nil
}

// LoadKeyPage reads at most limit messages of one key after stream sequence after, oldest
// first, and reports whether the key has more after them: a page of its history.
func (s *Store) LoadKeyPage(ctx context.Context, projectID, keyID string, after uint64, limit int) ([]RecordedEvent, bool, error) {
	if !validToken(projectID) || !validToken(keyID) {
		return nil, false, domain.ErrKeyNotFound
	}
	if limit < 1 {
		return nil, false, fmt.Errorf("load key %s: page limit %d must be positive", keyID, limit)
	}
	filter := s.subj.key(projectID, keyID)
	for attempt := 1; ; attempt++ {
		evs, err := s.getAll(ctx, filter, after+1, limit+1)
		if err != nil {
			return nil, false, fmt.Errorf("load key %s after %d: %w", keyID, after, err)
		}
		if len(evs) > limit {
			return evs[:limit], true, nil
		}
		// The last page. On a replicated stream a direct get may be answered by a follower
		// that has not yet stored the latest acknowledged events, so the leader's last message
		// of the key says whether the page reached it; a page that did not is read again (a
		// follower catches up within milliseconds), and after a few tries it is unavailable.
		// A page is thus never older than a write acknowledged before it was asked for.
		last, _, err := s.LastOf(ctx, filter)
		if err != nil {
			return nil, false, fmt.Errorf("load key %s after %d: %w", keyID, after, err)
		}
		if last <= after || len(evs) > 0 && evs[len(evs)-1].Seq >= last {
			return evs, false, nil
		}
		if attempt == staleReadTries {
			return nil, false, fmt.Errorf("load key %s after %d: %w: the stream's replica answered up to sequence %d of the key's %d", keyID, after, ErrUnavailable, lastOf(evs), last)
		}
		select {
		case <-ctx.Done():
			return nil, false, fmt.Errorf("load key %s after %d: %w: %w", keyID, after, ErrUnavailable, ctx.Err())
		case <-time.After(time.Duration(attempt) * 10 * time.Millisecond):
		}
	}
}

// staleReadTries bounds the reads of a key's last page that a lagging replica may answer.
const staleReadTries = 5

func lastOf(evs []RecordedEvent) uint64 {
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].Seq
}

// LoadProject reads a project's creation from the stream. An unknown project is
// domain.ErrProjectNotFound.
func (s *Store) LoadProject(ctx context.Context, projectID string) (domain.ProjectSnapshot, error) {
	if !validToken(projectID) {
		return domain.ProjectSnapshot{}, domain.ErrProjectNotFound
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	// The project is its first valid ProjectCreated: anything else published on its subjects
	// (garbage, a second creation) changes nothing, and the project stays usable.
	filter := s.subj.project(projectID)
	var invalid error
	next := uint64(1)
	for range maxProjectMsgs {
		m, err := s.msgGet(ctx, msgGetRequest{Seq: next, NextFor: filter})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return domain.ProjectSnapshot{}, fmt.Errorf("load project %s: %w: %w", projectID, ErrUnavailable, err)
		}
		next = m.Sequence + 1
		r := s.decodeMsg(m.Sequence, m.Subject, m.Time, m.Header, m.Data)
		if r.Err != nil {
			invalid = r.Err
			continue
		}
		if p, err := domain.ProjectFromEvent(r.Event); err == nil {
			return p, nil
		}
	}
	if invalid != nil {
		return domain.ProjectSnapshot{}, fmt.Errorf("load project %s: %w: its subjects hold no valid project creation (%w)", projectID, domain.ErrProjectNotFound, invalid)
	}
	return domain.ProjectSnapshot{}, domain.ErrProjectNotFound
}

// maxProjectMsgs bounds the messages LoadProject reads on one project's subjects before
// deciding that it has no valid creation (a project has exactly one).
const maxProjectMsgs = 8

// getAll reads the messages on a subject filter from stream sequence from on, at most max
// of them (0: all), all of them or an error (directBatches).
func (s *Store) getAll(ctx context.Context, filter string, from uint64, max int) ([]RecordedEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var out []RecordedEvent
	err := s.directBatches(ctx, s.cfg.Stream, filter, from, max, func(m *jetstream.RawStreamMsg) {
		out = append(out, s.decodeMsg(m.Sequence, m.Subject, m.Time, m.Header, m.Data))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// directBatches reads a stream's messages (on filter, when not empty) from sequence from on,
// at most max of them (0: all), with batched direct gets, and hands each to fn in order. It
// reads all of them or returns an error, never a part: the request helper under
// jetstreamext.GetBatch ends a batch quietly when its context ends (a deadline, or the
// connection closing, is not an error to it), so the end is taken from the messages
// themselves: each carries how many messages on the filter were still pending after it when
// the batch was asked for (Nats-Num-Pending), and the read is complete once that is 0 or the
// server answered that nothing is there. A batch that ended with messages still pending is
// read on from where it stopped (the server also ends one at its byte limit), unless the
// context has ended: ErrUnavailable.
func (s *Store) directBatches(ctx context.Context, stream, filter string, from uint64, max int, fn func(*jetstream.RawStreamMsg)) error {
	next, read := from, 0
	for {
		batch := 256
		if max > 0 {
			if max-read <= 0 {
				return nil
			}
			batch = min(batch, max-read)
		}
		opts := []jetstreamext.GetBatchOpt{jetstreamext.GetBatchSeq(next)}
		if filter != "" {
			opts = append(opts, jetstreamext.GetBatchSubject(filter))
		}
		it, err := jetstreamext.GetBatch(ctx, s.js, stream, batch, opts...)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		n, pending, nothing := 0, -1, false
		for m, err := range it {
			if err != nil {
				if errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, jetstreamext.ErrNoMessages) {
					nothing = true
					break
				}
				return fmt.Errorf("%w: %w", ErrUnavailable, err)
			}
			fn(m)
			next = m.Sequence + 1
			n++
			pending = numPending(m.Header)
		}
		read += n
		switch {
		case nothing || pending == 0:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("%w: read %s %s: %w", ErrUnavailable, stream, filter, ctx.Err())
		case n == 0 || pending < 0:
			return fmt.Errorf("%w: read %s %s: the batch ended without its last message", ErrUnavailable, stream, filter)
		}
		// Messages are pending after the last one read: a full batch, or one the server ended
		// early at its byte limit. Read on.
	}
}

// numPending is a batched direct get's Nats-Num-Pending header: how many messages on the
// request's filter follow this one (-1 when it is missing or not a number).
func numPending(h nats.Header) int {
	v := h.Get("Nats-Num-Pending")
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// LastSeq is the stream's last sequence: everything appended so far is at or below it.
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	str, err := s.js.Stream(ctx, s.cfg.Stream) // one STREAM.INFO request, state included
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return str.CachedInfo().State.LastSeq, nil
}

// SeqAtTime is the last stream sequence stored at or before t (0 when none).
func (s *Store) SeqAtTime(ctx context.Context, t time.Time) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	str, err := s.js.Stream(ctx, s.cfg.Stream)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	// The first message stored after t; everything before it is at or before t.
	it, err := jetstreamext.GetBatch(ctx, s.js, s.cfg.Stream, 1, jetstreamext.GetBatchStartTime(t.Add(time.Nanosecond)))
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	for m, err := range it {
		if err != nil {
			if !errors.Is(err, jetstream.ErrMsgNotFound) && !errors.Is(err, jetstreamext.ErrNoMessages) {
				return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
			}
			break
		}
		return m.Sequence - 1, nil
	}
	// Nothing stored after t, or the request ended quietly with its context (see
	// directBatches): only the first means everything is at or before t.
	if ctx.Err() != nil {
		return 0, fmt.Errorf("%w: the first message after %s: %w", ErrUnavailable, t.Format(time.RFC3339Nano), ctx.Err())
	}
	info, err := str.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return info.State.LastSeq, nil
}

// getLast reads the last message on a subject filter from the stream leader. It does not use
// a direct get (nats.go would, since the stream allows them): on a replicated stream a direct
// get may be answered by a follower that has not yet stored the last acknowledged write, and
// the store asks this question precisely to learn whether a write landed.
func (s *Store) getLast(ctx context.Context, filter string) (*jetstream.RawStreamMsg, error) {
	return s.msgGet(ctx, msgGetRequest{LastFor: filter})
}

// msgGetRequest is a STREAM.MSG.GET request: the last message on a filter, or the first at or
// after Seq on NextFor.
type msgGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
}

// msgGet asks the stream leader for one message (see getLast for why not a direct get).
func (s *Store) msgGet(ctx context.Context, get msgGetRequest) (*jetstream.RawStreamMsg, error) {
	req, err := json.Marshal(get)
	if err != nil {
		return nil, err
	}
	resp, err := s.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+s.cfg.Stream, req)
	if err != nil {
		return nil, err
	}
	var r struct {
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return nil, fmt.Errorf("message get response: %w", err)
	}
	if r.Error != nil {
		if r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, r.Error
	}
	if r.Message == nil {
		return nil, errors.New("message get response without a message")
	}
	header, err := decodeHeaders(r.Message.Header)
	if err != nil {
		return nil, fmt.Errorf("message get response: headers of message %d: %w", r.Message.Sequence, err)
	}
	return &jetstream.RawStreamMsg{
		Subject: r.Message.Subject, Sequence: r.Message.Sequence, Data: r.Message.Data,
		Header: header, Time: r.Message.Time,
	}, nil
}

// KeyProject returns the project a key belongs to, read from the subject of the key's last
// event; an unknown key is domain.ErrKeyNotFound. It serves requests that name a key by its
// secret alone, without a project (credential scanning).
func (s *Store) KeyProject(ctx context.Context, keyID string) (string, error) {
	if !validToken(keyID) {
		return "", domain.ErrKeyNotFound
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	m, err := s.getLast(ctx, s.subj.prefix+".key.*."+keyID+".*")
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", domain.ErrKeyNotFound
	}
	if err != nil {
		return "", fmt.Errorf("project of key %s: %w: %w", keyID, ErrUnavailable, err)
	}
	// prefix.key.<project>.<key>.<type>
	tokens := strings.Split(strings.TrimPrefix(m.Subject, s.subj.prefix+"."), ".")
	if len(tokens) != 4 || tokens[0] != "key" || tokens[2] != keyID {
		return "", fmt.Errorf("project of key %s: unexpected subject %s", keyID, m.Subject)
	}
	return tokens[1], nil
}
