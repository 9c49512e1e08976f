package domain

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// envelope is the wire form of an event (CONTRACT section 4). Field order is the order a
// reader of `keysctl events tail` sees.
type envelope struct {
	ID            string          `json:"id"`
	Type          EventType       `json:"type"`
	SchemaVersion int             `json:"schema_version"`
	ProjectID     string          `json:"project_id"`
	KeyID         string          `json:"key_id,omitempty"`
	UserID        string          `json:"user_id,omitempty"`
	TeamID        string          `json:"team_id,omitempty"`
	Version       int             `json:"version"`
	Time          time.Time       `json:"time"`
	Actor         Actor           `json:"actor"`
	RequestID     string          `json:"request_id"`
	Data          json.RawMessage `json:"data"`
}

// MarshalEvent encodes an event as the JSON document stored on the stream.
func MarshalEvent(e Event) ([]byte, error) {
	return AppendEvent(nil, e)
}

// AppendEvent appends MarshalEvent's document to buf, so that a writer of many events can
// reuse one buffer.
func AppendEvent(buf []byte, e Event) ([]byte, error) {
	if out, ok := appendFast(buf, e); ok {
		return out, nil
	}
	b, err := marshalGeneral(e)
	if err != nil {
		return buf, err
	}
	return append(buf, b...), nil
}

// marshalGeneral is MarshalEvent through encoding/json: the definition of the document,
// which appendFast reproduces for the common case.
func marshalGeneral(e Event) ([]byte, error) {
	data, err := json.Marshal(e.Data)
	if err != nil {
		return nil, fmt.Errorf("encode %s data: %w", e.Type, err)
	}
	return json.Marshal(envelope{
		ID: e.ID, Type: e.Type, SchemaVersion: e.SchemaVersion,
		ProjectID: e.ProjectID, KeyID: e.KeyID, UserID: e.UserID, TeamID: e.TeamID, Version: e.Version,
		Time: e.Time, Actor: e.Actor, RequestID: e.RequestID, Data: data,
	})
}

// UnmarshalEvent decodes a stored event, upcasting older schema versions to the current
// one. A document that is not a well-formed event of a known type is an error wrapping
// ErrInvalidEvent: the caller sets it aside instead of applying it.
func UnmarshalEvent(b []byte) (Event, error) {
	if e, ok := decodeFast(b, false); ok {
		return e, nil
	}
	return unmarshalAnyVersion(b)
}

// UnmarshalEventShared is UnmarshalEvent whose strings share b's memory instead of copying
// it: no allocation for the strings of an event in the current form, for readers that decode
// millions of messages. b must not change afterwards, and a string kept for long keeps all
// of b alive: a caller that keeps one should copy it (strings.Clone).
func UnmarshalEventShared(b []byte) (Event, error) {
	if e, ok := decodeFast(b, true); ok {
		return e, nil
	}
	return unmarshalAnyVersion(b)
}

// unmarshalAnyVersion is the general decoder: any schema version, every check.
func unmarshalAnyVersion(b []byte) (Event, error) {
	var stored storedEnvelope
	if err := json.Unmarshal(b, &stored); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	if stored.SchemaVersion == nil {
		return Event{}, fmt.Errorf("%w: missing schema_version", ErrInvalidEvent)
	}
	env, err := upcast(stored)
	if err != nil {
		return Event{}, err
	}
	data, err := decodeData(env.Type, env.Data)
	if err != nil {
		return Event{}, err
	}
	e := Event{
		ID: env.ID, Type: env.Type, SchemaVersion: env.SchemaVersion,
		ProjectID: env.ProjectID, KeyID: env.KeyID, UserID: env.UserID, TeamID: env.TeamID, Version: env.Version,
		Time: env.Time, Actor: env.Actor, RequestID: env.RequestID, Data: data,
	}
	if err := e.validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

func decodeData(t EventType, raw json.RawMessage) (EventData, error) {
	def, ok := eventsByType[t]
	if !ok {
		return nil, fmt.Errorf("%w: unknown type %q", ErrInvalidEvent, t)
	}
	data, err := def.decode(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s data: %v", ErrInvalidEvent, t, err)
	}
	return data, nil
}

func strictJSON(raw json.RawMessage, v any) error {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return fmt.Errorf("missing data")
	}
	return json.Unmarshal(raw, v)
}

// validate checks the envelope fields every event must carry.
func (e Event) validate() error {
	switch {
	case e.ID == "":
		return fmt.Errorf("%w: missing id", ErrInvalidEvent)
	case e.ProjectID == "":
		return fmt.Errorf("%w: missing project_id", ErrInvalidEvent)
	case e.Version < 1:
		return fmt.Errorf("%w: version %d", ErrInvalidEvent, e.Version)
	case eventsByType[e.Type].ForKey && (e.KeyID == "" || (e.UserID == "") == (e.TeamID == "")):
		return fmt.Errorf("%w: %s without key_id or without exactly one of user_id and team_id", ErrInvalidEvent, e.Type)
	case !eventsByType[e.Type].ForKey && e.TeamID != "":
		return fmt.Errorf("%w: %s of a project with a team_id", ErrInvalidEvent, e.Type)
	}
	return nil
}
