package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/projections"
)

// Error codes of the contract (CONTRACT section 2), sent as "code" and, for all but
// CodeInternalServerError, as the x-stack-known-error header. CodeRouteNotFound and
// CodeMethodNotAllowed answer requests outside the contract's routes.
const (
	CodeSchemaError                = "SCHEMA_ERROR"
	CodeBodyParsingError           = "BODY_PARSING_ERROR"
	CodePayloadTooLarge            = "PAYLOAD_TOO_LARGE"
	CodeAPIKeyNotFound             = "API_KEY_NOT_FOUND"
	CodeAPIKeyAlreadyRevoked       = "API_KEY_ALREADY_REVOKED"
	CodeAPIKeyRevoked              = "API_KEY_REVOKED"
	CodeAPIKeyExpired              = "API_KEY_EXPIRED"
	CodeUserNotFound               = "USER_NOT_FOUND"
	CodeWrongAPIKeyType            = "WRONG_API_KEY_TYPE"
	CodeAccessTypeWithoutProjectID = "ACCESS_TYPE_WITHOUT_PROJECT_ID"
	CodeCurrentProjectNotFound     = "CURRENT_PROJECT_NOT_FOUND"
	CodeServerAuthRequired         = "SERVER_AUTHENTICATION_REQUIRED"
	CodeInvalidSecretServerKey     = "INVALID_SECRET_SERVER_KEY"
	CodeUnparsableAdminAccessToken = "UNPARSABLE_ADMIN_ACCESS_TOKEN"
	CodeAdminAccessTokenExpired    = "ADMIN_ACCESS_TOKEN_EXPIRED"
	CodeAdminAccessTokenIsNotAdmin = "ADMIN_ACCESS_TOKEN_IS_NOT_ADMIN"
	CodeInsufficientAccessType     = "INSUFFICIENT_ACCESS_TYPE"
	CodeServiceUnavailable         = "SERVICE_UNAVAILABLE"
	CodePreconditionFailed         = "PRECONDITION_FAILED"
	CodeIdempotencyKeyReused       = "IDEMPOTENCY_KEY_REUSED"
	CodeIdempotencyKeyInUse        = "IDEMPOTENCY_KEY_IN_USE"
	CodeRateLimited                = "RATE_LIMITED"
	CodeRouteNotFound              = "ROUTE_NOT_FOUND"
	CodeMethodNotAllowed           = "METHOD_NOT_ALLOWED"
	CodeInternalServerError        = "INTERNAL_SERVER_ERROR"
)

const (
	headerKnownError = "x-stack-known-error"
	headerRequestID  = "x-stack-request-id"
	// Retry-After seconds: a lost concurrency race clears at once; an outage takes longer.
	retryAfterContention  = 1
	retryAfterUnavailable = 2
	// maxEchoedHeader bounds the part of a header value repeated in an error message.
	maxEchoedHeader             = 256
	schemaErrorPrefixFormat     = "Request validation failed on %s %s:"
	schemaErrorProblemSeparator = "\n  - "
	internalErrorMessageFormat  = "The server failed to handle this request. Request id: %s"
)

// apiError is an error response: the status, the contract's code, a message safe to show to
// the client, optional details, and Retry-After seconds for the retryable ones.
type apiError struct {
	Status     int
	Code       string
	Message    string
	Details    map[string]any
	RetryAfter int
	// cause is the underlying error of a 5xx, logged but never sent.
	cause error
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func (e *apiError) Unwrap() error { return e.cause }

// knownError reports whether the response is one of the contract's known errors, which carry
// the x-stack-known-error header. An internal error (500) is not.
func (e *apiError) knownError() bool { return e.Code != CodeInternalServerError }

// errorMapping maps one kind of error from the layers below to an error response.
type errorMapping struct {
	match      func(error) bool
	status     int
	code       string
	message    string // empty: the error's own message, which is safe to show (ValidationError)
	retryAfter int
	// describe, when set, gives the message and details from the error itself (the header
	// value an authentication failure names), in place of message.
	describe func(err error) (string, map[string]any)
}

func is(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

func isValidation(err error) bool {
	var v *domain.ValidationError
	return errors.As(err, &v)
}

func isWrongKeyType(err error) bool {
	_, ok := errors.AsType[*domain.WrongKeyTypeError](err)
	return ok
}

// errProjectorBehind: the projector did not reach the sequence a request waited for in time.
var errProjectorBehind = errors.New("the read model did not catch up in time")

// errorTable is the one place where the errors of authentication, domain, commands,
// eventstore and the projector become error codes; the first match wins.
var errorTable = []errorMapping{
	{match: is(errHeaderSpellingsDiffer), status: http.StatusBadRequest, code: CodeSchemaError,
		describe: func(err error) (string, map[string]any) {
			msg := authValue(err) + " must have the same value when both are sent"
			return msg, map[string]any{"message": msg}
		}},
	{match: is(errNoProjectID), status: http.StatusBadRequest, code: CodeAccessTypeWithoutProjectID,
		describe: func(err error) (string, map[string]any) {
			requestType := "server"
			if authValue(err) == "admin" {
				requestType = "admin"
			}
			return fmt.Sprintf("The x-stack-access-type header was '%s', but the x-stack-project-id header was not provided.", requestType),
				map[string]any{"request_type": requestType}
		}},
	{match: is(errAccessTypeNotAllowed), status: http.StatusUnauthorized, code: CodeInsufficientAccessType,
		describe: func(err error) (string, map[string]any) {
			v := authValue(err)
			return fmt.Sprintf("The x-stack-access-type header must be 'server' or 'admin', but was '%s'.", v),
				map[string]any{"actual_access_type": v, "allowed_access_types": []string{"server", "admin"}}
		}},
	{match: is(domain.ErrProjectNotFound), status: http.StatusBadRequest, code: CodeCurrentProjectNotFound,
		describe: func(err error) (string, map[string]any) {
			id := authValue(err)
			return fmt.Sprintf("The current project with ID %s was not found. Please check the value of the x-stack-project-id header.", id),
				map[string]any{"project_id": id}
		}},
	{match: is(errNoServerKey), status: http.StatusUnauthorized, code: CodeServerAuthRequired,
		message: "The secret server key must be provided."},
	{match: is(errWrongServerKey), status: http.StatusUnauthorized, code: CodeInvalidSecretServerKey,
		describe: func(err error) (string, map[string]any) {
			id := authValue(err)
			return fmt.Sprintf("The secret server key is not valid for the project %q. Does the project and/or the key exist?", id),
				map[string]any{"project_id": id}
		}},
	{match: is(domain.ErrTokenExpired), status: http.StatusUnauthorized, code: CodeAdminAccessTokenExpired,
		describe: func(err error) (string, map[string]any) {
			var expiredAt time.Time
			if ae, ok := errors.AsType[*authError](err); ok {
				expiredAt = ae.expiredAt
			}
			return "Admin access token has expired. Please refresh it and try again.",
				map[string]any{"expired_at_millis": expiredAt.UnixMilli()}
		}},
	{match: is(domain.ErrTokenNotAdmin), status: http.StatusUnauthorized, code: CodeAdminAccessTokenIsNotAdmin,
		message: "Admin access token does not have the required permissions to access this project."},
	{match: is(domain.ErrTokenUnparsable), status: http.StatusUnauthorized, code: CodeUnparsableAdminAccessToken,
		message: "Admin access token is not parsable."},
	{match: is(domain.ErrKeyNotFound), status: http.StatusNotFound, code: CodeAPIKeyNotFound, message: "API key not found."},
	{match: is(domain.ErrInvalidSecretKey), status: http.StatusNotFound, code: CodeAPIKeyNotFound, message: "API key not found."},
	{match: is(domain.ErrKeyAlreadyRevoked), status: http.StatusConflict, code: CodeAPIKeyAlreadyRevoked,
		message: "API key has been revoked, and revocation cannot be undone."},
	{match: is(domain.ErrPreconditionFailed), status: http.StatusPreconditionFailed, code: CodePreconditionFailed,
		message: "If-Match does not list the API key's current ETag; nothing was changed."},
	{match: is(errIdempotencyKeyReused), status: http.StatusUnprocessableEntity, code: CodeIdempotencyKeyReused,
		message: "This Idempotency-Key was used with another request body; use a new key for a new request."},
	{match: is(errIdempotencyKeyInUse), status: http.StatusConflict, code: CodeIdempotencyKeyInUse,
		message: "A request with this Idempotency-Key is still in flight; retry after it finishes.", retryAfter: retryAfterInFlight},
	{match: isWrongKeyType, status: http.StatusBadRequest, code: CodeWrongAPIKeyType,
		describe: func(err error) (string, map[string]any) {
			wrong, _ := errors.AsType[*domain.WrongKeyTypeError](err)
			return fmt.Sprintf("This endpoint is for %s API keys, but a %s API key was provided.", wrong.Expected, wrong.Actual),
				map[string]any{"expected_type": string(wrong.Expected), "actual_type": string(wrong.Actual)}
		}},
	{match: is(domain.ErrKeyRevoked), status: http.StatusUnauthorized, code: CodeAPIKeyRevoked, message: "API key has been revoked."},
	{match: is(domain.ErrKeyExpired), status: http.StatusUnauthorized, code: CodeAPIKeyExpired, message: "API key has expired."},
	{match: is(errUserNotFound), status: http.StatusNotFound, code: CodeUserNotFound, message: "User not found."},
	{match: isValidation, status: http.StatusBadRequest, code: CodeSchemaError},
	{match: is(commands.ErrContention), status: http.StatusServiceUnavailable, code: CodeServiceUnavailable,
		message: "Too many concurrent changes to this API key; retry the request.", retryAfter: retryAfterContention},
	{match: is(commands.ErrKeyBusy), status: http.StatusServiceUnavailable, code: CodeServiceUnavailable,
		message: "Earlier changes to this API key are still in progress; retry the request.", retryAfter: retryAfterUnavailable},
	{match: is(errProjectorBehind), status: http.StatusServiceUnavailable, code: CodeServiceUnavailable,
		message: "The service is catching up with recent changes; retry the request.", retryAfter: retryAfterUnavailable},
	{match: is(eventstore.ErrStreamUnsafe), status: http.StatusServiceUnavailable, code: CodeServiceUnavailable,
		message: "Writes are suspended: the event stream's configuration no longer keeps every event; retry the request later.", retryAfter: retryAfterUnavailable},
	{match: eventstore.IsUnavailable, status: http.StatusServiceUnavailable, code: CodeServiceUnavailable,
		message: "The event store is unavailable; retry the request.", retryAfter: retryAfterUnavailable},
	{match: projections.IsUnavailable, status: http.StatusServiceUnavailable, code: CodeServiceUnavailable,
		message: "The read model is unavailable; retry the request.", retryAfter: retryAfterUnavailable},
}

// toAPIError turns any error of a request into its response. Errors that are no known kind
// become a 500 that keeps the cause for the log.
func toAPIError(r *http.Request, err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	for _, m := range errorTable {
		if !m.match(err) {
			continue
		}
		if m.code == CodeSchemaError && m.describe == nil {
			var v *domain.ValidationError
			errors.As(err, &v)
			return schemaError(r, v.Msg)
		}
		ae := &apiError{Status: m.status, Code: m.code, Message: m.message, RetryAfter: m.retryAfter, cause: err}
		if m.describe != nil {
			ae.Message, ae.Details = m.describe(err)
		}
		return ae
	}
	return internalError(r, err)
}

func internalError(r *http.Request, err error) *apiError {
	return &apiError{
		Status:  http.StatusInternalServerError,
		Code:    CodeInternalServerError,
		Message: fmt.Sprintf(internalErrorMessageFormat, requestID(r.Context())),
		cause:   err,
	}
}

// schemaError is Stack Auth's SCHEMA_ERROR: every problem of the request, one per line, after
// the method and path, repeated in details.message.
func schemaError(r *http.Request, problems ...string) *apiError {
	msg := fmt.Sprintf(schemaErrorPrefixFormat, r.Method, r.URL.Path) +
		schemaErrorProblemSeparator + strings.Join(problems, schemaErrorProblemSeparator)
	return plainSchemaError(msg)
}

// plainSchemaError is a SCHEMA_ERROR with a message of its own, without the request prefix.
func plainSchemaError(msg string) *apiError {
	return &apiError{
		Status: http.StatusBadRequest, Code: CodeSchemaError, Message: msg,
		Details: map[string]any{"message": msg},
	}
}

func bodyParsingError(msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: CodeBodyParsingError, Message: msg}
}

// errorBody is the JSON of every error response.
type errorBody struct {
	Code    string         `json:"code"`
	Error   string         `json:"error"`
	Details map[string]any `json:"details,omitempty"`
}

// writeError sends err as the contract's error JSON. Causes of server failures are logged by
// the request middleware, not here.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	ae := toAPIError(r, err)
	if info := infoOf(r.Context()); info != nil {
		info.err = ae
	}
	h := w.Header()
	if ae.knownError() {
		h.Set(headerKnownError, ae.Code)
	}
	if ae.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	writeJSON(w, ae.Status, errorBody{Code: ae.Code, Error: ae.Message, Details: ae.Details})
}

// writeJSON sends v as the response body with the given status. The body is encoded into a
// pooled buffer and written from it: no allocation or copy of the body per response (the
// PATCH profile had a body built in a strings.Builder and copied to a slice on every answer).
func writeJSON(w http.ResponseWriter, status int, v any) {
	buf := jsonBuffers.Get().(*bytes.Buffer)
	defer putJSONBuffer(buf)
	if err := encodeResponse(buf, v); err != nil {
		// Only our own response types reach here; they always encode.
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"code":"INTERNAL_SERVER_ERROR","error":"response encoding failed"}`)
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// jsonContentType is every JSON response's Content-Type, set without canonicalizing the name
// each time (the slice is never changed: Header.Set and Add replace or copy it).
var jsonContentType = []string{"application/json; charset=utf-8"}

// encodeResponse is encodeJSON, with a key object (check's answer) encoded without reflection.
func encodeResponse(buf *bytes.Buffer, v any) error {
	if o, ok := v.(keyObject); ok {
		if b, ok := appendKeyObject(buf.AvailableBuffer(), &o); ok {
			buf.Write(b)
			return nil
		}
	}
	return encodeJSON(buf, v)
}

// jsonBuffers holds response buffers; a buffer that grew past maxPooledJSON (a long list) is
// left to the collector rather than kept.
var jsonBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooledJSON = 64 << 10

func putJSONBuffer(buf *bytes.Buffer) {
	if buf.Cap() <= maxPooledJSON {
		buf.Reset()
		jsonBuffers.Put(buf)
	}
}

// encodeJSON appends v's JSON and a newline to buf, without escaping HTML characters.
func encodeJSON(buf *bytes.Buffer, v any) error {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// echo shortens a client-supplied header value before it is put in an error message.
func echo(s string) string {
	if len(s) <= maxEchoedHeader {
		return s
	}
	return s[:maxEchoedHeader] + "…"
}

// isClientGone reports whether a request failed only because its client went away.
func isClientGone(r *http.Request, err error) bool {
	return errors.Is(err, context.Canceled) && r.Context().Err() != nil
}
