package deployments_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/testenv"
)

// TestOperationsDocListsEveryMetric starts keysd with every optional part that registers
// metrics (PostgreSQL read model, --sync-always for the group commit) and checks that
// docs/operations.md names every keyledger_* metric it serves.
func TestOperationsDocListsEveryMetric(t *testing.T) {
	bin := testenv.Binary(t, "./cmd/keysd")
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cmd := exec.Command(bin,
		"--http-addr", addr,
		"--embedded-nats-addr", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		"--data-dir", filepath.Join(dir, "data"),
		"--database-url", testenv.Postgres(t),
		"--sync-always")
	logs := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = io.Discard, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var body []byte
	for {
		if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("keysd not ready after 90s; its log:\n%s", logs)
		case <-time.After(100 * time.Millisecond):
		}
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}

	doc, err := os.ReadFile(filepath.Join(moduleRoot(t), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	families := regexp.MustCompile(`(?m)^# TYPE (keyledger_[a-z0-9_]+) `).FindAllSubmatch(body, -1)
	if len(families) == 0 {
		t.Fatalf("keysd serves no keyledger_* metric:\n%s", body)
	}
	for _, f := range families {
		if !strings.Contains(string(doc), "`"+string(f[1])) {
			t.Errorf("docs/operations.md does not list metric %s (section Metrics)", f[1])
		}
	}
}
