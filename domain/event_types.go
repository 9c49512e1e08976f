package domain

import (
	"encoding/json"
	"fmt"
	"time"
)

// This file is the one definition of every event type: its name, its data, how the
// general decoder reads it and how it evolves a key. The general decoder (codec.go),
// EvolveKey, IsKeyEvent and the read models hang off eventDefinitions. The fast codec
// (codec_fast.go, codec_fast_encode.go), a hand-written scanner and writer for replays,
// knows each type's fields too; TestEveryEventTypeIsHandled fails for a type that it, the
// general decoder or EvolveKey does not handle, and the read-model conformance suite for one
// a read model does not store. docs/architecture.md says how to add a type.

// EventType names an event on the stream; it is also the last token of its subject.
type EventType string

// The event types of keyledger's aggregates.
const (
	TypeProjectCreated     EventType = "ProjectCreated"
	TypeKeyCreated         EventType = "KeyCreated"
	TypeDescriptionChanged EventType = "DescriptionChanged"
	TypeKeyRevoked         EventType = "KeyRevoked"
	TypeExpiryChanged      EventType = "ExpiryChanged"
)

// ProjectCreated records a new project and the keyed hash of its secret server key.
type ProjectCreated struct {
	Name          string    `json:"name"`
	ServerKeyID   string    `json:"server_key_id"`
	ServerKeyHash string    `json:"server_key_hash"`
	CreatedAt     time.Time `json:"created_at"`
}

// KeyCreated records a new user API key. The secret itself never appears: only its keyed
// hash and its last four characters.
type KeyCreated struct {
	Description string     `json:"description"`
	ExpiresAt   *time.Time `json:"expires_at"`
	IsPublic    bool       `json:"is_public"`
	SecretHash  string     `json:"secret_hash"`
	LastFour    string     `json:"last_four"`
	CreatedAt   time.Time  `json:"created_at"`
	// RotatedFrom is the key this one replaces, when a rotation issued it.
	RotatedFrom string `json:"rotated_from,omitempty"`
}

// DescriptionChanged records a rename, with the value before and after.
type DescriptionChanged struct {
	Old string `json:"old"`
	New string `json:"new"`
}

// KeyRevoked records a manual revocation.
type KeyRevoked struct {
	RevokedAt time.Time `json:"revoked_at"`
}

// ExpiryChanged records a change of a key's expiry (nil: never), and why: ReasonRotated, with
// the id of the key that replaces it.
type ExpiryChanged struct {
	Old        *time.Time `json:"old"`
	New        *time.Time `json:"new"`
	Reason     string     `json:"reason"`
	ReplacedBy string     `json:"replaced_by,omitempty"`
}

// ReasonRotated is the reason of an ExpiryChanged made by a rotation.
const ReasonRotated = "rotated"

func (ProjectCreated) eventType() EventType     { return TypeProjectCreated }
func (ExpiryChanged) eventType() EventType      { return TypeExpiryChanged }
func (KeyCreated) eventType() EventType         { return TypeKeyCreated }
func (DescriptionChanged) eventType() EventType { return TypeDescriptionChanged }
func (KeyRevoked) eventType() EventType         { return TypeKeyRevoked }

// exampleTime is the time of the examples below.
var exampleTime = time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC)

// eventDefinitions lists every event type once.
var eventDefinitions = []EventDefinition{
	projectEvent(TypeProjectCreated,
		ProjectCreated{Name: "example", ServerKeyID: "00000000-0000-4000-8000-000000000001",
			ServerKeyHash: "example-hash", CreatedAt: exampleTime}),

	keyEvent(TypeKeyCreated, true,
		func(s *KeySnapshot, d KeyCreated) {
			s.Description, s.ExpiresAt, s.CreatedAt = d.Description, utcPtr(d.ExpiresAt), d.CreatedAt.UTC()
			s.IsPublic, s.SecretHash, s.LastFour = d.IsPublic, d.SecretHash, d.LastFour
		},
		KeyCreated{Description: "example", ExpiresAt: ptr(exampleTime.Add(time.Hour)), SecretHash: "example-hash",
			LastFour: "abcd", CreatedAt: exampleTime}),

	keyEvent(TypeDescriptionChanged, false,
		func(s *KeySnapshot, d DescriptionChanged) { s.Description = d.New },
		DescriptionChanged{Old: "example", New: "renamed example"}),

	keyEvent(TypeKeyRevoked, false,
		func(s *KeySnapshot, d KeyRevoked) {
			if s.RevokedAt == nil { // the first revocation wins
				at := d.RevokedAt.UTC()
				s.RevokedAt = &at
			}
		},
		KeyRevoked{RevokedAt: exampleTime.Add(time.Minute)}),

	keyEvent(TypeExpiryChanged, false,
		func(s *KeySnapshot, d ExpiryChanged) { s.ExpiresAt = utcPtr(d.New) },
		ExpiryChanged{Old: nil, New: ptr(exampleTime.Add(2 * time.Hour)), Reason: ReasonRotated,
			ReplacedBy: "00000000-0000-4000-8000-000000000002"}),
}

// EventDefinition is one event type as eventDefinitions defines it.
type EventDefinition struct {
	// Type is the type's name, on events and subjects.
	Type EventType
	// ForKey says the type belongs to a key (its subject is the key's), not to a project.
	ForKey bool
	// Creates says the type starts its aggregate: a key's first event.
	Creates bool
	// Example is valid data of the type, for the tests that check every decoder and read
	// model handles it.
	Example EventData

	// decode reads the type's data of the current schema version, strictly.
	decode func(json.RawMessage) (EventData, error)
	// evolve applies the data to a key's snapshot (the new key's for a creation); key types
	// only. The envelope's checks (ids, version order) are EvolveKey's.
	evolve func(*KeySnapshot, EventData) error
}

// EventDefinitions returns every event type's definition, in a fixed order.
func EventDefinitions() []EventDefinition { return append([]EventDefinition(nil), eventDefinitions...) }

// LookupEventType returns the definition of an event type, or false for a type keyledger
// does not know.
func LookupEventType(t EventType) (EventDefinition, bool) {
	d, ok := eventsByType[t]
	return d, ok
}

// TypeOf is the event type of data.
func TypeOf(data EventData) EventType { return data.eventType() }

// IsKeyEvent tells whether an event belongs to a key (rather than to a project).
func IsKeyEvent(e Event) bool {
	d, ok := eventsByType[e.Type]
	return ok && d.ForKey && e.KeyID != ""
}

var eventsByType = func() map[EventType]EventDefinition {
	m := make(map[EventType]EventDefinition, len(eventDefinitions))
	for _, d := range eventDefinitions {
		if _, dup := m[d.Type]; dup {
			panic(fmt.Sprintf("domain: event type %s defined twice", d.Type))
		}
		m[d.Type] = d
	}
	return m
}()

// keyEvent defines a type of a key's event with data T.
func keyEvent[T EventData](t EventType, creates bool, evolve func(*KeySnapshot, T), example T) EventDefinition {
	d := projectEvent(t, example)
	d.ForKey, d.Creates = true, creates
	d.evolve = func(s *KeySnapshot, data EventData) error {
		v, ok := data.(T)
		if !ok {
			return fmt.Errorf("%w: %s event with %T data", ErrInvalidEvent, t, data)
		}
		evolve(s, v)
		return nil
	}
	return d
}

// projectEvent defines a type of a project's event with data T. A project has one event
// type so far, its creation; a project type that changes a project needs an evolve of its
// own, like keyEvent's.
func projectEvent[T EventData](t EventType, example T) EventDefinition {
	return EventDefinition{
		Type:    t,
		Creates: true,
		Example: example,
		decode: func(raw json.RawMessage) (EventData, error) {
			var v T
			err := strictJSON(raw, &v)
			return v, err
		},
	}
}

func ptr[T any](v T) *T { return &v }
