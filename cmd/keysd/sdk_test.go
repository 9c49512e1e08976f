package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/testenv"
)

// sdkVersions are the @stackframe/js versions internal/sdktest/package.json pins: the last
// that sends x-stack-* headers and the first that sends x-hexclave-* ones.
var sdkVersions = []string{"2.8.102", "2.8.108"}

// sdkSteps is how many steps internal/sdktest/run.cjs runs for each version.
const sdkSteps = 24

// TestStackAuthSDK drives a real keysd with Stack Auth's own SDK, both versions, through its
// server interface and its StackServerApp (internal/sdktest/run.cjs), and fails on any step
// that does not do what the SDK expects. It needs node and npm; without them it fails.
func TestStackAuthSDK(t *testing.T) {
	testenv.Heavy(t, "the Stack Auth SDK's suite against a keysd process")
	t.Parallel()
	dir := filepath.Join(testenv.ModuleRoot(), "internal", "sdktest")
	node := lookTool(t, "node")
	installSDK(t, dir)

	k := startKeysd(t, keysdOptions{})
	p := k.createProject("sdk")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{"run.cjs"}, sdkVersions...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "KEYS_BASE_URL="+k.base, "KEYS_PROJECT_ID="+p.ID, "KEYS_SERVER_KEY="+p.ServerKey)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()

	passed := map[string]int{}
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var step struct {
			Version, Interface, Step, Error string
			OK                              bool
		}
		if err := json.Unmarshal(sc.Bytes(), &step); err != nil {
			t.Errorf("run.cjs printed %q", sc.Text())
			continue
		}
		if !step.OK {
			t.Errorf("@stackframe/js %s (%s), %s: %s", step.Version, step.Interface, step.Step, step.Error)
			continue
		}
		passed[step.Version]++
	}
	for _, v := range sdkVersions {
		if passed[v] != sdkSteps {
			t.Errorf("@stackframe/js %s: %d of %d steps passed", v, passed[v], sdkSteps)
		}
	}
	if runErr != nil {
		t.Errorf("node run.cjs: %v\nstderr:\n%s", runErr, stderr.String())
	}
}

// lookTool finds a program the test cannot do without; a missing one fails the test.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required by this test (Stack Auth's SDK runs on Node.js): %v", name, err)
	}
	return p
}

// installSDK runs `npm ci` in dir unless node_modules was installed from the current
// package-lock.json.
func installSDK(t *testing.T, dir string) {
	t.Helper()
	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	if installed, err := os.ReadFile(filepath.Join(dir, "node_modules", ".keyledger-lock")); err == nil && bytes.Equal(installed, lock) {
		return
	}
	npm := lookTool(t, "npm")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, strings.TrimSpace(string(out)))
	}
	if err := os.WriteFile(filepath.Join(dir, "node_modules", ".keyledger-lock"), lock, 0o644); err != nil {
		t.Fatal(err)
	}
}
