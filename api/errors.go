package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

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
}

func is(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

func isValidation(err error) bool {
	var v *domain.ValidationError
	return errors.As(err, &v)
}

// errProjectorBehind: the projector did not reach the sequence a request waited for in time.
var errProjectorBehind = errors.New("the read model did not catch up in time")

// errorTable is the one place where the errors of domain, commands, eventstore and the
// projector become error codes; the first match wins.
var errorTable = []errorMapping{
	{is(domain.ErrKeyNotFound), http.StatusNotFound, CodeAPIKeyNotFound, "API key not found.", 0},
	{is(domain.ErrInvalidSecretKey), http.StatusNotFound, CodeAPIKeyNotFound, "API key not found.", 0},
	{is(domain.ErrKeyAlreadyRevoked), http.StatusConflict, CodeAPIKeyAlreadyRevoked,
		"API key has been revoked, and revocation cannot be undone.", 0},
	{is(domain.ErrPreconditionFailed), http.StatusPreconditionFailed, CodePreconditionFailed,
		"If-Match does not list the API key's current ETag; nothing was changed.", 0},
	{is(domain.ErrKeyRevoked), http.StatusUnauthorized, CodeAPIKeyRevoked, "API key has been revoked.", 0},
	{is(domain.ErrKeyExpired), http.StatusUnauthorized, CodeAPIKeyExpired, "API key has expired.", 0},
	{isValidation, http.StatusBadRequest, CodeSchemaError, "", 0},
	{is(commands.ErrContention), http.StatusServiceUnavailable, CodeServiceUnavailable,
		"Too many concurrent changes to this API key; retry the request.", retryAfterContention},
	{is(commands.ErrKeyBusy), http.StatusServiceUnavailable, CodeServiceUnavailable,
		"Earlier changes to this API key are still in progress; retry the request.", retryAfterUnavailable},
	{is(errProjectorBehind), http.StatusServiceUnavailable, CodeServiceUnavailable,
		"The service is catching up with recent changes; retry the request.", retryAfterUnavailable},
	{eventstore.IsUnavailable, http.StatusServiceUnavailable, CodeServiceUnavailable,
		"The event store is unavailable; retry the request.", retryAfterUnavailable},
	{projections.IsUnavailable, http.StatusServiceUnavailable, CodeServiceUnavailable,
		"The read model is unavailable; retry the request.", retryAfterUnavailable},
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
		if m.code == CodeSchemaError {
			var v *domain.ValidationError
			errors.As(err, &v)
			return schemaError(r, v.Msg)
		}
		return &apiError{Status: m.status, Code: m.code, Message: m.message, RetryAfter: m.retryAfter, cause: err}
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

// writeJSON sends v as the response body with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := marshalJSON(v)
	if err != nil {
		// Only our own response types reach here; they always encode.
		status = http.StatusInternalServerError
		b = []byte(`{"code":"INTERNAL_SERVER_ERROR","error":"response encoding failed"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func marshalJSON(v any) ([]byte, error) {
	var sb strings.Builder
	enc := json.NewEncoder(&sb)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return []byte(sb.String()), nil
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
