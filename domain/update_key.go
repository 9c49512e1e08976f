package domain

// UpdateKey is the PATCH of the seed page: only the fields that are set are applied.
type UpdateKey struct {
	Description *string
	Revoked     *bool
	// Precondition, when set, must hold for the key's current version (HTTP If-Match) or
	// the update is ErrPreconditionFailed and nothing of it is applied. It is checked on the
	// state the append's concurrency expectation is taken from, so a writer that slipped in
	// between is caught: the append fails, the key is reloaded and the precondition checked
	// again on the newer version.
	Precondition func(version int) bool
	// Type is the type of key the request addresses (its path): a key of the other type is
	// ErrKeyNotFound, as if it did not exist. Empty: a key of either type (a leaked key
	// reported by a secret scanner).
	Type KeyType
}

// addressedAs returns ErrKeyNotFound when the key is not of type t (t empty: any type), so
// that a user key is not found on a team path and the reverse.
func (k *Key) addressedAs(t KeyType) error {
	if t != "" && t != k.Type() {
		return ErrKeyNotFound
	}
	return nil
}

// DecideUpdate returns the events a PATCH emits on this key, oldest first: possibly a
// DescriptionChanged, then possibly a KeyRevoked; none when nothing changes.
//
// Rules (CONTRACT section 3): a description equal to the current one emits nothing;
// revoked:true on a revoked key emits nothing and keeps the first timestamp; revoked:false
// on an active key is a no-op and on a revoked key is ErrKeyAlreadyRevoked, with nothing
// of the request applied. Expiry does not matter: expired keys can be renamed and revoked.
func (k *Key) DecideUpdate(c UpdateKey, m Meta) ([]Event, error) {
	if err := k.addressedAs(c.Type); err != nil {
		return nil, err
	}
	if c.Precondition != nil && !c.Precondition(k.s.Version) {
		return nil, ErrPreconditionFailed
	}
	if c.Revoked != nil && !*c.Revoked && k.Revoked() {
		return nil, ErrKeyAlreadyRevoked
	}
	if c.Description != nil {
		if err := ValidateDescription("body.description", *c.Description); err != nil {
			return nil, err
		}
	}
	var events []Event
	version := k.s.Version
	emit := func(d EventData) {
		version++
		events = append(events, newEvent(m, k.s.ProjectID, k.s.ID, k.s.UserID, k.s.TeamID, version, d))
	}
	if c.Description != nil && *c.Description != k.s.Description {
		emit(DescriptionChanged{Old: k.s.Description, New: *c.Description})
	}
	if c.Revoked != nil && *c.Revoked && !k.Revoked() {
		emit(KeyRevoked{RevokedAt: m.Time.UTC().Truncate(millisecond)})
	}
	return events, nil
}
