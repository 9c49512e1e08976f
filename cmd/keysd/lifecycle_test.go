package main_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"

	"github.com/keyledger/keyledger/internal/testenv"
)

// CONTRACT section 7 (key lifecycle beyond Stack Auth), black-box: keysd processes on an
// external NATS server sharing one PostgreSQL read model, driven over HTTP.

const userKeys = "/api/v1/user-api-keys"

// twoInstances is a deployment of two keysd on one external NATS and one PostgreSQL.
func twoInstances(t *testing.T, extraArgs ...string) (a, b *keysd, natsURL string) {
	t.Helper()
	ns := testenv.ExternalNATS(t)
	db := testenv.Postgres(t)
	shared := filepath.Join(t.TempDir(), "secret")
	a = startKeysd(t, keysdOptions{natsURL: ns.URL, databaseURL: db, secretFile: shared, extraArgs: extraArgs})
	b = startKeysd(t, keysdOptions{natsURL: ns.URL, databaseURL: db, secretFile: shared, extraArgs: extraArgs})
	return a, b, ns.URL
}

// want fails the test unless r has the status (and, for an error, the code).
func want(t *testing.T, what string, r response, status int, code string) {
	t.Helper()
	if r.Status != status || (code != "" && r.str("code") != code) {
		t.Fatalf("%s: got %d %s, want %d %s", what, r.Status, r.Raw, status, code)
	}
	if code != "" && r.Header.Get("x-stack-known-error") != code {
		t.Fatalf("%s: x-stack-known-error %q, want %q", what, r.Header.Get("x-stack-known-error"), code)
	}
}

func wantETag(t *testing.T, what string, r response, version int) {
	t.Helper()
	if got, w := r.Header.Get("ETag"), fmt.Sprintf("%q", fmt.Sprint(version)); got != w {
		t.Fatalf("%s: ETag %q, want %s", what, got, w)
	}
}

// Versions as ETags: every response with one key object has ETag "<version>"; If-Match on
// PATCH refuses a stale version with 412 and appends nothing, on either instance, and under
// a race exactly one of many PATCHes conditional on one version wins; If-None-Match on GET
// answers 304 with no body.
func TestETagsAndConditionalRequests(t *testing.T) {
	a, b, natsURL := twoInstances(t)
	p := a.createProject("etags")

	created := a.do("POST", userKeys, p, map[string]any{"user_id": "u", "description": "v1"})
	want(t, "create", created, 200, "")
	wantETag(t, "create", created, 1)
	id := created.str("id")
	path := userKeys + "/" + id

	got := b.do("GET", path, p, nil)
	want(t, "get", got, 200, "")
	wantETag(t, "get", got, 1)
	check := b.do("POST", userKeys+"/check", p, map[string]any{"api_key": created.str("value")})
	want(t, "check", check, 200, "")
	wantETag(t, "check", check, 1)

	for _, inm := range []string{`"1"`, `W/"1"`, `"9", "1"`, `*`} {
		r := b.do("GET", path, p, nil, "If-None-Match", inm)
		if r.Status != http.StatusNotModified || r.Raw != "" {
			t.Fatalf("GET If-None-Match %s: %d %q, want 304 with no body", inm, r.Status, r.Raw)
		}
		wantETag(t, "304", r, 1)
	}
	want(t, `GET If-None-Match "2"`, b.do("GET", path, p, nil, "If-None-Match", `"2"`), 200, "")

	// Refused preconditions append nothing, a no-op PATCH included.
	before := lastSeq(t, natsURL)
	for _, im := range []string{`"2"`, `W/"1"`, `"0", "3"`, `1`} {
		want(t, "PATCH If-Match "+im, a.do("PATCH", path, p, map[string]any{"description": "x"}, "If-Match", im), 412, "PRECONDITION_FAILED")
		want(t, "no-op PATCH If-Match "+im, b.do("PATCH", path, p, map[string]any{}, "If-Match", im), 412, "PRECONDITION_FAILED")
	}
	if after := lastSeq(t, natsURL); after != before {
		t.Fatalf("refused PATCHes moved the stream from %d to %d", before, after)
	}

	r := a.do("PATCH", path, p, map[string]any{"description": "v2"}, "If-Match", `"7", "1"`)
	want(t, "PATCH If-Match current", r, 200, "")
	wantETag(t, "PATCH", r, 2)
	// The other instance changed the key: a no-op conditional on the old version is refused
	// there too, and "*" matches whatever the version is.
	want(t, "stale no-op", b.do("PATCH", path, p, map[string]any{"description": "v2"}, "If-Match", `"1"`), 412, "PRECONDITION_FAILED")
	r = b.do("PATCH", path, p, map[string]any{"description": "v3"}, "If-Match", "*")
	want(t, "PATCH If-Match *", r, 200, "")
	wantETag(t, "PATCH *", r, 3)
	want(t, "If-Match * on a missing key", a.do("PATCH", userKeys+"/00000000-0000-4000-8000-000000000000", p,
		map[string]any{}, "If-Match", "*"), 404, "API_KEY_NOT_FOUND")

	// A race: many PATCHes, all conditional on version 3, through both instances.
	const racers = 16
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		oks, fail int
	)
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := []*keysd{a, b}[i%2]
			r := k.do("PATCH", path, p, map[string]any{"description": fmt.Sprintf("race-%d", i)}, "If-Match", `"3"`)
			mu.Lock()
			defer mu.Unlock()
			switch r.Status {
			case 200:
				oks++
			case 412:
				fail++
			default:
				t.Errorf("racing PATCH: %d %s", r.Status, r.Raw)
			}
		}()
	}
	wg.Wait()
	if oks != 1 || fail != racers-1 {
		t.Fatalf("%d PATCHes conditional on one version succeeded, %d failed; want 1 and %d", oks, fail, racers-1)
	}
	got = a.do("GET", path, p, nil)
	wantETag(t, "after the race", got, 4)
}
