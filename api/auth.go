package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"sync"
	"time"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
)

// credentialHeader is one request header of CONTRACT section 2 under both of its names: the
// x-stack-* one, and the x-hexclave-* one that Stack Auth's SDK sends from 2.8.108 on
// (CONTRACT section 6). The two are the same header.
type credentialHeader struct{ stack, hexclave string }

// Request headers of CONTRACT sections 2 and 6.
var (
	headerProjectID  = credentialHeader{"x-stack-project-id", "x-hexclave-project-id"}
	headerServerKey  = credentialHeader{"x-stack-secret-server-key", "x-hexclave-secret-server-key"}
	headerAdminToken = credentialHeader{"x-stack-admin-access-token", "x-hexclave-admin-access-token"}
	headerAccessType = credentialHeader{"x-stack-access-type", "x-hexclave-access-type"}
)

// credentialHeaders are the headers whose two spellings must agree.
var credentialHeaders = []credentialHeader{headerProjectID, headerServerKey, headerAdminToken, headerAccessType}

// Authentication failures. authenticate returns them wrapped in an *authError naming the
// header value at fault; errorTable gives each its code, status and message.
var (
	// errNoProjectID: x-stack-project-id is missing or empty.
	errNoProjectID = errors.New("no project id")
	// errAccessTypeNotAllowed: x-stack-access-type is neither "server" nor "admin".
	errAccessTypeNotAllowed = errors.New("access type not allowed")
	// errNoServerKey: x-stack-secret-server-key is missing or empty.
	errNoServerKey = errors.New("no secret server key")
	// errWrongServerKey: the secret server key is not the project's.
	errWrongServerKey = errors.New("wrong secret server key")
	// errHeaderSpellingsDiffer: a header sent as x-stack-* and x-hexclave-* with two values.
	errHeaderSpellingsDiffer = errors.New("the two spellings of a header differ")
)

// authError is a failed authentication: the reason (one of the errors above or a domain
// error) and what the client is told about it.
type authError struct {
	reason error
	// value is the header value the message names: the access type or the project id, or
	// the header name for errHeaderSpellingsDiffer.
	value string
	// expiredAt is an expired admin token's expiry.
	expiredAt time.Time
}

func (e *authError) Error() string { return "authenticate: " + e.reason.Error() }

func (e *authError) Unwrap() error { return e.reason }

// authValue is the value that an *authError in err names, already shortened for echoing.
func authValue(err error) string {
	if ae, ok := errors.AsType[*authError](err); ok {
		return echo(ae.value)
	}
	return ""
}

// authenticate checks a request's credentials and returns who is calling. The checks run in
// this order, each failing with its own error:
//
//  0. no header is sent under both spellings with two values (SCHEMA_ERROR);
//  1. x-stack-project-id present and not empty (ACCESS_TYPE_WITHOUT_PROJECT_ID);
//  2. x-stack-access-type, when present, is "server" or "admin" (INSUFFICIENT_ACCESS_TYPE);
//  3. the project id is a UUID of an existing project (CURRENT_PROJECT_NOT_FOUND);
//  4. x-stack-secret-server-key present (SERVER_AUTHENTICATION_REQUIRED) and the project's,
//     compared in constant time (INVALID_SECRET_SERVER_KEY);
//  5. x-stack-admin-access-token, when present, a valid admin token of this project.
//
// Header checks that need no lookup come first, so a malformed request costs nothing; the
// project lookup comes before the key check so that the key is compared with a real hash.
func (a *server) authenticate(r *http.Request) (commands.Caller, error) {
	for _, h := range credentialHeaders {
		if _, _, err := credential(r, h); err != nil {
			return commands.Caller{}, err
		}
	}
	accessType, hasAccessType, _ := credential(r, headerAccessType)
	rawProject, _, _ := credential(r, headerProjectID)
	if rawProject == "" {
		return commands.Caller{}, &authError{reason: errNoProjectID, value: accessType}
	}
	if hasAccessType && accessType != "server" && accessType != "admin" {
		return commands.Caller{}, &authError{reason: errAccessTypeNotAllowed, value: accessType}
	}
	projectID, ok := parseUUID(rawProject)
	if !ok {
		return commands.Caller{}, &authError{reason: domain.ErrProjectNotFound, value: rawProject}
	}
	project, err := a.project(r.Context(), projectID)
	if errors.Is(err, domain.ErrProjectNotFound) {
		return commands.Caller{}, &authError{reason: err, value: projectID}
	}
	if err != nil {
		return commands.Caller{}, fmt.Errorf("look up project %s: %w", projectID, err)
	}

	serverKey, _, _ := credential(r, headerServerKey)
	if serverKey == "" {
		return commands.Caller{}, &authError{reason: errNoServerKey}
	}
	if !a.d.Hasher.ServerKeyMatches(serverKey, project.ServerKeyHash) {
		return commands.Caller{}, &authError{reason: errWrongServerKey, value: projectID}
	}
	caller := commands.Caller{
		ProjectID: projectID,
		Actor:     domain.Actor{Type: domain.ActorServerKey, ID: project.ServerKeyID},
		RequestID: requestID(r.Context()),
	}

	token, hasToken, _ := credential(r, headerAdminToken)
	if !hasToken {
		return caller, nil
	}
	claims, err := a.d.Hasher.VerifyAdminToken(token, projectID, a.d.Clock())
	if err != nil {
		if !errors.Is(err, domain.ErrTokenExpired) && !errors.Is(err, domain.ErrTokenNotAdmin) {
			err = domain.ErrTokenUnparsable
		}
		return commands.Caller{}, &authError{reason: err, expiredAt: claims.ExpiresAt}
	}
	caller.Actor = domain.Actor{Type: domain.ActorAdmin, ID: claims.Subject}
	return caller, nil
}

// isGuess tells whether a failed authentication is one the failure limit counts: a
// well-formed project id that names no project (each costs a lookup), a wrong secret server
// key, a refused admin token: what guessing credentials looks like. A header missing or of
// the wrong shape costs nothing to answer and guesses nothing, and is not counted.
func isGuess(err error) bool {
	ae, ok := errors.AsType[*authError](err)
	if !ok {
		return false
	}
	switch {
	case errors.Is(ae.reason, domain.ErrProjectNotFound):
		_, wellFormed := parseUUID(ae.value)
		return wellFormed
	case errors.Is(ae.reason, errWrongServerKey), errors.Is(ae.reason, domain.ErrTokenUnparsable),
		errors.Is(ae.reason, domain.ErrTokenExpired), errors.Is(ae.reason, domain.ErrTokenNotAdmin):
		return true
	}
	return false
}

// credential returns a credential header's first value under either spelling and whether it
// was sent at all (an empty value is still "sent"). Both spellings with different values are
// an error; with the same value they are one header.
func credential(r *http.Request, h credentialHeader) (string, bool, error) {
	stack, hasStack := headerValue(r, h.stack)
	hexclave, hasHexclave := headerValue(r, h.hexclave)
	switch {
	case hasStack && hasHexclave && stack != hexclave:
		return "", false, &authError{reason: errHeaderSpellingsDiffer, value: h.stack + " and " + h.hexclave}
	case hasStack:
		return stack, true, nil
	default:
		return hexclave, hasHexclave, nil
	}
}

// canonicalHeaders are the credential headers' names as net/http stores them, worked out once
// rather than on every lookup (CanonicalMIMEHeaderKey makes a new string for a lowercase
// name: sixteen of them per request).
var canonicalHeaders = func() map[string]string {
	m := map[string]string{}
	for _, h := range credentialHeaders {
		m[h.stack], m[h.hexclave] = textproto.CanonicalMIMEHeaderKey(h.stack), textproto.CanonicalMIMEHeaderKey(h.hexclave)
	}
	return m
}()

func canonicalHeader(name string) string {
	if c, ok := canonicalHeaders[name]; ok {
		return c
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}

// headerValue returns a header's first value and whether the header was sent at all.
func headerValue(r *http.Request, name string) (string, bool) {
	v := r.Header[canonicalHeader(name)]
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// projectCache remembers projects once found, and for a short while ids found to name no
// project. Projects never change after creation (there is no event that does), so a found
// entry never goes stale. An unknown id is remembered for unknownProjectTTL, so that requests
// repeating it are answered without asking the read model and NATS each time; a project
// created meanwhile (projects are created by keysctl, straight onto the stream, whichever
// keysd is asked) is found at most that long after it was first asked for under an id that
// did not exist yet. Ids are random UUIDs that keysctl makes, so only a client that asked for
// one before it existed can see that.
type projectCache struct {
	m sync.Map // project id -> domain.ProjectSnapshot

	mu      sync.Mutex
	unknown map[string]time.Time // project id -> when its "not found" expires
}

// Bounds of the unknown-project cache.
const (
	unknownProjectTTL = 2 * time.Second
	maxUnknown        = 10_000
)

// isUnknown tells whether id was found to name no project less than unknownProjectTTL ago.
func (c *projectCache) isUnknown(id string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.unknown[id]
	if ok && now.After(exp) {
		delete(c.unknown, id)
		return false
	}
	return ok
}

// rememberUnknown records that id names no project; at maxUnknown entries the expired ones
// go, and all of them if none has.
func (c *projectCache) rememberUnknown(id string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unknown == nil {
		c.unknown = make(map[string]time.Time)
	}
	if len(c.unknown) >= maxUnknown {
		for k, exp := range c.unknown {
			if now.After(exp) {
				delete(c.unknown, k)
			}
		}
		if len(c.unknown) >= maxUnknown {
			clear(c.unknown)
		}
	}
	c.unknown[id] = now.Add(unknownProjectTTL)
}

// project returns a project from the cache, the read model, or the event store, in that
// order: the store has a project as soon as `keysctl projects create` exits, the read model
// only once the projector got there.
func (a *server) project(ctx context.Context, id string) (domain.ProjectSnapshot, error) {
	if p, ok := a.projects.m.Load(id); ok {
		return p.(domain.ProjectSnapshot), nil
	}
	now := time.Now()
	if a.projects.isUnknown(id, now) {
		return domain.ProjectSnapshot{}, domain.ErrProjectNotFound
	}
	p, err := a.d.ReadModel.Project(ctx, id)
	if err != nil {
		if !errors.Is(err, domain.ErrProjectNotFound) {
			a.log.WarnContext(ctx, "read model project lookup failed; asking the event store",
				"project_id", id, "request_id", requestID(ctx), "err", err)
		}
		p, err = a.d.Store.LoadProject(ctx, id)
		if errors.Is(err, domain.ErrProjectNotFound) {
			a.projects.rememberUnknown(id, now)
		}
		if err != nil {
			return domain.ProjectSnapshot{}, err
		}
	}
	a.projects.m.Store(id, p)
	return p, nil
}
