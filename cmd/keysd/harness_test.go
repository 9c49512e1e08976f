package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/api"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/openapicheck"
	"github.com/keyledger/keyledger/internal/secretfile"
	"github.com/keyledger/keyledger/internal/testenv"
)

// keysd is a keysd process started from the built binary, driven over HTTP as a client
// would.
type keysd struct {
	t    *testing.T
	args []string
	cmd  *exec.Cmd
	base string
	// natsURL reaches keysd's NATS: for the embedded server, with keysd's own credentials
	// (embeddedAddr is its address alone).
	natsURL      string
	embeddedAddr string
	hasher       *domain.Hasher
	dataDir      string
	secret       string
	stdout       *testenv.Buffer
	stderr       *testenv.Buffer
	exited       chan error
}

type keysdOptions struct {
	natsURL     string // empty: embedded
	databaseURL string
	dataDir     string
	secretFile  string
	extraArgs   []string // more flags, such as --rate-limit
}

func startKeysd(t *testing.T, o keysdOptions) *keysd {
	t.Helper()
	bin := testenv.Binary(t, "./cmd/keysd")
	if o.dataDir == "" {
		o.dataDir = t.TempDir()
	}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	args := []string{"--http-addr", httpAddr, "--data-dir", o.dataDir}
	k := &keysd{t: t, base: "http://" + httpAddr, dataDir: o.dataDir}
	k.secret = filepath.Join(o.dataDir, "secret")
	if o.secretFile != "" {
		k.secret = o.secretFile
	}
	// The secret keysd would create on first start, made first so that the test can derive
	// the embedded server's credentials from it, as keysctl does.
	secret, _, err := secretfile.LoadOrCreate(k.secret)
	if err != nil {
		t.Fatal(err)
	}
	if k.hasher, err = domain.NewHasher(secret); err != nil {
		t.Fatal(err)
	}
	if o.natsURL == "" {
		natsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		args = append(args, "--embedded-nats-addr", natsAddr)
		k.embeddedAddr = natsAddr
		k.natsURL = "nats://" + eventstore.EmbeddedUser + ":" + k.hasher.NATSPassword(eventstore.EmbeddedUser) + "@" + natsAddr
	} else {
		args = append(args, "--nats-url", o.natsURL)
		k.natsURL = o.natsURL
	}
	if o.databaseURL != "" {
		args = append(args, "--database-url", o.databaseURL)
	}
	if o.secretFile != "" {
		args = append(args, "--secret-file", o.secretFile)
	}
	args = append(args, o.extraArgs...)
	k.args = append([]string{bin}, args...)
	k.start()
	t.Cleanup(func() { k.kill() })
	return k
}

func (k *keysd) start() {
	k.t.Helper()
	k.stdout, k.stderr = &testenv.Buffer{}, &testenv.Buffer{}
	k.cmd = exec.Command(k.args[0], k.args[1:]...)
	k.cmd.Stdout, k.cmd.Stderr = k.stdout, k.stderr
	if err := k.cmd.Start(); err != nil {
		k.t.Fatalf("start keysd: %v", err)
	}
	k.exited = make(chan error, 1)
	go func(cmd *exec.Cmd, ch chan error) { ch <- cmd.Wait() }(k.cmd, k.exited)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(k.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case err := <-k.exited:
			k.t.Fatalf("keysd exited at start: %v\nstdout:\n%s\nstderr:\n%s", err, k.stdout, k.stderr)
		default:
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("keysd not ready after 60s\nstderr:\n%s", k.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and returns the exit error (nil: exit 0).
func (k *keysd) stop() error {
	if k.cmd == nil {
		return nil
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-k.exited:
		k.cmd = nil
		return err
	case <-time.After(30 * time.Second):
		k.kill()
		return fmt.Errorf("keysd did not exit within 30s of SIGTERM")
	}
}

func (k *keysd) kill() {
	if k.cmd == nil {
		return
	}
	_ = k.cmd.Process.Kill()
	<-k.exited
	k.cmd = nil
}

// keysctl runs the CLI against this keysd's NATS and secret.
func (k *keysd) keysctl(args ...string) (string, string, int) {
	k.t.Helper()
	bin := testenv.Binary(k.t, "./cmd/keysctl")
	full := append([]string{args[0]}, args[1:]...)
	cmd := exec.Command(bin, full...)
	cmd.Env = append(os.Environ(), "KEYS_NATS_URL="+k.natsURL, "KEYS_SECRET_FILE="+k.secret)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		k.t.Fatalf("run keysctl: %v", err)
	}
	return out.String(), errb.String(), code
}

// project is a project's credentials, from keysctl projects create.
type project struct {
	ID        string `json:"project_id"`
	ServerKey string `json:"secret_server_key"`
}

func (k *keysd) createProject(name string) project {
	k.t.Helper()
	out, errOut, code := k.keysctl("projects", "create", "--name", name)
	if code != 0 {
		k.t.Fatalf("keysctl projects create: exit %d: %s", code, errOut)
	}
	var p project
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &p) != nil || p.ID == "" || p.ServerKey == "" {
		k.t.Fatalf("keysctl projects create printed %q", out)
	}
	return p
}

// response is an HTTP answer with its JSON body decoded.
type response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

func (r response) str(field string) string {
	s, _ := r.Body[field].(string)
	return s
}

func (k *keysd) do(method, path string, p project, body any, headers ...string) response {
	k.t.Helper()
	var rdr io.Reader
	var reqBody []byte
	switch b := body.(type) {
	case nil:
	case string:
		reqBody = []byte(b)
	case []byte:
		reqBody = b
	default:
		reqBody, _ = json.Marshal(b)
	}
	if body != nil {
		rdr = bytes.NewReader(reqBody)
	}
	req, err := http.NewRequest(method, k.base+path, rdr)
	if err != nil {
		k.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if p.ID != "" {
		req.Header.Set("x-stack-project-id", p.ID)
		req.Header.Set("x-stack-secret-server-key", p.ServerKey)
		req.Header.Set("x-stack-access-type", "server")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "<delete>" {
			req.Header.Del(headers[i])
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		k.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &r.Body)
	if err := openAPIDoc(k.t).Check(openapicheck.Exchange{Request: req, RequestBody: reqBody, Status: r.Status,
		Header: r.Header, ResponseBody: raw, ErrorCode: r.str("code")}); err != nil {
		k.t.Error(err)
	}
	return r
}

var openAPI struct {
	once sync.Once
	doc  *openapicheck.Document
	err  error
}

// openAPIDoc is keysd's OpenAPI document (api/openapi.yaml), which every exchange of do is
// checked against.
func openAPIDoc(t *testing.T) *openapicheck.Document {
	t.Helper()
	openAPI.once.Do(func() { openAPI.doc, openAPI.err = openapicheck.Load(api.OpenAPIDocument) })
	if openAPI.err != nil {
		t.Fatalf("api/openapi.yaml: %v", openAPI.err)
	}
	return openAPI.doc
}

// streamEvents reads every event on the stream through a plain NATS client, the way an
// audit consumer or replay tool would.
func streamEvents(t *testing.T, natsURL string) []eventstore.RecordedEvent {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatalf("connect %s: %v", natsURL, err)
	}
	defer nc.Close()
	s, err := eventstore.Open(context.Background(), nc, eventstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var out []eventstore.RecordedEvent
	if _, err := s.ReadRange(context.Background(), 1, 0, func(r eventstore.RecordedEvent) error {
		out = append(out, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func lastSeq(t *testing.T, natsURL string) uint64 {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	s, err := eventstore.Open(context.Background(), nc, eventstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	seq, err := s.LastSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func firstLines(s string, n int) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	var lines []string
	for sc.Scan() && len(lines) < n {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines, "\n")
}
