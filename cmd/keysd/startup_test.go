package main_test

import (
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/testenv"
)

// TestStartupWaitsForNATSAndPostgres: keysd started before NATS and PostgreSQL answer waits
// for them with a log line per wait, and serves once they are there, instead of exiting.
func TestStartupWaitsForNATSAndPostgres(t *testing.T) {
	testenv.Heavy(t, "keysd processes waiting on late servers")
	t.Parallel()
	ns := testenv.ExternalNATS(t)
	ns.Stop()
	db := testenv.Postgres(t)
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startProxy(t, u.Host)
	proxy.cut()
	u.Host = proxy.addr
	testenv.Binary(t, "./cmd/keysd") // built before the clock starts
	go func() {
		time.Sleep(2 * time.Second)
		ns.Start(t)
		// PostgreSQL comes back well after keysd's next NATS attempt (its backoff is at most
		// a few seconds this early), so that keysd is seen waiting for it too: with 2 s, a
		// retry that came late found both up and logged no wait for PostgreSQL.
		time.Sleep(6 * time.Second)
		proxy.restore()
	}()
	k := startKeysd(t, keysdOptions{natsURL: ns.URL, databaseURL: u.String()}) // returns once ready
	logs := k.stderr.String()
	for _, want := range []string{`msg="waiting for NATS"`, `msg="waiting for PostgreSQL"`, `msg="NATS answered"`, `msg="PostgreSQL answered"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("keysd's log lacks %s:\n%s", want, logs)
		}
	}
	p := k.createProject("late")
	if r := k.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "u", "description": "d"}); r.Status != 200 {
		t.Fatalf("create after a late start: %d %s", r.Status, r.Raw)
	}
}

// TestStartupTimeout: with nothing to connect to, keysd gives up after --startup-timeout and
// exits 1 with one line saying what it waited for.
func TestStartupTimeout(t *testing.T) {
	testenv.Heavy(t, "keysd processes waiting on absent servers")
	t.Parallel()
	bin := testenv.Binary(t, "./cmd/keysd")
	dead := fmt.Sprintf("nats://127.0.0.1:%d", testenv.FreePort(t))
	cmd := exec.Command(bin, "--nats-url", dead, "--startup-timeout", "2s",
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), "--data-dir", t.TempDir())
	var stderr testenv.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("keysd with no NATS: %v, want exit 1\n%s", err, &stderr)
	}
	last := strings.TrimSpace(stderr.String())
	last = last[strings.LastIndex(last, "\n")+1:]
	if !strings.HasPrefix(last, "keysd: ") || !strings.Contains(last, "gave up waiting (--startup-timeout)") {
		t.Errorf("last line %q does not say keysd gave up waiting\n%s", last, &stderr)
	}
	if !strings.Contains(stderr.String(), `msg="waiting for NATS"`) {
		t.Errorf("no log line for the wait:\n%s", &stderr)
	}
}
