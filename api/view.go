package api

import (
	"time"

	"github.com/keyledger/keyledger/domain"
)

// timeLayout is ISO 8601 in UTC with millisecond digits and a Z, the precision keyledger
// records times with: "2025-12-31T23:59:59.000Z".
const timeLayout = "2006-01-02T15:04:05.000Z"

// keyObject is the key object of CONTRACT section 3: the seed page's fields, every one always
// present (null when unset), plus Stack Auth's type, is_public and value. Value is
// {"last_four": "..."} except in the response to create, where it is the full secret.
type keyObject struct {
	ID                string  `json:"id"`
	Description       string  `json:"description"`
	UserID            string  `json:"user_id"`
	ExpiresAt         *string `json:"expires_at"`
	ManuallyRevokedAt *string `json:"manually_revoked_at"`
	CreatedAt         string  `json:"created_at"`
	Type              string  `json:"type"`
	IsPublic          bool    `json:"is_public"`
	Value             any     `json:"value"`
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
	return keyObject{
		ID:                k.ID,
		Description:       k.Description,
		UserID:            k.UserID,
		ExpiresAt:         formatTime(k.ExpiresAt),
		ManuallyRevokedAt: formatTime(k.RevokedAt),
		CreatedAt:         k.CreatedAt.UTC().Format(timeLayout),
		Type:              "user",
		IsPublic:          k.IsPublic,
		Value:             lastFour{LastFour: k.LastFour},
	}
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
