package api

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
)

// errUserNotFound: GET /users/{user_id} of a user who has no key in the project.
var errUserNotFound = errors.New("no user with keys in this project")

// riskScores is Stack Auth's risk_scores of a user, which its SDK dereferences.
type riskScores struct {
	SignUp signUpRiskScores `json:"sign_up"`
}

type signUpRiskScores struct {
	Bot            int `json:"bot"`
	FreeTrialAbuse int `json:"free_trial_abuse"`
}

// userObject is Stack Auth's server user object, as far as keyledger knows a user: its id and
// the times of its keys; every other field has the neutral value of a user who never signed
// in, so that @stackframe/js's StackServerApp, which reads them all, can build its user.
type userObject struct {
	ID                              string         `json:"id"`
	PrimaryEmail                    *string        `json:"primary_email"`
	PrimaryEmailVerified            bool           `json:"primary_email_verified"`
	PrimaryEmailAuthEnabled         bool           `json:"primary_email_auth_enabled"`
	DisplayName                     *string        `json:"display_name"`
	SelectedTeam                    any            `json:"selected_team"`
	SelectedTeamID                  *string        `json:"selected_team_id"`
	ProfileImageURL                 *string        `json:"profile_image_url"`
	SignedUpAtMillis                int64          `json:"signed_up_at_millis"`
	HasPassword                     bool           `json:"has_password"`
	OTPAuthEnabled                  bool           `json:"otp_auth_enabled"`
	PasskeyAuthEnabled              bool           `json:"passkey_auth_enabled"`
	ClientMetadata                  map[string]any `json:"client_metadata"`
	ClientReadOnlyMetadata          map[string]any `json:"client_read_only_metadata"`
	ServerMetadata                  map[string]any `json:"server_metadata"`
	LastActiveAtMillis              int64          `json:"last_active_at_millis"`
	IsAnonymous                     bool           `json:"is_anonymous"`
	IsRestricted                    bool           `json:"is_restricted"`
	RestrictedReason                any            `json:"restricted_reason"`
	RestrictedByAdmin               bool           `json:"restricted_by_admin"`
	RestrictedByAdminReason         *string        `json:"restricted_by_admin_reason"`
	RestrictedByAdminPrivateDetails *string        `json:"restricted_by_admin_private_details"`
	CountryCode                     *string        `json:"country_code"`
	RiskScores                      riskScores     `json:"risk_scores"`
	OAuthProviders                  []any          `json:"oauth_providers"`
	AuthWithEmail                   bool           `json:"auth_with_email"`
	RequiresTOTPMFA                 bool           `json:"requires_totp_mfa"`
}

// newUserObject renders a user from its keys (at least one, newest first): signed up when its
// first key was created, last active when its newest was.
func newUserObject(userID string, keys []domain.KeySnapshot) userObject {
	return userObject{
		ID:                     userID,
		SignedUpAtMillis:       keys[len(keys)-1].CreatedAt.UnixMilli(),
		LastActiveAtMillis:     keys[0].CreatedAt.UnixMilli(),
		ClientMetadata:         map[string]any{},
		ClientReadOnlyMetadata: map[string]any{},
		ServerMetadata:         map[string]any{},
		OAuthProviders:         []any{},
	}
}

// getUser is GET /users/{user_id}: a user that has at least one key in the project, as Stack
// Auth's server user object (CONTRACT section 6).
func (s *server) getUser(w http.ResponseWriter, r *http.Request, caller commands.Caller) {
	userID, err := decodeGetUser(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	views, err := s.keysOf(r, caller, userKeys, userID)
	if err != nil {
		writeError(w, r, err)
		return
	}
	if len(views) == 0 {
		writeError(w, r, errUserNotFound)
		return
	}
	keys := make([]domain.KeySnapshot, len(views))
	for i, v := range views {
		keys[i] = v.KeySnapshot
	}
	writeJSON(w, http.StatusOK, newUserObject(userID, keys))
}

// decodeGetUser reads GET /users/{user_id} and returns the user id, which may hold any
// character a user id may (the path is matched escaped, so "/" arrives as %2F).
func decodeGetUser(r *http.Request) (string, error) {
	v := newValidation(r)
	v.query()
	userID, err := url.PathUnescape(pathVar(r, "user_id"))
	if err != nil {
		v.add("params.user_id must be a valid URL path segment")
	} else if err := domain.ValidateUserID("params.user_id", userID); err != nil {
		v.add(validationMessage(err))
	}
	return userID, v.err()
}
