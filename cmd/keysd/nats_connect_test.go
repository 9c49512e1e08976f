package main_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/keyledger/keyledger/internal/testenv"
)

// TestSecureNATS: keysd and keysctl reach a NATS server that demands mutual TLS and a user's
// credentials file (operator mode), with --nats-creds and --nats-tls-*, given to keysctl after
// its command.
func TestSecureNATS(t *testing.T) {
	testenv.Heavy(t, "a secured nats-server process and keysd processes")
	t.Parallel()
	ns := testenv.NewSecureNATS(t, testenv.SecureNATSOptions{MutualTLS: true, Creds: true})
	secureFlags := []string{"--nats-creds", ns.CredsFile, "--nats-tls-ca", ns.CAFile, "--nats-tls-cert", ns.CertFile, "--nats-tls-key", ns.KeyFile}
	k := startKeysd(t, keysdOptions{natsURL: ns.URL, extraArgs: secureFlags})
	if !strings.Contains(k.stdout.String(), "--nats-creds "+ns.CredsFile) {
		t.Errorf("the banner's keysctl command leaves out the credentials:\n%s", k.stdout)
	}

	out, errOut, code := k.keysctl(append([]string{"projects", "create", "--name", "secure"}, secureFlags...)...)
	if code != 0 {
		t.Fatalf("keysctl projects create through TLS and credentials: exit %d: %s", code, errOut)
	}
	var p project
	if _, err := fmt.Sscanf(out, `{"project_id":%q,"secret_server_key":%q}`, &p.ID, &p.ServerKey); err != nil {
		t.Fatalf("keysctl printed %q: %v", out, err)
	}
	created := k.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "u", "description": "over TLS"})
	if created.Status != 200 {
		t.Fatalf("create: %d %s", created.Status, created.Raw)
	}
	if got := k.do("GET", "/api/v1/user-api-keys/"+created.str("id"), p, nil); got.Status != 200 {
		t.Fatalf("get: %d %s", got.Status, got.Raw)
	}

	// Without the client certificate keysctl is refused: one line, exit 1.
	_, errOut, code = k.keysctl("events", "tail", "--nats-creds", ns.CredsFile, "--nats-tls-ca", ns.CAFile)
	if code != 1 || strings.Count(errOut, "\n") != 1 {
		t.Errorf("without a client certificate: exit %d, stderr %q", code, errOut)
	}
}

// TestCredentialsInTheURLAreNeverPrinted: keysd connects with the user and password of its
// --nats-url and shows them nowhere: not in its banner, its logs or keysctl's errors.
func TestCredentialsInTheURLAreNeverPrinted(t *testing.T) {
	testenv.Heavy(t, "keysd and keysctl processes")
	t.Parallel()
	port := testenv.FreePort(t)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: t.TempDir(),
		Username: "ops", Password: "hunter2", NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS not ready")
	}
	url := fmt.Sprintf("nats://ops:hunter2@127.0.0.1:%d", port)
	k := startKeysd(t, keysdOptions{natsURL: url, extraArgs: []string{"--log-level", "debug"}})
	p := k.createProject("redacted")
	if r := k.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "u", "description": "d"}); r.Status != 200 {
		t.Fatalf("create: %d %s", r.Status, r.Raw)
	}
	if !strings.Contains(k.stdout.String(), fmt.Sprintf("nats://ops:xxxxx@127.0.0.1:%d", port)) {
		t.Errorf("the banner does not show the redacted URL:\n%s", k.stdout)
	}
	// keysctl with a wrong password: refused, and neither password is shown.
	_, errOut, code := k.keysctl("events", "tail", "--nats-url", strings.Replace(url, "hunter2", "hunter3", 1))
	if code != 1 || !strings.Contains(errOut, "ops:xxxxx@") {
		t.Errorf("wrong password: exit %d, stderr %q", code, errOut)
	}
	k.stop()
	for name, text := range map[string]string{"stdout": k.stdout.String(), "stderr": k.stderr.String(), "keysctl's stderr": errOut} {
		if strings.Contains(text, "hunter2") || strings.Contains(text, "hunter3") {
			t.Errorf("keysd's %s shows the password:\n%s", name, text)
		}
	}
}

// TestTokenInTheURLIsNeverLogged: a token in --nats-url (nats://TOKEN@host) is kept out of
// the banner and of the log lines of a reconnection, which nats.go's own redaction would show.
func TestTokenInTheURLIsNeverLogged(t *testing.T) {
	testenv.Heavy(t, "a nats-server process and a keysd process")
	t.Parallel()
	port := testenv.FreePort(t)
	store := t.TempDir()
	start := func() *server.Server {
		ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: store,
			Authorization: "s3cr3tt0ken", NoLog: true, NoSigs: true})
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("NATS not ready")
		}
		return ns
	}
	ns := start()
	t.Cleanup(func() { ns.Shutdown() })
	k := startKeysd(t, keysdOptions{natsURL: fmt.Sprintf("nats://s3cr3tt0ken@127.0.0.1:%d", port)})
	ns.Shutdown()
	ns.WaitForShutdown()
	ns = start()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(k.stderr.String(), "NATS reconnected") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(k.stderr.String(), "NATS reconnected") {
		t.Fatalf("keysd did not log a reconnection within 30s:\n%s", k.stderr)
	}
	k.stop()
	for name, text := range map[string]string{"stdout": k.stdout.String(), "stderr": k.stderr.String()} {
		if strings.Contains(text, "s3cr3tt0ken") {
			t.Errorf("keysd's %s shows the token:\n%s", name, text)
		}
	}
}
