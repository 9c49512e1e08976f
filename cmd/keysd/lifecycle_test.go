package main_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
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
	testenv.Heavy(t, "a keysd process")
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

// Last use: null until the first successful check, then the check's time, seen by the other
// instance within the flush interval and kept across restarts of both; a failed check
// (revoked key) does not move it, and no event is appended for a check.
func TestLastUseAcrossInstancesAndRestarts(t *testing.T) {
	testenv.Heavy(t, "two keysd processes and restarts")
	a, b, natsURL := twoInstances(t, "--last-use-interval", "1s")
	p := a.createProject("last-use")

	created := a.do("POST", userKeys, p, map[string]any{"user_id": "u", "description": "used"})
	want(t, "create", created, 200, "")
	if created.Body["last_used_at"] != nil || created.Body["last_used_at_millis"] != nil {
		t.Fatalf("a new key shows a last use: %s", created.Raw)
	}
	path := userKeys + "/" + created.str("id")
	if r := b.do("GET", path, p, nil); r.Body["last_used_at"] != nil {
		t.Fatalf("an unchecked key shows a last use: %s", r.Raw)
	}

	before := lastSeq(t, natsURL)
	checkedAt := time.Now()
	check := a.do("POST", userKeys+"/check", p, map[string]any{"api_key": created.str("value")})
	want(t, "check", check, 200, "")
	ms, ok := check.Body["last_used_at_millis"].(float64)
	if !ok || int64(ms) < checkedAt.Add(-time.Second).UnixMilli() {
		t.Fatalf("the check's own response shows last use %v", check.Body["last_used_at_millis"])
	}
	at, err := time.Parse(time.RFC3339Nano, check.str("last_used_at"))
	if err != nil || at.UnixMilli() != int64(ms) {
		t.Fatalf("last_used_at %q and last_used_at_millis %v disagree", check.str("last_used_at"), ms)
	}
	if after := lastSeq(t, natsURL); after != before {
		t.Fatalf("a check appended to the event stream (%d -> %d)", before, after)
	}

	// The other instance shows it once flushed (1s here; the contract allows 60s).
	waitLastUse(t, b, p, path, int64(ms))

	// A failed check records nothing.
	want(t, "revoke", a.do("PATCH", path, p, map[string]any{"revoked": true}), 200, "")
	want(t, "check revoked", b.do("POST", userKeys+"/check", p, map[string]any{"api_key": created.str("value")}), 401, "API_KEY_REVOKED")

	if err := a.stop(); err != nil {
		t.Fatalf("stop a: %v", err)
	}
	if err := b.stop(); err != nil {
		t.Fatalf("stop b: %v", err)
	}
	a.start()
	waitLastUse(t, a, p, path, int64(ms))
}

// waitLastUse polls GET until it shows the last use, for at most 10 seconds.
func waitLastUse(t *testing.T, k *keysd, p project, path string, wantMillis int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := k.do("GET", path, p, nil)
		if ms, ok := r.Body["last_used_at_millis"].(float64); ok && int64(ms) == wantMillis {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("last use not shown 10s after the check: %s", r.Raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Idempotency keys: a repeated create returns the first response (the secret included) from
// either instance and after both restart, appending nothing; another body is 422; repeats
// racing the first are 409 with Retry-After or the first response, and one key is created;
// PATCH replays its first response; malformed keys are 400.
func TestIdempotencyKeys(t *testing.T) {
	testenv.Heavy(t, "keysd processes")
	a, b, natsURL := twoInstances(t)
	p := a.createProject("idempotency")
	body := map[string]any{"user_id": "u", "description": "once"}

	first := a.do("POST", userKeys, p, body, "Idempotency-Key", "create-1")
	want(t, "first create", first, 200, "")
	if first.str("value") == "" {
		t.Fatalf("no secret in the first response: %s", first.Raw)
	}
	seq := lastSeq(t, natsURL)
	again := b.do("POST", userKeys, p, body, "Idempotency-Key", "create-1")
	if again.Status != 200 || again.Raw != first.Raw || again.Header.Get("ETag") != first.Header.Get("ETag") {
		t.Fatalf("repeat on the other instance: %d %s, want the first response %s", again.Status, again.Raw, first.Raw)
	}
	if lastSeq(t, natsURL) != seq {
		t.Fatal("a repeated create appended events")
	}
	want(t, "another body", b.do("POST", userKeys, p, map[string]any{"user_id": "u", "description": "twice"}, "Idempotency-Key", "create-1"),
		422, "IDEMPOTENCY_KEY_REUSED")
	// Another project's same key is another request.
	q := a.createProject("other")
	if r := a.do("POST", userKeys, q, body, "Idempotency-Key", "create-1"); r.Status != 200 || r.str("id") == first.str("id") {
		t.Fatalf("same key in another project: %d %s", r.Status, r.Raw)
	}

	for _, bad := range []string{"", strings.Repeat("k", 256), "clé"} {
		want(t, fmt.Sprintf("Idempotency-Key %q", bad), a.do("POST", userKeys, p, body, "Idempotency-Key", bad), 400, "SCHEMA_ERROR")
	}
	want(t, "255 characters", a.do("POST", userKeys, p, body, "Idempotency-Key", strings.Repeat("k", 255)), 200, "")

	// PATCH: the first response again, even after the key changed since.
	path := userKeys + "/" + first.str("id")
	renamed := a.do("PATCH", path, p, map[string]any{"description": "renamed"}, "Idempotency-Key", "patch-1")
	want(t, "PATCH", renamed, 200, "")
	want(t, "PATCH without key", b.do("PATCH", path, p, map[string]any{"description": "later"}), 200, "")
	seq = lastSeq(t, natsURL)
	if r := b.do("PATCH", path, p, map[string]any{"description": "renamed"}, "Idempotency-Key", "patch-1"); r.Raw != renamed.Raw {
		t.Fatalf("repeated PATCH: %s, want %s", r.Raw, renamed.Raw)
	}
	if lastSeq(t, natsURL) != seq {
		t.Fatal("a repeated PATCH appended events")
	}

	// Repeats racing the first: one key, the others in flight or replayed.
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ids  = map[string]bool{}
		busy int
	)
	race := map[string]any{"user_id": "racer", "description": "race"}
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := []*keysd{a, b}[i%2].do("POST", userKeys, p, race, "Idempotency-Key", "race-1")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case r.Status == 200:
				ids[r.str("id")+" "+r.str("value")] = true
			case r.Status == 409 && r.str("code") == "IDEMPOTENCY_KEY_IN_USE" && r.Header.Get("Retry-After") != "":
				busy++
			default:
				t.Errorf("racing create: %d %s", r.Status, r.Raw)
			}
		}()
	}
	wg.Wait()
	if len(ids) != 1 {
		t.Fatalf("racing creates with one Idempotency-Key answered %d different keys", len(ids))
	}
	created := 0
	for _, e := range streamEvents(t, natsURL) {
		if e.Err == nil && e.Event.UserID == "racer" {
			created++
		}
	}
	if created != 1 {
		t.Fatalf("racing creates with one Idempotency-Key appended %d events", created)
	}
	t.Logf("%d of 8 racing creates answered IDEMPOTENCY_KEY_IN_USE", busy)

	// After both instances restart, the record is still there.
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	b.start()
	if r := b.do("POST", userKeys, p, body, "Idempotency-Key", "create-1"); r.Raw != first.Raw {
		t.Fatalf("repeat after restarts: %d %s, want %s", r.Status, r.Raw, first.Raw)
	}
}

// Rotation: a new key for the same owner and description, with its secret and rotated_from;
// the old key expires after the grace period (at once for 0) unless sooner, as an
// ExpiryChanged with reason "rotated" that audit consumers and keysctl keys state --at see;
// revoked keys are 409 and bad bodies 400, appending nothing.
func TestRotation(t *testing.T) {
	testenv.Heavy(t, "a keysd process")
	a, b, natsURL := twoInstances(t)
	p := a.createProject("rotation")
	old := a.do("POST", userKeys, p, map[string]any{"user_id": "owner", "description": "deploy", "is_public": true})
	want(t, "create", old, 200, "")
	oldID := old.str("id")
	beforeRotation := time.Now().UTC()
	time.Sleep(5 * time.Millisecond)

	rotatedAt := time.Now()
	r := a.do("POST", userKeys+"/"+oldID+"/rotate", p, map[string]any{"grace_period_seconds": 3600})
	want(t, "rotate", r, 200, "")
	wantETag(t, "rotate", r, 1)
	newID := r.str("id")
	if newID == oldID || r.str("rotated_from") != oldID || r.str("user_id") != "owner" || r.str("description") != "deploy" ||
		r.Body["is_public"] != true || !strings.HasPrefix(r.str("value"), "pk_") || r.Body["expires_at"] != nil {
		t.Fatalf("rotation answered %s", r.Raw)
	}
	// On the other instance: the old key expires in an hour and still works meanwhile.
	got := b.do("GET", userKeys+"/"+oldID, p, nil)
	wantETag(t, "old key", got, 2)
	exp, _ := got.Body["expires_at_millis"].(float64)
	if ea, err := time.Parse(time.RFC3339Nano, got.str("expires_at")); err != nil ||
		ea.Before(rotatedAt.Add(time.Hour-time.Second)) || ea.After(time.Now().Add(time.Hour)) {
		t.Fatalf("old key after rotation: %s (%v)", got.Raw, exp)
	}
	want(t, "check old key in its grace", b.do("POST", userKeys+"/check", p, map[string]any{"api_key": old.str("value")}), 200, "")
	want(t, "check new key", b.do("POST", userKeys+"/check", p, map[string]any{"api_key": r.str("value")}), 200, "")

	// Audit consumers see both events.
	var sawExpiry, sawCreated bool
	for _, e := range streamEvents(t, natsURL) {
		if e.Err != nil {
			continue
		}
		switch d := e.Event.Data.(type) {
		case domain.ExpiryChanged:
			sawExpiry = e.Event.KeyID == oldID && d.Reason == "rotated" && d.Old == nil && d.New != nil && d.ReplacedBy == newID
		case domain.KeyCreated:
			if e.Event.KeyID == newID {
				sawCreated = d.RotatedFrom == oldID
			}
		}
	}
	if !sawExpiry || !sawCreated {
		t.Fatalf("stream: ExpiryChanged seen %v, KeyCreated with rotated_from seen %v", sawExpiry, sawCreated)
	}
	// keysctl keys state --at honours it.
	out, errOut, code := a.keysctl("keys", "state", "--project", p.ID, "--key", oldID, "--at", beforeRotation.Format(time.RFC3339Nano))
	if code != 0 || !strings.Contains(out, `"expires_at":null`) {
		t.Fatalf("keys state before the rotation: %d %s %s", code, out, errOut)
	}
	out, _, _ = a.keysctl("keys", "state", "--project", p.ID, "--key", oldID)
	if !strings.Contains(out, got.str("expires_at")) {
		t.Fatalf("keys state now: %s, want expires_at %s", out, got.str("expires_at"))
	}

	// Grace 0: the rotated key stops working at once.
	r2 := b.do("POST", userKeys+"/"+newID+"/rotate", p, map[string]any{"grace_period_seconds": 0})
	want(t, "rotate with grace 0", r2, 200, "")
	want(t, "check a key rotated with grace 0", a.do("POST", userKeys+"/check", p, map[string]any{"api_key": r.str("value")}), 401, "API_KEY_EXPIRED")
	// Rotating the first key again: it expires sooner than a week already, so only a new key.
	seq := lastSeq(t, natsURL)
	want(t, "rotate again", a.do("POST", userKeys+"/"+oldID+"/rotate", p, map[string]any{"grace_period_seconds": 604800}), 200, "")
	if n := lastSeq(t, natsURL) - seq; n != 1 {
		t.Fatalf("rotating a key that expires sooner appended %d events, want the new key's only", n)
	}
	if g := a.do("GET", userKeys+"/"+oldID, p, nil); g.str("expires_at") != got.str("expires_at") {
		t.Fatalf("expiry moved later: %s", g.Raw)
	}

	// Refusals append nothing.
	third := r2.str("id")
	want(t, "revoke", a.do("PATCH", userKeys+"/"+third, p, map[string]any{"revoked": true}), 200, "")
	seq = lastSeq(t, natsURL)
	want(t, "rotate revoked", b.do("POST", userKeys+"/"+third+"/rotate", p, map[string]any{"grace_period_seconds": 0}), 409, "API_KEY_ALREADY_REVOKED")
	for _, body := range []string{`{}`, `{"grace_period_seconds":604801}`, `{"grace_period_seconds":-1}`, `{"grace_period_seconds":null}`,
		`{"grace_period_seconds":"60"}`, `{"grace_period_seconds":1.5}`, `{"grace_period_seconds":60,"x":1}`, `[]`} {
		want(t, "rotate "+body, a.do("POST", userKeys+"/"+oldID+"/rotate", p, body), 400, "SCHEMA_ERROR")
	}
	want(t, "rotate a bad id", a.do("POST", userKeys+"/nope/rotate", p, map[string]any{"grace_period_seconds": 0}), 400, "SCHEMA_ERROR")
	want(t, "rotate a missing key", a.do("POST", userKeys+"/00000000-0000-4000-8000-000000000000/rotate", p,
		map[string]any{"grace_period_seconds": 0}), 404, "API_KEY_NOT_FOUND")
	if after := lastSeq(t, natsURL); after != seq {
		t.Fatalf("refused rotations moved the stream from %d to %d", seq, after)
	}
}

const teamKeys = "/api/v1/team-api-keys"

// Section 7 on team keys (CONTRACT sections 6 and 7): Idempotency-Key on POST /team-api-keys
// across instances and restarts, ETags, last use, and rotation on the team path.
func TestTeamKeyLifecycle(t *testing.T) {
	a, b, natsURL := twoInstances(t, "--last-use-interval", "1s")
	p := a.createProject("team lifecycle")
	body := map[string]any{"team_id": "team-1", "description": "deploy"}

	first := a.do("POST", teamKeys, p, body, "Idempotency-Key", "team-create-1")
	want(t, "create", first, 200, "")
	wantETag(t, "create", first, 1)
	if first.str("type") != "team" || first.str("team_id") != "team-1" || first.str("value") == "" {
		t.Fatalf("created team key: %s", first.Raw)
	}
	seq := lastSeq(t, natsURL)
	again := b.do("POST", teamKeys, p, body, "Idempotency-Key", "team-create-1")
	if again.Status != 200 || again.Raw != first.Raw || again.Header.Get("ETag") != first.Header.Get("ETag") {
		t.Fatalf("repeat on the other instance: %d %s, want %s", again.Status, again.Raw, first.Raw)
	}
	// A third time on the same instance: from its copy of the record, without the bucket.
	if r := b.do("POST", teamKeys, p, body, "Idempotency-Key", "team-create-1"); r.Raw != first.Raw {
		t.Fatalf("second repeat: %d %s, want %s", r.Status, r.Raw, first.Raw)
	}
	if lastSeq(t, natsURL) != seq {
		t.Fatal("a repeated team create appended events")
	}
	want(t, "another body", b.do("POST", teamKeys, p, map[string]any{"team_id": "team-2", "description": "deploy"}, "Idempotency-Key", "team-create-1"),
		422, "IDEMPOTENCY_KEY_REUSED")
	// The same key on the user path is another request.
	if r := a.do("POST", userKeys, p, map[string]any{"user_id": "u", "description": "deploy"}, "Idempotency-Key", "team-create-1"); r.Status != 200 || r.str("type") != "user" {
		t.Fatalf("same Idempotency-Key on the user path: %d %s", r.Status, r.Raw)
	}

	path := teamKeys + "/" + first.str("id")
	got := b.do("GET", path, p, nil)
	want(t, "get", got, 200, "")
	wantETag(t, "get", got, 1)
	if r := b.do("GET", path, p, nil, "If-None-Match", `"1"`); r.Status != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d %s", r.Status, r.Raw)
	}
	want(t, "stale If-Match", a.do("PATCH", path, p, map[string]any{"description": "x"}, "If-Match", `"7"`), 412, "PRECONDITION_FAILED")

	check := a.do("POST", teamKeys+"/check", p, map[string]any{"api_key": first.str("value")})
	want(t, "check", check, 200, "")
	ms, ok := check.Body["last_used_at_millis"].(float64)
	if !ok {
		t.Fatalf("the check shows no last use: %s", check.Raw)
	}
	waitLastUse(t, b, p, path, int64(ms))
	want(t, "team key at the user check", a.do("POST", userKeys+"/check", p, map[string]any{"api_key": first.str("value")}), 400, "WRONG_API_KEY_TYPE")

	rotated := b.do("POST", path+"/rotate", p, map[string]any{"grace_period_seconds": 0}, "Idempotency-Key", "team-rotate-1")
	want(t, "rotate", rotated, 200, "")
	if rotated.str("type") != "team" || rotated.str("team_id") != "team-1" || rotated.str("rotated_from") != first.str("id") {
		t.Fatalf("rotated team key: %s", rotated.Raw)
	}
	if r := a.do("POST", path+"/rotate", p, map[string]any{"grace_period_seconds": 0}, "Idempotency-Key", "team-rotate-1"); r.Raw != rotated.Raw {
		t.Fatalf("repeated rotation: %s, want %s", r.Raw, rotated.Raw)
	}
	want(t, "check the rotated-out key", a.do("POST", teamKeys+"/check", p, map[string]any{"api_key": first.str("value")}), 401, "API_KEY_EXPIRED")
	want(t, "check the new key", a.do("POST", teamKeys+"/check", p, map[string]any{"api_key": rotated.str("value")}), 200, "")
	list := a.do("GET", teamKeys+"?team_id=team-1", p, nil)
	if items, _ := list.Body["items"].([]any); len(items) != 2 {
		t.Fatalf("team-1's keys after rotation: %s", list.Raw)
	}

	// What the two instances did shows in /metrics.
	idem := func(k *keysd, outcome string) float64 {
		return metric(t, k, `keyledger_idempotency_requests_total{outcome="`+outcome+`"}`)
	}
	for _, m := range []struct {
		what string
		got  float64
	}{
		{"claimed", idem(a, "claimed") + idem(b, "claimed")},
		{"stored", idem(a, "stored") + idem(b, "stored")},
		{"replayed from the bucket", idem(a, "replayed_bucket") + idem(b, "replayed_bucket")},
		{"replayed from memory", idem(b, "replayed_memory")},
		{"reused", idem(b, "reused")},
		{"last-use touches", metric(t, a, "keyledger_last_use_touches_total")},
		{"last-use records written", metric(t, a, "keyledger_last_use_records_written_total")},
		{"last-use flushes", metric(t, a, "keyledger_last_use_flushes_total")},
		{"last-use records read by the other instance", metric(t, b, "keyledger_last_use_records_read_total")},
	} {
		if m.got < 1 {
			t.Errorf("/metrics: %s = %v, want at least 1", m.what, m.got)
		}
	}
	if errs := metric(t, a, "keyledger_last_use_flush_errors_total"); errs != 0 {
		t.Errorf("/metrics: %v last-use flush errors", errs)
	}

	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	a.start()
	if r := a.do("POST", teamKeys, p, body, "Idempotency-Key", "team-create-1"); r.Raw != first.Raw {
		t.Fatalf("repeat after restarts: %d %s, want %s", r.Status, r.Raw, first.Raw)
	}
}
