package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
	"github.com/keyledger/keyledger/projections"
)

// tailEnv is a stream with key events appended through the command handler, as keysd does.
type tailEnv struct {
	ns     *testenv.NATSServer
	store  *eventstore.Store
	cmds   *commands.Handler
	hasher *domain.Hasher
	// env names the deployment's secret file, as keysctl reads it (KEYS_SECRET_FILE).
	env map[string]string
}

// getenv is env as run's lookup.
func (e *tailEnv) getenv(k string) string { return e.env[k] }

func newTailEnv(t *testing.T) *tailEnv {
	t.Helper()
	ns := testenv.NATS(t)
	secretPath, hasher := deployment(t)
	store, err := eventstore.Open(t.Context(), ns.Connect(t), eventstore.Config{EventKey: hasher.EventKey()})
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := commands.New(store, nil, hasher, commands.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return &tailEnv{ns: ns, store: store, cmds: cmds, hasher: hasher, env: map[string]string{envSecretFile: secretPath}}
}

func (e *tailEnv) project(t *testing.T) string {
	t.Helper()
	p, err := e.cmds.CreateProject(t.Context(), domain.Actor{Type: domain.ActorOperator, ID: "test"}, "p")
	if err != nil {
		t.Fatal(err)
	}
	return p.Project.ID
}

func (e *tailEnv) caller(projectID string) commands.Caller {
	return commands.Caller{ProjectID: projectID, Actor: domain.Actor{Type: domain.ActorAdmin, ID: "alice@example.com"}, RequestID: "req-" + uuid.NewString()[:8]}
}

func (e *tailEnv) createKey(t *testing.T, projectID, description string) string {
	t.Helper()
	k, err := e.cmds.CreateKey(t.Context(), e.caller(projectID), commands.NewKey{UserID: "user-1", Description: description})
	if err != nil {
		t.Fatal(err)
	}
	return k.Key.ID
}

func (e *tailEnv) update(t *testing.T, projectID, keyID string, u domain.UpdateKey) uint64 {
	t.Helper()
	r, err := e.cmds.UpdateKey(t.Context(), e.caller(projectID), keyID, u)
	if err != nil {
		t.Fatal(err)
	}
	return r.Seq
}

// garbage publishes a message that is not an event onto an event subject with plain NATS.
func (e *tailEnv) garbage(t *testing.T, projectID string) string {
	t.Helper()
	subject := "keyledger.key." + projectID + "." + uuid.NewString() + ".KeyRevoked"
	nc := e.ns.Connect(t)
	if err := nc.Publish(subject, []byte("garbage {")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return subject
}

// stored is every message on the key subjects, in stream order.
func (e *tailEnv) stored(t *testing.T) []eventstore.RecordedEvent {
	t.Helper()
	var out []eventstore.RecordedEvent
	if _, err := e.store.ReadRange(t.Context(), 1, 0, func(r eventstore.RecordedEvent) error {
		if strings.HasPrefix(r.Subject, "keyledger.key.") {
			out = append(out, r)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// wantLines checks that stdout is exactly the stored documents of the valid events in
// records that keep says to keep, in stream order, each with the documented fields.
func wantLines(t *testing.T, stdout string, records []eventstore.RecordedEvent, keep func(eventstore.RecordedEvent) bool) {
	t.Helper()
	var want []string
	for _, r := range records {
		if r.Err == nil && keep(r) {
			want = append(want, string(r.Raw))
		}
	}
	got := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if stdout == "" {
		got = nil
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stdout has %d lines, want the %d stored events in order:\n got %s\nwant %s", len(got), len(want), strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, line := range got {
		var fields map[string]any
		if err := json.Unmarshal([]byte(line), &fields); err != nil {
			t.Fatalf("line %q is not JSON: %v", line, err)
		}
		for _, f := range []string{"id", "type", "schema_version", "project_id", "key_id", "user_id", "version", "time", "actor", "request_id", "data"} {
			if _, ok := fields[f]; !ok {
				t.Errorf("line %s lacks %q", line, f)
			}
		}
	}
}

func TestEventsTail(t *testing.T) {
	t.Parallel()
	e := newTailEnv(t)
	a, b := e.project(t), e.project(t)
	k1 := e.createKey(t, a, "first")
	e.update(t, a, k1, domain.UpdateKey{Description: ptr("renamed"), Revoked: ptr(true)}) // two events, one commit
	k2 := e.createKey(t, b, "other project")
	garbageSubject := e.garbage(t, a)
	e.update(t, b, k2, domain.UpdateKey{Description: ptr("after the garbage")})
	e.createKey(t, a, "last")
	records := e.stored(t)
	var garbageSeq uint64
	for _, r := range records {
		if r.Err != nil {
			garbageSeq = r.Seq
		}
	}
	if len(records) != 7 || garbageSeq == 0 {
		t.Fatalf("stream holds %d key messages, want 6 events and the garbage", len(records))
	}
	all := func(eventstore.RecordedEvent) bool { return true }

	t.Run("every key event in order, garbage set aside", func(t *testing.T) {
		o := keysctl(t, e.env, "events", "tail", "--nats-url", e.ns.URL)
		if o.code != exitOK {
			t.Fatalf("exit %d, stderr %q", o.code, o.stderr)
		}
		wantLines(t, o.stdout, records, all)
		if !strings.Contains(o.stderr, "stream sequence "+strconv.FormatUint(garbageSeq, 10)) ||
			!strings.Contains(o.stderr, garbageSubject) || !strings.Contains(o.stderr, "KEYLEDGER_DLQ") ||
			strings.Count(o.stderr, "\n") != 1 {
			t.Errorf("stderr %q, want one line reporting the garbage at %d set aside on KEYLEDGER_DLQ", o.stderr, garbageSeq)
		}
		dead, err := e.store.DeadLetters(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 1 || dead[0].Seq != garbageSeq || dead[0].Consumer != tailConsumer ||
			string(dead[0].Raw) != "garbage {" || !strings.Contains(dead[0].Reason, "invalid event") {
			t.Fatalf("dead letters %+v, want the garbage once with its reason", dead)
		}
		// Tailing again reports the garbage again but leaves one dead letter.
		again := keysctl(t, e.env, "events", "tail", "--nats-url", e.ns.URL)
		wantLines(t, again.stdout, records, all)
		if !strings.Contains(again.stderr, "already on KEYLEDGER_DLQ") {
			t.Errorf("second tail stderr %q, want the garbage reported as already set aside", again.stderr)
		}
		if dead, _ := e.store.DeadLetters(t.Context()); len(dead) != 1 {
			t.Errorf("%d dead letters after a second tail, want 1", len(dead))
		}
	})
	t.Run("--project", func(t *testing.T) {
		o := keysctl(t, e.env, "events", "tail", "--nats-url", e.ns.URL, "--project", b)
		if o.code != exitOK || o.stderr != "" {
			t.Fatalf("exit %d, stderr %q", o.code, o.stderr)
		}
		wantLines(t, o.stdout, records, func(r eventstore.RecordedEvent) bool { return r.Event.ProjectID == b })
	})
	t.Run("--from-seq", func(t *testing.T) {
		from := records[3].Seq
		o := keysctl(t, e.env, "events", "tail", "--nats-url", e.ns.URL, "--from-seq", strconv.FormatUint(from, 10))
		if o.code != exitOK {
			t.Fatalf("exit %d, stderr %q", o.code, o.stderr)
		}
		wantLines(t, o.stdout, records, func(r eventstore.RecordedEvent) bool { return r.Seq >= from })
	})
	t.Run("--since", func(t *testing.T) {
		since := records[5].Time
		o := keysctl(t, e.env, "events", "tail", "--nats-url", e.ns.URL, "--project", a, "--since", since.Format(time.RFC3339Nano))
		if o.code != exitOK {
			t.Fatalf("exit %d, stderr %q", o.code, o.stderr)
		}
		wantLines(t, o.stdout, records, func(r eventstore.RecordedEvent) bool { return !r.Time.Before(since) && r.Event.ProjectID == a })
	})
	t.Run("nothing to print", func(t *testing.T) {
		for _, args := range [][]string{
			{"--from-seq", "1000"},
			{"--since", time.Now().Add(time.Hour).Format(time.RFC3339)},
			{"--project", uuid.NewString()},
		} {
			o := keysctl(t, e.env, append([]string{"events", "tail", "--nats-url", e.ns.URL}, args...)...)
			if o.code != exitOK || o.stdout != "" || o.stderr != "" {
				t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 0 and nothing", args, o.code, o.stdout, o.stderr)
			}
		}
	})
	t.Run("older schema versions print upcast", func(t *testing.T) {
		// A key's whole history as keysd wrote it long ago (schema v0), authenticated as keysd
		// would (docs/events.md): the creation first, so that the rename is in its key's
		// version order (a lone rename would be refused, as every reader refuses it).
		nc := e.ns.Connect(t)
		var want strings.Builder
		var project string
		for _, name := range []string{"KeyCreated", "DescriptionChanged"} {
			stored, err := os.ReadFile(filepath.Join("..", "..", "domain", "testdata", "schema_v0_"+name+".json"))
			if err != nil {
				t.Fatal(err)
			}
			old, err := domain.UnmarshalEvent(stored)
			if err != nil {
				t.Fatal(err)
			}
			project = old.ProjectID
			m := nats.NewMsg("keyledger.key." + old.ProjectID + "." + old.KeyID + "." + name)
			m.Data = stored
			m.Header.Set(eventstore.HeaderMAC, eventMAC(e.hasher.EventKey(), m.Subject, m.Data))
			if err := nc.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
			line, _ := domain.MarshalEvent(old)
			want.Write(line)
			want.WriteByte('\n')
		}
		_ = nc.Flush()
		o := keysctl(t, e.env, "events", "tail", "--nats-url", e.ns.URL, "--project", project)
		if o.code != exitOK || o.stdout != want.String() || strings.Count(o.stdout, `"schema_version":1`) != 2 {
			t.Fatalf("exit %d, stdout %q, stderr %q; want the v0 events in the current version: %s", o.code, o.stdout, o.stderr, want.String())
		}
	})
	t.Run("bad usage", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--since", "yesterday"}, "--since"},
			{[]string{"--since", "2026-01-01T00:00:00Z", "--from-seq", "3"}, "cannot be combined"},
			{[]string{"--project", "acme"}, "--project"},
			{[]string{"--from-seq", "-1"}, "from-seq"},
		} {
			o := keysctl(t, e.env, append([]string{"events", "tail", "--nats-url", e.ns.URL}, tc.args...)...)
			o.wantOneErrorLine(t, exitUsage, tc.want)
		}
	})
}

// lineBuffer is a stdout the test reads while keysctl writes it.
type lineBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitLines waits until out holds n lines (failing the test after a minute).
func waitLines(t *testing.T, out interface{ String() string }, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for strings.Count(out.String(), "\n") < n {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %d lines; have %q", n, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEventsTailFollow(t *testing.T) {
	t.Parallel()
	e := newTailEnv(t)
	p := e.project(t)
	k := e.createKey(t, p, "before the tail")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr lineBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"events", "tail", "--follow", "--project", p, "--nats-url", e.ns.URL}, &stdout, &stderr, e.getenv)
	}()
	waitLines(t, &stdout, 1)
	e.update(t, p, k, domain.UpdateKey{Description: ptr("while tailing")})
	waitLines(t, &stdout, 2)
	e.garbage(t, p)
	e.update(t, p, k, domain.UpdateKey{Revoked: ptr(true)})
	waitLines(t, &stdout, 3)
	waitLines(t, &stderr, 1)
	cancel() // SIGINT
	if code := <-done; code != exitOK {
		t.Fatalf("exit %d after cancel, stderr %q", code, stderr.String())
	}
	wantLines(t, stdout.String(), e.stored(t), func(eventstore.RecordedEvent) bool { return true })
	if !strings.Contains(stderr.String(), "set aside on KEYLEDGER_DLQ") {
		t.Errorf("stderr %q, want the garbage reported", stderr.String())
	}
}

// TestEventsTailFollowBinary stops a following keysctl process with SIGINT and SIGTERM, as
// an operator does, and expects exit 0 with everything printed.
func TestEventsTailFollowBinary(t *testing.T) {
	testenv.Heavy(t, "a keysctl process")
	t.Parallel()
	bin := testenv.Binary(t, "./cmd/keysctl")
	e := newTailEnv(t)
	p := e.project(t)
	e.createKey(t, p, "one")
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), bin, "events", "tail", "--follow", "--nats-url", e.ns.URL)
			cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), envSecretFile + "=" + e.env[envSecretFile]}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil || !strings.Contains(line, `"type":"KeyCreated"`) {
				t.Fatalf("first line %q, %v", line, err)
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, stdout)
			if err := cmd.Wait(); err != nil || cmd.ProcessState.ExitCode() != exitOK {
				t.Fatalf("after %s: %v, exit %d, stderr %q", sig, err, cmd.ProcessState.ExitCode(), stderr.String())
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestEventsTailFollowSurvivesNATSRestart: a following tail outlives the NATS server
// restarting, and prints what is appended afterwards without repeating anything.
func TestEventsTailFollowSurvivesNATSRestart(t *testing.T) {
	testenv.Heavy(t, "NATS restarts")
	t.Parallel()
	e := newTailEnv(t)
	p := e.project(t)
	k := e.createKey(t, p, "before the restart")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr lineBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"events", "tail", "--follow", "--nats-url", e.ns.URL}, &stdout, &stderr, e.getenv)
	}()
	waitLines(t, &stdout, 1)
	e.ns.Restart(t)
	// The command handler's connection reconnects on its own; retry until the server is back.
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := e.cmds.UpdateKey(t.Context(), e.caller(p), k, domain.UpdateKey{Description: ptr("after the restart")})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("append after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitLines(t, &stdout, 2)
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	wantLines(t, stdout.String(), e.stored(t), func(eventstore.RecordedEvent) bool { return true })
}

// TestEventsTailPrintsWhatItAlwaysPrinted: events tail prints, byte for byte, what it printed
// before it printed runs of events in batches: for every event, encoding/json's document of
// the event in the current schema version, decoded by the general decoder. The stream mixes
// what the fast codec leaves to the general one: text that JSON escapes, an event of schema
// version 0 to upcast, a field in another case, and garbage, in runs long enough to span
// several batches.
func TestEventsTailPrintsWhatItAlwaysPrinted(t *testing.T) {
	t.Parallel()
	e := newTailEnv(t)
	p := e.project(t)
	nc := e.ns.Connect(t)
	publish := func(subject string, body []byte) { // authenticated as keysd would
		t.Helper()
		m := nats.NewMsg(subject)
		m.Data = body
		m.Header.Set(eventstore.HeaderMAC, eventMAC(e.hasher.EventKey(), subject, body))
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	v0, err := os.ReadFile("../../domain/testdata/schema_v0_KeyCreated.json")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1200 {
		switch i % 400 {
		case 7:
			publish("keyledger.key.5d7a4c1e-2b9f-4e8a-9c3d-1f2e3a4b5c6d.8f14e45f-ceea-467f-a0e6-b1c2d3e4f5a6.KeyCreated", v0)
		case 8:
			e.garbage(t, p)
		case 9:
			k := e.createKey(t, p, "case")
			r, err := e.store.LoadKey(t.Context(), p, k)
			if err != nil {
				t.Fatal(err)
			}
			publish(r[0].Subject, bytes.Replace(r[0].Raw, []byte(`"user_id"`), []byte(`"User_ID"`), 1))
		default:
			e.createKey(t, p, fmt.Sprintf("key %d <&> \"quoted\" \u2028 é \t", i))
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// What tail prints: every valid event in its key's version order (the v0 creation
	// published again and the altered copy of a creation are refused, as every reader
	// refuses them).
	var want strings.Builder
	order := projections.NewVersionOrder(false)
	for _, r := range e.stored(t) {
		if r.Err != nil || order.Refuse(r) != "" {
			continue
		}
		ev, err := domain.UnmarshalEvent(r.Raw)
		if err != nil {
			t.Fatal(err)
		}
		want.Write(encodingJSONLine(t, ev))
	}
	o := keysctl(t, e.env, "events", "tail", "--nats-url", e.ns.URL)
	if o.code != exitOK {
		t.Fatalf("exit %d, stderr %q", o.code, o.stderr)
	}
	if o.stdout != want.String() {
		got, wantLines := strings.Split(o.stdout, "\n"), strings.Split(want.String(), "\n")
		for i := range min(len(got), len(wantLines)) {
			if got[i] != wantLines[i] {
				t.Fatalf("line %d differs (of %d, want %d):\n got %s\nwant %s", i, len(got), len(wantLines), got[i], wantLines[i])
			}
		}
		t.Fatalf("%d lines, want %d", len(got), len(wantLines))
	}
}

// encodingJSONLine is an event's line as events tail printed it with encoding/json.
func encodingJSONLine(t *testing.T, e domain.Event) []byte {
	t.Helper()
	data, err := json.Marshal(e.Data)
	if err != nil {
		t.Fatal(err)
	}
	line, err := json.Marshal(struct {
		ID            string           `json:"id"`
		Type          domain.EventType `json:"type"`
		SchemaVersion int              `json:"schema_version"`
		ProjectID     string           `json:"project_id"`
		KeyID         string           `json:"key_id,omitempty"`
		UserID        string           `json:"user_id,omitempty"`
		Version       int              `json:"version"`
		Time          time.Time        `json:"time"`
		Actor         domain.Actor     `json:"actor"`
		RequestID     string           `json:"request_id"`
		Data          json.RawMessage  `json:"data"`
	}{e.ID, e.Type, e.SchemaVersion, e.ProjectID, e.KeyID, e.UserID, e.Version, e.Time, e.Actor, e.RequestID, data})
	if err != nil {
		t.Fatal(err)
	}
	return append(line, '\n')
}

// eventMAC is an event's MAC as docs/events.md specifies it: hex HMAC-SHA-256 over the
// subject's length (4 bytes, big-endian), the subject and the payload.
func eventMAC(key []byte, subject string, data []byte) string {
	h := hmac.New(sha256.New, key)
	_ = binary.Write(h, binary.BigEndian, uint32(len(subject)))
	h.Write([]byte(subject))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}
