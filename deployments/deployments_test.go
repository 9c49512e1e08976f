// Package deployments_test checks the files in deployments/ (compose.yaml, nats.conf, the
// Kubernetes manifests, the NATS Helm values, the Dockerfile) with their own Go libraries, and
// that they agree with keysd: its flags and variables, its probe paths, its port. It also runs
// `make cluster`'s script end to end.
package deployments_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/secretfile"
	"github.com/keyledger/keyledger/internal/testenv"
)

// keysdFlags are the flags and environment variables keysd lists in its -h output, which
// CONTRACT section 1 makes the list of everything keysd reads.
type keysdFlags struct {
	flags map[string]bool // without dashes: "http-addr"
	env   map[string]bool // "KEYS_HTTP_ADDR"
}

var (
	helpOnce sync.Once
	help     keysdFlags
	helpErr  error
)

var (
	flagLine = regexp.MustCompile(`(?m)^\s+(?:-[A-Za-z], )?--?([a-z][a-z0-9-]+)`)
	envName  = regexp.MustCompile(`\bKEYS_[A-Z0-9_]+\b`)
)

// keysdHelp builds keysd and reads its -h output once per test process.
func keysdHelp(t *testing.T) keysdFlags {
	t.Helper()
	bin := testenv.Binary(t, "./cmd/keysd")
	helpOnce.Do(func() {
		out, err := exec.Command(bin, "-h").CombinedOutput()
		if err != nil {
			helpErr = errors.Join(err, errors.New(string(out)))
			return
		}
		help = keysdFlags{flags: map[string]bool{}, env: map[string]bool{}}
		for _, m := range flagLine.FindAllStringSubmatch(string(out), -1) {
			help.flags[m[1]] = true
		}
		for _, e := range envName.FindAllString(string(out), -1) {
			help.env[e] = true
		}
	})
	if helpErr != nil {
		t.Fatalf("keysd -h: %v", helpErr)
	}
	if !help.flags["http-addr"] || !help.env["KEYS_HTTP_ADDR"] {
		t.Fatalf("keysd -h lists no --http-addr / KEYS_HTTP_ADDR: the parser here no longer reads its format (flags %v)", help.flags)
	}
	return help
}

// checkArgs checks that every --flag in args is one keysd has, and returns their values
// ("--a b" and "--a=b" alike; a flag with no value maps to "").
func (k keysdFlags) checkArgs(t *testing.T, where string, args []string) map[string]string {
	t.Helper()
	values := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			t.Errorf("%s: argument %q is not a flag (keysd takes no arguments)", where, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !k.flags[name] {
			t.Errorf("%s: keysd has no flag --%s (keysd -h)", where, name)
		}
		if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			value = args[i+1]
			i++
		}
		values[name] = value
	}
	return values
}

// checkEnv checks that every KEYS_* variable is one keysd reads.
func (k keysdFlags) checkEnv(t *testing.T, where string, names []string) {
	t.Helper()
	for _, n := range names {
		if strings.HasPrefix(n, "KEYS_") && !k.env[n] {
			t.Errorf("%s: keysd reads no variable %s (keysd -h)", where, n)
		}
	}
}

// dockerfile is what the tests need of deployments/Dockerfile.
type dockerfile struct {
	entrypoint []string
	httpPort   int
	goImage    string // "golang:1.26"
	buildPkgs  []string
	exposed    []string
}

func readDockerfile(t *testing.T) dockerfile {
	t.Helper()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var d dockerfile
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "ENTRYPOINT "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "ENTRYPOINT ")), &d.entrypoint); err != nil {
				t.Fatalf("Dockerfile ENTRYPOINT is not an exec-form JSON array: %v", err)
			}
		case strings.HasPrefix(line, "FROM golang:"):
			d.goImage = strings.Fields(line)[1]
		case strings.HasPrefix(line, "EXPOSE "):
			d.exposed = strings.Fields(line)[1:]
		}
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "./cmd/") {
				d.buildPkgs = append(d.buildPkgs, f)
			}
		}
	}
	if len(d.entrypoint) < 2 || d.entrypoint[0] != "/usr/local/bin/keysd" {
		t.Fatalf("Dockerfile ENTRYPOINT %q: want keysd and its flags", d.entrypoint)
	}
	return d
}

func TestDockerfileAgreesWithTheCode(t *testing.T) {
	k := keysdHelp(t)
	d := readDockerfile(t)
	flags := k.checkArgs(t, "Dockerfile ENTRYPOINT", d.entrypoint[1:])
	d.httpPort = portOf(t, "Dockerfile --http-addr", flags["http-addr"])
	if !slices.Contains(d.exposed, strconv.Itoa(d.httpPort)) {
		t.Errorf("Dockerfile EXPOSE %v lacks the HTTP port %d", d.exposed, d.httpPort)
	}
	if !slices.Equal(d.buildPkgs, []string{"./cmd/keysd", "./cmd/keysctl"}) {
		t.Errorf("Dockerfile builds %v, want ./cmd/keysd ./cmd/keysctl", d.buildPkgs)
	}
	for _, p := range d.buildPkgs {
		if _, err := os.Stat(filepath.Join(testenv.ModuleRoot(), p, "main.go")); err != nil {
			t.Errorf("Dockerfile builds %s: %v", p, err)
		}
	}
	// The build image's Go must be the go.mod's (1.26.x builds a go 1.26.N module only if it
	// is at least that patch: golang:1.26 is the newest 1.26).
	mod, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	if goLine == nil || d.goImage != "golang:"+string(goLine[1]) {
		t.Errorf("Dockerfile builds with %s; go.mod says go %s", d.goImage, goLine[1])
	}
	for _, f := range []string{"Dockerfile.dockerignore", ".gitignore"} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
}

// portOf is the port of a host:port listen address.
func portOf(t *testing.T, where, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", where, addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s %q: %v", where, addr, err)
	}
	return n
}

// natsURLs splits a --nats-url value into host:port pairs, checking each is a nats:// URL.
func natsURLs(t *testing.T, where, value string) []string {
	t.Helper()
	var hosts []string
	for _, s := range strings.Split(value, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil || u.Scheme != "nats" || u.Port() == "" {
			t.Errorf("%s: %q is not nats://host:port (%v)", where, s, err)
			continue
		}
		hosts = append(hosts, u.Host)
	}
	return hosts
}

// TestPlaceholderSecretIsRefused: the Secret manifest's placeholder must never work as a
// secret (every copy of the manifest would share it): keysd refuses it at start.
func TestPlaceholderSecretIsRefused(t *testing.T) {
	secret := readK8s(t).secret
	path := filepath.Join(t.TempDir(), "secret")
	value, ok := secret.StringData["secret"]
	if !ok {
		t.Fatal(`Secret keyledger has no stringData "secret"`)
	}
	if err := os.WriteFile(path, []byte(value), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := secretfile.Load(path); err == nil {
		t.Errorf("the placeholder secret %q is accepted by keysd: make it shorter than %d bytes", value, secretfile.Size)
	}
}

// runCmd runs a command in dir, failing the test with its output when it fails.
func runCmd(t *testing.T, ctx context.Context, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// checkKeysdAccepts runs keysd with a deployment's arguments (after the image's entrypoint
// flags) and environment and fails if keysd rejects them as a configuration error (exit 2).
// Listen addresses and the data directory are moved to loopback and a temporary directory
// (flags given last win), and the NATS servers named do not resolve here, so keysd gets no
// further than connecting; it is stopped after a few seconds if it is still trying.
func checkKeysdAccepts(t *testing.T, where string, args []string, env map[string]string) {
	t.Helper()
	bin := testenv.Binary(t, "./cmd/keysd")
	args = append(slices.Clone(args),
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		"--embedded-nats-addr", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		"--data-dir", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	err := cmd.Run()
	if exit, ok := errors.AsType[*exec.ExitError](err); ok && exit.ExitCode() == 2 {
		t.Errorf("%s: keysd refuses this configuration (exit 2): %s", where, strings.TrimSpace(stderr.String()))
	}
}
