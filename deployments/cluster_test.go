package deployments_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/testenv"
)

// TestMakeCluster runs `make cluster`'s script as a person would: it starts three
// nats-server processes, two keysd and a database of its own, a project is created with
// keysctl, a key is created through one keysd and read through the other, and `down` stops
// every process it started.
func TestMakeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and starts five processes")
	}
	root := moduleRoot(t)
	dir := t.TempDir()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	env := []string{
		"CLUSTER_DIR=" + dir,
		"CLUSTER_DATABASE=keyledger_cluster_test_" + hex.EncodeToString(b),
		"CLUSTER_WAIT=120",
	}
	script := filepath.Join(root, "scripts", "cluster.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		runCmd(t, ctx, root, env, script, "clean")
	})
	out := runCmd(t, ctx, root, env, script, "up")
	t.Logf("cluster.sh up:\n%s", out)

	settings := readEnvFile(t, filepath.Join(dir, "env"))
	if n := len(strings.Split(settings["KEYS_NATS_URL"], ",")); n != 3 {
		t.Fatalf("KEYS_NATS_URL %q: want three servers", settings["KEYS_NATS_URL"])
	}
	var keysctlEnv []string
	for k, v := range settings {
		keysctlEnv = append(keysctlEnv, k+"="+v)
	}
	var project struct {
		ProjectID       string `json:"project_id"`
		SecretServerKey string `json:"secret_server_key"`
	}
	created := runCmd(t, ctx, root, keysctlEnv, filepath.Join(dir, "bin", "keysctl"), "projects", "create", "--name", "cluster test")
	if err := json.Unmarshal([]byte(created), &project); err != nil || project.ProjectID == "" {
		t.Fatalf("keysctl projects create: %q: %v", created, err)
	}
	request := func(method, url string, body string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("x-stack-project-id", project.ProjectID)
		req.Header.Set("x-stack-secret-server-key", project.SecretServerKey)
		req.Header.Set("x-stack-access-type", "server")
		req.Header.Set("content-type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("%s %s: %d %q", method, url, resp.StatusCode, raw)
		}
		return resp.StatusCode, m
	}
	one, two := settings["CLUSTER_KEYSD_1_URL"], settings["CLUSTER_KEYSD_2_URL"]
	status, key := request("POST", one+"/api/v1/user-api-keys", `{"user_id":"user-1","description":"through keysd-1","expires_at_millis":null}`)
	if status != http.StatusOK {
		t.Fatalf("create a key through keysd-1: %d %v", status, key)
	}
	status, read := request("GET", fmt.Sprintf("%s/api/v1/user-api-keys/%s", two, key["id"]), "")
	if status != http.StatusOK || read["description"] != "through keysd-1" {
		t.Fatalf("read it through keysd-2: %d %v", status, read)
	}
	for _, u := range []string{one, two} {
		resp, err := http.Get(u + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s/readyz: %d", u, resp.StatusCode)
		}
	}

	// down stops every process it started.
	var pids []string
	for _, name := range []string{"nats-1", "nats-2", "nats-3", "keysd-1", "keysd-2"} {
		b, err := os.ReadFile(filepath.Join(dir, name+".pid"))
		if err != nil {
			t.Fatalf("%s has no pid file: %v", name, err)
		}
		pids = append(pids, strings.TrimSpace(string(b)))
	}
	runCmd(t, ctx, root, env, script, "down")
	for _, pid := range pids {
		if cmdline, err := os.ReadFile("/proc/" + pid + "/cmdline"); err == nil && bytes.Contains(cmdline, []byte(dir)) {
			t.Errorf("pid %s (%s) still runs after down", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
	}
}

// readEnvFile reads the `export NAME=value` lines cluster.sh writes.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if name, value, ok := strings.Cut(strings.TrimPrefix(s.Text(), "export "), "="); ok && !strings.HasPrefix(name, "#") {
			m[name] = value
		}
	}
	return m
}

// moduleRoot is the repository's root, absolute.
func moduleRoot(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(testenv.ModuleRoot())
	if err != nil {
		t.Fatal(err)
	}
	return p
}
