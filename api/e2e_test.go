package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/api"
	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/service"
	"github.com/keyledger/keyledger/internal/testenv"
	"github.com/keyledger/keyledger/projections"
)

// The tests below drive the API through HTTP against a real in-process NATS JetStream, the
// real command handler, the in-process read model and its projector: every row of CONTRACT
// sections 2 and 3, with each refused request checked to have appended nothing.

const v1 = "/api/v1/user-api-keys"

// env is one keyledger deployment for one test: its own NATS server and stream.
type env struct {
	nats   *testenv.NATSServer
	store  *eventstore.Store
	hasher *domain.Hasher
	cmds   *commands.Handler
	logs   *testenv.Buffer
	url    string // the first keysd instance
	// secrets seen by the test, none of which may appear in a log line
	mu      sync.Mutex
	secrets []string
}

type project struct{ id, serverKey string }

type envOptions struct {
	storeTimeout time.Duration
	// syncAlways: the NATS server syncs every write before acknowledging it
	syncAlways bool
}

func newEnv(t *testing.T, opts envOptions) *env {
	t.Helper()
	ns := testenv.NATS(t)
	if opts.syncAlways {
		ns = testenv.NATSSyncAlways(t)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	hasher, err := domain.NewHasher(secret)
	if err != nil {
		t.Fatal(err)
	}
	store := openStore(t, ns, opts.storeTimeout, hasher)
	e := &env{nats: ns, store: store, hasher: hasher, logs: &testenv.Buffer{}}
	e.url, e.cmds = e.instance(t, false)
	t.Cleanup(func() { e.checkLogs(t) })
	return e
}

func openStore(t *testing.T, ns *testenv.NATSServer, timeout time.Duration, hasher *domain.Hasher) *eventstore.Store {
	t.Helper()
	store, err := eventstore.Open(context.Background(), ns.Connect(t), eventstore.Config{Timeout: timeout, EventKey: hasher.EventKey()})
	if err != nil {
		t.Fatalf("open event store: %v", err)
	}
	return store
}

// instance starts one keysd's worth of API: its own read model, projector and command handler
// on the env's stream, served by an httptest server.
func (e *env) instance(t *testing.T, readBarrier bool) (string, *commands.Handler) {
	t.Helper()
	svc, err := service.Start(service.Config{
		Store: e.store, ReadModel: projections.NewMemory(), Hasher: e.hasher,
		API:       api.Deps{Logger: slog.New(slog.NewJSONHandler(e.logs, nil)), ReadBarrier: readBarrier},
		Projector: projections.ProjectorConfig{Logger: slog.New(slog.NewTextHandler(e.logs, nil))},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	srv := httptest.NewServer(svc.Handler)
	t.Cleanup(srv.Close)
	return srv.URL, svc.Commands
}

// newProject creates a project the way `keysctl projects create` does: one event appended
// straight to the store, with no keysd involved.
func (e *env) newProject(t *testing.T) project {
	t.Helper()
	p, err := e.cmds.CreateProject(context.Background(), domain.Actor{Type: domain.ActorOperator, ID: "test"}, "test project")
	if err != nil {
		t.Fatalf("create project: %v", err)
	}
	e.remember(p.ServerKey)
	return project{id: p.Project.ID, serverKey: p.ServerKey}
}

func (e *env) adminToken(t *testing.T, projectID, subject string, expiresIn time.Duration) string {
	t.Helper()
	now := time.Now()
	tok, err := e.hasher.IssueAdminToken(domain.AdminClaims{ProjectID: projectID, Subject: subject, IssuedAt: now, ExpiresAt: now.Add(expiresIn)})
	if err != nil {
		t.Fatal(err)
	}
	e.remember(tok)
	return tok
}

func (e *env) remember(secret string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.secrets = append(e.secrets, secret)
}

// checkLogs fails the test if a secret reached a log line.
func (e *env) checkLogs(t *testing.T) {
	logs := e.logs.String()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.secrets {
		if strings.Contains(logs, s) {
			t.Errorf("a secret (%s…) appears in the logs", s[:6])
		}
	}
}

func (e *env) lastSeq(t *testing.T) uint64 {
	t.Helper()
	seq, err := e.store.LastSeq(context.Background())
	if err != nil {
		t.Fatalf("last seq: %v", err)
	}
	return seq
}

// events returns a key's events from the stream.
func (e *env) events(t *testing.T, projectID, keyID string) []eventstore.RecordedEvent {
	t.Helper()
	recs, err := e.store.LoadKey(context.Background(), projectID, keyID)
	if err != nil {
		t.Fatalf("load key %s: %v", keyID, err)
	}
	return recs
}

// headers are the credentials of a project, sent as a server-side client does.
func (p project) headers() http.Header {
	return http.Header{
		"X-Stack-Project-Id":        {p.id},
		"X-Stack-Secret-Server-Key": {p.serverKey},
		"X-Stack-Access-Type":       {"server"},
	}
}

// with returns a copy of h with name set to value, or removed when value is nil.
func with(h http.Header, name string, value *string) http.Header {
	h = h.Clone()
	if value == nil {
		h.Del(name)
	} else {
		h.Set(name, *value)
	}
	return h
}

func str(s string) *string { return &s }

type response struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (r response) code() string { s, _ := r.body["code"].(string); return s }

func (r response) String() string { return fmt.Sprintf("%d %s", r.status, r.raw) }

// call sends one request and checks what every response of the contract has: a request id,
// no caching, never a 5xx other than a 503 with Retry-After, and for an error the JSON shape
// with x-stack-known-error equal to its code.
func call(t *testing.T, base, method, path string, h http.Header, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	if body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := response{status: res.StatusCode, header: res.Header, raw: raw}
	_ = json.Unmarshal(raw, &r.body)
	checkAgainstOpenAPI(t, req, body, r)
	if res.Header.Get("x-stack-request-id") == "" {
		t.Errorf("%s %s: no x-stack-request-id", method, path)
	}
	if cc := res.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("%s %s: Cache-Control %q", method, path, cc)
	}
	if r.status >= 500 && r.status != http.StatusServiceUnavailable {
		t.Fatalf("%s %s: server failure %s", method, path, r)
	}
	if r.status >= 400 {
		if r.body == nil || r.code() == "" || r.body["error"] == nil {
			t.Fatalf("%s %s: error without the JSON shape: %s", method, path, r)
		}
		if got := res.Header.Get("x-stack-known-error"); got != r.code() {
			t.Fatalf("%s %s: x-stack-known-error %q, code %q", method, path, got, r.code())
		}
		if _, ok := r.body["details"]; ok && r.body["details"] == nil {
			t.Fatalf("%s %s: details is null rather than absent", method, path)
		}
	}
	if r.status == http.StatusServiceUnavailable && res.Header.Get("Retry-After") == "" {
		t.Fatalf("%s %s: 503 without Retry-After", method, path)
	}
	return r
}

// refused sends a request that must be refused with status and code, and must append
// nothing to the stream.
func (e *env) refused(t *testing.T, method, path string, h http.Header, body string, status int, code string) response {
	t.Helper()
	before := e.lastSeq(t)
	r := call(t, e.url, method, path, h, body)
	if r.status != status || r.code() != code {
		t.Fatalf("%s %s: got %s, want %d %s", method, path, r, status, code)
	}
	if after := e.lastSeq(t); after != before {
		t.Fatalf("%s %s: refused with %s, yet the stream went from %d to %d", method, path, code, before, after)
	}
	return r
}

// ok sends a request that must succeed.
func (e *env) ok(t *testing.T, method, path string, h http.Header, body string) response {
	t.Helper()
	r := call(t, e.url, method, path, h, body)
	if r.status != http.StatusOK {
		t.Fatalf("%s %s: got %s, want 200", method, path, r)
	}
	return r
}

// createKey creates a key and returns the response (with the secret in "value").
func (e *env) createKey(t *testing.T, p project, body string) response {
	t.Helper()
	r := e.ok(t, http.MethodPost, v1, p.headers(), body)
	checkKeyObject(t, r.body, true)
	e.remember(r.body["value"].(string))
	return r
}

var isoUTC = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$`)

// checkKeyObject checks the key object of CONTRACT section 3: exactly these fields, the
// timestamps in ISO 8601 UTC or null, never omitted; a team key (section 6) has team_id in
// place of user_id.
func checkKeyObject(t *testing.T, k map[string]any, created bool) {
	t.Helper()
	owner := "user_id"
	if k["type"] == "team" {
		owner = "team_id"
	}
	want := []string{"created_at", "created_at_millis", "description", "expires_at", "expires_at_millis", "id", "is_public",
		"last_used_at", "last_used_at_millis", "manually_revoked_at", "manually_revoked_at_millis", owner, "type", "value"}
	slices.Sort(want)
	var got []string
	for name := range k {
		if name != "rotated_from" || !created { // a rotation's response names the key it replaced
			got = append(got, name)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("key object fields %v, want %v", got, want)
	}
	if _, ok := k["id"].(string); !ok {
		t.Fatalf("id %v", k["id"])
	}
	if k["type"] != "user" && k["type"] != "team" {
		t.Fatalf("type %v", k["type"])
	}
	if s, ok := k[owner].(string); !ok || s == "" {
		t.Fatalf("%s %v", owner, k[owner])
	}
	if _, ok := k["is_public"].(bool); !ok {
		t.Fatalf("is_public %v", k["is_public"])
	}
	for _, f := range []string{"created_at", "expires_at", "manually_revoked_at"} {
		v := k[f]
		if v == nil && f != "created_at" {
			continue
		}
		s, ok := v.(string)
		if !ok || !isoUTC.MatchString(s) {
			t.Fatalf("%s = %v, want ISO 8601 UTC", f, v)
		}
	}
	// Stack Auth's *_millis fields are the ISO ones in milliseconds, null where they are null.
	for _, f := range []string{"created_at", "expires_at", "manually_revoked_at"} {
		iso, ms := k[f], k[f+"_millis"]
		if iso == nil {
			if ms != nil {
				t.Fatalf("%s is null but %s_millis = %v", f, f, ms)
			}
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, iso.(string))
		n, ok := ms.(float64)
		if err != nil || !ok || n != float64(at.UnixMilli()) || n != float64(int64(n)) {
			t.Fatalf("%s = %v but %s_millis = %v", f, iso, f, ms)
		}
	}
	if created {
		if s, ok := k["value"].(string); !ok || (!strings.HasPrefix(s, "sk_") && !strings.HasPrefix(s, "pk_")) {
			t.Fatalf("value on create = %v, want the secret", k["value"])
		}
		return
	}
	v, ok := k["value"].(map[string]any)
	if !ok || len(v) != 1 {
		t.Fatalf("value = %v, want {last_four}", k["value"])
	}
	if lf, ok := v["last_four"].(string); !ok || len(lf) != 4 {
		t.Fatalf("value.last_four = %v", v["last_four"])
	}
}

func detail(r response, name string) any {
	d, _ := r.body["details"].(map[string]any)
	return d[name]
}

// ---------------------------------------------------------------------------------------
// CONTRACT section 2: request headers.

func TestAuthentication(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.newProject(t)
	other := e.newProject(t)
	key := e.createKey(t, p, `{"user_id":"u1","description":"k"}`)
	keyPath := v1 + "/" + key.body["id"].(string)
	h := p.headers()
	// Every endpoint authenticates the same way, before it looks at its params or body.
	endpoints := []struct{ name, method, path, body string }{
		{"create", http.MethodPost, v1, `{"user_id":"u1","description":"x"}`},
		{"list", http.MethodGet, v1 + "?user_id=u1", ""},
		{"get", http.MethodGet, keyPath, ""},
		{"update", http.MethodPatch, keyPath, `{"description":"changed"}`},
		{"check", http.MethodPost, v1 + "/check", `{"api_key":"` + key.body["value"].(string) + `"}`},
		{"get user", http.MethodGet, "/api/v1/users/u1", ""},
	}
	for _, ep := range endpoints {
		t.Run(ep.name, func(t *testing.T) {
			r := e.refused(t, ep.method, ep.path, with(h, "X-Stack-Project-Id", nil), ep.body, 400, "ACCESS_TYPE_WITHOUT_PROJECT_ID")
			if detail(r, "request_type") != "server" {
				t.Fatalf("details.request_type = %v", detail(r, "request_type"))
			}
			e.refused(t, ep.method, ep.path, with(h, "X-Stack-Project-Id", str("")), ep.body, 400, "ACCESS_TYPE_WITHOUT_PROJECT_ID")

			unknown := "6f1c1f9e-0d2a-4a57-8a51-2e1b1b0c9d77"
			r = e.refused(t, ep.method, ep.path, with(h, "X-Stack-Project-Id", &unknown), ep.body, 400, "CURRENT_PROJECT_NOT_FOUND")
			if detail(r, "project_id") != unknown {
				t.Fatalf("details.project_id = %v", detail(r, "project_id"))
			}
			r = e.refused(t, ep.method, ep.path, with(h, "X-Stack-Project-Id", str("invalid")), ep.body, 400, "CURRENT_PROJECT_NOT_FOUND")
			if detail(r, "project_id") != "invalid" {
				t.Fatalf("details.project_id = %v", detail(r, "project_id"))
			}

			e.refused(t, ep.method, ep.path, with(h, "X-Stack-Secret-Server-Key", nil), ep.body, 401, "SERVER_AUTHENTICATION_REQUIRED")
			e.refused(t, ep.method, ep.path, with(h, "X-Stack-Secret-Server-Key", str("")), ep.body, 401, "SERVER_AUTHENTICATION_REQUIRED")
			r = e.refused(t, ep.method, ep.path, with(h, "X-Stack-Secret-Server-Key", str("ssk_wrong")), ep.body, 401, "INVALID_SECRET_SERVER_KEY")
			if detail(r, "project_id") != p.id {
				t.Fatalf("details.project_id = %v", detail(r, "project_id"))
			}
			r = e.refused(t, ep.method, ep.path, with(h, "X-Stack-Secret-Server-Key", &other.serverKey), ep.body, 401, "INVALID_SECRET_SERVER_KEY")
			if detail(r, "project_id") != p.id {
				t.Fatalf("details.project_id = %v", detail(r, "project_id"))
			}

			for _, tok := range []string{"", "garbage", "kla_e30.AAAA", e.adminToken(t, p.id, "alice", time.Hour) + "x"} {
				e.refused(t, ep.method, ep.path, with(h, "X-Stack-Admin-Access-Token", &tok), ep.body, 401, "UNPARSABLE_ADMIN_ACCESS_TOKEN")
			}
			expired := e.adminToken(t, p.id, "alice", -time.Minute)
			r = e.refused(t, ep.method, ep.path, with(h, "X-Stack-Admin-Access-Token", &expired), ep.body, 401, "ADMIN_ACCESS_TOKEN_EXPIRED")
			if _, ok := detail(r, "expired_at_millis").(float64); !ok {
				t.Fatalf("details.expired_at_millis = %v", detail(r, "expired_at_millis"))
			}
			foreign := e.adminToken(t, other.id, "alice", time.Hour)
			e.refused(t, ep.method, ep.path, with(h, "X-Stack-Admin-Access-Token", &foreign), ep.body, 401, "ADMIN_ACCESS_TOKEN_IS_NOT_ADMIN")

			for _, at := range []string{"client", "", "SERVER", "superuser"} {
				e.refused(t, ep.method, ep.path, with(h, "X-Stack-Access-Type", &at), ep.body, 401, "INSUFFICIENT_ACCESS_TYPE")
			}
			// An admin token does not replace the server key: both are checked.
			valid := e.adminToken(t, p.id, "alice", time.Hour)
			noKey := with(with(h, "X-Stack-Admin-Access-Token", &valid), "X-Stack-Secret-Server-Key", nil)
			e.refused(t, ep.method, ep.path, noKey, ep.body, 401, "SERVER_AUTHENTICATION_REQUIRED")
		})
	}

	t.Run("accepted credentials", func(t *testing.T) {
		upper := strings.ToUpper(p.id)
		for _, hdr := range []http.Header{
			h,
			with(h, "X-Stack-Access-Type", nil), // optional
			with(h, "X-Stack-Access-Type", str("admin")), // both authenticate with the server key
			with(h, "X-Stack-Project-Id", &upper),        // UUIDs in any case
		} {
			e.ok(t, http.MethodGet, keyPath, hdr, "")
		}
	})

	t.Run("project created a moment ago", func(t *testing.T) {
		// keysctl appends the project and exits; its credentials work at once, whether or
		// not the projector has got there.
		fresh := e.newProject(t)
		e.createKey(t, fresh, `{"user_id":"u","description":""}`)
	})

	t.Run("actor on the events", func(t *testing.T) {
		id := key.body["id"].(string)
		r := e.ok(t, http.MethodPatch, v1+"/"+id, h, `{"description":"by the server key"}`)
		tok := e.adminToken(t, p.id, "alice@example.com", time.Hour)
		r2 := e.ok(t, http.MethodPatch, v1+"/"+id, with(h, "X-Stack-Admin-Access-Token", &tok), `{"description":"by alice"}`)
		evs := e.events(t, p.id, id)
		if len(evs) != 3 {
			t.Fatalf("%d events, want 3", len(evs))
		}
		if a := evs[1].Event.Actor; a.Type != domain.ActorServerKey || a.ID == "" || a.ID == p.serverKey {
			t.Fatalf("actor with the server key: %+v", a)
		}
		if a := evs[2].Event.Actor; a != (domain.Actor{Type: domain.ActorAdmin, ID: "alice@example.com"}) {
			t.Fatalf("actor with an admin token: %+v", a)
		}
		if evs[1].Event.RequestID != r.header.Get("x-stack-request-id") || evs[2].Event.RequestID != r2.header.Get("x-stack-request-id") {
			t.Fatalf("events do not carry the request ids of their requests")
		}
	})
}

// ---------------------------------------------------------------------------------------
// CONTRACT section 2: error codes, and malformed requests of every kind.

func TestRefusedRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.newProject(t)
	h := p.headers()
	key := e.createKey(t, p, `{"user_id":"u1","description":"k"}`)
	id := key.body["id"].(string)
	keyPath := v1 + "/" + id
	jsonHdr := func(ct string) http.Header { return with(h, "Content-Type", &ct) }

	cases := []struct {
		name, method, path string
		hdr                http.Header
		body               string
		status             int
		code               string
		message            string // when not empty, the exact error
	}{
		{"not an object", http.MethodPatch, keyPath, h, `["description"]`, 400, "SCHEMA_ERROR",
			"Request validation failed on PATCH " + keyPath + ":\n  - body must be a JSON object"},
		{"null body", http.MethodPatch, keyPath, h, `null`, 400, "SCHEMA_ERROR", ""},
		{"wrong type", http.MethodPatch, keyPath, h, `{"description":1}`, 400, "SCHEMA_ERROR",
			"Request validation failed on PATCH " + keyPath + ":\n  - body.description must be a string"},
		{"null description", http.MethodPatch, keyPath, h, `{"description":null}`, 400, "SCHEMA_ERROR",
			"Request validation failed on PATCH " + keyPath + ":\n  - body.description must be a string"},
		{"null revoked", http.MethodPatch, keyPath, h, `{"revoked":null}`, 400, "SCHEMA_ERROR", ""},
		{"revoked as string", http.MethodPatch, keyPath, h, `{"revoked":"true"}`, 400, "SCHEMA_ERROR", ""},
		{"unknown property", http.MethodPatch, keyPath, h, `{"description":"Updated Description","user_id":"some-other-user-id"}`, 400, "SCHEMA_ERROR",
			"Request validation failed on PATCH " + keyPath + ":\n  - body contains unknown properties: user_id"},
		{"duplicate property", http.MethodPatch, keyPath, h, `{"description":"a","description":"b"}`, 400, "SCHEMA_ERROR", ""},
		{"malformed id", http.MethodPatch, v1 + "/uak_1234567890", h, `{}`, 400, "SCHEMA_ERROR",
			"Request validation failed on PATCH " + v1 + "/uak_1234567890:\n  - params.api_key_id must be a valid UUID"},
		{"malformed id on get", http.MethodGet, v1 + "/not-a-uuid", h, ``, 400, "SCHEMA_ERROR",
			"Request validation failed on GET " + v1 + "/not-a-uuid:\n  - params.api_key_id must be a valid UUID"},
		{"description over 4096 bytes", http.MethodPatch, keyPath, h, `{"description":"` + strings.Repeat("x", 4097) + `"}`, 400, "SCHEMA_ERROR",
			"Request validation failed on PATCH " + keyPath + ":\n  - body.description must be at most 4096 bytes"},
		{"description over 4096 bytes on create", http.MethodPost, v1, h, `{"user_id":"u","description":"` + strings.Repeat("ü", 2049) + `"}`, 400, "SCHEMA_ERROR", ""},
		{"invalid UTF-8", http.MethodPatch, keyPath, h, "{\"description\":\"\xc3\x28\"}", 400, "SCHEMA_ERROR", ""},
		{"lone surrogate", http.MethodPatch, keyPath, h, `{"description":"\udc00"}`, 400, "SCHEMA_ERROR", ""},
		{"U+0000", http.MethodPatch, keyPath, h, `{"description":"a\u0000"}`, 400, "SCHEMA_ERROR",
			"Request validation failed on PATCH " + keyPath + ":\n  - body.description must not contain U+0000"},
		{"unknown query parameter", http.MethodGet, keyPath + "?user_id=u1&team_id=some-team-id", h, ``, 400, "SCHEMA_ERROR",
			"Request validation failed on GET " + keyPath + ":\n  - query contains unknown properties: team_id"},
		{"list without user_id", http.MethodGet, v1, h, ``, 400, "SCHEMA_ERROR", "user_id is required for user API keys"},
		{"create without user_id", http.MethodPost, v1, h, `{"description":"d"}`, 400, "SCHEMA_ERROR",
			"Request validation failed on POST " + v1 + ":\n  - body.user_id must be defined"},
		{"create with user_id over 128 characters", http.MethodPost, v1, h, `{"user_id":"` + strings.Repeat("u", 129) + `","description":""}`, 400, "SCHEMA_ERROR", ""},
		{"create with fractional expiry", http.MethodPost, v1, h, `{"user_id":"u","description":"","expires_at_millis":1.5}`, 400, "SCHEMA_ERROR", ""},
		{"create with prefix", http.MethodPost, v1, h, `{"user_id":"u","description":"","prefix":"x"}`, 400, "SCHEMA_ERROR", ""},
		{"check without api_key", http.MethodPost, v1 + "/check", h, `{}`, 400, "SCHEMA_ERROR",
			"Request validation failed on POST " + v1 + "/check:\n  - body.api_key must be defined"},
		{"not JSON", http.MethodPatch, keyPath, h, `{"description":`, 400, "BODY_PARSING_ERROR", ""},
		{"trailing data", http.MethodPatch, keyPath, h, `{"description":"a"}{"revoked":true}`, 400, "BODY_PARSING_ERROR", ""},
		{"no body", http.MethodPatch, keyPath, jsonHdr("application/json"), ``, 400, "BODY_PARSING_ERROR", ""},
		{"content type text", http.MethodPatch, keyPath, jsonHdr("text/plain"), `{"revoked":true}`, 400, "BODY_PARSING_ERROR", ""},
		{"content type form", http.MethodPost, v1, jsonHdr("application/x-www-form-urlencoded"), `user_id=u&description=d`, 400, "BODY_PARSING_ERROR", ""},
		{"over 64 KiB", http.MethodPatch, keyPath, h, `{"description":"` + strings.Repeat("x", 64<<10) + `"}`, 413, "PAYLOAD_TOO_LARGE", ""},
		{"no such key", http.MethodGet, v1 + "/00000000-0000-4000-8000-000000000000", h, ``, 404, "API_KEY_NOT_FOUND", "API key not found."},
		{"patch of no such key", http.MethodPatch, v1 + "/00000000-0000-4000-8000-000000000000", h, `{"revoked":true}`, 404, "API_KEY_NOT_FOUND", ""},
		{"unknown route", http.MethodGet, "/api/v1/teams/t1", h, ``, 404, "ROUTE_NOT_FOUND", ""},
		{"unknown route outside the API", http.MethodGet, "/nothing/here", nil, ``, 404, "ROUTE_NOT_FOUND", ""},
		{"trailing slash", http.MethodGet, v1 + "/", h, ``, 404, "ROUTE_NOT_FOUND", ""},
		{"unclean path", http.MethodGet, "/api/v1/../v1/user-api-keys?user_id=u1", h, ``, 404, "ROUTE_NOT_FOUND", ""},
		{"DELETE a key", http.MethodDelete, keyPath, h, ``, 405, "METHOD_NOT_ALLOWED", ""},
		{"PATCH the collection", http.MethodPatch, v1, h, `{}`, 405, "METHOD_NOT_ALLOWED", ""},
		{"GET check", http.MethodGet, v1 + "/check", h, ``, 405, "METHOD_NOT_ALLOWED", ""},
		{"POST to a key", http.MethodPost, keyPath, h, `{}`, 405, "METHOD_NOT_ALLOWED", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.refused(t, c.method, c.path, c.hdr, c.body, c.status, c.code)
			if c.message != "" && r.body["error"] != c.message {
				t.Fatalf("error\n got %q\nwant %q", r.body["error"], c.message)
			}
			if c.code == "SCHEMA_ERROR" && detail(r, "message") != r.body["error"] {
				t.Fatalf("details.message %q, error %q", detail(r, "message"), r.body["error"])
			}
		})
	}

	t.Run("405 names the allowed methods", func(t *testing.T) {
		for path, allow := range map[string]string{keyPath: "GET, PATCH", v1: "GET, POST", v1 + "/check": "POST"} {
			r := call(t, e.url, http.MethodPut, path, h, `{}`)
			if r.status != 405 || r.header.Get("Allow") != allow {
				t.Fatalf("PUT %s: %d Allow %q, want 405 Allow %q", path, r.status, r.header.Get("Allow"), allow)
			}
		}
	})

	t.Run("the key is untouched", func(t *testing.T) {
		r := e.ok(t, http.MethodGet, keyPath, h, "")
		if r.body["description"] != "k" || r.body["manually_revoked_at"] != nil || len(e.events(t, p.id, id)) != 1 {
			t.Fatalf("refused requests changed the key: %s", r)
		}
	})

	t.Run("a key of another project is not found", func(t *testing.T) {
		other := e.newProject(t)
		oh := other.headers()
		e.refused(t, http.MethodGet, keyPath, oh, "", 404, "API_KEY_NOT_FOUND")
		e.refused(t, http.MethodPatch, keyPath, oh, `{"revoked":true}`, 404, "API_KEY_NOT_FOUND")
		e.refused(t, http.MethodPost, v1+"/check", oh, `{"api_key":"`+key.body["value"].(string)+`"}`, 404, "API_KEY_NOT_FOUND")
		r := e.ok(t, http.MethodGet, v1+"?user_id=u1", oh, "")
		if items := r.body["items"].([]any); len(items) != 0 {
			t.Fatalf("another project lists %d keys of this one", len(items))
		}
	})
}

// ---------------------------------------------------------------------------------------
// CONTRACT section 3: create, list, get.

func TestCreateListGet(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.newProject(t)
	h := p.headers()

	first := e.createKey(t, p, `{"user_id":"user-1","description":"First API Key"}`)
	expiry := time.Now().Add(24 * time.Hour).Truncate(time.Millisecond).UTC()
	second := e.createKey(t, p, fmt.Sprintf(`{"user_id":"user-1","description":"Second API Key","expires_at_millis":%d,"is_public":true}`, expiry.UnixMilli()))
	past := time.Now().Add(-time.Hour).UnixMilli()
	third := e.createKey(t, p, fmt.Sprintf(`{"user_id":"user-1","description":"Expired","expires_at_millis":%d,"is_public":false}`, past))
	e.createKey(t, p, `{"user_id":"user-2","description":"someone else's","expires_at_millis":null}`)

	t.Run("create response", func(t *testing.T) {
		b := first.body
		if b["description"] != "First API Key" || b["user_id"] != "user-1" || b["expires_at"] != nil ||
			b["manually_revoked_at"] != nil || b["is_public"] != false {
			t.Fatalf("created key: %s", first)
		}
		if !strings.HasPrefix(b["value"].(string), "sk_") || !strings.HasPrefix(second.body["value"].(string), "pk_") {
			t.Fatalf("secret prefixes: %v %v", b["value"], second.body["value"])
		}
		if second.body["expires_at"] != expiry.Format("2006-01-02T15:04:05.000Z") {
			t.Fatalf("expires_at %v, want %s", second.body["expires_at"], expiry)
		}
		created, err := time.Parse(time.RFC3339, b["created_at"].(string))
		if err != nil || created.Before(time.Now().Add(-time.Hour)) || created.After(time.Now().Add(time.Hour)) {
			t.Fatalf("created_at %v", b["created_at"])
		}
	})

	t.Run("the secret is on no event", func(t *testing.T) {
		for _, k := range []response{first, second, third} {
			id, secret := k.body["id"].(string), k.body["value"].(string)
			for _, ev := range e.events(t, p.id, id) {
				if bytes.Contains(ev.Raw, []byte(secret)) || bytes.Contains(ev.Raw, []byte(secret[3:len(secret)-8])) {
					t.Fatalf("event %s carries the secret", ev.Event.Type)
				}
			}
		}
	})

	t.Run("get", func(t *testing.T) {
		for _, k := range []response{first, second, third} {
			id, secret := k.body["id"].(string), k.body["value"].(string)
			r := e.ok(t, http.MethodGet, v1+"/"+id, h, "")
			checkKeyObject(t, r.body, false)
			for _, f := range []string{"id", "description", "user_id", "expires_at", "manually_revoked_at", "created_at", "is_public", "type"} {
				if r.body[f] != k.body[f] {
					t.Fatalf("%s: get shows %v, create showed %v", f, r.body[f], k.body[f])
				}
			}
			if lf := r.body["value"].(map[string]any)["last_four"]; lf != secret[len(secret)-4:] {
				t.Fatalf("last_four %v of %s…", lf, secret[:6])
			}
			// Upper-case ids name the same key.
			e.ok(t, http.MethodGet, v1+"/"+strings.ToUpper(id)+"?user_id=user-1", h, "")
		}
	})

	t.Run("list newest first, expired included", func(t *testing.T) {
		r := e.ok(t, http.MethodGet, v1+"?user_id=user-1", h, "")
		if r.body["is_paginated"] != false {
			t.Fatalf("is_paginated %v", r.body["is_paginated"])
		}
		items := r.body["items"].([]any)
		var ids []string
		for _, it := range items {
			checkKeyObject(t, it.(map[string]any), false)
			ids = append(ids, it.(map[string]any)["id"].(string))
		}
		want := []string{third.body["id"].(string), second.body["id"].(string), first.body["id"].(string)}
		if !slices.Equal(ids, want) {
			t.Fatalf("list %v, want %v", ids, want)
		}
		r = e.ok(t, http.MethodGet, v1+"?user_id=nobody", h, "")
		if items := r.body["items"].([]any); items == nil || len(items) != 0 {
			t.Fatalf("list of a user without keys: %s", r)
		}
	})

	t.Run("list includes revoked keys", func(t *testing.T) {
		e.ok(t, http.MethodPatch, v1+"/"+first.body["id"].(string), h, `{"revoked":true}`)
		r := e.ok(t, http.MethodGet, v1+"?user_id=user-1", h, "")
		items := r.body["items"].([]any)
		if len(items) != 3 || items[2].(map[string]any)["manually_revoked_at"] == nil {
			t.Fatalf("revoked key missing from the list: %s", r)
		}
	})
}

// ---------------------------------------------------------------------------------------
// CONTRACT section 3: PATCH semantics.

func TestUpdate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.newProject(t)
	h := p.headers()
	newKey := func(t *testing.T, body string) (string, string) {
		k := e.createKey(t, p, body)
		id := k.body["id"].(string)
		return id, v1 + "/" + id
	}
	types := func(t *testing.T, id string) []domain.EventType {
		var out []domain.EventType
		for i, ev := range e.events(t, p.id, id) {
			if ev.Event.Version != i+1 {
				t.Fatalf("event %d has version %d", i, ev.Event.Version)
			}
			out = append(out, ev.Event.Type)
		}
		return out
	}

	t.Run("empty object changes nothing", func(t *testing.T) {
		id, path := newKey(t, `{"user_id":"u","description":"same"}`)
		before := e.lastSeq(t)
		r := e.ok(t, http.MethodPatch, path, h, `{}`)
		checkKeyObject(t, r.body, false)
		if r.body["description"] != "same" || e.lastSeq(t) != before || len(types(t, id)) != 1 {
			t.Fatalf("{} changed something: %s", r)
		}
	})

	t.Run("description", func(t *testing.T) {
		id, path := newKey(t, `{"user_id":"u","description":"old"}`)
		r := e.ok(t, http.MethodPatch, path, h, `{"description":"new"}`)
		if r.body["description"] != "new" {
			t.Fatalf("response %s", r)
		}
		evs := e.events(t, p.id, id)
		if len(evs) != 2 || evs[1].Event.Data != (domain.DescriptionChanged{Old: "old", New: "new"}) {
			t.Fatalf("events %v", types(t, id))
		}
		if g := e.ok(t, http.MethodGet, path, h, ""); g.body["description"] != "new" {
			t.Fatalf("a read after the 200 shows %v", g.body["description"])
		}
		before := e.lastSeq(t)
		e.ok(t, http.MethodPatch, path, h, `{"description":"new"}`)
		if e.lastSeq(t) != before {
			t.Fatalf("an equal description emitted an event")
		}
		e.ok(t, http.MethodPatch, path, h, `{"description":""}`)
		if got := types(t, id); len(got) != 3 {
			t.Fatalf("an empty description: events %v", got)
		}
	})

	t.Run("revoke once, keep the first timestamp", func(t *testing.T) {
		id, path := newKey(t, `{"user_id":"u","description":"to revoke"}`)
		before := time.Now().Add(-time.Second)
		r1 := e.ok(t, http.MethodPatch, path, h, `{"revoked":true}`)
		at, err := time.Parse(time.RFC3339, fmt.Sprint(r1.body["manually_revoked_at"]))
		if err != nil || at.Before(before) || at.After(time.Now().Add(time.Second)) {
			t.Fatalf("manually_revoked_at %v", r1.body["manually_revoked_at"])
		}
		r2 := e.ok(t, http.MethodPatch, path, h, `{"revoked":true}`)
		if r2.body["manually_revoked_at"] != r1.body["manually_revoked_at"] {
			t.Fatalf("revoking twice moved the timestamp: %v then %v", r1.body["manually_revoked_at"], r2.body["manually_revoked_at"])
		}
		if got := types(t, id); !slices.Equal(got, []domain.EventType{domain.TypeKeyCreated, domain.TypeKeyRevoked}) {
			t.Fatalf("events %v", got)
		}
		ev := e.events(t, p.id, id)[1]
		if ev.Event.Data.(domain.KeyRevoked).RevokedAt.Format("2006-01-02T15:04:05.000Z") != r1.body["manually_revoked_at"] {
			t.Fatalf("event time %v, response %v", ev.Event.Data, r1.body["manually_revoked_at"])
		}
		if g := e.ok(t, http.MethodGet, path, h, ""); g.body["manually_revoked_at"] != r1.body["manually_revoked_at"] {
			t.Fatalf("a read after the 200 shows %v", g.body["manually_revoked_at"])
		}
	})

	t.Run("revoked false", func(t *testing.T) {
		id, path := newKey(t, `{"user_id":"u","description":"d"}`)
		before := e.lastSeq(t)
		r := e.ok(t, http.MethodPatch, path, h, `{"revoked":false}`)
		if r.body["manually_revoked_at"] != nil || e.lastSeq(t) != before {
			t.Fatalf("revoked:false on an active key is a no-op: %s", r)
		}
		e.ok(t, http.MethodPatch, path, h, `{"revoked":true}`)
		e.refused(t, http.MethodPatch, path, h, `{"revoked":false}`, 409, "API_KEY_ALREADY_REVOKED")
		// Nothing of that request is applied.
		e.refused(t, http.MethodPatch, path, h, `{"description":"sneaky","revoked":false}`, 409, "API_KEY_ALREADY_REVOKED")
		if g := e.ok(t, http.MethodGet, path, h, ""); g.body["description"] != "d" || g.body["manually_revoked_at"] == nil {
			t.Fatalf("after 409: %s", g)
		}
		if got := types(t, id); len(got) != 2 {
			t.Fatalf("events %v", got)
		}
	})

	t.Run("two changes commit together", func(t *testing.T) {
		id, path := newKey(t, `{"user_id":"u","description":"before"}`)
		r := e.ok(t, http.MethodPatch, path, h, `{"description":"after","revoked":true}`)
		if r.body["description"] != "after" || r.body["manually_revoked_at"] == nil {
			t.Fatalf("response %s", r)
		}
		evs := e.events(t, p.id, id)
		if got := types(t, id); !slices.Equal(got, []domain.EventType{domain.TypeKeyCreated, domain.TypeDescriptionChanged, domain.TypeKeyRevoked}) {
			t.Fatalf("events %v", got)
		}
		rid := r.header.Get("x-stack-request-id")
		if evs[1].Event.RequestID != rid || evs[2].Event.RequestID != rid || evs[2].Seq != evs[1].Seq+1 {
			t.Fatalf("the two events are not one request's batch")
		}
		// Renaming a revoked key is still allowed.
		e.ok(t, http.MethodPatch, path, h, `{"description":"renamed after revocation","revoked":true}`)
		if got := types(t, id); len(got) != 4 || got[3] != domain.TypeDescriptionChanged {
			t.Fatalf("events %v", got)
		}
	})

	t.Run("expired keys can be renamed and revoked", func(t *testing.T) {
		id, path := newKey(t, fmt.Sprintf(`{"user_id":"u","description":"old","expires_at_millis":%d}`, time.Now().Add(-time.Hour).UnixMilli()))
		r := e.ok(t, http.MethodPatch, path, h, `{"description":"renamed"}`)
		r = e.ok(t, http.MethodPatch, path, h, `{"revoked":true}`)
		if r.body["description"] != "renamed" || r.body["manually_revoked_at"] == nil || r.body["expires_at"] == nil {
			t.Fatalf("response %s", r)
		}
		if got := types(t, id); len(got) != 3 {
			t.Fatalf("events %v", got)
		}
	})
}

// ---------------------------------------------------------------------------------------
// CONTRACT section 3: check.

func TestCheck(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.newProject(t)
	h := p.headers()
	check := func(secret string) string {
		b, _ := json.Marshal(map[string]string{"api_key": secret})
		return string(b)
	}

	active := e.createKey(t, p, fmt.Sprintf(`{"user_id":"u","description":"active","expires_at_millis":%d}`, time.Now().Add(time.Hour).UnixMilli()))
	public := e.createKey(t, p, `{"user_id":"u","description":"public","is_public":true}`)
	expired := e.createKey(t, p, fmt.Sprintf(`{"user_id":"u","description":"expired","expires_at_millis":%d}`, time.Now().Add(-time.Hour).UnixMilli()))
	revoked := e.createKey(t, p, `{"user_id":"u","description":"revoked"}`)
	both := e.createKey(t, p, fmt.Sprintf(`{"user_id":"u","description":"both","expires_at_millis":%d}`, time.Now().Add(-time.Hour).UnixMilli()))
	for _, k := range []response{revoked, both} {
		e.ok(t, http.MethodPatch, v1+"/"+k.body["id"].(string), h, `{"revoked":true}`)
	}

	for _, k := range []response{active, public} {
		r := e.ok(t, http.MethodPost, v1+"/check", h, check(k.body["value"].(string)))
		checkKeyObject(t, r.body, false)
		if r.body["id"] != k.body["id"] || r.body["description"] != k.body["description"] {
			t.Fatalf("check returned %s", r)
		}
	}
	r := e.refused(t, http.MethodPost, v1+"/check", h, check(expired.body["value"].(string)), 401, "API_KEY_EXPIRED")
	if r.body["error"] != "API key has expired." {
		t.Fatalf("error %v", r.body["error"])
	}
	r = e.refused(t, http.MethodPost, v1+"/check", h, check(revoked.body["value"].(string)), 401, "API_KEY_REVOKED")
	if r.body["error"] != "API key has been revoked." {
		t.Fatalf("error %v", r.body["error"])
	}
	e.refused(t, http.MethodPost, v1+"/check", h, check(both.body["value"].(string)), 401, "API_KEY_REVOKED")

	// Well-formed secrets of a real key id with the wrong random part, of an unknown key id,
	// and malformed ones are all simply not found.
	activeID := active.body["id"].(string)
	forged, err := domain.FormatSecretKey(activeID, domain.KeyTypeUser, false, make([]byte, domain.SecretKeyBytes))
	if err != nil {
		t.Fatal(err)
	}
	unknown, _ := domain.FormatSecretKey("6f1c1f9e-0d2a-4a57-8a51-2e1b1b0c9d77", domain.KeyTypeUser, false, make([]byte, domain.SecretKeyBytes))
	secret := active.body["value"].(string)
	mistyped := secret[:10] + string(secret[10]^1) + secret[11:]
	for _, s := range []string{forged, unknown, mistyped, "sk_this_is_a_fake_api_key_123456789", "", strings.ToUpper(secret), "pk" + secret[2:]} {
		r := e.refused(t, http.MethodPost, v1+"/check", h, check(s), 404, "API_KEY_NOT_FOUND")
		if r.body["error"] != "API key not found." {
			t.Fatalf("error %v", r.body["error"])
		}
	}
}

// ---------------------------------------------------------------------------------------
// Concurrency and several instances.

func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.newProject(t)
	other, _ := e.instance(t, false)
	k := e.createKey(t, p, `{"user_id":"u","description":"v0"}`)
	id := k.body["id"].(string)

	const n = 12
	results := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			base := e.url
			if i%2 == 1 {
				base = other
			}
			results[i] = call(t, base, http.MethodPatch, v1+"/"+id, p.headers(), fmt.Sprintf(`{"description":"v%d"}`, i+1))
		})
	}
	wg.Wait()

	evs := e.events(t, p.id, id)
	news := map[string]bool{}
	prev := "v0"
	for _, ev := range evs[1:] {
		d := ev.Event.Data.(domain.DescriptionChanged)
		if d.Old != prev {
			t.Fatalf("an update was lost: event %d changed %q, but the description was %q", ev.Event.Version, d.Old, prev)
		}
		prev = d.New
		news[d.New] = true
	}
	for i, r := range results {
		switch r.status {
		case http.StatusOK:
			if !news[r.body["description"].(string)] || r.body["description"] != fmt.Sprintf("v%d", i+1) {
				t.Fatalf("a 200 shows %v, which no event set", r.body["description"])
			}
		case http.StatusServiceUnavailable: // lost the race on every attempt: nothing appended
			if news[fmt.Sprintf("v%d", i+1)] {
				t.Fatalf("a 503 was applied")
			}
		default:
			t.Fatalf("concurrent PATCH: %s", r)
		}
	}
	if len(evs)-1 != len(news) {
		t.Fatalf("%d events for %d descriptions", len(evs)-1, len(news))
	}
}

func TestReadYourWritesAcrossInstances(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.newProject(t)
	b, _ := e.instance(t, true)  // reads wait for the stream's end
	c, _ := e.instance(t, false) // reads fall back to the store only for unknown keys
	h := p.headers()
	for i := range 5 {
		k := e.createKey(t, p, fmt.Sprintf(`{"user_id":"u","description":"k%d"}`, i))
		path := v1 + "/" + k.body["id"].(string)
		// A key created through one instance is found at once through the others.
		for _, base := range []string{b, c} {
			if r := call(t, base, http.MethodGet, path, h, ""); r.status != 200 {
				t.Fatalf("GET through another instance: %s", r)
			}
			if r := call(t, base, http.MethodPost, v1+"/check", h, `{"api_key":"`+k.body["value"].(string)+`"}`); r.status != 200 {
				t.Fatalf("check through another instance: %s", r)
			}
		}
		// A change through one instance is seen at once through one with the read barrier.
		e.ok(t, http.MethodPatch, path, h, fmt.Sprintf(`{"description":"changed %d","revoked":true}`, i))
		r := call(t, b, http.MethodGet, path, h, "")
		if r.status != 200 || r.body["description"] != fmt.Sprintf("changed %d", i) || r.body["manually_revoked_at"] == nil {
			t.Fatalf("read after write through another instance: %s", r)
		}
		if r := call(t, b, http.MethodPost, v1+"/check", h, `{"api_key":"`+k.body["value"].(string)+`"}`); r.code() != "API_KEY_REVOKED" {
			t.Fatalf("check after revoke through another instance: %s", r)
		}
		r = call(t, b, http.MethodGet, v1+"?user_id=u", h, "")
		if items := r.body["items"].([]any); len(items) != i+1 || items[0].(map[string]any)["description"] != fmt.Sprintf("changed %d", i) {
			t.Fatalf("list after write through another instance: %s", r)
		}
	}
}

// ---------------------------------------------------------------------------------------
// Operations: health, readiness, metrics, and the event store going away.

func TestOperationalEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.newProject(t)
	e.createKey(t, p, `{"user_id":"u","description":""}`)

	if r := call(t, e.url, http.MethodGet, "/healthz", nil, ""); r.status != 200 {
		t.Fatalf("healthz: %s", r)
	}
	// The projector has applied the key (create waited for it), so it has caught up once.
	r := call(t, e.url, http.MethodGet, "/readyz", nil, "")
	if r.status != 200 || r.body["status"] != "ready" {
		t.Fatalf("readyz: %s", r)
	}
	r = call(t, e.url, http.MethodGet, "/metrics", nil, "")
	text := string(r.raw)
	for _, want := range []string{
		`keyledger_http_requests_total{method="POST",route="/api/v1/user-api-keys",status="200"} 1`,
		`keyledger_http_request_duration_seconds_bucket{method="GET",route="/readyz",status="200",le=`,
		"keyledger_projector_position ",
		"go_goroutines ",
	} {
		if !strings.Contains(text, want) {
			t.Fatalf("metrics lack %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, p.id) {
		t.Fatalf("a project id is a metric label")
	}
}

func TestEventStoreUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{storeTimeout: 500 * time.Millisecond})
	p := e.newProject(t)
	k := e.createKey(t, p, `{"user_id":"u","description":"d"}`)
	path := v1 + "/" + k.body["id"].(string)

	e.nats.Stop()
	for _, req := range []struct{ method, path, body string }{
		{http.MethodPatch, path, `{"description":"while down"}`},
		{http.MethodPost, v1, `{"user_id":"u","description":"while down"}`},
	} {
		r := call(t, e.url, req.method, req.path, p.headers(), req.body)
		if r.status != 503 || r.code() != "SERVICE_UNAVAILABLE" {
			t.Fatalf("%s %s with the event store down: %s", req.method, req.path, r)
		}
	}
	if r := call(t, e.url, http.MethodGet, "/readyz", nil, ""); r.status != 503 || r.code() != "SERVICE_UNAVAILABLE" ||
		!strings.Contains(failingChecks(r), "event_store") {
		t.Fatalf("readyz with the event store down: %s", r)
	}
	if r := call(t, e.url, http.MethodGet, "/healthz", nil, ""); r.status != 200 {
		t.Fatalf("healthz with the event store down: %s", r)
	}

	// Retrying the same request once the store is back is safe.
	e.nats.Start(t)
	var r response
	for range 100 {
		if r = call(t, e.url, http.MethodPatch, path, p.headers(), `{"description":"while down"}`); r.status == 200 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.status != 200 || r.body["description"] != "while down" {
		t.Fatalf("retry after the outage: %s", r)
	}
}

// neverCaughtUp is a projector that never gets anywhere, as one stuck behind a broken read
// model would be.
type neverCaughtUp struct{}

func (neverCaughtUp) WaitFor(ctx context.Context, _ uint64) error { <-ctx.Done(); return ctx.Err() }
func (neverCaughtUp) Position() uint64                            { return 0 }
func (neverCaughtUp) Ready() bool                                 { return false }

// TestProjectorBehind: a request that cannot see its own write in time, or a read that cannot
// see the stream's end, is a 503 with Retry-After, and the service is not ready.
func TestProjectorBehind(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.newProject(t)
	k := e.createKey(t, p, `{"user_id":"u","description":"d"}`)
	rm := projections.NewMemory()
	cmds, err := commands.New(e.store, nil, e.hasher, commands.Config{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := api.NewHandler(api.Deps{
		Commands: cmds, ReadModel: rm, Projector: neverCaughtUp{}, Store: e.store, Hasher: e.hasher,
		Logger: slog.New(slog.NewJSONHandler(e.logs, nil)), ReadBarrier: true, WaitTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	path := v1 + "/" + k.body["id"].(string)
	for _, req := range []struct{ method, path, body string }{
		{http.MethodPatch, path, `{"description":"new"}`},
		{http.MethodGet, path, ``},
		{http.MethodGet, v1 + "?user_id=u", ``},
		{http.MethodPost, v1 + "/check", `{"api_key":"` + k.body["value"].(string) + `"}`},
	} {
		r := call(t, srv.URL, req.method, req.path, p.headers(), req.body)
		if r.status != 503 || r.code() != "SERVICE_UNAVAILABLE" {
			t.Fatalf("%s %s with the projector stuck: %s", req.method, req.path, r)
		}
	}
	if r := call(t, srv.URL, http.MethodGet, "/readyz", nil, ""); r.status != 503 || failingChecks(r) != "projector" {
		t.Fatalf("readyz with the projector stuck: %s", r)
	}
}

// ---------------------------------------------------------------------------------------
// CONTRACT section 6: Stack Auth's SDK from 2.8.108 sends x-hexclave-* headers.

// hexclave returns h with every x-stack-* credential header renamed x-hexclave-*.
func hexclave(h http.Header) http.Header {
	out := http.Header{}
	for name, values := range h {
		out[strings.Replace(name, "X-Stack-", "X-Hexclave-", 1)] = values
	}
	return out
}

func TestHexclaveHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.newProject(t)
	other := e.newProject(t)
	h := hexclave(p.headers())
	key := e.createKey(t, p, `{"user_id":"u1","description":"k"}`)
	id := key.body["id"].(string)

	t.Run("the x-hexclave-* names are the same headers", func(t *testing.T) {
		r := e.ok(t, http.MethodPost, v1, h, `{"user_id":"u1","description":"by hexclave"}`)
		checkKeyObject(t, r.body, true)
		e.remember(r.body["value"].(string))
		e.ok(t, http.MethodGet, v1+"?user_id=u1", h, "")
		e.ok(t, http.MethodGet, v1+"/"+id, h, "")
		e.ok(t, http.MethodPatch, v1+"/"+id, h, `{"description":"renamed"}`)
		e.ok(t, http.MethodPost, v1+"/check", h, `{"api_key":"`+key.body["value"].(string)+`"}`)
		e.ok(t, http.MethodGet, "/api/v1/users/u1", h, "")
		tok := e.adminToken(t, p.id, "alice", time.Hour)
		e.ok(t, http.MethodPatch, v1+"/"+id, with(h, "X-Hexclave-Admin-Access-Token", &tok), `{"description":"by alice"}`)
		evs := e.events(t, p.id, id)
		if a := evs[len(evs)-1].Event.Actor; a != (domain.Actor{Type: domain.ActorAdmin, ID: "alice"}) {
			t.Fatalf("actor with an x-hexclave admin token: %+v", a)
		}
		// Both spellings with one value are one header.
		both := p.headers()
		for name, values := range h {
			both[name] = values
		}
		e.ok(t, http.MethodGet, v1+"/"+id, both, "")
	})

	t.Run("the same errors under the x-hexclave-* names", func(t *testing.T) {
		path := v1 + "/" + id
		e.refused(t, http.MethodGet, path, with(h, "X-Hexclave-Project-Id", nil), "", 400, "ACCESS_TYPE_WITHOUT_PROJECT_ID")
		e.refused(t, http.MethodGet, path, with(h, "X-Hexclave-Project-Id", str("invalid")), "", 400, "CURRENT_PROJECT_NOT_FOUND")
		e.refused(t, http.MethodGet, path, with(h, "X-Hexclave-Secret-Server-Key", nil), "", 401, "SERVER_AUTHENTICATION_REQUIRED")
		e.refused(t, http.MethodGet, path, with(h, "X-Hexclave-Secret-Server-Key", &other.serverKey), "", 401, "INVALID_SECRET_SERVER_KEY")
		e.refused(t, http.MethodGet, path, with(h, "X-Hexclave-Access-Type", str("client")), "", 401, "INSUFFICIENT_ACCESS_TYPE")
		e.refused(t, http.MethodGet, path, with(h, "X-Hexclave-Admin-Access-Token", str("garbage")), "", 401, "UNPARSABLE_ADMIN_ACCESS_TOKEN")
	})

	t.Run("two spellings with two values", func(t *testing.T) {
		tok := e.adminToken(t, p.id, "alice", time.Hour)
		tok2 := e.adminToken(t, p.id, "bob", time.Hour)
		stack := with(p.headers(), "X-Stack-Admin-Access-Token", &tok)
		differing := map[string]string{
			"Project-Id":         other.id,
			"Secret-Server-Key":  other.serverKey,
			"Access-Type":        "admin",
			"Admin-Access-Token": tok2,
		}
		for suffix, value := range differing {
			hdr := with(stack, "X-Hexclave-"+suffix, &value)
			r := e.refused(t, http.MethodPatch, v1+"/"+id, hdr, `{"description":"never applied"}`, 400, "SCHEMA_ERROR")
			if !strings.Contains(r.body["error"].(string), "x-hexclave-"+strings.ToLower(suffix)) {
				t.Fatalf("%s: the error does not name the header: %s", suffix, r)
			}
		}
	})
}

// ---------------------------------------------------------------------------------------
// CONTRACT section 6: GET /users/{user_id}.

func TestGetUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.newProject(t)
	other := e.newProject(t)
	first := e.createKey(t, p, `{"user_id":"user/with spaces","description":"first"}`)
	second := e.createKey(t, p, `{"user_id":"user/with spaces","description":"second"}`)
	e.ok(t, http.MethodPatch, v1+"/"+second.body["id"].(string), p.headers(), `{"revoked":true}`)

	r := e.ok(t, http.MethodGet, "/api/v1/users/user%2Fwith%20spaces", p.headers(), "")
	if r.body["id"] != "user/with spaces" {
		t.Fatalf("id = %v", r.body["id"])
	}
	rs, _ := r.body["risk_scores"].(map[string]any)
	signUp, _ := rs["sign_up"].(map[string]any)
	if signUp["bot"] != float64(0) || signUp["free_trial_abuse"] != float64(0) {
		t.Fatalf("risk_scores = %v", r.body["risk_scores"])
	}
	if r.body["signed_up_at_millis"] != first.body["created_at_millis"] || r.body["last_active_at_millis"] != second.body["created_at_millis"] {
		t.Fatalf("signed up %v, last active %v; keys created %v and %v", r.body["signed_up_at_millis"],
			r.body["last_active_at_millis"], first.body["created_at_millis"], second.body["created_at_millis"])
	}
	for _, f := range []string{"primary_email", "display_name", "selected_team", "selected_team_id", "profile_image_url",
		"restricted_reason", "restricted_by_admin_reason", "restricted_by_admin_private_details", "country_code"} {
		if v, ok := r.body[f]; !ok || v != nil {
			t.Fatalf("%s = %v, present %v: want null", f, v, ok)
		}
	}
	for _, f := range []string{"is_anonymous", "is_restricted", "restricted_by_admin", "has_password", "requires_totp_mfa"} {
		if r.body[f] != false {
			t.Fatalf("%s = %v, want false", f, r.body[f])
		}
	}

	// A user with no key in this project (none at all, or only in another) is not found.
	e.createKey(t, other, `{"user_id":"elsewhere","description":""}`)
	for _, u := range []string{"nobody", "elsewhere"} {
		r := e.refused(t, http.MethodGet, "/api/v1/users/"+u, p.headers(), "", 404, "USER_NOT_FOUND")
		if r.body["error"] == "" {
			t.Fatalf("no message: %s", r)
		}
	}
	long := strings.Repeat("u", 129)
	e.refused(t, http.MethodGet, "/api/v1/users/"+long, p.headers(), "", 400, "SCHEMA_ERROR")
	e.refused(t, http.MethodGet, "/api/v1/users/u?x=1", p.headers(), "", 400, "SCHEMA_ERROR")
}

// ---------------------------------------------------------------------------------------
// CONTRACT section 6: leaked keys reported by a secret-scanning service.

const scanPath = "/api/v1/integrations/credential-scanning/revoke"

func TestCredentialScanningRevoke(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.newProject(t)
	other := e.newProject(t)
	leaked := e.createKey(t, p, `{"user_id":"u1","description":"leaked"}`)
	id := leaked.body["id"].(string)
	secret := leaked.body["value"].(string)
	expired := e.createKey(t, other, `{"user_id":"u2","description":"expired","expires_at_millis":1000}`)
	none := http.Header{} // no credentials at all

	report := func(t *testing.T, body string) response {
		t.Helper()
		r := call(t, e.url, http.MethodPost, scanPath, none, body)
		if r.status != http.StatusOK || string(r.raw) != "{\"success\":true}\n" {
			t.Fatalf("report %s: %s, want 200 {\"success\":true}", body, r)
		}
		return r
	}

	before := e.lastSeq(t)
	r := report(t, `{"api_key":"`+secret+`"}`)
	evs := e.events(t, p.id, id)
	last := evs[len(evs)-1].Event
	if last.Type != domain.TypeKeyRevoked || last.Actor != (domain.Actor{Type: domain.ActorCredentialScanning}) ||
		last.RequestID != r.header.Get("x-stack-request-id") {
		t.Fatalf("last event %s by %+v (request %s), want KeyRevoked by credential_scanning", last.Type, last.Actor, last.RequestID)
	}
	e.refused(t, http.MethodPost, v1+"/check", p.headers(), `{"api_key":"`+secret+`"}`, 401, "API_KEY_REVOKED")
	if after := e.lastSeq(t); after != before+1 {
		t.Fatalf("the report appended %d events, want 1", after-before)
	}

	// Whatever else is reported, the answer is the same and nothing is appended: the key
	// again (already revoked), a garbage string, a well-formed key that does not exist, a key
	// with a wrong secret, and an expired key of another project (revoked: it is live enough
	// to be revoked, and expiry is no secret).
	wrongSecret := secret[:10] + strings.Repeat("z", 10) + secret[20:]
	for _, body := range []string{
		`{"api_key":"` + secret + `"}`,
		`{"api_key":"sk_this_is_a_fake_api_key_123456789"}`,
		`{"api_key":""}`,
		`{"api_key":"` + wrongSecret + `"}`,
	} {
		seq := e.lastSeq(t)
		report(t, body)
		if e.lastSeq(t) != seq {
			t.Fatalf("report %s appended events", body)
		}
	}
	report(t, `{"api_key":"`+expired.body["value"].(string)+`"}`)
	evs = e.events(t, other.id, expired.body["id"].(string))
	if evs[len(evs)-1].Event.Type != domain.TypeKeyRevoked {
		t.Fatalf("an expired key reported as leaked was not revoked")
	}

	// Malformed reports are refused like any request.
	e.refused(t, http.MethodPost, scanPath, none, `{"key":"x"}`, 400, "SCHEMA_ERROR")
	e.refused(t, http.MethodPost, scanPath, none, `not json`, 400, "BODY_PARSING_ERROR")
	e.refused(t, http.MethodPost, scanPath, none, `{"api_key":null}`, 400, "SCHEMA_ERROR")
}

func TestCredentialScanningRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	limited := false
	for i := 0; i < 100 && !limited; i++ {
		r := call(t, e.url, http.MethodPost, scanPath, http.Header{}, `{"api_key":"sk_unknown"}`)
		switch r.status {
		case http.StatusOK:
		case http.StatusTooManyRequests:
			if r.code() != "RATE_LIMITED" || r.header.Get("Retry-After") == "" {
				t.Fatalf("429 without RATE_LIMITED and Retry-After: %s", r)
			}
			limited = true
		default:
			t.Fatalf("report %d: %s", i, r)
		}
	}
	if !limited {
		t.Fatalf("100 reports from one address in a row were never rate limited")
	}
}

// failingChecks is the comma-separated names of the readiness checks a /readyz answer says
// fail.
func failingChecks(r response) string {
	names, _ := detail(r, "failing").([]any)
	out := make([]string, len(names))
	for i, n := range names {
		out[i], _ = n.(string)
	}
	return strings.Join(out, ",")
}

// TestReadinessChecksAreNamed: /readyz runs every check, names the one that fails, and is
// 200 again by itself once it passes; /healthz stays 200 throughout.
func TestReadinessChecksAreNamed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	rm := projections.NewMemory()
	proj := projections.NewProjector(e.store, rm, projections.ProjectorConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = proj.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	cmds, err := commands.New(e.store, nil, e.hasher, commands.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var guard atomic.Pointer[error]
	broken := errors.New("the stream's configuration was changed")
	guard.Store(&broken)
	h, err := api.NewHandler(api.Deps{
		Commands: cmds, ReadModel: rm, Projector: proj, Store: e.store, Hasher: e.hasher,
		Logger: slog.New(slog.NewJSONHandler(e.logs, nil)),
		ReadinessChecks: []api.ReadinessCheck{{Name: "stream_guard", Check: func(context.Context) error {
			if err := guard.Load(); err != nil {
				return *err
			}
			return nil
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	var r response
	for range 100 { // the projector catches up with the (empty) stream
		if r = call(t, srv.URL, http.MethodGet, "/readyz", nil, ""); failingChecks(r) == "stream_guard" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r.status != 503 || r.code() != "SERVICE_UNAVAILABLE" || r.header.Get("Retry-After") == "" || failingChecks(r) != "stream_guard" ||
		!strings.Contains(string(r.raw), "the stream's configuration was changed") {
		t.Fatalf("readyz with one check failing: %s", r)
	}
	if r := call(t, srv.URL, http.MethodGet, "/healthz", nil, ""); r.status != 200 {
		t.Fatalf("healthz with a readiness check failing: %s", r)
	}
	guard.Store(nil)
	r = call(t, srv.URL, http.MethodGet, "/readyz", nil, "")
	checks, _ := r.body["checks"].(map[string]any)
	if r.status != 200 || len(checks) != 4 {
		t.Fatalf("readyz once every check passes: %s", r)
	}
	if m := call(t, srv.URL, http.MethodGet, "/metrics", nil, ""); !strings.Contains(string(m.raw), `keyledger_readiness_check{check="stream_guard"} 1`) {
		t.Fatalf("metrics lack the readiness check's outcome:\n%s", m.raw)
	}
}
