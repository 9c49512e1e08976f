package domain

import "time"

// EventType names an event on the stream; it is also the last token of its subject.
type EventType string

// The event types of keyledger's aggregates.
const (
	TypeProjectCreated     EventType = "ProjectCreated"
	TypeKeyCreated         EventType = "KeyCreated"
	TypeDescriptionChanged EventType = "DescriptionChanged"
	TypeKeyRevoked         EventType = "KeyRevoked"
)

// CurrentSchemaVersion is the envelope schema every new event is written with. Older
// versions are upcast on decode (see codec.go).
const CurrentSchemaVersion = 1

// Actor kinds recorded on events.
const (
	ActorServerKey = "server_key"
	ActorAdmin     = "admin"
	ActorOperator  = "operator"
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
	UserID        string
	Version       int
	Time          time.Time
	Actor         Actor
	RequestID     string
	Data          EventData
}

// EventData is the type-specific part of an event.
type EventData interface{ eventType() EventType }

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

func (ProjectCreated) eventType() EventType     { return TypeProjectCreated }
func (KeyCreated) eventType() EventType         { return TypeKeyCreated }
func (DescriptionChanged) eventType() EventType { return TypeDescriptionChanged }
func (KeyRevoked) eventType() EventType         { return TypeKeyRevoked }

// newEvent wraps data in an envelope for one aggregate at one version.
func newEvent(m Meta, projectID, keyID, userID string, version int, data EventData) Event {
	return Event{
		ID:            m.NewID(),
		Type:          data.eventType(),
		SchemaVersion: CurrentSchemaVersion,
		ProjectID:     projectID,
		KeyID:         keyID,
		UserID:        userID,
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
