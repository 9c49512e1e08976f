package eventstore

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

// minServer is the oldest nats-server with wildcard per-subject expectations (2.11) and
// atomic batch publish (2.12); 2.14.? and later fix batches with per-subject checks.
const minMajor, minMinor = 2, 12

// Store appends and reads keyledger's events on one JetStream stream.
type Store struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	cfg  Config
	subj subjects
	gc   *groupCommit // nil unless Config.GroupCommit
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
	s := &Store{nc: nc, js: js, cfg: cfg, subj: subjects{prefix: cfg.SubjectPrefix}}
	if cfg.GroupCommit {
		s.gc = &groupCommit{s: s}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return nil, fmt.Errorf("%w: JetStream is not enabled on %s (start nats-server with -js)", ErrServerUnsupported, nc.ConnectedUrlRedacted())
		}
		return nil, fmt.Errorf("%w: JetStream account info: %w", ErrUnavailable, err)
	}
	if err := s.ensureStream(ctx); err != nil {
		return nil, err
	}
	if err := s.ensureDeadLetterStream(ctx); err != nil {
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
		if _, err := s.js.CreateStream(ctx, s.streamConfig()); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("create stream %s: %w", s.cfg.Stream, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: stream %s: %v", ErrUnavailable, s.cfg.Stream, err)
	}
	cur := str.CachedInfo().Config
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
		return fmt.Errorf("update stream %s: %w", s.cfg.Stream, err)
	}
	return nil
}

func checkServer(nc *nats.Conn) error {
	return checkVersion(nc.ConnectedServerVersion(), nc.ConnectedUrlRedacted())
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

func (s *Store) msg(subject string, e domain.Event) (*nats.Msg, error) {
	data, err := domain.MarshalEvent(e)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, e.ID)
	m.Header.Set("Keyledger-Event-Type", string(e.Type))
	return m, nil
}

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
	if !conflict && !isUncertain(err) {
		return 0, fmt.Errorf("append to key %s: %w", first.KeyID, err)
	}
	// Either a conflict or an unknown outcome: did our own last event land?
	lastID := events[len(events)-1].ID
	if seq, found, lerr := s.lastMsgID(ctx, keyFilter, lastID); lerr == nil && found {
		return seq, nil
	} else if lerr != nil && !conflict {
		return 0, fmt.Errorf("append to key %s: %w: %w", first.KeyID, ErrUnavailable, err)
	}
	if conflict {
		return 0, ErrConflict
	}
	return 0, fmt.Errorf("append to key %s: %w: %w", first.KeyID, ErrUnavailable, err)
}

// publish sends one message, or several as one atomic batch, with the per-subject
// expectation on the first.
func (s *Store) publish(ctx context.Context, msgs []*nats.Msg, expected uint64, filter string) (uint64, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.Timeout)
		defer cancel()
	}
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

// lastMsgID reports whether the last message on filter carries the message id.
func (s *Store) lastMsgID(ctx context.Context, filter, id string) (uint64, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	m, err := s.getLast(ctx, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return m.Sequence, m.Header.Get(jetstream.MsgIDHeader) == id, nil
}

// getLast reads the last message on a subject filter from the stream leader. It does not use
// a direct get (nats.go would, since the stream allows them): on a replicated stream a direct
// get may be answered by a follower that has not yet stored the last acknowledged write, and
// the store asks this question precisely to learn whether a write landed.
func (s *Store) getLast(ctx context.Context, filter string) (*jetstream.RawStreamMsg, error) {
	req, err := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{filter})
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
	return &jetstream.RawStreamMsg{
		Subject: r.Message.Subject, Sequence: r.Message.Sequence, Data: r.Message.Data,
		Header: parseHeaders(r.Message.Header), Time: r.Message.Time,
	}, nil
}

// parseHeaders reads a NATS header block ("NATS/1.0\r\nKey: value\r\n...").
func parseHeaders(b []byte) nats.Header {
	h := nats.Header{}
	lines := strings.Split(string(b), "\r\n")
	for _, line := range lines[min(1, len(lines)):] {
		k, v, ok := strings.Cut(line, ":")
		if ok && k != "" {
			h[k] = append(h[k], strings.TrimSpace(v))
		}
	}
	return h
}

// AppendProjectEvent appends a project's creation. It fails with domain.ErrProjectExists if
// the project already has events.
func (s *Store) AppendProjectEvent(ctx context.Context, e domain.Event) (uint64, error) {
	if !validToken(e.ProjectID) {
		return 0, fmt.Errorf("append: invalid project id %q", e.ProjectID)
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
	if seq, found, lerr := s.lastMsgID(ctx, filter, e.ID); lerr == nil && found {
		return seq, nil
	}
	if isWrongLastSequence(err) {
		return 0, domain.ErrProjectExists
	}
	return 0, fmt.Errorf("append project %s: %w: %w", e.ProjectID, ErrUnavailable, err)
}

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
	evs, err := s.getAll(ctx, s.subj.key(projectID, keyID), after+1, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("load key %s after %d: %w", keyID, after, err)
	}
	if len(evs) > limit {
		return evs[:limit], true, nil
	}
	return evs, false, nil
}

// LoadProject reads a project's creation from the stream. An unknown project is
// domain.ErrProjectNotFound.
func (s *Store) LoadProject(ctx context.Context, projectID string) (domain.ProjectSnapshot, error) {
	if !validToken(projectID) {
		return domain.ProjectSnapshot{}, domain.ErrProjectNotFound
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	m, err := s.getLast(ctx, s.subj.project(projectID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return domain.ProjectSnapshot{}, domain.ErrProjectNotFound
	}
	if err != nil {
		return domain.ProjectSnapshot{}, fmt.Errorf("load project %s: %w: %w", projectID, ErrUnavailable, err)
	}
	r := decode(m.Sequence, m.Subject, m.Time, m.Data)
	if r.Err != nil {
		return domain.ProjectSnapshot{}, fmt.Errorf("load project %s: %w", projectID, r.Err)
	}
	return domain.ProjectFromEvent(r.Event)
}

// getAll reads the messages on a subject filter from stream sequence from on, at most max
// of them (0: all), with batched direct gets.
func (s *Store) getAll(ctx context.Context, filter string, from uint64, max int) ([]RecordedEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var out []RecordedEvent
	next := from
	for {
		batch := 256
		if max > 0 {
			if max-len(out) <= 0 {
				return out, nil
			}
			batch = min(batch, max-len(out))
		}
		it, err := jetstreamext.GetBatch(ctx, s.js, s.cfg.Stream, batch,
			jetstreamext.GetBatchSubject(filter), jetstreamext.GetBatchSeq(next))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		n := 0
		for m, err := range it {
			if err != nil {
				if errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, jetstreamext.ErrNoMessages) {
					break
				}
				return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
			}
			out = append(out, decode(m.Sequence, m.Subject, m.Time, m.Data))
			next = m.Sequence + 1
			n++
		}
		if n < batch {
			return out, nil
		}
	}
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
			break
		}
		return m.Sequence - 1, nil
	}
	info, err := str.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return info.State.LastSeq, nil
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
		errors.Is(err, nats.ErrReconnectBufExceeded)
}

// IsUnavailable reports whether err means the server could not be reached or did not answer.
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) || isUncertain(err) }
