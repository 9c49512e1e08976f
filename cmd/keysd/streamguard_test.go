package main_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/internal/testenv"
)

// TestStreamConfigurationGuard changes the event stream's configuration under a running keysd
// (on its embedded NATS, with keysd's own NATS user, as an operator could): while the stream
// does not keep events, every write is answered 503 SERVICE_UNAVAILABLE with Retry-After and
// appends nothing, /readyz fails its event_stream_config check, the metrics say so, and keysd
// logs one error line per change; once the configuration is put back, writes resume. Then the
// stream is sealed and deleted, and SIGTERM still ends keysd within --shutdown-timeout.
func TestStreamConfigurationGuard(t *testing.T) {
	testenv.Heavy(t, "a keysd process through five stream changes and a shutdown after a deletion")
	t.Parallel()
	const shutdownTimeout = 5 * time.Second
	k := startKeysd(t, keysdOptions{extraArgs: []string{"--shutdown-timeout", shutdownTimeout.String()}})
	p := k.createProject("guarded")
	create := func() response {
		return k.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "u1", "description": "d"})
	}
	first := create()
	if first.Status != 200 {
		t.Fatalf("create: %d %s", first.Status, first.Raw)
	}
	keyPath := "/api/v1/user-api-keys/" + first.str("id")

	nc, err := nats.Connect(k.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	update := func(change func(*jetstream.StreamConfig)) {
		t.Helper()
		str, err := js.Stream(ctx, "KEYLEDGER")
		if err != nil {
			t.Fatal(err)
		}
		cfg := str.CachedInfo().Config
		change(&cfg)
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatalf("update the stream: %v", err)
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 15s\nstderr:\n%s", what, k.stderr)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	streamLast := func() uint64 {
		t.Helper()
		str, err := js.Stream(ctx, "KEYLEDGER")
		if err != nil {
			t.Fatal(err)
		}
		return str.CachedInfo().State.LastSeq
	}
	readyz := func() response { return k.do("GET", "/readyz", project{}, nil) }
	suspended := func() bool { return metric(t, k, "keyledger_event_stream_unsafe") == 1 }
	errorLines := func() int { return strings.Count(k.stderr.String(), "writes suspended") }

	// expectRefused checks the answers and effects of a stream that does not keep events.
	expectRefused := func(problem string, streamGone bool) {
		t.Helper()
		waitFor("writes suspended for "+problem, func() bool { return suspended() && strings.Contains(readyz().Raw, problem) })
		var before uint64
		if !streamGone {
			before = streamLast()
		}
		for _, r := range []response{
			create(),
			k.do("PATCH", keyPath, p, map[string]any{"description": "refused"}),
			k.do("POST", keyPath+"/rotate", p, map[string]any{"grace_period_seconds": 0}),
		} {
			if r.Status != 503 || r.str("code") != "SERVICE_UNAVAILABLE" || r.Header.Get("Retry-After") == "" ||
				r.Header.Get("x-stack-known-error") != "SERVICE_UNAVAILABLE" || r.Header.Get("x-stack-request-id") == "" {
				t.Fatalf("%s: a write answered %d %v %s", problem, r.Status, r.Header, r.Raw)
			}
		}
		if !streamGone {
			if after := streamLast(); after != before {
				t.Fatalf("%s: the stream moved from %d to %d on refused writes", problem, before, after)
			}
		}
		rz := readyz()
		failing, _ := rz.Body["details"].(map[string]any)["failing"].([]any)
		if rz.Status != 503 || !strings.Contains(rz.Raw, "event_stream_config") || !strings.Contains(rz.Raw, problem) || len(failing) == 0 {
			t.Fatalf("%s: /readyz answered %d %s", problem, rz.Status, rz.Raw)
		}
		// Reads go on: the read model is intact.
		if r := k.do("GET", keyPath, p, nil); r.Status != 200 {
			t.Fatalf("%s: a read answered %d %s", problem, r.Status, r.Raw)
		}
	}
	expectResumed := func() {
		t.Helper()
		waitFor("writes resumed", func() bool { return !suspended() })
		if r := k.do("PATCH", keyPath, p, map[string]any{"description": "resumed"}); r.Status != 200 {
			t.Fatalf("after the fix: PATCH answered %d %s", r.Status, r.Raw)
		}
		waitFor("/readyz ready", func() bool { return readyz().Status == 200 })
	}

	update(func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour })
	expectRefused("max_age is 1h0m0s", false)
	if n := errorLines(); n != 1 {
		t.Fatalf("%d log lines of suspended writes after one change, want 1:\n%s", n, k.stderr)
	}
	if trips := metric(t, k, "keyledger_event_stream_unsafe_total"); trips != 1 {
		t.Fatalf("keyledger_event_stream_unsafe_total = %v, want 1", trips)
	}
	update(func(c *jetstream.StreamConfig) { c.MaxAge = 0 })
	expectResumed()

	// max_msgs_per_subject=1 drops every earlier event of a key on one subject (the second
	// rename drops the first): the loss is detected too.
	if r := k.do("PATCH", keyPath, p, map[string]any{"description": "renamed again"}); r.Status != 200 {
		t.Fatalf("PATCH: %d %s", r.Status, r.Raw)
	}
	update(func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 1 })
	expectRefused("max_msgs_per_subject is 1", false)
	update(func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = -1 })
	expectResumed()
	waitFor("missing events reported", func() bool { return metric(t, k, "keyledger_event_stream_missing_events") > 0 })

	// (deny_delete and deny_purge cannot be switched off on a stream, nor rollups allowed
	// without purges: the server refuses it.)
	update(func(c *jetstream.StreamConfig) { c.Discard, c.MaxBytes = jetstream.DiscardOld, 1<<30 })
	expectRefused("max_bytes is 1073741824; discard is not new", false)
	update(func(c *jetstream.StreamConfig) { c.Discard, c.MaxBytes = jetstream.DiscardNew, -1 })
	expectResumed()

	update(func(c *jetstream.StreamConfig) { c.Sealed = true }) // for good: a stream cannot be unsealed
	expectRefused("the stream is sealed", false)

	if err := js.DeleteStream(ctx, "KEYLEDGER"); err != nil {
		t.Fatal(err)
	}
	expectRefused("the stream does not exist", true)
	if trips := metric(t, k, "keyledger_event_stream_unsafe_total"); trips != 4 {
		t.Fatalf("keyledger_event_stream_unsafe_total = %v, want 4 (max_age, max_msgs_per_subject, max_bytes with discard old, sealed then deleted)", trips)
	}

	// Shutdown is bounded whatever the stream's state: the projector's consumer is being
	// recreated against a stream that is gone.
	time.Sleep(2 * time.Second)
	start := time.Now()
	if err := k.stop(); err != nil {
		t.Fatalf("SIGTERM with the stream deleted: %v\nstderr:\n%s", err, k.stderr)
	}
	if took := time.Since(start); took > shutdownTimeout+500*time.Millisecond {
		t.Fatalf("SIGTERM with the stream deleted took %s, more than --shutdown-timeout %s", took, shutdownTimeout)
	}
}
