package eventstore

// This file is the read barrier's position request: a stream sequence at least as high as
// that of every append acknowledged before the request, at the lowest cost for nats-server
// and for keysd.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// positionExpect is the expected last sequence the position probe states: no stream ever
// reaches it, so the probe is always refused and never stored.
const positionExpect = "9223372036854775807" // 2^63-1

// Position returns a stream sequence at least as high as that of every append whose
// acknowledgement was received before Position was called: the read barrier's "stream's last
// sequence as of now".
//
// It does not ask for STREAM.INFO (LastSeq), which nats-server answers through its JetStream
// API queue with the stream's whole configuration and state as JSON (about 75-110 µs of
// nats-server CPU each, measured; keysd then decodes all of it). It publishes an empty message
// to one of the stream's subjects with the header Nats-Expected-Last-Sequence: 2^63-1. The
// stream refuses it, storing nothing, with the error 10071 "wrong last sequence: N", where N
// is the stream's last sequence (about 25-30 µs of nats-server CPU, about a ping's cost).
// Why this is sound:
//   - Only the stream's leader handles a publish to its subjects, in order with the appends:
//     without clustering, processJetStreamMsg compares the header with mset.lseq, the last
//     stored sequence, under the stream's lock; an append is acknowledged only after it is
//     stored, so every acknowledged append is at or below N.
//   - With clustering, the leader compares it before proposing (checkMsgHeadersPreClustered
//     Proposal) with clseq-clfs, the last sequence it has proposed, which is at or above every
//     committed, hence every acknowledged, append. N may then name an append proposed but not
//     yet applied: a read waits for it as it would for any append in flight (or, if the
//     proposal is lost in a leader change, times out as 503 with Retry-After).
//   - The probe is sent after Position was called, so after every acknowledgement it must
//     cover was received, and answered after the leader has handled it.
//
// When the answer is not that refusal (a server that answers otherwise, a subject this
// connection may not publish on: no answer), Position falls back to STREAM.INFO for that
// call and, if STREAM.INFO answers, for every later call.
func (s *Store) Position(ctx context.Context) (uint64, error) {
	if s.positionOff.Load() {
		return s.LastSeq(ctx)
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	msg := &nats.Msg{
		Subject: s.subj.positionProbe(),
		Header:  nats.Header{"Nats-Expected-Last-Sequence": []string{positionExpect}},
	}
	reply, err := s.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return 0, fmt.Errorf("%w: stream %s does not answer on %s: %w", ErrUnavailable, s.cfg.Stream, msg.Subject, err)
		}
		if parent.Err() != nil || (!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout)) {
			return 0, fmt.Errorf("%w: %w", ErrUnavailable, err) // the caller's deadline, not the probe's
		}
		// No answer: perhaps this connection may not publish on the probe's subject.
		return s.positionFallback(ctx, fmt.Errorf("no answer in %s", s.cfg.Timeout))
	}
	if seq, ok := parsePositionReply(reply.Data, s.cfg.Stream); ok {
		return seq, nil
	}
	return s.positionFallback(ctx, fmt.Errorf("unexpected answer %.200q", reply.Data))
}

// positionFallback answers from STREAM.INFO, and turns the probe off when STREAM.INFO works.
func (s *Store) positionFallback(ctx context.Context, why error) (uint64, error) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
	defer cancel()
	seq, err := s.LastSeq(fctx)
	if err != nil {
		return 0, err
	}
	if !s.positionOff.Swap(true) {
		s.log.Warn("the read barrier's position probe does not work here; using STREAM.INFO instead",
			"stream", s.cfg.Stream, "subject", s.subj.positionProbe(), "err", why)
	}
	return seq, nil
}

// parsePositionReply reads N from the stream's refusal
// {"error":{"code":400,"err_code":10071,"description":"wrong last sequence: N"},"stream":"S",...}
// without decoding the JSON into maps and structs.
func parsePositionReply(b []byte, stream string) (uint64, bool) {
	if !bytes.Contains(b, []byte(`"err_code":10071,`)) && !bytes.Contains(b, []byte(`"err_code":10071}`)) {
		return 0, false
	}
	if !bytes.Contains(b, []byte(`"stream":"`+stream+`"`)) {
		return 0, false
	}
	const desc = `"description":"wrong last sequence: `
	i := bytes.Index(b, []byte(desc))
	if i < 0 {
		return 0, false
	}
	rest := b[i+len(desc):]
	j := bytes.IndexByte(rest, '"')
	if j <= 0 {
		return 0, false
	}
	seq, err := strconv.ParseUint(string(rest[:j]), 10, 64)
	if err != nil {
		return 0, false
	}
	return seq, true
}
