package main_test

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/internal/testenv"
)

// TestTenantIsolation: with project B's credentials, project A's keys can be neither read,
// listed, changed nor checked, and every answer is exactly what a key that does not exist
// gets (status, code, message, details, headers), so B cannot even learn that they exist.
// Nothing B sends appends an event or changes A's keys.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	k := startKeysd(t, keysdOptions{})
	a, b := k.createProject("tenant-a"), k.createProject("tenant-b")
	created := k.do("POST", "/api/v1/user-api-keys", a, map[string]any{"user_id": "shared-user", "description": "a's key"})
	if created.Status != 200 {
		t.Fatalf("create: %d %s", created.Status, created.Raw)
	}
	id, secret := created.str("id"), created.str("value")
	missingID := uuid.NewString()
	random := make([]byte, domain.SecretKeyBytes)
	_, _ = rand.Read(random)
	missingSecret, err := domain.FormatSecretKey(missingID, domain.KeyTypeUser, false, random)
	if err != nil {
		t.Fatal(err)
	}
	before := lastSeq(t, k.natsURL)

	same := func(what string, theirs, missing response) {
		t.Helper()
		if theirs.Status != missing.Status || theirs.str("code") != missing.str("code") || theirs.str("error") != missing.str("error") ||
			fmt.Sprint(theirs.Body["details"]) != fmt.Sprint(missing.Body["details"]) ||
			theirs.Header.Get("x-stack-known-error") != missing.Header.Get("x-stack-known-error") ||
			theirs.Header.Get("Content-Length") != missing.Header.Get("Content-Length") {
			t.Errorf("%s: another project's key answers %d %s, a missing key %d %s", what, theirs.Status, theirs.Raw, missing.Status, missing.Raw)
		}
		if theirs.Status != 404 || theirs.str("code") != "API_KEY_NOT_FOUND" {
			t.Errorf("%s: %d %s, want 404 API_KEY_NOT_FOUND", what, theirs.Status, theirs.Raw)
		}
	}
	same("GET", k.do("GET", "/api/v1/user-api-keys/"+id, b, nil), k.do("GET", "/api/v1/user-api-keys/"+missingID, b, nil))
	same("GET with user_id", k.do("GET", "/api/v1/user-api-keys/"+id+"?user_id=shared-user", b, nil),
		k.do("GET", "/api/v1/user-api-keys/"+missingID+"?user_id=shared-user", b, nil))
	for _, body := range []map[string]any{{"description": "b was here"}, {"revoked": true}, {"revoked": false}, {}} {
		same(fmt.Sprintf("PATCH %v", body), k.do("PATCH", "/api/v1/user-api-keys/"+id, b, body), k.do("PATCH", "/api/v1/user-api-keys/"+missingID, b, body))
	}
	same("check", k.do("POST", "/api/v1/user-api-keys/check", b, map[string]any{"api_key": secret}),
		k.do("POST", "/api/v1/user-api-keys/check", b, map[string]any{"api_key": missingSecret}))
	if l := k.do("GET", "/api/v1/user-api-keys?user_id=shared-user", b, nil); l.Status != 200 || len(l.Body["items"].([]any)) != 0 {
		t.Errorf("B lists A's user's keys: %d %s", l.Status, l.Raw)
	}
	// A's project id with B's server key is refused before any key is looked at.
	if r := k.do("GET", "/api/v1/user-api-keys/"+id, project{ID: a.ID, ServerKey: b.ServerKey}, nil); r.Status != 401 || r.str("code") != "INVALID_SECRET_SERVER_KEY" {
		t.Errorf("A's project with B's server key: %d %s", r.Status, r.Raw)
	}

	if after := lastSeq(t, k.natsURL); after != before {
		t.Fatalf("B's requests appended %d events", after-before)
	}
	if got := k.do("GET", "/api/v1/user-api-keys/"+id, a, nil); got.Status != 200 || got.str("description") != "a's key" || got.Body["manually_revoked_at"] != nil {
		t.Fatalf("A's key after B's attempts: %d %s", got.Status, got.Raw)
	}
	if c := k.do("POST", "/api/v1/user-api-keys/check", a, map[string]any{"api_key": secret}); c.Status != 200 {
		t.Fatalf("A checks its own key: %d %s", c.Status, c.Raw)
	}
}

// TestSecretsNeverLeak drives every endpoint with right and wrong secrets, keysd logging at
// debug level, then looks for every secret (server keys, API key values, admin tokens, the
// server-side secret, and wrong keys presented) in keysd's stdout and stderr, every response
// body and header, every event on the stream, and /metrics.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	k := startKeysd(t, keysdOptions{extraArgs: []string{"--log-level", "debug"}})
	p := k.createProject("secrets")
	secrets := []string{p.ServerKey}
	var answers []string
	record := func(r response) response {
		answers = append(answers, r.Raw, fmt.Sprint(r.Header))
		return r
	}
	created := record(k.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "u", "description": "d"}))
	id, value := created.str("id"), created.str("value")
	secrets = append(secrets, value)
	out, errOut, code := k.keysctl("projects", "admin-token", "--project", p.ID, "--subject", "alice@example.com", "--ttl", "1h")
	if code != 0 {
		t.Fatalf("admin-token: %s", errOut)
	}
	token := strings.TrimSpace(out)
	secrets = append(secrets, token)
	wrongKey := "ssk_" + strings.Repeat("w", 52)
	wrongSecret := value[:len(value)-12] + "000000000000"
	secrets = append(secrets, wrongKey, wrongSecret)

	record(k.do("PATCH", "/api/v1/user-api-keys/"+id, p, map[string]any{"description": "renamed"}, "x-stack-admin-access-token", token))
	record(k.do("PATCH", "/api/v1/user-api-keys/"+id, p, map[string]any{"description": "x"}, "x-stack-admin-access-token", token+"x"))
	record(k.do("GET", "/api/v1/user-api-keys/"+id, project{ID: p.ID, ServerKey: wrongKey}, nil))
	record(k.do("POST", "/api/v1/user-api-keys/check", p, map[string]any{"api_key": value}))
	record(k.do("POST", "/api/v1/user-api-keys/check", p, map[string]any{"api_key": wrongSecret}))
	record(k.do("POST", "/api/v1/user-api-keys/check", p, `{"api_key":"`+value+`", "extra": 1}`))
	record(k.do("POST", "/api/v1/user-api-keys/check", p, `{"api_key":"`+value+`"`))
	record(k.do("GET", "/api/v1/user-api-keys?user_id=u", p, nil))
	if created.Status != 200 {
		t.Fatalf("create: %d %s", created.Status, created.Raw)
	}
	resp, err := http.Get(k.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	serverSecret, err := os.ReadFile(k.secret)
	if err != nil {
		t.Fatal(err)
	}

	places := map[string]string{
		"keysd's stdout":     k.stdout.String(),
		"keysd's stderr":     k.stderr.String(),
		"/metrics":           string(metrics),
		"responses":          strings.Join(answers[2:], "\n"), // the create response carries the value, once, by design
		"keysctl's stderr":   errOut,
		"the create headers": answers[1],
	}
	var stream strings.Builder
	for _, r := range streamEvents(t, k.natsURL) {
		stream.Write(r.Raw)
		stream.WriteByte('\n')
	}
	places["the stream"] = stream.String()
	if !strings.Contains(places["keysd's stderr"], "request") {
		t.Fatalf("keysd logged no requests; the log check would prove nothing:\n%s", places["keysd's stderr"])
	}
	for where, text := range places {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("a secret (%s…) appears in %s", s[:6], where)
			}
		}
		for _, line := range strings.Split(strings.TrimSpace(string(serverSecret)), "\n") {
			if len(line) >= 16 && strings.Contains(text, line) {
				t.Errorf("the server-side secret appears in %s", where)
			}
		}
	}
}

// TestRateLimitPerProject: a project over its --rate-limit gets 429 RATE_LIMITED with
// Retry-After and the contract's error shape; another project is not slowed by it.
func TestRateLimitPerProject(t *testing.T) {
	testenv.Heavy(t, "a keysd process")
	t.Parallel()
	k := startKeysd(t, keysdOptions{extraArgs: []string{"--rate-limit", "1", "--rate-burst", "3"}})
	noisy, quiet := k.createProject("noisy"), k.createProject("quiet")
	limited := 0
	for i := range 20 {
		r := k.do("GET", "/api/v1/user-api-keys?user_id=u", noisy, nil)
		switch r.Status {
		case 200:
		case 429:
			limited++
			ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
			if r.str("code") != "RATE_LIMITED" || r.Header.Get("x-stack-known-error") != "RATE_LIMITED" || err != nil || ra < 1 {
				t.Fatalf("429 without the contract's shape: %v %s", r.Header, r.Raw)
			}
		default:
			t.Fatalf("request %d: %d %s", i, r.Status, r.Raw)
		}
	}
	if limited < 10 {
		t.Fatalf("only %d of 20 requests over a limit of 1/s with a burst of 3 were refused", limited)
	}
	if r := k.do("GET", "/api/v1/user-api-keys?user_id=u", quiet, nil); r.Status != 200 {
		t.Fatalf("the other project is limited too: %d %s", r.Status, r.Raw)
	}
}

// TestSlowAndGreedyClients: a client that trickles its headers is cut off by the server's
// header timeout while others are served meanwhile, and a 1 MiB header gets 431.
func TestSlowAndGreedyClients(t *testing.T) {
	testenv.Heavy(t, "slow and greedy clients against a keysd process")
	t.Parallel()
	k := startKeysd(t, keysdOptions{})
	addr := strings.TrimPrefix(k.base, "http://")

	req, _ := http.NewRequest("GET", k.base+"/healthz", nil)
	req.Header.Set("X-Huge", strings.Repeat("h", 1<<20))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("1 MiB header: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("1 MiB header: %d, want 431", resp.StatusCode)
	}

	const slow = 20
	cut := make(chan error, slow)
	for range slow {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() {
			// One header line every 200ms, forever: only the server can end this.
			if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil {
				cut <- err
				return
			}
			for i := 0; ; i++ {
				time.Sleep(200 * time.Millisecond)
				if _, err := fmt.Fprintf(c, "X-Slow-%d: y\r\n", i); err != nil {
					cut <- err
					return
				}
			}
		}()
	}
	// Meanwhile other clients are served.
	for range 5 {
		if r := k.do("GET", "/healthz", project{}, nil); r.Status != 200 {
			t.Fatalf("healthz while slow clients hold connections: %d", r.Status)
		}
	}
	deadline := time.After(60 * time.Second)
	for i := range slow {
		select {
		case <-cut:
		case <-deadline:
			t.Fatalf("%d of %d header-trickling clients still connected after 60s", slow-i, slow)
		}
	}
	// The server still serves a well-behaved client on a fresh connection.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(line, "200") {
		t.Fatalf("a plain client after the slow ones: %q %v", line, err)
	}
}
