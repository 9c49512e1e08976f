package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
)

// short is the load of a test run: enough requests to exercise every path, no timing asserted.
var short = loadConfig{Clients: 4, Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond}

func scenario(name string) loadConfig {
	c := short
	c.Scenario = name
	return c
}

// serve runs one of keysbench's servers in this process until the test ends.
func serve(t *testing.T, command string, args ...string) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stdout, stderr bytes.Buffer
	go func() {
		done <- dispatch(ctx, append([]string{command, "--http-addr", addr}, args...), &stdout, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("server exited with %d: %s", code, stderr.String())
		}
	})
	if err := testenv.WaitTCP(addr, 15*time.Second); err != nil {
		t.Fatalf("server on %s: %v", addr, err)
	}
	return "http://" + addr
}

// measure runs one load, again for longer (up to 2.4 s) when a busy machine let no request
// finish within the run: the tests check what the requests did, never how fast.
func measure(ctx context.Context, tg *target, cfg loadConfig) (result, error) {
	for try := 0; ; try++ {
		r, err := runLoad(ctx, tg, cfg)
		if err != nil || r.Requests > 0 || try == 3 {
			return r, err
		}
		cfg.Duration *= 2
	}
}

func expectClean(t *testing.T, r result) {
	t.Helper()
	if r.OK == 0 || len(r.Errors) > 0 || r.Requests != r.OK {
		t.Errorf("%s %s: %d requests, %d ok, errors %v", r.Target, r.Scenario, r.Requests, r.OK, r.Errors)
	}
	if r.P50Ms > r.P99Ms || r.P99Ms > r.MaxMs {
		t.Errorf("%s %s: quantiles out of order: p50 %v p99 %v max %v", r.Target, r.Scenario, r.P50Ms, r.P99Ms, r.MaxMs)
	}
}

func TestBaselineServesTheKeysAPIOnPostgreSQL(t *testing.T) {
	testenv.Heavy(t, "a benchmark server process")
	ctx := context.Background()
	url := serve(t, "baseline-server", "--database-url", testenv.Postgres(t))
	tg, err := prepare(ctx, "baseline", setupConfig{Kind: kindBaseline, URL: url, Keys: 20})
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range []string{"patch", "patch-hot", "get", "revoke", "create"} {
		r, err := measure(ctx, tg, scenario(sc))
		if err != nil {
			t.Fatal(err)
		}
		expectClean(t, r)
	}
	// Revocation is one-way on the baseline too, with keysd's code; a wrong server key is refused.
	k := tg.Keys[0]
	c := newHTTPClient(1)
	if got := tg.do(ctx, c, request{method: http.MethodPatch, path: "/api/v1/user-api-keys/" + k.ID, body: []byte(`{"revoked":false}`)}); got != "409 API_KEY_ALREADY_REVOKED" {
		t.Errorf("revoked:false on a revoked key: %q, want 409 API_KEY_ALREADY_REVOKED", got)
	}
	wrong := &target{BaseURL: tg.BaseURL, ProjectID: tg.ProjectID, ServerKey: "ssk_wrong"}
	if got := wrong.do(ctx, c, request{method: http.MethodGet, path: "/api/v1/user-api-keys/" + k.ID}); got != "401 INVALID_SECRET_SERVER_KEY" {
		t.Errorf("wrong server key: %q, want 401 INVALID_SECRET_SERVER_KEY", got)
	}
}

func TestFloorAnswersEveryRequest(t *testing.T) {
	ctx := context.Background()
	url := serve(t, "floor-server")
	tg, err := prepare(ctx, "floor", setupConfig{Kind: kindFloor, URL: url, Keys: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []loadConfig{scenario("check"), {Scenario: "check", Clients: 2, Rate: 500, Duration: 300 * time.Millisecond}} {
		r, err := measure(ctx, tg, c)
		if err != nil {
			t.Fatal(err)
		}
		expectClean(t, r)
	}
}

// startKeysd runs a keysd process with these flags (and the test's defaults) until the test
// ends and returns its base URL and its output.
func startKeysd(t *testing.T, args ...string) (string, *testenv.Buffer) {
	t.Helper()
	bin := testenv.Binary(t, "./cmd/keysd")
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cmd := exec.Command(bin, append([]string{"--http-addr", httpAddr, "--log-level", "warn", "--rate-limit", "0"}, args...)...)
	out := &testenv.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if err := testenv.WaitTCP(httpAddr, 30*time.Second); err != nil {
		t.Fatalf("keysd: %v\n%s", err, out.String())
	}
	return "http://" + httpAddr, out
}

// TestEveryScenarioAgainstKeysd drives a real keysd (embedded NATS, PostgreSQL read model)
// through every scenario, creating its project as keysctl does.
func TestEveryScenarioAgainstKeysd(t *testing.T) {
	testenv.Heavy(t, "every benchmark scenario against keysd processes")
	ctx := context.Background()
	dir := t.TempDir()
	natsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	url, out := startKeysd(t, "--embedded-nats-addr", natsAddr, "--data-dir", dir, "--database-url", testenv.Postgres(t))
	tg, err := prepare(ctx, "keysd", setupConfig{Kind: kindKeysd, URL: url,
		NATS: eventstore.ConnectConfig{URLs: "nats://" + natsAddr}, SecretFile: filepath.Join(dir, "secret"), Keys: 40})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	// Checks before revocations: a check of a revoked key is API_KEY_REVOKED.
	for _, sc := range []string{"patch", "patch-hot", "get", "check", "create", "revoke", "mixed"} {
		r, err := measure(ctx, tg, scenario(sc))
		if err != nil {
			t.Fatal(err)
		}
		if sc == "mixed" {
			// Revocations in the mix make later checks of those keys API_KEY_REVOKED: expected.
			delete(r.Errors, "401 API_KEY_REVOKED")
			r.Requests = r.OK
		}
		expectClean(t, r)
	}
	if strings.Contains(out.String(), "level=ERROR") {
		t.Errorf("keysd logged errors:\n%s", out.String())
	}
}

// TestTwoInstances: keysbench spreads its load over two keysd on one external nats-server
// and PostgreSQL, revoke-check finds no stale accept between them, and compare measures
// several baselines and compares keysd with the best.
func TestTwoInstances(t *testing.T) {
	testenv.Heavy(t, "two keysd processes, a nats-server process and baselines")
	ctx := context.Background()
	ns := testenv.ExternalNATS(t)
	db := testenv.Postgres(t)
	secret := filepath.Join(t.TempDir(), "secret")
	a, outA := startKeysd(t, "--nats-url", ns.URL, "--database-url", db, "--secret-file", secret)
	b, outB := startKeysd(t, "--nats-url", ns.URL, "--database-url", db, "--secret-file", secret)
	conn := eventstore.ConnectConfig{URLs: ns.URL}

	tg, err := prepare(ctx, "keysd", setupConfig{Kind: kindKeysd, URL: a + "," + b, NATS: conn, SecretFile: secret, Keys: 20})
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, outA.String(), outB.String())
	}
	if tg.instance(0) != a || tg.instance(1) != b || tg.instance(2) != a || tg.Name != "keysd x2" {
		t.Errorf("instances %q %q %q, name %q: want the load spread over %s and %s", tg.instance(0), tg.instance(1), tg.instance(2), tg.Name, a, b)
	}
	for _, sc := range []string{"check", "patch"} {
		r, err := measure(ctx, tg, scenario(sc))
		if err != nil {
			t.Fatal(err)
		}
		expectClean(t, r)
	}

	var stdout, stderr bytes.Buffer
	code := dispatch(ctx, []string{"revoke-check", "--nats-url", ns.URL, "--url", a + "," + b, "--secret-file", secret,
		"--tries", "40", "--clients", "2", "--json"}, &stdout, &stderr)
	var sum revokeCheckSummary
	if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil || code != 0 {
		t.Fatalf("revoke-check: exit %d, %v, stdout %q, stderr %q", code, err, stdout.String(), stderr.String())
	}
	if sum.Tries != 40 || sum.Instances != 2 || sum.Stale != 0 || sum.Revoked != 40 || sum.NeverAccepted != 0 || len(sum.Errors) != 0 {
		t.Errorf("revoke-check: %+v, want 40 tries over 2 instances, all revoked", sum)
	}

	base4 := serve(t, "baseline-server", "--database-url", db, "--max-conns", "4")
	base16 := serve(t, "baseline-server", "--database-url", db, "--max-conns", "16")
	stdout.Reset()
	code = dispatch(ctx, []string{"compare", "--nats-url", ns.URL, "--keysd-url", a + "," + b, "--secret-file", secret,
		"--other-url", base4 + "," + base16, "--scenario", "patch", "--clients", "4", "--duration", "300ms", "--warmup", "50ms",
		"--runs", "1", "--keys", "10", "--json"}, &stdout, &stderr)
	var report struct {
		Runs        []result
		Comparisons []comparison
	}
	if err := json.Unmarshal(stdout.Bytes(), &report); err != nil || code != 0 {
		t.Fatalf("compare: exit %d, %v, stderr %q", code, err, stderr.String())
	}
	if len(report.Runs) != 3 || len(report.Comparisons) != 1 || len(report.Comparisons[0].Others) != 2 {
		t.Fatalf("compare: %d runs, comparisons %+v: want keysd and two baselines, once each", len(report.Runs), report.Comparisons)
	}
	c := report.Comparisons[0]
	names := c.Others[0].Target + " / " + c.Others[1].Target
	if names != "baseline pool 4 sync on / baseline pool 16 sync on" || c.Keysd.Target != "keysd x2" ||
		(c.Other.Target != c.Others[0].Target && c.Other.Target != c.Others[1].Target) || c.Other.RPS < max(c.Others[0].RPS, c.Others[1].RPS) {
		t.Errorf("compare: keysd %q against %q, best %q (%.0f req/s): want keysd x2 against the two pools and the faster as the best",
			c.Keysd.Target, names, c.Other.Target, c.Other.RPS)
	}
	for _, out := range []*testenv.Buffer{outA, outB} {
		if strings.Contains(out.String(), "level=ERROR") {
			t.Errorf("keysd logged errors:\n%s", out.String())
		}
	}
}

// TestCommandLine: one dispatcher, cobra's, with keysbench's exit statuses.
func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		code    int
		mention string
	}{
		{nil, 2, "Available Commands"},
		{[]string{"nope"}, 2, `unknown command "nope"`},
		{[]string{"seed", "--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"seed", "--events", "1"}, 2, "events >= projects+keys"},
		{[]string{"run", "--scenario", "nope"}, 2, `--scenario "nope"`},
		{[]string{"seed", "--nats-url", "nats://ops:hunter2@127.0.0.1:1", "--events", "20", "--secret-file", filepath.Join(t.TempDir(), "secret")}, 1, "nats://ops:xxxxx@127.0.0.1:1"},
	} {
		var stdout, stderr bytes.Buffer
		code := dispatch(t.Context(), tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.mention) || strings.Contains(stderr.String(), "hunter2") {
			t.Errorf("keysbench %v: exit %d, stderr %q; want exit %d mentioning %q", tc.args, code, stderr.String(), tc.code, tc.mention)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := dispatch(t.Context(), []string{"-h"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "baseline-server") {
		t.Errorf("keysbench -h: exit %d, stdout %q", code, stdout.String())
	}
}

// read-stream reads every key event that seed appended, and reports them.
func TestReadStreamReadsWhatSeedAppended(t *testing.T) {
	t.Parallel()
	ns := testenv.NATS(t)
	var stdout, stderr bytes.Buffer
	if code := dispatch(t.Context(), []string{"seed", "--nats-url", ns.URL, "--events", "300", "--keys", "100", "--projects", "2", "--secret-file", filepath.Join(t.TempDir(), "secret")}, &stdout, &stderr); code != 0 {
		t.Fatalf("seed: exit %d, stderr %q", code, stderr.String())
	}
	stdout.Reset()
	if code := dispatch(t.Context(), []string{"read-stream", "--nats-url", ns.URL}, &stdout, &stderr); code != 0 {
		t.Fatalf("read-stream: exit %d, stderr %q", code, stderr.String())
	}
	var sum readStreamSummary
	if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil || sum.Messages != 298 || sum.Bytes == 0 {
		t.Fatalf("read-stream printed %q (%v), want 298 key events (300 less 2 projects)", stdout.String(), err)
	}
	stdout.Reset()
	if code := dispatch(t.Context(), []string{"read-stream", "--nats-url", ns.URL, "--all", "--pull", "7"}, &stdout, &stderr); code != 0 {
		t.Fatalf("read-stream --all: exit %d, stderr %q", code, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil || sum.Messages != 301 {
		t.Fatalf("read-stream --all printed %q (%v), want 301 messages (300 events and the authentication marker)", stdout.String(), err)
	}
}
