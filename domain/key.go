package domain

import (
	"fmt"
	"time"
	"unicode/utf8"
)

// Limits on a key's fields.
const (
	MaxUserIDChars      = 128
	MaxDescriptionBytes = 4096
)

// KeyType is whom a key belongs to: a user or a team (Stack Auth's two kinds of API key).
// It is also the type part of the key's secret and the "type" of the key object.
type KeyType string

// The key types.
const (
	KeyTypeUser KeyType = "user"
	KeyTypeTeam KeyType = "team"
)

// KeySnapshot is a key's state as plain data, for read models that store it and hand it
// back to the command side. Version is the number of events the key has.
type KeySnapshot struct {
	ID        string
	ProjectID string
	// UserID is the owner of a user key; TeamID the owner of a team key. Exactly one is set.
	UserID      string
	TeamID      string
	Description string
	ExpiresAt   *time.Time
	RevokedAt   *time.Time
	CreatedAt   time.Time
	IsPublic    bool
	SecretHash  string
	LastFour    string
	Version     int
}

// Type is the key's type: a team key has a TeamID, a user key a UserID.
func (s KeySnapshot) Type() KeyType {
	if s.TeamID != "" {
		return KeyTypeTeam
	}
	return KeyTypeUser
}

// Owner is the id of the user or team the key belongs to.
func (s KeySnapshot) Owner() string {
	if s.TeamID != "" {
		return s.TeamID
	}
	return s.UserID
}

// Key is the API key aggregate (a user's or a team's). Its zero value is not a key; get one from EvolveKey
// (folding events) or RestoreKey (from a read model).
type Key struct{ s KeySnapshot }

// RestoreKey rebuilds a key from a snapshot that a read model kept.
func RestoreKey(s KeySnapshot) *Key { return &Key{s: s} }

// Snapshot returns the key's state as plain data.
func (k *Key) Snapshot() KeySnapshot { return k.s }

// ID is the key's id (a UUID).
func (k *Key) ID() string { return k.s.ID }

// Version is the number of events applied to the key.
func (k *Key) Version() int { return k.s.Version }

// Revoked tells whether the key was manually revoked.
func (k *Key) Revoked() bool { return k.s.RevokedAt != nil }

// Expired tells whether the key's expiry is at or before now.
func (k *Key) Expired(now time.Time) bool {
	return k.s.ExpiresAt != nil && !k.s.ExpiresAt.After(now)
}

// EvolveKey folds one event into a key's state; k is nil before KeyCreated. It returns a new
// key and leaves k unchanged. An event for another key, out of version order, or of a type a
// key does not have is an error wrapping ErrInvalidEvent. What each type does is its
// definition's (event_types.go).
func EvolveKey(k *Key, e Event) (*Key, error) {
	def, ok := eventsByType[e.Type]
	if k == nil {
		if !ok || !def.ForKey || !def.Creates || e.Version != 1 {
			return nil, fmt.Errorf("%w: key %s starts with %s version %d", ErrInvalidEvent, e.KeyID, e.Type, e.Version)
		}
		s := KeySnapshot{ID: e.KeyID, ProjectID: e.ProjectID, UserID: e.UserID, TeamID: e.TeamID, Version: 1}
		if err := def.evolve(&s, e.Data); err != nil {
			return nil, err
		}
		return &Key{s: s}, nil
	}
	next := &Key{s: k.s}
	if err := next.Evolve(e); err != nil {
		return nil, err
	}
	return next, nil
}

// Evolve folds one event into an existing key in place: EvolveKey without the copy, for
// folds of whole streams. On an error k is unchanged.
func (k *Key) Evolve(e Event) error { return EvolveSnapshot(&k.s, e) }

// EvolveSnapshot is Evolve on a key's snapshot, for folds that keep keys in a form of their
// own and reuse one snapshot to apply events (projections.Memory): nothing is allocated but
// what the event sets (a revocation's or an expiry's time). On an error *s is unchanged.
func EvolveSnapshot(s *KeySnapshot, e Event) error {
	if e.KeyID != s.ID || e.ProjectID != s.ProjectID || e.Version != s.Version+1 {
		return fmt.Errorf("%w: %s of key %s version %d applied to key %s version %d",
			ErrInvalidEvent, e.Type, e.KeyID, e.Version, s.ID, s.Version)
	}
	def, ok := eventsByType[e.Type]
	if !ok || !def.ForKey || def.Creates {
		return fmt.Errorf("%w: %s on existing key %s", ErrInvalidEvent, e.Type, s.ID)
	}
	// def.evolve fails only before it changes anything (data of another type).
	if err := def.evolve(s, e.Data); err != nil {
		return err
	}
	s.Version = e.Version
	return nil
}

// FoldKey builds a key from its whole history, oldest first.
func FoldKey(events []Event) (*Key, error) {
	var k *Key
	for _, e := range events {
		next, err := EvolveKey(k, e)
		if err != nil {
			return nil, err
		}
		k = next
	}
	if k == nil {
		return nil, ErrKeyNotFound
	}
	return k, nil
}

// Type is the key's type (KeyTypeUser or KeyTypeTeam).
func (k *Key) Type() KeyType { return k.s.Type() }

// ValidateDescription enforces the description rules: at most 4096 bytes of valid UTF-8
// without U+0000.
func ValidateDescription(field, s string) error {
	return validateText(field, s, 0, MaxDescriptionBytes, false)
}

// ValidateUserID enforces the user id rules: 1 to 128 characters of valid UTF-8 without
// U+0000.
func ValidateUserID(field, s string) error {
	if err := validateText(field, s, 1, 0, false); err != nil {
		return err
	}
	if n := utf8.RuneCountInString(s); n > MaxUserIDChars {
		return &ValidationError{fmt.Sprintf("%s must be at most %d characters", field, MaxUserIDChars)}
	}
	return nil
}

// ValidateTeamID enforces the team id rules, the user id's: 1 to 128 characters of valid
// UTF-8 without U+0000.
func ValidateTeamID(field, s string) error { return ValidateUserID(field, s) }

func validateText(field, s string, minLen, maxBytes int, _ bool) error {
	switch {
	case !utf8.ValidString(s):
		return &ValidationError{field + " must be valid UTF-8"}
	case minLen == 1 && s == "":
		return &ValidationError{field + " must not be empty"}
	case len(s) < minLen:
		return &ValidationError{fmt.Sprintf("%s must be at least %d characters", field, minLen)}
	case maxBytes > 0 && len(s) > maxBytes:
		return &ValidationError{fmt.Sprintf("%s must be at most %d bytes", field, maxBytes)}
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return &ValidationError{field + " must not contain U+0000"}
		}
	}
	return nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC().Truncate(millisecond)
	return &u
}
