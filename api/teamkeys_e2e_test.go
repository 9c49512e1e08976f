package api_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// CONTRACT section 6: team API keys, with the same rules, errors and events as user keys.

const v1Team = "/api/v1/team-api-keys"

// createTeamKey creates a team key and returns the response (with the secret in "value").
func (e *env) createTeamKey(t *testing.T, p project, body string) response {
	t.Helper()
	r := e.ok(t, http.MethodPost, v1Team, p.headers(), body)
	checkKeyObject(t, r.body, true)
	e.remember(r.body["value"].(string))
	return r
}

func TestTeamKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p, other := e.newProject(t), e.newProject(t)
	h := p.headers()

	first := e.createTeamKey(t, p, `{"team_id":"team-1","description":"First team key"}`)
	expiry := time.Now().Add(24 * time.Hour).Truncate(time.Millisecond).UTC()
	second := e.createTeamKey(t, p, fmt.Sprintf(`{"team_id":"team-1","description":"Public","expires_at_millis":%d,"is_public":true}`, expiry.UnixMilli()))
	e.createTeamKey(t, p, `{"team_id":"team-2","description":"another team's"}`)
	e.createTeamKey(t, other, `{"team_id":"team-1","description":"another project's"}`)
	// A user whose id is a team's id has keys of its own.
	userKey := e.createKey(t, p, `{"user_id":"team-1","description":"a user called team-1"}`)
	firstID, secondID, userKeyID := first.body["id"].(string), second.body["id"].(string), userKey.body["id"].(string)
	firstSecret, userSecret := first.body["value"].(string), userKey.body["value"].(string)

	t.Run("create", func(t *testing.T) {
		b := first.body
		if b["type"] != "team" || b["team_id"] != "team-1" || b["description"] != "First team key" || b["expires_at"] != nil {
			t.Fatalf("created team key: %s", first)
		}
		if _, ok := b["user_id"]; ok {
			t.Fatalf("a team key has a user_id: %s", first)
		}
		if !strings.HasPrefix(firstSecret, "sk_") || !strings.Contains(firstSecret, "team1574ck4u7h") ||
			!strings.HasPrefix(second.body["value"].(string), "pk_") {
			t.Fatalf("team secrets %s…, %s…", firstSecret[:6], second.body["value"].(string)[:6])
		}
		if first.header.Get("ETag") != `"1"` {
			t.Fatalf("ETag %q", first.header.Get("ETag"))
		}
	})

	t.Run("KeyCreated carries team_id", func(t *testing.T) {
		recs := e.events(t, p.id, firstID)
		if len(recs) != 1 || recs[0].Event.Type != domain.TypeKeyCreated || recs[0].Event.TeamID != "team-1" || recs[0].Event.UserID != "" {
			t.Fatalf("events of a team key: %+v", recs)
		}
		if !strings.Contains(string(recs[0].Raw), `"team_id":"team-1"`) || strings.Contains(string(recs[0].Raw), `"user_id"`) {
			t.Fatalf("KeyCreated of a team key: %s", recs[0].Raw)
		}
	})

	t.Run("list by team, newest first", func(t *testing.T) {
		r := e.ok(t, http.MethodGet, v1Team+"?team_id=team-1", h, "")
		var ids []string
		for _, it := range r.body["items"].([]any) {
			checkKeyObject(t, it.(map[string]any), false)
			ids = append(ids, it.(map[string]any)["id"].(string))
		}
		if want := []string{secondID, firstID}; !slices.Equal(ids, want) {
			t.Fatalf("team-1's keys %v, want %v", ids, want)
		}
		r = e.ok(t, http.MethodGet, v1+"?user_id=team-1", h, "")
		if items := r.body["items"].([]any); len(items) != 1 || items[0].(map[string]any)["id"] != userKeyID {
			t.Fatalf("the user team-1's keys: %s", r)
		}
		e.refused(t, http.MethodGet, v1Team, h, "", 400, "SCHEMA_ERROR")
		r = e.refused(t, http.MethodGet, v1Team+"?user_id=team-1", h, "", 400, "SCHEMA_ERROR")
		if !strings.Contains(r.body["error"].(string), "unknown properties: user_id") {
			t.Fatalf("list with user_id: %s", r)
		}
		e.refused(t, http.MethodGet, v1Team+"?team_id=", h, "", 400, "SCHEMA_ERROR")
	})

	t.Run("get and update, with the SDK's ?team_id=", func(t *testing.T) {
		r := e.ok(t, http.MethodGet, v1Team+"/"+firstID+"?team_id=team-1", h, "")
		checkKeyObject(t, r.body, false)
		if r.body["team_id"] != "team-1" || r.header.Get("ETag") != `"1"` {
			t.Fatalf("get team key: %s", r)
		}
		r = e.ok(t, http.MethodPatch, v1Team+"/"+firstID+"?team_id=team-1", h, `{"description":"renamed"}`)
		if r.body["description"] != "renamed" || r.header.Get("ETag") != `"2"` {
			t.Fatalf("rename team key: %s", r)
		}
		recs := e.events(t, p.id, firstID)
		if last := recs[len(recs)-1].Event; last.Type != domain.TypeDescriptionChanged || last.TeamID != "team-1" {
			t.Fatalf("rename of a team key: %+v", last)
		}
		withMatch := with(h, "If-Match", str(`"1"`))
		e.refused(t, http.MethodPatch, v1Team+"/"+firstID, withMatch, `{"description":"stale"}`, 412, "PRECONDITION_FAILED")
		nm := call(t, e.url, http.MethodGet, v1Team+"/"+firstID, with(h, "If-None-Match", str(`"2"`)), "")
		if nm.status != http.StatusNotModified || len(nm.raw) != 0 {
			t.Fatalf("If-None-Match of the current ETag: %s", nm)
		}
		e.refused(t, http.MethodPatch, v1Team+"/"+firstID, h, `{"description":"x","user_id":"u"}`, 400, "SCHEMA_ERROR")
		e.refused(t, http.MethodPost, v1Team, h, `{"user_id":"u","description":"x"}`, 400, "SCHEMA_ERROR")
		e.refused(t, http.MethodPost, v1Team, h, `{"team_id":"","description":"x"}`, 400, "SCHEMA_ERROR")
		e.refused(t, http.MethodPost, v1Team, h, `{"team_id":null,"description":"x"}`, 400, "SCHEMA_ERROR")
	})

	t.Run("a key of the other kind is not found on a path", func(t *testing.T) {
		for _, c := range []struct{ method, path, body string }{
			{http.MethodGet, v1Team + "/" + userKeyID, ""},
			{http.MethodPatch, v1Team + "/" + userKeyID, `{"revoked":true}`},
			{http.MethodPost, v1Team + "/" + userKeyID + "/rotate", `{"grace_period_seconds":0}`},
			{http.MethodGet, v1Team + "/" + userKeyID + "/events", ""},
			{http.MethodGet, v1 + "/" + firstID, ""},
			{http.MethodPatch, v1 + "/" + firstID, `{"revoked":true}`},
			{http.MethodPost, v1 + "/" + firstID + "/rotate", `{"grace_period_seconds":0}`},
			{http.MethodGet, v1 + "/" + firstID + "/events", ""},
		} {
			e.refused(t, c.method, c.path, h, c.body, 404, "API_KEY_NOT_FOUND")
		}
		// Another project's team key is not found either.
		e.refused(t, http.MethodGet, v1Team+"/"+firstID, other.headers(), "", 404, "API_KEY_NOT_FOUND")
	})

	t.Run("check", func(t *testing.T) {
		r := e.ok(t, http.MethodPost, v1Team+"/check", h, `{"api_key":"`+firstSecret+`"}`)
		checkKeyObject(t, r.body, false)
		if r.body["id"] != firstID || r.body["type"] != "team" {
			t.Fatalf("check of a team key: %s", r)
		}
		r = e.refused(t, http.MethodPost, v1+"/check", h, `{"api_key":"`+firstSecret+`"}`, 400, "WRONG_API_KEY_TYPE")
		if detail(r, "expected_type") != "user" || detail(r, "actual_type") != "team" {
			t.Fatalf("team key at the user check: %s", r)
		}
		r = e.refused(t, http.MethodPost, v1Team+"/check", h, `{"api_key":"`+userSecret+`"}`, 400, "WRONG_API_KEY_TYPE")
		if detail(r, "expected_type") != "team" || detail(r, "actual_type") != "user" {
			t.Fatalf("user key at the team check: %s", r)
		}
		e.refused(t, http.MethodPost, v1Team+"/check", other.headers(), `{"api_key":"`+firstSecret+`"}`, 404, "API_KEY_NOT_FOUND")
		e.refused(t, http.MethodPost, v1Team+"/check", h, `{"api_key":"sk_garbage"}`, 404, "API_KEY_NOT_FOUND")
	})

	t.Run("rotate", func(t *testing.T) {
		r := e.ok(t, http.MethodPost, v1Team+"/"+secondID+"/rotate", h, `{"grace_period_seconds":60}`)
		checkKeyObject(t, r.body, true)
		e.remember(r.body["value"].(string))
		if r.body["type"] != "team" || r.body["team_id"] != "team-1" || r.body["rotated_from"] != secondID ||
			r.body["description"] != "Public" || r.body["is_public"] != true || !strings.HasPrefix(r.body["value"].(string), "pk_") {
			t.Fatalf("rotation of a team key: %s", r)
		}
		old := e.ok(t, http.MethodGet, v1Team+"/"+secondID, h, "")
		if old.body["expires_at_millis"] == nil || old.body["expires_at_millis"].(float64) > float64(time.Now().Add(61*time.Second).UnixMilli()) {
			t.Fatalf("the rotated team key's expiry: %s", old)
		}
		recs := e.events(t, p.id, secondID)
		if last := recs[len(recs)-1].Event; last.Type != domain.TypeExpiryChanged || last.TeamID != "team-1" {
			t.Fatalf("rotation's ExpiryChanged of a team key: %+v", last)
		}
		e.ok(t, http.MethodPost, v1Team+"/check", h, `{"api_key":"`+r.body["value"].(string)+`"}`)
	})

	t.Run("revoke, then checks report it", func(t *testing.T) {
		r := e.ok(t, http.MethodPatch, v1Team+"/"+firstID, h, `{"revoked":true}`)
		if r.body["manually_revoked_at"] == nil {
			t.Fatalf("revoke team key: %s", r)
		}
		e.refused(t, http.MethodPatch, v1Team+"/"+firstID, h, `{"revoked":false}`, 409, "API_KEY_ALREADY_REVOKED")
		e.refused(t, http.MethodPost, v1Team+"/check", h, `{"api_key":"`+firstSecret+`"}`, 401, "API_KEY_REVOKED")
		// The type is reported before the revocation.
		e.refused(t, http.MethodPost, v1+"/check", h, `{"api_key":"`+firstSecret+`"}`, 400, "WRONG_API_KEY_TYPE")
		e.refused(t, http.MethodPost, v1Team+"/"+firstID+"/rotate", h, `{"grace_period_seconds":0}`, 409, "API_KEY_ALREADY_REVOKED")
	})

	t.Run("a leaked team key is revoked by credential scanning", func(t *testing.T) {
		k := e.createTeamKey(t, p, `{"team_id":"team-4","description":"leaked"}`)
		r := call(t, e.url, http.MethodPost, "/api/v1/integrations/credential-scanning/revoke", http.Header{}, `{"api_key":"`+k.body["value"].(string)+`"}`)
		if r.status != http.StatusOK {
			t.Fatalf("credential scanning: %s", r)
		}
		got := e.ok(t, http.MethodGet, v1Team+"/"+k.body["id"].(string), h, "")
		if got.body["manually_revoked_at"] == nil {
			t.Fatalf("leaked team key not revoked: %s", got)
		}
	})
}
