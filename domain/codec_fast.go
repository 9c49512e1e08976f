package domain

import (
	"encoding/json"
	"time"
)

// currentEnvelope decodes an event of the current schema version in one pass: the data of
// every type share one struct, as their field names do not collide. Replays decode millions
// of events, and three passes of encoding/json (envelope, actor, data) were most of their
// time. Anything unusual (another schema version, a missing actor or data, a field of the
// wrong type) falls back to the general path, which gives the canonical result or error.
type currentEnvelope struct {
	ID            string       `json:"id"`
	Type          EventType    `json:"type"`
	SchemaVersion int          `json:"schema_version"`
	ProjectID     string       `json:"project_id"`
	KeyID         string       `json:"key_id"`
	UserID        string       `json:"user_id"`
	Version       int          `json:"version"`
	Time          time.Time    `json:"time"`
	Actor         *Actor       `json:"actor"`
	RequestID     string       `json:"request_id"`
	Data          *currentData `json:"data"`
}

type currentData struct {
	// ProjectCreated
	Name          string `json:"name"`
	ServerKeyID   string `json:"server_key_id"`
	ServerKeyHash string `json:"server_key_hash"`
	// KeyCreated
	Description string     `json:"description"`
	ExpiresAt   *time.Time `json:"expires_at"`
	IsPublic    bool       `json:"is_public"`
	SecretHash  string     `json:"secret_hash"`
	LastFour    string     `json:"last_four"`
	// ProjectCreated and KeyCreated
	CreatedAt time.Time `json:"created_at"`
	// DescriptionChanged
	Old string `json:"old"`
	New string `json:"new"`
	// KeyRevoked
	RevokedAt time.Time `json:"revoked_at"`
}

// unmarshalCurrent is the one-pass decoder; ok is false when the general path must decide.
func unmarshalCurrent(b []byte) (Event, bool) {
	var env currentEnvelope
	if err := json.Unmarshal(b, &env); err != nil || env.SchemaVersion != CurrentSchemaVersion ||
		env.Actor == nil || env.Data == nil {
		return Event{}, false
	}
	d := env.Data
	var data EventData
	switch env.Type {
	case TypeProjectCreated:
		data = ProjectCreated{Name: d.Name, ServerKeyID: d.ServerKeyID, ServerKeyHash: d.ServerKeyHash, CreatedAt: d.CreatedAt}
	case TypeKeyCreated:
		data = KeyCreated{Description: d.Description, ExpiresAt: d.ExpiresAt, IsPublic: d.IsPublic,
			SecretHash: d.SecretHash, LastFour: d.LastFour, CreatedAt: d.CreatedAt}
	case TypeDescriptionChanged:
		data = DescriptionChanged{Old: d.Old, New: d.New}
	case TypeKeyRevoked:
		data = KeyRevoked{RevokedAt: d.RevokedAt}
	default:
		return Event{}, false
	}
	e := Event{
		ID: env.ID, Type: env.Type, SchemaVersion: env.SchemaVersion,
		ProjectID: env.ProjectID, KeyID: env.KeyID, UserID: env.UserID, Version: env.Version,
		Time: env.Time, Actor: *env.Actor, RequestID: env.RequestID, Data: data,
	}
	if e.validate() != nil {
		return Event{}, false
	}
	return e, true
}
