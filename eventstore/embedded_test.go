package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
)

// A busy address is one clear error at once, not a 30-second wait for a server that never
// becomes ready.
func TestEmbeddedServerOnABusyAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = eventstore.StartEmbedded(eventstore.EmbeddedConfig{Addr: ln.Addr().String(), DataDir: t.TempDir(), Password: "a", AuditPassword: "b"})
	if err == nil || !strings.Contains(err.Error(), "cannot listen") {
		t.Fatalf("StartEmbedded on a busy address: %v", err)
	}
}

// TestEmbeddedServerAdmitsOnlyKeyledger: the embedded server refuses a client without
// credentials or with wrong ones; keysd's user may do anything; the audit user may read the
// stream, get messages and follow it with a consumer, and may neither publish onto it nor
// delete, purge or change it.
func TestEmbeddedServerAdmitsOnlyKeyledger(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ns, err := eventstore.StartEmbedded(eventstore.EmbeddedConfig{Addr: addr, DataDir: t.TempDir(), Password: "keysd-pw", AuditPassword: "audit-pw"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	url := "nats://" + addr
	for _, opts := range [][]nats.Option{nil, {nats.UserInfo(eventstore.EmbeddedUser, "wrong")}, {nats.UserInfo("someone", "keysd-pw")}, {nats.Token("keysd-pw")}} {
		if nc, err := nats.Connect(url, opts...); err == nil {
			nc.Close()
			t.Errorf("connected with %d options, want the server to refuse", len(opts))
		} else if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("refused with %v, want an authorization error", err)
		}
	}

	ctx := context.Background()
	keysd, err := nats.Connect(url, nats.UserInfo(eventstore.EmbeddedUser, "keysd-pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer keysd.Close()
	s, err := eventstore.Open(ctx, keysd, eventstore.Config{EventKey: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	project := uuid.NewString()
	if _, err := s.AppendKeyEvents(ctx, 0, []domain.Event{newKeyEvent(t, project)}); err != nil {
		t.Fatal(err)
	}
	checkAuditorOnlyReads(t, s, "nats://"+eventstore.AuditUser+":audit-pw@"+addr, project)
}

// checkAuditorOnlyReads checks what an audit user may do on the server of store s, whose
// stream holds a key event of project: read the stream, get messages, follow it with an
// ordered and a durable consumer; and neither publish onto it nor delete, purge or change it
// or another stream.
func checkAuditorOnlyReads(t *testing.T, s *eventstore.Store, auditURL, project string) {
	t.Helper()
	ctx := context.Background()
	last, _ := s.LastSeq(ctx)
	violations := make(chan error, 64)
	audit, err := nats.Connect(auditURL,
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
	if err != nil {
		t.Fatalf("audit user: %v", err)
	}
	defer audit.Close()
	js, err := jetstream.New(audit)
	if err != nil {
		t.Fatal(err)
	}
	// Reads: stream info, a message by sequence, a direct get, an ordered consumer.
	str, err := js.Stream(ctx, "KEYLEDGER")
	if err != nil {
		t.Fatalf("audit stream info: %v", err)
	}
	if _, err := str.GetMsg(ctx, last); err != nil {
		t.Errorf("audit get message: %v", err)
	}
	if _, err := str.GetLastMsgForSubject(ctx, "keyledger.key."+project+".>"); err != nil {
		t.Errorf("audit direct get: %v", err)
	}
	cons, err := str.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"keyledger.key.>"}})
	if err != nil {
		t.Fatalf("audit consumer: %v", err)
	}
	if m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil || !strings.HasPrefix(m.Subject(), "keyledger.key."+project) {
		t.Errorf("audit consumer delivers: %v", err)
	}
	durable, err := js.CreateOrUpdateConsumer(ctx, "KEYLEDGER", jetstream.ConsumerConfig{Durable: "auditor", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("audit durable consumer: %v", err)
	}
	if m, err := durable.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
		t.Errorf("audit durable consumer delivers: %v", err)
	} else if err := m.DoubleAck(ctx); err != nil {
		t.Errorf("audit ack: %v", err)
	}

	// Writes: none lands, none changes the stream.
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	if _, err := js.Publish(short, "keyledger.key."+project+"."+uuid.NewString()+".KeyCreated", []byte(`{}`)); err == nil {
		t.Error("the audit user published onto the event stream")
	}
	_ = audit.Publish("keyledger.key."+project+".x.KeyRevoked", []byte("core publish"))
	for _, op := range []func(context.Context) error{
		func(ctx context.Context) error { return js.DeleteStream(ctx, "KEYLEDGER") },
		func(ctx context.Context) error { return str.Purge(ctx) },
		func(ctx context.Context) error { return str.DeleteMsg(ctx, 1) },
		func(ctx context.Context) error {
			cfg := str.CachedInfo().Config
			cfg.MaxAge = time.Second
			_, err := js.UpdateStream(ctx, cfg)
			return err
		},
		func(ctx context.Context) error {
			_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SHADOW", Subjects: []string{"keyledger.shadow.>"}})
			return err
		},
		func(ctx context.Context) error { return js.DeleteStream(ctx, "KEYLEDGER_DLQ") },
	} {
		octx, cancel := context.WithTimeout(ctx, time.Second)
		if err := op(octx); err == nil {
			t.Error("the audit user changed a stream")
		}
		cancel()
	}
	_ = audit.Flush()
	if got, err := s.LastSeq(ctx); err != nil || got != last {
		t.Errorf("stream last sequence %d (%v) after the audit user's writes, want %d", got, err, last)
	}
	select {
	case err := <-violations:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Errorf("async error %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("no permissions violation reported to the audit client")
	}
}
