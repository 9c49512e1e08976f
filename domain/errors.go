package domain

import "errors"

// Domain errors. Callers tell them apart with errors.Is; the API maps each to one error code.
var (
	// ErrKeyNotFound: no key with that id in that project.
	ErrKeyNotFound = errors.New("api key not found")
	// ErrKeyAlreadyRevoked: an attempt to un-revoke a revoked key (revocation is one-way).
	ErrKeyAlreadyRevoked = errors.New("api key is already revoked")
	// ErrKeyRevoked: a revoked key was presented for checking.
	ErrKeyRevoked = errors.New("api key has been revoked")
	// ErrKeyExpired: an expired key was presented for checking.
	ErrKeyExpired = errors.New("api key has expired")
	// ErrKeyExists: a key with that id already exists.
	ErrKeyExists = errors.New("api key already exists")
	// ErrProjectNotFound: no project with that id.
	ErrProjectNotFound = errors.New("project not found")
	// ErrProjectExists: a project with that id already exists.
	ErrProjectExists = errors.New("project already exists")
	// ErrInvalidSecretKey: a string that is not a well-formed secret key (bad shape or checksum).
	ErrInvalidSecretKey = errors.New("malformed secret key")
	// ErrPreconditionFailed: a conditional change (HTTP If-Match) whose expected version is not
	// the key's current one; nothing of it is applied.
	ErrPreconditionFailed = errors.New("api key version does not match the precondition")
	// ErrInvalidEvent: an event that breaks the aggregate's invariants (wrong version, wrong key).
	ErrInvalidEvent = errors.New("invalid event for this aggregate")
)

// WrongKeyTypeError: a key of one type presented to the check endpoint of the other (a team
// key to the user check, say).
type WrongKeyTypeError struct{ Expected, Actual KeyType }

func (e *WrongKeyTypeError) Error() string {
	return "this endpoint is for " + string(e.Expected) + " API keys, but a " + string(e.Actual) + " API key was provided"
}

// ValidationError is a command that breaks a rule of its own shape (an empty user id, say),
// independent of any state. Its message is safe to show to the client.
type ValidationError struct{ Msg string }

func (e *ValidationError) Error() string { return e.Msg }
