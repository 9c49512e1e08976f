package main_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/internal/testenv"
)

// An audit consumer written from docs/events.md alone: the code between the markers below is
// the Go example of that page, word for word (TestAuditConsumerExampleIsTheDocs checks it),
// and TestAuditConsumerFromTheDocs runs it against a real keysd.

// docs/events.md:begin

// Event is one keyledger key event: the envelope of docs/events.md.
type Event struct {
	ID            string    `json:"id"`
	Type          string    `json:"type"`
	SchemaVersion int       `json:"schema_version"`
	ProjectID     string    `json:"project_id"`
	KeyID         string    `json:"key_id"`
	UserID        string    `json:"user_id"` // a user's key
	TeamID        string    `json:"team_id"` // a team's key
	Version       int       `json:"version"`
	Time          time.Time `json:"time"`
	Actor         struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	} `json:"actor"`
	RequestID string          `json:"request_id"`
	Data      json.RawMessage `json:"data"`
}

// Follow hands every key event to handle, one at a time and in stream order, starting where
// the durable consumer "audit" left off (the first time: at the first event), until ctx ends.
// An event handle fails on is delivered again before any later one.
func Follow(ctx context.Context, natsURL string, handle func(seq uint64, e Event) error) error {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "KEYLEDGER", jetstream.ConsumerConfig{
		Durable:        "audit",
		FilterSubjects: []string{"keyledger.key.>"},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		MaxAckPending:  1, // one event in flight: strict order, also across redeliveries
	})
	if err != nil {
		return err
	}
	msgs, err := cons.Messages()
	if err != nil {
		return err
	}
	defer msgs.Stop()
	go func() { <-ctx.Done(); msgs.Stop() }()
	for {
		m, err := msgs.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		var e Event
		if err := json.Unmarshal(m.Data(), &e); err != nil || e.Type == "" || e.SchemaVersion != 1 {
			_ = m.Term() // not an event (or a schema version this code does not know): skip it
			continue
		}
		if err := handle(md.Sequence.Stream, e); err != nil {
			_ = m.Nak() // delivered again, before anything after it
			continue
		}
		if err := m.DoubleAck(ctx); err != nil && ctx.Err() == nil {
			return err // not recorded: the event comes again after a restart
		}
	}
}

// docs/events.md:end

func TestAuditConsumerExampleIsTheDocs(t *testing.T) {
	src, err := os.ReadFile("audit_consumer_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(src), "// docs/events.md:begin\n\n")
	example, _, found := strings.Cut(rest, "\n// docs/events.md:end")
	if !found || len(example) < 1000 {
		t.Fatal("no example between the markers")
	}
	docs, err := os.ReadFile(filepath.Join("..", "..", "docs", "events.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(docs), example) {
		t.Fatal("docs/events.md does not hold the Go example this test runs; copy it there word for word")
	}
}

// received collects what the audit consumer was handed.
type received struct {
	mu     sync.Mutex
	seqs   []uint64
	events []Event
}

func (r *received) handle(seq uint64, e Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seqs = append(r.seqs, seq)
	r.events = append(r.events, e)
	return nil
}

func (r *received) wait(t *testing.T, n int) ([]uint64, []Event) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r.mu.Lock()
		seqs, events := append([]uint64(nil), r.seqs...), append([]Event(nil), r.events...)
		r.mu.Unlock()
		if len(events) >= n {
			return seqs, events
		}
		if time.Now().After(deadline) {
			t.Fatalf("the audit consumer received %d events in a minute, want %d", len(events), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func follow(t *testing.T, natsURL string, r *received) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Follow(ctx, natsURL, r.handle) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Follow: %v", err)
		}
	}
}

func TestAuditConsumerFromTheDocs(t *testing.T) {
	testenv.Heavy(t, "a keysd process")
	t.Parallel()
	k := startKeysd(t, keysdOptions{})
	p := k.createProject("audited")
	token, errOut, code := k.keysctl("projects", "admin-token", "--project", p.ID, "--subject", "alice@example.com")
	if code != 0 {
		t.Fatalf("admin-token: %s", errOut)
	}
	admin := []string{"x-stack-admin-access-token", strings.TrimSpace(token)}

	// The auditor connects with the read-only URL keysctl prints, as docs/events.md says.
	out, errOut, code := k.keysctl("audit-url")
	if code != 0 || !strings.HasPrefix(out, "nats://keyledger-audit:") {
		t.Fatalf("keysctl audit-url: exit %d, %q %s", code, out, errOut)
	}
	auditURL := strings.TrimSpace(out)
	got := &received{}
	stop := follow(t, auditURL, got)

	type change struct {
		typ, key, actorType, actorID, requestID, data string
	}
	var want []change
	ok := func(r response) response {
		t.Helper()
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		return r
	}
	a := ok(k.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "u1", "description": "deploy"}))
	want = append(want, change{"KeyCreated", a.str("id"), "server_key", "", a.Header.Get("x-stack-request-id"), ""})
	b := ok(k.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "u2", "description": "ci", "expires_at_millis": time.Now().Add(time.Hour).UnixMilli()}))
	want = append(want, change{"KeyCreated", b.str("id"), "server_key", "", b.Header.Get("x-stack-request-id"), ""})
	r := ok(k.do("PATCH", "/api/v1/user-api-keys/"+a.str("id"), p, map[string]any{"description": "deploy (old)"}, admin...))
	want = append(want, change{"DescriptionChanged", a.str("id"), "admin", "alice@example.com", r.Header.Get("x-stack-request-id"), `{"old":"deploy","new":"deploy (old)"}`})
	// Garbage on an event subject: the consumer skips it and goes on.
	nc, err := nats.Connect(k.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish("keyledger.key."+p.ID+"."+a.str("id")+".KeyRevoked", []byte("garbage {")); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	r = ok(k.do("PATCH", "/api/v1/user-api-keys/"+a.str("id"), p, map[string]any{"description": "deploy (revoked)", "revoked": true}))
	want = append(want,
		change{"DescriptionChanged", a.str("id"), "server_key", "", r.Header.Get("x-stack-request-id"), `{"old":"deploy (old)","new":"deploy (revoked)"}`},
		change{"KeyRevoked", a.str("id"), "server_key", "", r.Header.Get("x-stack-request-id"), `{"revoked_at":` + eventTime(t, r.str("manually_revoked_at")) + `}`})

	seqs, events := got.wait(t, len(want))
	stop()
	check := func(seqs []uint64, events []Event, want []change, versions []int) {
		t.Helper()
		if len(events) != len(want) {
			t.Fatalf("received %d events, want %d", len(events), len(want))
		}
		for i, e := range events {
			w := want[i]
			if e.Type != w.typ || e.KeyID != w.key || e.ProjectID != p.ID || e.SchemaVersion != 1 || e.Version != versions[i] ||
				e.Actor.Type != w.actorType || (w.actorID != "" && e.Actor.ID != w.actorID) || e.Actor.ID == "" ||
				e.RequestID != w.requestID || e.ID == "" || e.UserID == "" || e.Time.IsZero() || (w.data != "" && string(e.Data) != w.data) {
				t.Errorf("event %d (stream sequence %d) = %+v data %s; want %+v version %d", i, seqs[i], e, e.Data, w, versions[i])
			}
			if i > 0 && seqs[i] <= seqs[i-1] {
				t.Errorf("event %d at stream sequence %d after %d: out of order", i, seqs[i], seqs[i-1])
			}
		}
	}
	check(seqs, events, want, []int{1, 1, 2, 3, 4})
	// Every key event on the stream, and nothing else, was received.
	var onStream []uint64
	for _, rec := range streamEvents(t, k.natsURL) {
		if rec.Err == nil && rec.Event.KeyID != "" {
			onStream = append(onStream, rec.Seq)
		}
	}
	if !slices.Equal(onStream, seqs) {
		t.Errorf("received stream sequences %v, the stream's key events are at %v", seqs, onStream)
	}

	// The durable consumer resumes after the last event it acknowledged: a change made
	// while the auditor was down is the first thing it gets, and nothing comes twice.
	r = ok(k.do("PATCH", "/api/v1/user-api-keys/"+b.str("id"), p, map[string]any{"revoked": true}))
	later := &received{}
	stop = follow(t, auditURL, later)
	seqs, events = later.wait(t, 1)
	stop()
	check(seqs, events, []change{{"KeyRevoked", b.str("id"), "server_key", "", r.Header.Get("x-stack-request-id"), ""}}, []int{2})
}

// eventTime is how an event's data writes the instant the API rendered as s (RFC 3339 with
// as many fractional digits as needed, where the API always writes three).
func eventTime(t *testing.T, s string) string {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("API timestamp %q: %v", s, err)
	}
	b, _ := json.Marshal(at.UTC())
	return string(b)
}
