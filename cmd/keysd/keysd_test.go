package main_test

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/internal/testenv"
)

// A new user's path on the embedded defaults: project, key, PATCH, GET, check, list, and a
// restart that keeps every key.
func TestEmbeddedDefaultsEndToEnd(t *testing.T) {
	k := startKeysd(t, keysdOptions{})
	if !strings.Contains(k.stdout.String(), "projects create") || !strings.Contains(k.stdout.String(), "http://") {
		t.Fatalf("start banner does not say where it serves and how to create a project:\n%s", k.stdout)
	}
	p := k.createProject("walkthrough")

	created := k.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "user-1", "description": "ci deploy key"})
	if created.Status != 200 {
		t.Fatalf("create: %d %s", created.Status, created.Raw)
	}
	id, secret := created.str("id"), created.str("value")
	if !strings.HasPrefix(secret, "sk_") || created.Body["manually_revoked_at"] != nil || created.Body["expires_at"] != nil {
		t.Fatalf("create response %s", created.Raw)
	}
	other := k.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "user-1", "description": "second", "expires_at_millis": time.Now().Add(time.Hour).UnixMilli()})
	if other.Status != 200 {
		t.Fatalf("create second: %d %s", other.Status, other.Raw)
	}

	renamed := k.do("PATCH", "/api/v1/user-api-keys/"+id, p, map[string]any{"description": "renamed"})
	if renamed.Status != 200 || renamed.str("description") != "renamed" {
		t.Fatalf("rename: %d %s", renamed.Status, renamed.Raw)
	}
	if got := k.do("GET", "/api/v1/user-api-keys/"+id, p, nil); got.str("description") != "renamed" {
		t.Fatalf("GET right after PATCH shows %s", got.Raw)
	}
	if c := k.do("POST", "/api/v1/user-api-keys/check", p, map[string]any{"api_key": secret}); c.Status != 200 || c.str("id") != id {
		t.Fatalf("check active key: %d %s", c.Status, c.Raw)
	}
	revoked := k.do("PATCH", "/api/v1/user-api-keys/"+id, p, map[string]any{"revoked": true})
	revokedAt := revoked.str("manually_revoked_at")
	if revoked.Status != 200 || !strings.HasSuffix(revokedAt, "Z") {
		t.Fatalf("revoke: %d %s", revoked.Status, revoked.Raw)
	}
	again := k.do("PATCH", "/api/v1/user-api-keys/"+id, p, map[string]any{"revoked": true})
	if again.Status != 200 || again.str("manually_revoked_at") != revokedAt {
		t.Fatalf("second revoke changed the timestamp: %s", again.Raw)
	}
	if r := k.do("PATCH", "/api/v1/user-api-keys/"+id, p, map[string]any{"revoked": false}); r.Status != 409 || r.str("code") != "API_KEY_ALREADY_REVOKED" {
		t.Fatalf("un-revoke: %d %s", r.Status, r.Raw)
	}
	if c := k.do("POST", "/api/v1/user-api-keys/check", p, map[string]any{"api_key": secret}); c.Status != 401 || c.str("code") != "API_KEY_REVOKED" {
		t.Fatalf("check revoked key: %d %s", c.Status, c.Raw)
	}
	list := k.do("GET", "/api/v1/user-api-keys?user_id=user-1", p, nil)
	items, _ := list.Body["items"].([]any)
	if list.Status != 200 || len(items) != 2 || items[0].(map[string]any)["id"] != other.str("id") || list.Body["is_paginated"] != false {
		t.Fatalf("list: %d %s", list.Status, list.Raw)
	}

	events := streamEvents(t, k.natsURL)
	var keyEvents []domain.Event
	for _, r := range events {
		if r.Err != nil {
			t.Fatalf("undecodable event %d: %v", r.Seq, r.Err)
		}
		if r.Event.KeyID == id {
			keyEvents = append(keyEvents, r.Event)
		}
		if strings.Contains(string(r.Raw), secret) || strings.Contains(string(r.Raw), p.ServerKey) {
			t.Fatalf("a secret is on the stream: %s", r.Raw)
		}
	}
	wantTypes := []domain.EventType{domain.TypeKeyCreated, domain.TypeDescriptionChanged, domain.TypeKeyRevoked}
	if len(keyEvents) != 3 {
		t.Fatalf("key has %d events, want 3 (no-op PATCHes emit nothing)", len(keyEvents))
	}
	for i, e := range keyEvents {
		if e.Type != wantTypes[i] || e.Version != i+1 || e.Actor.Type != domain.ActorServerKey || e.RequestID == "" {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
	if d := keyEvents[1].Data.(domain.DescriptionChanged); d.Old != "ci deploy key" || d.New != "renamed" {
		t.Fatalf("DescriptionChanged data %+v", d)
	}

	if err := k.stop(); err != nil {
		t.Fatalf("SIGTERM: keysd did not exit 0: %v\n%s", err, k.stderr)
	}
	k.start()
	after := k.do("GET", "/api/v1/user-api-keys/"+id, p, nil)
	if after.Status != 200 || after.str("description") != "renamed" || after.str("manually_revoked_at") != revokedAt {
		t.Fatalf("after restart: %d %s", after.Status, after.Raw)
	}
	if c := k.do("POST", "/api/v1/user-api-keys/check", p, map[string]any{"api_key": other.str("value")}); c.Status != 200 {
		t.Fatalf("check after restart: %d %s", c.Status, c.Raw)
	}
}

// Two keysd instances on one external nats-server and one PostgreSQL, with 64 clients
// PATCHing one key through both: no lost update, contiguous versions, every change visible
// on the other instance right after its 200, and the read model equal to a replay.
func TestTwoInstancesSharingNATSAndPostgres(t *testing.T) {
	testenv.Heavy(t, "two keysd processes under load")
	ns := testenv.ExternalNATS(t)
	db := testenv.Postgres(t)
	shared := filepath.Join(t.TempDir(), "secret")
	a := startKeysd(t, keysdOptions{natsURL: ns.URL, databaseURL: db, secretFile: shared})
	b := startKeysd(t, keysdOptions{natsURL: ns.URL, databaseURL: db, secretFile: shared})
	instances := []*keysd{a, b}
	p := a.createProject("shared")

	created := a.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "u", "description": "v0"})
	if created.Status != 200 {
		t.Fatalf("create: %d %s", created.Status, created.Raw)
	}
	id := created.str("id")
	if got := b.do("GET", "/api/v1/user-api-keys/"+id, p, nil); got.Status != 200 {
		t.Fatalf("other instance does not see the created key: %d %s", got.Status, got.Raw)
	}

	type observation struct{ wrote, sawOnOther string }
	var (
		mu   sync.Mutex
		obs  []observation
		wg   sync.WaitGroup
		oks  int
		busy int
	)
	const clients, perClient = 64, 4
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			self, peer := instances[c%2], instances[(c+1)%2]
			for i := range perClient {
				desc := fmt.Sprintf("c%d-%d", c, i)
				r := self.do("PATCH", "/api/v1/user-api-keys/"+id, p, map[string]any{"description": desc})
				switch {
				case r.Status == 200:
					if r.str("description") != desc {
						t.Errorf("PATCH %s answered %s", desc, r.Raw)
					}
					seen := peer.do("GET", "/api/v1/user-api-keys/"+id, p, nil)
					mu.Lock()
					oks++
					obs = append(obs, observation{desc, seen.str("description")})
					mu.Unlock()
				case r.Status == 503 || r.Status == 429:
					if r.Header.Get("Retry-After") == "" {
						t.Errorf("%d without Retry-After", r.Status)
					}
					mu.Lock()
					busy++
					mu.Unlock()
				default:
					t.Errorf("PATCH: %d %s", r.Status, r.Raw)
				}
			}
		}()
	}
	wg.Wait()

	// Stream order of every description.
	pos := map[string]int{"v0": 0}
	version, last := 0, "v0"
	for _, r := range streamEvents(t, ns.URL) {
		if r.Err != nil || r.Event.KeyID != id {
			continue
		}
		version++
		if r.Event.Version != version {
			t.Fatalf("versions not contiguous: event %d has version %d", version, r.Event.Version)
		}
		if d, ok := r.Event.Data.(domain.DescriptionChanged); ok {
			if _, dup := pos[d.New]; dup {
				t.Fatalf("description %s appended twice", d.New)
			}
			pos[d.New] = version
			last = d.New
		}
	}
	if version-1 != oks {
		t.Fatalf("%d PATCHes got 200 but the stream has %d changes (%d answered busy)", oks, version-1, busy)
	}
	for _, o := range obs {
		if pos[o.sawOnOther] < pos[o.wrote] {
			t.Fatalf("after the 200 for %q the other instance still showed the older %q", o.wrote, o.sawOnOther)
		}
	}
	for _, k := range instances {
		if got := k.do("GET", "/api/v1/user-api-keys/"+id, p, nil); got.str("description") != last {
			t.Fatalf("read model shows %q, the stream's last change is %q", got.str("description"), last)
		}
	}
	t.Logf("%d PATCHes acknowledged, %d answered busy", oks, busy)
	acked := map[string]string{}
	for _, o := range obs {
		acked[o.wrote] = id
	}
	checkPostgresMatchesReplay(t, db, ns.URL, replay(t, ns.URL, acked))
}

// Malformed, oversized, unauthorised and conflicting requests: each gets its 4xx JSON error,
// the stream gains no event, and the service stays healthy.
func TestHostileRequestsAppendNothing(t *testing.T) {
	k := startKeysd(t, keysdOptions{})
	p := k.createProject("hostile")
	q := k.createProject("other-tenant")
	created := k.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "u", "description": "d"})
	id := created.str("id")
	revokedKey := k.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "u", "description": "r"})
	k.do("PATCH", "/api/v1/user-api-keys/"+revokedKey.str("id"), p, map[string]any{"revoked": true})
	before := lastSeq(t, k.natsURL)
	keyPath := "/api/v1/user-api-keys/" + id
	big := `{"description":"` + strings.Repeat("a", 70*1024) + `"}`
	cases := []struct {
		name, method, path string
		proj               project
		body               any
		headers            []string
		status             int
		code               string
	}{
		{"no project header", "PATCH", keyPath, project{}, map[string]any{"description": "x"}, []string{"x-stack-secret-server-key", p.ServerKey}, 400, "ACCESS_TYPE_WITHOUT_PROJECT_ID"},
		{"unknown project", "PATCH", keyPath, project{ID: "00000000-0000-4000-8000-000000000000", ServerKey: p.ServerKey}, map[string]any{"description": "x"}, nil, 400, "CURRENT_PROJECT_NOT_FOUND"},
		{"malformed project", "PATCH", keyPath, project{ID: "../../etc", ServerKey: p.ServerKey}, map[string]any{"description": "x"}, nil, 400, "CURRENT_PROJECT_NOT_FOUND"},
		{"no server key", "PATCH", keyPath, p, map[string]any{"description": "x"}, []string{"x-stack-secret-server-key", "<delete>"}, 401, "SERVER_AUTHENTICATION_REQUIRED"},
		{"wrong server key", "PATCH", keyPath, project{ID: p.ID, ServerKey: "ssk_wrong"}, map[string]any{"description": "x"}, nil, 401, "INVALID_SECRET_SERVER_KEY"},
		{"other tenant's server key", "PATCH", keyPath, project{ID: p.ID, ServerKey: q.ServerKey}, map[string]any{"description": "x"}, nil, 401, "INVALID_SECRET_SERVER_KEY"},
		{"other tenant's key", "PATCH", keyPath, q, map[string]any{"description": "x"}, nil, 404, "API_KEY_NOT_FOUND"},
		{"bad access type", "PATCH", keyPath, p, map[string]any{"description": "x"}, []string{"x-stack-access-type", "client"}, 401, "INSUFFICIENT_ACCESS_TYPE"},
		{"garbage admin token", "PATCH", keyPath, p, map[string]any{"description": "x"}, []string{"x-stack-admin-access-token", "nope"}, 401, "UNPARSABLE_ADMIN_ACCESS_TOKEN"},
		{"unknown property", "PATCH", keyPath, p, map[string]any{"description": "x", "user_id": "y"}, nil, 400, "SCHEMA_ERROR"},
		{"null description", "PATCH", keyPath, p, `{"description":null}`, nil, 400, "SCHEMA_ERROR"},
		{"string revoked", "PATCH", keyPath, p, `{"revoked":"true"}`, nil, 400, "SCHEMA_ERROR"},
		{"array body", "PATCH", keyPath, p, `[]`, nil, 400, "SCHEMA_ERROR"},
		{"trailing data", "PATCH", keyPath, p, `{"description":"x"} {}`, nil, 400, "BODY_PARSING_ERROR"},
		{"broken JSON", "PATCH", keyPath, p, `{"description":`, nil, 400, "BODY_PARSING_ERROR"},
		{"invalid UTF-8", "PATCH", keyPath, p, []byte("{\"description\":\"\xff\"}"), nil, 400, "SCHEMA_ERROR"},
		{"NUL in description", "PATCH", keyPath, p, `{"description":"a\u0000b"}`, nil, 400, "SCHEMA_ERROR"},
		{"description over 4096 bytes", "PATCH", keyPath, p, map[string]any{"description": strings.Repeat("é", 2049)}, nil, 400, "SCHEMA_ERROR"},
		{"body over 64 KiB", "PATCH", keyPath, p, big, nil, 413, "PAYLOAD_TOO_LARGE"},
		{"not JSON content type", "PATCH", keyPath, p, `{"description":"x"}`, []string{"Content-Type", "text/plain"}, 400, "BODY_PARSING_ERROR"},
		{"malformed key id", "PATCH", "/api/v1/user-api-keys/not-a-uuid", p, map[string]any{"description": "x"}, nil, 400, "SCHEMA_ERROR"},
		{"unknown key", "PATCH", "/api/v1/user-api-keys/6f1c1d3e-0000-4000-8000-000000000000", p, map[string]any{"description": "x"}, nil, 404, "API_KEY_NOT_FOUND"},
		{"un-revoke", "PATCH", "/api/v1/user-api-keys/" + revokedKey.str("id"), p, map[string]any{"revoked": false, "description": "sneaky"}, nil, 409, "API_KEY_ALREADY_REVOKED"},
		{"create without user", "POST", "/api/v1/user-api-keys", p, map[string]any{"description": "x"}, nil, 400, "SCHEMA_ERROR"},
		{"create with long user id", "POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": strings.Repeat("u", 129), "description": "x"}, nil, 400, "SCHEMA_ERROR"},
		{"create with fractional expiry", "POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "u", "description": "x", "expires_at_millis": 1.5}, nil, 400, "SCHEMA_ERROR"},
		{"list without user", "GET", "/api/v1/user-api-keys", p, nil, nil, 400, "SCHEMA_ERROR"},
		{"check garbage", "POST", "/api/v1/user-api-keys/check", p, map[string]any{"api_key": "sk_nope"}, nil, 404, "API_KEY_NOT_FOUND"},
		{"check other tenant's key", "POST", "/api/v1/user-api-keys/check", q, map[string]any{"api_key": created.str("value")}, nil, 404, "API_KEY_NOT_FOUND"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := k.do(c.method, c.path, c.proj, c.body, c.headers...)
			if r.Status != c.status || r.str("code") != c.code {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Raw, c.status, c.code)
			}
			if r.Header.Get("x-stack-known-error") != c.code || r.str("error") == "" || r.Header.Get("x-stack-request-id") == "" {
				t.Fatalf("error response headers %v body %s", r.Header, r.Raw)
			}
		})
	}
	if after := lastSeq(t, k.natsURL); after != before {
		t.Fatalf("rejected requests appended %d events", after-before)
	}
	if resp, err := http.Get(k.base + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("unhealthy after hostile requests: %v", err)
	}
	if got := k.do("GET", keyPath, p, nil); got.str("description") != "d" {
		t.Fatalf("key changed by rejected requests: %s", got.Raw)
	}
}

// TestRevokeOnOneInstanceIsSeenByTheOtherAtOnce: revoke (and rename) a key through one keysd
// and check (and read) it through another right after the 200, which held the key active in
// its memory a moment before: no check accepts the revoked key, no read shows the older
// name. Both topologies of several keysd: a shared PostgreSQL, and in-process read models.
// The other keysd answers from its key index (its hits count in /metrics) behind the read
// barrier, whose requests to NATS are fewer than the reads it served.
func TestRevokeOnOneInstanceIsSeenByTheOtherAtOnce(t *testing.T) {
	testenv.Heavy(t, "two keysd processes")
	for _, topology := range []string{"postgres", "in-process"} {
		t.Run(topology, func(t *testing.T) {
			ns := testenv.ExternalNATS(t)
			shared := filepath.Join(t.TempDir(), "secret")
			o := keysdOptions{natsURL: ns.URL, secretFile: shared, extraArgs: []string{"--rate-limit", "0"}}
			if topology == "postgres" {
				o.databaseURL = testenv.Postgres(t)
			}
			a, b := startKeysd(t, o), startKeysd(t, o)
			p := a.createProject("revoke here, check there")
			const tries = 150
			deadline := time.Now().Add(90 * time.Second)
			stale, done := 0, 0
			for i := 0; i < tries && time.Now().Before(deadline); i++ {
				created := a.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "u", "description": "before"})
				if created.Status != 200 {
					t.Fatalf("create: %d %s", created.Status, created.Raw)
				}
				id, secret := created.str("id"), created.str("value")
				check := map[string]any{"api_key": secret}
				if c := b.do("POST", "/api/v1/user-api-keys/check", p, check); c.Status != 200 {
					t.Fatalf("check of a new key on the other instance: %d %s", c.Status, c.Raw)
				}
				r := a.do("PATCH", "/api/v1/user-api-keys/"+id, p, map[string]any{"description": "after", "revoked": true})
				if r.Status != 200 {
					t.Fatalf("revoke: %d %s", r.Status, r.Raw)
				}
				if c := b.do("POST", "/api/v1/user-api-keys/check", p, check); c.Status == 200 {
					stale++
					t.Errorf("try %d: the other instance accepted key %s after its revocation's 200: %s", i, id, c.Raw)
				} else if c.Status != 400 && c.Status != 401 && c.Status != 404 {
					t.Fatalf("check of a revoked key: %d %s", c.Status, c.Raw)
				}
				if g := b.do("GET", "/api/v1/user-api-keys/"+id, p, nil); g.str("description") != "after" || g.str("manually_revoked_at") == "" {
					stale++
					t.Errorf("try %d: the other instance read key %s as %s after the 200", i, id, g.Raw)
				}
				done++
			}
			if done < 20 {
				t.Fatalf("only %d tries in the time allowed", done)
			}
			metrics := scrape(t, b)
			t.Logf("%s: %d tries, %d stale; the other instance: %s", topology, done, stale, metrics)
			if !strings.Contains(metrics, "keyledger_key_index_hits_total") || strings.Contains(metrics, "keyledger_key_index_hits_total 0\n") {
				t.Errorf("the other instance answered nothing from its key index:\n%s", metrics)
			}
		})
	}
}

// scrape returns keysd's key-index and read-barrier metrics.
func scrape(t *testing.T, k *keysd) string {
	t.Helper()
	resp, err := http.Get(k.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out strings.Builder
	for line := range strings.SplitSeq(string(raw), "\n") {
		if strings.HasPrefix(line, "keyledger_key_index_") || strings.HasPrefix(line, "keyledger_read_barrier_") {
			out.WriteString(line + "\n")
		}
	}
	return out.String()
}
