package eventstore

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
)

// Authenticated events: every message the store appends carries, in header HeaderMAC, the
// HMAC-SHA-256 of its subject and its exact payload under Config.EventKey (a subkey of the
// deployment's server-side secret). Every read decodes messages through Store.decodeMsg,
// which refuses a message whose MAC is missing or wrong: an event keysd did not write, or
// whose bytes or subject were changed, is never an event to any reader.
//
// A stream written before events were authenticated keeps its history: the first time a
// store with an EventKey opens a stream, it appends a marker (an authenticated message on
// "<prefix>.meta.EventsAuthenticated"). Messages before the first valid marker without a MAC
// are legacy events, accepted as they are; every message after it must carry a valid MAC.

// HeaderMAC carries an event's MAC: lowercase hex of HMAC-SHA-256 over the subject's length
// (4 bytes, big-endian), the subject and the payload.
const HeaderMAC = "Keyledger-Mac"

// MarkerType is the type of the marker that records where authenticated events begin.
const MarkerType = "EventsAuthenticated"

// maxMarkerReads bounds the messages read on the marker subject when looking for the marker.
const maxMarkerReads = 16

// ErrWrongSecret: the stream's events were authenticated with another server-side secret.
var ErrWrongSecret = errors.New("event store: wrong server-side secret")

// ErrNotAuthentic wraps domain.ErrInvalidEvent for a message whose MAC is missing or wrong.
var ErrNotAuthentic = fmt.Errorf("%w: not authenticated by keyledger", domain.ErrInvalidEvent)

// eventMAC computes and checks event MACs. It allocates nothing per message: each use takes
// a keyed HMAC state from a pool and resets it.
type eventMAC struct {
	key  []byte
	pool sync.Pool // *macState
}

type macState struct {
	h    hash.Hash
	buf  []byte
	sum  [sha256.Size]byte
	want [sha256.Size]byte
}

func newEventMAC(key []byte) *eventMAC {
	if len(key) == 0 {
		return nil
	}
	m := &eventMAC{key: append([]byte(nil), key...)}
	m.pool.New = func() any {
		return &macState{h: hmac.New(sha256.New, m.key), buf: make([]byte, 0, 256)}
	}
	return m
}

// compute fills st.sum with the MAC of subject and data.
func (m *eventMAC) compute(st *macState, subject string, data []byte) {
	st.h.Reset()
	st.buf = binary.BigEndian.AppendUint32(st.buf[:0], uint32(len(subject)))
	st.buf = append(st.buf, subject...)
	st.h.Write(st.buf)
	st.h.Write(data)
	st.h.Sum(st.sum[:0])
}

// header is the MAC of subject and data as HeaderMAC's value.
func (m *eventMAC) header(subject string, data []byte) string {
	st := m.pool.Get().(*macState)
	defer m.pool.Put(st)
	m.compute(st, subject, data)
	return hex.EncodeToString(st.sum[:])
}

// verify reports whether value is the MAC of subject and data, in constant time.
func (m *eventMAC) verify(value string, subject string, data []byte) bool {
	if len(value) != 2*sha256.Size {
		return false
	}
	st := m.pool.Get().(*macState)
	defer m.pool.Put(st)
	st.buf = append(st.buf[:0], value...)
	if _, err := hex.Decode(st.want[:], st.buf); err != nil {
		return false
	}
	m.compute(st, subject, data)
	return hmac.Equal(st.sum[:], st.want[:])
}

// authenticate sets m's MAC header; a store without an EventKey leaves it as it is.
func (s *Store) authenticate(m *nats.Msg) {
	if s.mac != nil {
		m.Header.Set(HeaderMAC, s.mac.header(m.Subject, m.Data))
	}
}

// checkMAC is the one place where a message's origin is checked: nil when the store does not
// authenticate events, when the MAC is right, or for a legacy message before the cut-over.
func (s *Store) checkMAC(seq uint64, subject string, hdr nats.Header, data []byte) error {
	if s.mac == nil {
		return nil
	}
	var value string
	if v := hdr[HeaderMAC]; len(v) > 0 {
		value = v[0]
	}
	switch {
	case value == "" && seq != 0 && seq < s.authFrom:
		return nil // written before events were authenticated
	case value == "":
		return fmt.Errorf("%w: no %s header (stream sequence %d, authenticated since %d)", ErrNotAuthentic, HeaderMAC, seq, s.authFrom)
	case !s.mac.verify(value, subject, data):
		return fmt.Errorf("%w: its %s does not match its subject and bytes (forged, altered or moved)", ErrNotAuthentic, HeaderMAC)
	}
	return nil
}

// markerSubject is the subject of the cut-over marker.
func (s subjects) marker() string { return s.prefix + ".meta." + MarkerType }

// isMarker reports whether a subject is the cut-over marker's.
func (s *Store) isMarker(subject string) bool { return subject == s.subj.marker() }

// AuthenticatedFrom is the stream sequence from which every message must carry a valid MAC
// (0 when the store does not authenticate events).
func (s *Store) AuthenticatedFrom() uint64 { return s.authFrom }

// ensureMarker finds the first valid cut-over marker on the stream, appending one when there
// is none, and remembers its sequence.
func (s *Store) ensureMarker(ctx context.Context) error {
	if s.mac == nil {
		return nil
	}
	for range 3 {
		seq, last, foreign, err := s.findMarker(ctx)
		if err != nil {
			return err
		}
		if seq > 0 {
			s.authFrom = seq
			return nil
		}
		if foreign {
			// Starting authentication afresh would take every earlier message, forged ones
			// included, for a legacy event.
			return fmt.Errorf("%w: the events on stream %s are authenticated with another server-side secret: use the --secret-file of the deployment that wrote them", ErrWrongSecret, s.cfg.Stream)
		}
		data, err := json.Marshal(struct {
			Type string    `json:"type"`
			MAC  string    `json:"mac"`
			Time time.Time `json:"time"`
		}{MarkerType, "HMAC-SHA-256", time.Now().UTC()})
		if err != nil {
			return err
		}
		m := nats.NewMsg(s.subj.marker())
		m.Data = data
		s.authenticate(m)
		pctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		_, err = s.js.PublishMsg(pctx, m, jetstream.WithExpectStream(s.cfg.Stream),
			jetstream.WithExpectLastSequencePerSubject(last))
		cancel()
		if err != nil && !isWrongLastSequence(err) && !isUncertain(err) {
			return fmt.Errorf("record where authenticated events begin on %s: %w", s.cfg.Stream, err)
		}
		// Landed, lost to another instance's marker, or unknown: read again.
	}
	return fmt.Errorf("%w: could not record where authenticated events begin on %s", ErrUnavailable, s.cfg.Stream)
}

// findMarker returns the sequence of the first marker with a valid MAC (0: none), of the
// last message on the marker subject (the expectation of a new marker), and whether a
// marker authenticated under another key is there.
func (s *Store) findMarker(ctx context.Context) (marker, last uint64, foreign bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	next := uint64(1)
	for range maxMarkerReads {
		m, err := s.msgGet(ctx, msgGetRequest{Seq: next, NextFor: s.subj.marker()})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, last, foreign, nil
		}
		if err != nil {
			return 0, 0, false, fmt.Errorf("%w: read the authentication marker: %w", ErrUnavailable, err)
		}
		last, next = m.Sequence, m.Sequence+1
		v := m.Header.Get(HeaderMAC)
		if v != "" && s.mac.verify(v, m.Subject, m.Data) {
			return m.Sequence, last, false, nil
		}
		foreign = foreign || v != ""
	}
	return 0, 0, false, fmt.Errorf("the subject %s holds more than %d messages without a valid marker", s.subj.marker(), maxMarkerReads)
}
