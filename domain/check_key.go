package domain

import "time"

// CheckAs is Check for a key presented to the check endpoint of type t: a key of the other
// type is a *WrongKeyTypeError, reported before revocation and expiry.
func (k *Key) CheckAs(t KeyType, now time.Time) error {
	if actual := k.Type(); actual != t {
		return &WrongKeyTypeError{Expected: t, Actual: actual}
	}
	return k.Check(now)
}

// Check decides whether a presented key is valid at now: revocation is checked before
// expiry, so a key that is both is reported revoked.
func (k *Key) Check(now time.Time) error {
	switch {
	case k.Revoked():
		return ErrKeyRevoked
	case k.Expired(now):
		return ErrKeyExpired
	}
	return nil
}
