package domain

import "time"

// CurrentSchemaVersion is the envelope schema every new event is written with. Older
// versions are upcast on decode (see codec.go).
const CurrentSchemaVersion = 1

// Actor kinds recorded on events.
const (
	ActorServerKey = "server_key"
	ActorAdmin     = "admin"
	ActorOperator  = "operator"
	// ActorCredentialScanning is a secret-scanning service that reported a key found in
	// public; it has no id.
	ActorCredentialScanning = "credential_scanning"
)

// Actor is who caused an event: the server key that authenticated the request, the subject
// of an admin access token, or an operator at the CLI.
type Actor struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// Meta is everything about an event that is not its domain data, handed to a decision by the
// command side: when it happens, who causes it, the request behind it, and a source of ids.
type Meta struct {
	Time      time.Time
	Actor     Actor
	RequestID string
	NewID     func() string
}

// Event is one fact on the stream: the envelope of CONTRACT section 4 with typed data.
// KeyID is empty for project events.
type Event struct {
	ID            string
	Type          EventType
	SchemaVersion int
	ProjectID     string
	KeyID         string
	// UserID is a user key's owner, TeamID a team key's: every key event carries exactly
	// one of them (project events neither).
	UserID    string
	TeamID    string
	Version   int
	Time      time.Time
	Actor     Actor
	RequestID string
	Data      EventData
}

// EventData is the type-specific part of an event: one of the data types of
// event_types.go.
type EventData interface{ eventType() EventType }

// newEvent wraps data in an envelope for one aggregate at one version.
func newEvent(m Meta, projectID, keyID, userID, teamID string, version int, data EventData) Event {
	return Event{
		ID:            m.NewID(),
		Type:          data.eventType(),
		SchemaVersion: CurrentSchemaVersion,
		ProjectID:     projectID,
		KeyID:         keyID,
		UserID:        userID,
		TeamID:        teamID,
		Version:       version,
		Time:          m.Time.UTC().Truncate(millisecond),
		Actor:         m.Actor,
		RequestID:     m.RequestID,
		Data:          data,
	}
}

// millisecond is the precision of every timestamp keyledger records, as Stack Auth's API
// exchanges milliseconds.
const millisecond = time.Millisecond
