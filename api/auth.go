package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
)

// Request headers of CONTRACT section 2.
const (
	headerProjectID  = "x-stack-project-id"
	headerServerKey  = "x-stack-secret-server-key"
	headerAdminToken = "x-stack-admin-access-token"
	headerAccessType = "x-stack-access-type"
)

// authenticate checks a request's credentials and returns who is calling. The checks run in
// this order, each answering with its own error code:
//
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
	accessType, hasAccessType := headerValue(r, headerAccessType)
	rawProject := r.Header.Get(headerProjectID)
	if rawProject == "" {
		requestType := "server"
		if accessType == "admin" {
			requestType = "admin"
		}
		return commands.Caller{}, &apiError{
			Status: http.StatusBadRequest, Code: CodeAccessTypeWithoutProjectID,
			Message: fmt.Sprintf("The x-stack-access-type header was '%s', but the x-stack-project-id header was not provided.", requestType),
			Details: map[string]any{"request_type": requestType},
		}
	}
	if hasAccessType && accessType != "server" && accessType != "admin" {
		return commands.Caller{}, &apiError{
			Status: http.StatusUnauthorized, Code: CodeInsufficientAccessType,
			Message: fmt.Sprintf("The x-stack-access-type header must be 'server' or 'admin', but was '%s'.", echo(accessType)),
			Details: map[string]any{"actual_access_type": echo(accessType), "allowed_access_types": []string{"server", "admin"}},
		}
	}
	projectID, ok := parseUUID(rawProject)
	if !ok {
		return commands.Caller{}, projectNotFound(rawProject)
	}
	project, err := a.project(r.Context(), projectID)
	if errors.Is(err, domain.ErrProjectNotFound) {
		return commands.Caller{}, projectNotFound(projectID)
	}
	if err != nil {
		return commands.Caller{}, fmt.Errorf("look up project %s: %w", projectID, err)
	}

	serverKey := r.Header.Get(headerServerKey)
	if serverKey == "" {
		return commands.Caller{}, &apiError{
			Status: http.StatusUnauthorized, Code: CodeServerAuthRequired,
			Message: "The secret server key must be provided.",
		}
	}
	if !a.d.Hasher.ServerKeyMatches(serverKey, project.ServerKeyHash) {
		return commands.Caller{}, &apiError{
			Status: http.StatusUnauthorized, Code: CodeInvalidSecretServerKey,
			Message: fmt.Sprintf("The secret server key is not valid for the project %q. Does the project and/or the key exist?", projectID),
			Details: map[string]any{"project_id": projectID},
		}
	}
	caller := commands.Caller{
		ProjectID: projectID,
		Actor:     domain.Actor{Type: domain.ActorServerKey, ID: project.ServerKeyID},
		RequestID: requestID(r.Context()),
	}

	token, hasToken := headerValue(r, headerAdminToken)
	if !hasToken {
		return caller, nil
	}
	claims, err := a.d.Hasher.VerifyAdminToken(token, projectID, a.d.Clock())
	switch {
	case errors.Is(err, domain.ErrTokenExpired):
		return commands.Caller{}, &apiError{
			Status: http.StatusUnauthorized, Code: CodeAdminAccessTokenExpired,
			Message: "Admin access token has expired. Please refresh it and try again.",
			Details: map[string]any{"expired_at_millis": claims.ExpiresAt.UnixMilli()},
		}
	case errors.Is(err, domain.ErrTokenNotAdmin):
		return commands.Caller{}, &apiError{
			Status: http.StatusUnauthorized, Code: CodeAdminAccessTokenIsNotAdmin,
			Message: "Admin access token does not have the required permissions to access this project.",
		}
	case err != nil:
		return commands.Caller{}, &apiError{
			Status: http.StatusUnauthorized, Code: CodeUnparsableAdminAccessToken,
			Message: "Admin access token is not parsable.",
		}
	}
	caller.Actor = domain.Actor{Type: domain.ActorAdmin, ID: claims.Subject}
	return caller, nil
}

func projectNotFound(projectID string) *apiError {
	id := echo(projectID)
	return &apiError{
		Status: http.StatusBadRequest, Code: CodeCurrentProjectNotFound,
		Message: fmt.Sprintf("The current project with ID %s was not found. Please check the value of the x-stack-project-id header.", id),
		Details: map[string]any{"project_id": id},
	}
}

// headerValue returns a header's first value and whether the header was sent at all (an
// empty value is still "sent").
func headerValue(r *http.Request, name string) (string, bool) {
	v := r.Header.Values(name)
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// projectCache remembers projects once found. Projects never change after creation (there is
// no event that does), so an entry never goes stale; unknown ids are not remembered, so a
// project created a moment ago by keysctl is found on its first request.
type projectCache struct{ m sync.Map } // project id -> domain.ProjectSnapshot

// project returns a project from the cache, the read model, or the event store, in that
// order: the store has a project as soon as `keysctl projects create` exits, the read model
// only once the projector got there.
func (a *server) project(ctx context.Context, id string) (domain.ProjectSnapshot, error) {
	if p, ok := a.projects.m.Load(id); ok {
		return p.(domain.ProjectSnapshot), nil
	}
	p, err := a.d.ReadModel.Project(ctx, id)
	if err != nil {
		if !errors.Is(err, domain.ErrProjectNotFound) {
			a.log.WarnContext(ctx, "read model project lookup failed; asking the event store",
				"project_id", id, "request_id", requestID(ctx), "err", err)
		}
		p, err = a.d.Store.LoadProject(ctx, id)
		if err != nil {
			return domain.ProjectSnapshot{}, err
		}
	}
	a.projects.m.Store(id, p)
	return p, nil
}
