package api

import (
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
