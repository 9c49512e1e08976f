package domain

import "time"

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
