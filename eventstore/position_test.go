package eventstore

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/internal/testenv"
)

func TestPositionIsTheLastSequenceAndStoresNothing(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, testenv.NATS(t).Connect(t), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := s.Position(ctx); err != nil || p != 0 {
		t.Fatalf("empty stream: Position %d, %v; want 0", p, err)
	}
	project := uuid.NewString()
	for i, cmd := range groupTestEvents(t, project, 3) {
		seq, err := s.AppendKeyEvents(ctx, 0, cmd)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // the probe is refused, never stored: asking again changes nothing
			p, err := s.Position(ctx)
			if err != nil || p != seq {
				t.Fatalf("after append %d (seq %d): Position %d, %v", i, seq, p, err)
			}
		}
		if last, err := s.LastSeq(ctx); err != nil || last != seq {
			t.Fatalf("after append %d (seq %d): LastSeq %d, %v", i, seq, last, err)
		}
	}
	if s.positionOff.Load() {
		t.Fatal("the probe fell back to STREAM.INFO on a server where it works")
	}
}

// TestPositionFallsBackToStreamInfo: on a connection that may not publish on the probe's
// subject (the embedded server's audit user, who may read STREAM.INFO) the probe gets no
// answer; Position answers from STREAM.INFO instead, and asks only that from then on.
func TestPositionFallsBackToStreamInfo(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ns, err := StartEmbedded(EmbeddedConfig{Addr: addr, DataDir: t.TempDir(), Password: "keysd-pw", AuditPassword: "audit-pw"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	ctx := context.Background()
	keysd, err := nats.Connect("nats://"+addr, nats.UserInfo(EmbeddedUser, "keysd-pw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(keysd.Close)
	s, err := Open(ctx, keysd, Config{})
	if err != nil {
		t.Fatal(err)
	}
	seq, err := s.AppendKeyEvents(ctx, 0, groupTestEvents(t, uuid.NewString(), 1)[0])
	if err != nil {
		t.Fatal(err)
	}
	audit, err := nats.Connect("nats://"+addr, nats.UserInfo(AuditUser, "audit-pw"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(audit.Close)
	js, err := jetstream.New(audit)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.cfg
	cfg.Timeout = 300 * time.Millisecond
	a := &Store{nc: audit, js: js, cfg: cfg, log: slog.New(slog.DiscardHandler), subj: s.subj}
	for i := range 2 {
		start := time.Now()
		if p, err := a.Position(ctx); err != nil || p != seq {
			t.Fatalf("call %d: Position %d, %v; want %d from STREAM.INFO", i, p, err, seq)
		}
		if !a.positionOff.Load() {
			t.Fatalf("call %d: the probe is still on", i)
		}
		if i == 1 && time.Since(start) > cfg.Timeout {
			t.Fatalf("the second call took %s: it tried the probe again", time.Since(start))
		}
	}
}

func TestParsePositionReply(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 24005"},"stream":"KEYLEDGER","seq":0}`, 24005, true},
		{`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 0"},"stream":"KEYLEDGER","seq":0}`, 0, true},
		{`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 7"},"stream":"OTHER","seq":0}`, 0, false},
		{`{"error":{"code":400,"err_code":10070,"description":"wrong last sequence: 7"},"stream":"KEYLEDGER"}`, 0, false},
		{`{"stream":"KEYLEDGER","seq":12}`, 0, false},
		{`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: -1"},"stream":"KEYLEDGER"}`, 0, false},
		{`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: "},"stream":"KEYLEDGER"}`, 0, false},
	} {
		got, ok := parsePositionReply([]byte(c.in), "KEYLEDGER")
		if got != c.want || ok != c.ok {
			t.Errorf("%s: %d, %v; want %d, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// BenchmarkPosition: the read barrier's position request against STREAM.INFO (LastSeq), one
// at a time, on a stream of 1,000 events. The NATS server runs in the test's process, so
// ns/op is the round trip with both sides' CPU in it.
func BenchmarkPosition(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, testenv.NATS(b).Connect(b), Config{})
	if err != nil {
		b.Fatal(err)
	}
	for _, cmd := range groupTestEvents(b, uuid.NewString(), 1000) {
		if _, err := s.AppendKeyEvents(ctx, 0, cmd); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		ask  func(context.Context) (uint64, error)
	}{{"probe", s.Position}, {"STREAM.INFO", s.LastSeq}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.ask(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
