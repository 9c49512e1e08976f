package domain

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Upcasting: events are never rewritten on the stream, so a reader meets every schema
// version ever written. UnmarshalEvent converts an older document to the current version, one
// step at a time (0 -> 1 -> ... -> CurrentSchemaVersion), before decoding its data; everything
// after the decoder sees only the current shape. Each step is a pure function of the one
// document (no state, no lookups), so it gives the same result on every read, in every tool.
//
// Version 0 is the draft format of keyledger's first prototype (stored fixtures in
// testdata/schema_v0_*.json):
//
//   - actor was one string "<type>:<id>", such as "server_key:3c9e..." or
//     "admin:alice@example.com" (the type never contains a colon; the id may);
//   - KeyCreated data carried expiry and creation as Unix milliseconds, as the REST API speaks
//     them: "expires_at_millis" (number or null) and "created_at_millis";
//   - DescriptionChanged data was {"from": ..., "to": ...};
//   - KeyRevoked data was {"revoked_at_millis": ...}.
//
// Everything else (ids, type, version, time, request_id, ProjectCreated data) is as in
// version 1.

// storedEnvelope is an envelope of any schema version, as read: the parts that changed
// between versions stay raw until upcast has seen the version.
type storedEnvelope struct {
	ID            string          `json:"id"`
	Type          EventType       `json:"type"`
	SchemaVersion *int            `json:"schema_version"`
	ProjectID     string          `json:"project_id"`
	KeyID         string          `json:"key_id"`
	UserID        string          `json:"user_id"`
	TeamID        string          `json:"team_id"`
	Version       int             `json:"version"`
	Time          time.Time       `json:"time"`
	Actor         json.RawMessage `json:"actor"`
	RequestID     string          `json:"request_id"`
	Data          json.RawMessage `json:"data"`
}

// upcasters[v] converts a stored envelope of schema version v to version v+1, in place.
var upcasters = map[int]func(*storedEnvelope) error{
	0: upcastV0,
}

// upcast converts a stored envelope of any known schema version to the current one.
func upcast(s storedEnvelope) (envelope, error) {
	v := *s.SchemaVersion
	if v < 0 || v > CurrentSchemaVersion {
		return envelope{}, fmt.Errorf("%w: unknown schema_version %d", ErrInvalidEvent, v)
	}
	for ; v < CurrentSchemaVersion; v++ {
		if err := upcasters[v](&s); err != nil {
			return envelope{}, fmt.Errorf("%w: upcast %s from schema_version %d: %v", ErrInvalidEvent, s.Type, v, err)
		}
	}
	var actor Actor
	if err := strictJSON(s.Actor, &actor); err != nil {
		return envelope{}, fmt.Errorf("%w: actor: %v", ErrInvalidEvent, err)
	}
	return envelope{
		ID: s.ID, Type: s.Type, SchemaVersion: CurrentSchemaVersion,
		ProjectID: s.ProjectID, KeyID: s.KeyID, UserID: s.UserID, TeamID: s.TeamID, Version: s.Version,
		Time: s.Time, Actor: actor, RequestID: s.RequestID, Data: s.Data,
	}, nil
}

// upcastV0 converts the prototype's draft format to schema version 1.
func upcastV0(s *storedEnvelope) error {
	var actor string
	if err := strictJSON(s.Actor, &actor); err != nil {
		return fmt.Errorf("actor: %v", err)
	}
	kind, id, ok := strings.Cut(actor, ":")
	if !ok || kind == "" || id == "" {
		return fmt.Errorf("actor %q is not <type>:<id>", actor)
	}
	a, err := json.Marshal(Actor{Type: kind, ID: id})
	if err != nil {
		return err
	}
	s.Actor = a

	var data any
	switch s.Type {
	case TypeKeyCreated:
		var d struct {
			Description     string `json:"description"`
			ExpiresAtMillis *int64 `json:"expires_at_millis"`
			IsPublic        bool   `json:"is_public"`
			SecretHash      string `json:"secret_hash"`
			LastFour        string `json:"last_four"`
			CreatedAtMillis int64  `json:"created_at_millis"`
		}
		if err := strictJSON(s.Data, &d); err != nil {
			return err
		}
		kc := KeyCreated{Description: d.Description, IsPublic: d.IsPublic, SecretHash: d.SecretHash,
			LastFour: d.LastFour, CreatedAt: time.UnixMilli(d.CreatedAtMillis).UTC()}
		if d.ExpiresAtMillis != nil {
			t := time.UnixMilli(*d.ExpiresAtMillis).UTC()
			kc.ExpiresAt = &t
		}
		data = kc
	case TypeDescriptionChanged:
		var d struct {
			From *string `json:"from"`
			To   *string `json:"to"`
		}
		if err := strictJSON(s.Data, &d); err != nil {
			return err
		}
		if d.From == nil || d.To == nil {
			return fmt.Errorf("data needs both from and to")
		}
		data = DescriptionChanged{Old: *d.From, New: *d.To}
	case TypeKeyRevoked:
		var d struct {
			RevokedAtMillis *int64 `json:"revoked_at_millis"`
		}
		if err := strictJSON(s.Data, &d); err != nil {
			return err
		}
		if d.RevokedAtMillis == nil {
			return fmt.Errorf("data needs revoked_at_millis")
		}
		data = KeyRevoked{RevokedAt: time.UnixMilli(*d.RevokedAtMillis).UTC()}
	default:
		return nil // ProjectCreated, and types decodeData refuses, are unchanged
	}
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	s.Data = b
	return nil
}
