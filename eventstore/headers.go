package eventstore

// This file holds the headers of an event's message: those the store sets on an append and
// the decoding of a raw header block.

import (
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
)

// eventTypeHeader carries an event's type on its message, beside the type in the subject.
const eventTypeHeader = "Keyledger-Event-Type"

// msg is the message of an event: its JSON, its id as Nats-Msg-Id, its type and its MAC.
func (s *Store) msg(subject string, e domain.Event) (*nats.Msg, error) {
	data, err := domain.MarshalEvent(e)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, e.ID)
	m.Header.Set(eventTypeHeader, string(e.Type))
	s.authenticate(m)
	return m, nil
}

// decodeHeaders reads a raw NATS header block ("NATS/1.0\r\nKey: value\r\n\r\n"), as a
// raw message get returns it, with nats.go's own decoder; no block is no headers.
func decodeHeaders(b []byte) (nats.Header, error) {
	if len(b) == 0 {
		return nats.Header{}, nil
	}
	return nats.DecodeHeadersMsg(b)
}
