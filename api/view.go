package api

import (
	"bytes"
	"strconv"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// timeLayout is ISO 8601 in UTC with millisecond digits and a Z, the precision keyledger
// records times with: "2025-12-31T23:59:59.000Z".
const timeLayout = "2006-01-02T15:04:05.000Z"

// keyObject is the key object of CONTRACT section 3: the seed page's fields, every one always
// present (null when unset), plus Stack Auth's type, is_public and value, and Stack Auth's
// own time fields in milliseconds since the epoch, which its SDK reads (CONTRACT section 6).
// Value is {"last_four": "..."} except in the response to create, where it is the full secret.
// A user key has user_id, a team key team_id in its place (CONTRACT section 6); type says which.
type keyObject struct {
	ID                      string  `json:"id"`
	Description             string  `json:"description"`
	UserID                  *string `json:"user_id,omitempty"`
	TeamID                  *string `json:"team_id,omitempty"`
	ExpiresAt               *string `json:"expires_at"`
	ManuallyRevokedAt       *string `json:"manually_revoked_at"`
	CreatedAt               string  `json:"created_at"`
	ExpiresAtMillis         *int64  `json:"expires_at_millis"`
	ManuallyRevokedAtMillis *int64  `json:"manually_revoked_at_millis"`
	CreatedAtMillis         int64   `json:"created_at_millis"`
	Type                    string  `json:"type"`
	IsPublic                bool    `json:"is_public"`
	Value                   any     `json:"value"`
	// LastUsedAt is the key's latest successful check (CONTRACT section 7), null before the
	// first; it may be up to the last-use flush interval behind a check made elsewhere.
	LastUsedAt       *string `json:"last_used_at"`
	LastUsedAtMillis *int64  `json:"last_used_at_millis"`
	// RotatedFrom names the key a rotation replaced, in the rotation's response only.
	RotatedFrom string `json:"rotated_from,omitempty"`
}

type lastFour struct {
	LastFour string `json:"last_four"`
}

// keyList is the list response: Stack Auth's unpaginated list.
type keyList struct {
	IsPaginated bool        `json:"is_paginated"`
	Items       []keyObject `json:"items"`
}

// newKeyObject renders a key as the API shows it after creation.
func newKeyObject(k domain.KeySnapshot) keyObject {
	o := keyObject{
		ID:                      k.ID,
		Description:             k.Description,
		ExpiresAt:               formatTime(k.ExpiresAt),
		ManuallyRevokedAt:       formatTime(k.RevokedAt),
		CreatedAt:               k.CreatedAt.UTC().Format(timeLayout),
		ExpiresAtMillis:         millis(k.ExpiresAt),
		ManuallyRevokedAtMillis: millis(k.RevokedAt),
		CreatedAtMillis:         k.CreatedAt.UnixMilli(),
		Type:                    string(k.Type()),
		IsPublic:                k.IsPublic,
		Value:                   lastFour{LastFour: k.LastFour},
	}
	owner := k.Owner()
	if k.Type() == domain.KeyTypeTeam {
		o.TeamID = &owner
	} else {
		o.UserID = &owner
	}
	return o
}

// millis is t in milliseconds since the epoch, or nil.
func millis(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	ms := t.UnixMilli()
	return &ms
}

// withLastUse sets the key object's last use.
func (o keyObject) withLastUse(at time.Time, ok bool) keyObject {
	if ok {
		o.LastUsedAt, o.LastUsedAtMillis = formatTime(&at), millis(&at)
	}
	return o
}

func formatTime(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := t.UTC().Format(timeLayout)
	return &s
}

// KeyObject renders a key as the key object of CONTRACT section 3, for tools outside the
// API that must print keys exactly as the API does (keysctl keys state).
func KeyObject(k domain.KeySnapshot) any { return newKeyObject(k) }

// appendKeyObject appends o as encodeJSON writes it (the same bytes, newline included)
// without reflection: check answers a key object per request. It returns false for a Value it
// does not know, to be encoded by encodeJSON.
func appendKeyObject(b []byte, o *keyObject) ([]byte, bool) {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, o.ID)
	b = append(b, `,"description":`...)
	b = appendJSONString(b, o.Description)
	if o.UserID != nil {
		b = append(b, `,"user_id":`...)
		b = appendJSONString(b, *o.UserID)
	}
	if o.TeamID != nil {
		b = append(b, `,"team_id":`...)
		b = appendJSONString(b, *o.TeamID)
	}
	b = append(b, `,"expires_at":`...)
	b = appendOptString(b, o.ExpiresAt)
	b = append(b, `,"manually_revoked_at":`...)
	b = appendOptString(b, o.ManuallyRevokedAt)
	b = append(b, `,"created_at":`...)
	b = appendJSONString(b, o.CreatedAt)
	b = append(b, `,"expires_at_millis":`...)
	b = appendOptInt(b, o.ExpiresAtMillis)
	b = append(b, `,"manually_revoked_at_millis":`...)
	b = appendOptInt(b, o.ManuallyRevokedAtMillis)
	b = append(b, `,"created_at_millis":`...)
	b = strconv.AppendInt(b, o.CreatedAtMillis, 10)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, o.Type)
	b = append(b, `,"is_public":`...)
	b = strconv.AppendBool(b, o.IsPublic)
	b = append(b, `,"value":`...)
	switch v := o.Value.(type) {
	case lastFour:
		b = append(b, `{"last_four":`...)
		b = appendJSONString(b, v.LastFour)
		b = append(b, '}')
	case string:
		b = appendJSONString(b, v)
	default:
		return b, false
	}
	b = append(b, `,"last_used_at":`...)
	b = appendOptString(b, o.LastUsedAt)
	b = append(b, `,"last_used_at_millis":`...)
	b = appendOptInt(b, o.LastUsedAtMillis)
	if o.RotatedFrom != "" {
		b = append(b, `,"rotated_from":`...)
		b = appendJSONString(b, o.RotatedFrom)
	}
	return append(b, "}\n"...), true
}

func appendOptString(b []byte, s *string) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	return appendJSONString(b, *s)
}

func appendOptInt(b []byte, n *int64) []byte {
	if n == nil {
		return append(b, "null"...)
	}
	return strconv.AppendInt(b, *n, 10)
}

// appendJSONString appends s quoted as encodeJSON quotes it: printable ASCII other than `"`
// and `\` as is, anything else through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			var buf bytes.Buffer
			_ = encodeJSON(&buf, s) // a string always encodes
			return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
