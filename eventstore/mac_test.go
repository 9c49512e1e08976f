package eventstore_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/eventstore/storetest"
	"github.com/keyledger/keyledger/internal/testenv"
)

// The suite's guarantees hold with authenticated events, as keysd runs the store.
func TestStoreAuthenticatedEvents(t *testing.T) {
	storetest.TestStore(t, opener(func(t *testing.T) *testenv.NATSServer { return testenv.NATS(t) }, eventstore.Config{EventKey: testEventKey(t)}))
}

func openStore(t *testing.T, srv *testenv.NATSServer, cfg eventstore.Config) *eventstore.Store {
	t.Helper()
	return opener(func(*testing.T) *testenv.NATSServer { return srv }, cfg)(t)(t)
}

var testMeta = func() domain.Meta {
	return domain.Meta{
		Time:  time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Actor: domain.Actor{Type: domain.ActorOperator, ID: "test"}, RequestID: "req-1",
		NewID: uuid.NewString,
	}
}

func newKeyEvent(t *testing.T, projectID string) domain.Event {
	t.Helper()
	e, err := domain.DecideCreateKey(domain.CreateKey{
		ProjectID: projectID, KeyID: uuid.NewString(), UserID: "user-1", Description: "first",
		SecretHash: "00", LastFour: "abcd",
	}, testMeta())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func update(t *testing.T, created []domain.Event, u domain.UpdateKey) []domain.Event {
	t.Helper()
	k, err := domain.FoldKey(created)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := k.DecideUpdate(u, testMeta())
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func ptr[T any](v T) *T { return &v }

func testEventKey(t *testing.T) []byte {
	t.Helper()
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	h, err := domain.NewHasher(secret)
	if err != nil {
		t.Fatal(err)
	}
	return h.EventKey()
}

// macUnder is an event's MAC as docs/events.md specifies it, under any key.
func macUnder(t *testing.T, key []byte, subject string, data []byte) string {
	t.Helper()
	h := hmac.New(sha256.New, key)
	_ = binary.Write(h, binary.BigEndian, uint32(len(subject)))
	h.Write([]byte(subject))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// TestForgedEventsAreNotEvents: a message on an event subject is an event only if a store
// with the deployment's event key wrote it there, unchanged. Forged (no MAC, another key's
// MAC), altered and re-addressed messages are refused by every read, and the key's real
// events are unaffected.
func TestForgedEventsAreNotEvents(t *testing.T) {
	t.Parallel()
	ns := testenv.NATS(t)
	key := testEventKey(t)
	s := openStore(t, ns, eventstore.Config{EventKey: key})
	if s.AuthenticatedFrom() != 1 {
		t.Fatalf("a new stream is authenticated from sequence %d, want 1 (the marker)", s.AuthenticatedFrom())
	}
	ctx := context.Background()
	project := uuid.NewString()
	created := newKeyEvent(t, project)
	if _, err := s.AppendKeyEvents(ctx, 0, []domain.Event{created}); err != nil {
		t.Fatal(err)
	}
	other := newKeyEvent(t, project)
	if _, err := s.AppendKeyEvents(ctx, 0, []domain.Event{other}); err != nil {
		t.Fatal(err)
	}
	genuine := mustLoadKey(t, s, project, created.KeyID)[0]
	str, err := s.JetStream().Stream(ctx, s.StreamName())
	if err != nil {
		t.Fatal(err)
	}
	msg, err := str.GetMsg(ctx, genuine.Seq)
	if err != nil {
		t.Fatal(err)
	}
	mac := msg.Header.Get(eventstore.HeaderMAC)
	if len(mac) != 64 {
		t.Fatalf("appended event carries %s %q, want 64 hex digits", eventstore.HeaderMAC, mac)
	}

	rename := update(t, []domain.Event{created}, domain.UpdateKey{Description: ptr("forged")})[0]
	forgedBody, err := domain.MarshalEvent(rename)
	if err != nil {
		t.Fatal(err)
	}
	subject := msg.Subject[:strings.LastIndexByte(msg.Subject, '.')+1] + string(domain.TypeDescriptionChanged)
	otherKeySubject := "keyledger.key." + project + "." + other.KeyID + ".KeyCreated"
	otherProjectSubject := "keyledger.key." + uuid.NewString() + "." + created.KeyID + ".KeyCreated"
	altered := bytes.Replace(genuine.Raw, []byte(`"first"`), []byte(`"frist"`), 1)

	cases := []struct {
		name, subject string
		data          []byte
		hdr           nats.Header
	}{
		{"no MAC", subject, forgedBody, nil},
		{"a MAC under another key", subject, forgedBody, nats.Header{eventstore.HeaderMAC: {macUnder(t, testEventKey(t), subject, forgedBody)}}},
		{"the genuine MAC on altered bytes", msg.Subject, altered, nats.Header{eventstore.HeaderMAC: {mac}}},
		{"a genuine event re-addressed to another key", otherKeySubject, genuine.Raw, nats.Header{eventstore.HeaderMAC: {mac}}},
		{"a genuine event re-addressed to another project", otherProjectSubject, genuine.Raw, nats.Header{eventstore.HeaderMAC: {mac}}},
		{"a MAC that is not hex", subject, forgedBody, nats.Header{eventstore.HeaderMAC: {strings.Repeat("zz", 32)}}},
	}
	for _, c := range cases {
		m := nats.NewMsg(c.subject)
		m.Data = c.data
		for k, v := range c.hdr {
			m.Header[k] = v
		}
		// Published as any JetStream client can, and stored before the reads below.
		if _, err := s.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	// Every read: a subscription from the start, and the key loads of the command side.
	var refused []eventstore.RecordedEvent
	if _, err := s.ReadRange(ctx, 1, 0, func(r eventstore.RecordedEvent) error {
		if r.Err != nil {
			refused = append(refused, r)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(refused) != len(cases) {
		t.Fatalf("refused %d messages, want the %d forged ones: %+v", len(refused), len(cases), refused)
	}
	for i, r := range refused {
		if !errors.Is(r.Err, eventstore.ErrNotAuthentic) || !errors.Is(r.Err, domain.ErrInvalidEvent) {
			t.Errorf("%s: %v, want ErrNotAuthentic", cases[i].name, r.Err)
		}
	}
	for _, k := range []domain.Event{created, other} {
		recs := mustLoadKey(t, s, project, k.KeyID)
		var events int
		for _, r := range recs {
			if r.Err == nil {
				events++
			}
		}
		if events != 1 {
			t.Errorf("key %s loads %d valid events, want its one KeyCreated: %+v", k.KeyID, events, recs)
		}
	}
	// A store with another deployment's key refuses the stream rather than start afresh
	// (which would take every earlier message for a legacy event).
	if _, err := eventstore.Open(ctx, ns.Connect(t), eventstore.Config{EventKey: testEventKey(t)}); !errors.Is(err, eventstore.ErrWrongSecret) {
		t.Errorf("open with another deployment's key: %v, want ErrWrongSecret", err)
	}
}

// TestLegacyStreamKeepsWorking: events a store without an event key wrote before (a stream
// from before events were authenticated) are accepted; the marker then records where
// authentication begins, and unauthenticated messages after it are refused.
func TestLegacyStreamKeepsWorking(t *testing.T) {
	t.Parallel()
	ns := testenv.NATS(t)
	ctx := context.Background()
	legacy := openStore(t, ns, eventstore.Config{})
	project := uuid.NewString()
	created := newKeyEvent(t, project)
	if _, err := legacy.AppendKeyEvents(ctx, 0, []domain.Event{created}); err != nil {
		t.Fatal(err)
	}
	key := testEventKey(t)
	s := openStore(t, ns, eventstore.Config{EventKey: key})
	if s.AuthenticatedFrom() != 2 {
		t.Fatalf("cut-over at %d, want 2 (after the one legacy event)", s.AuthenticatedFrom())
	}
	if again := openStore(t, ns, eventstore.Config{EventKey: key}); again.AuthenticatedFrom() != 2 {
		t.Fatalf("a second store finds the cut-over at %d, want the same marker at 2", again.AuthenticatedFrom())
	}
	renames := update(t, []domain.Event{created}, domain.UpdateKey{Description: ptr("after the cut-over")})
	if _, err := s.AppendKeyEvents(ctx, 1, renames); err != nil {
		t.Fatal(err)
	}
	// An old keysd still writing without MACs after the cut-over is refused.
	later := update(t, append([]domain.Event{created}, renames...), domain.UpdateKey{Revoked: ptr(true)})
	if _, err := legacy.AppendKeyEvents(ctx, 3, later); err != nil {
		t.Fatal(err)
	}
	recs := mustLoadKey(t, s, project, created.KeyID)
	if len(recs) != 3 || recs[0].Err != nil || recs[1].Err != nil || !errors.Is(recs[2].Err, eventstore.ErrNotAuthentic) {
		t.Fatalf("loaded %+v; want the legacy event and the authenticated rename accepted, the unauthenticated revocation refused", recs)
	}
}

func mustLoadKey(t *testing.T, s *eventstore.Store, project, key string) []eventstore.RecordedEvent {
	t.Helper()
	recs, err := s.LoadKey(context.Background(), project, key)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// TestProjectSubjectGarbage: whatever else is published on a project's subjects, a project is
// its first valid creation; a project with none is not found (never an error that would make
// its requests fail with 5xx).
func TestProjectSubjectGarbage(t *testing.T) {
	t.Parallel()
	ns := testenv.NATS(t)
	ctx := context.Background()
	s := openStore(t, ns, eventstore.Config{EventKey: testEventKey(t)})
	e, err := domain.DecideCreateProject(domain.CreateProject{
		ProjectID: uuid.NewString(), Name: "acme", ServerKeyID: uuid.NewString(), ServerKeyHash: "00",
	}, testMeta())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendProjectEvent(ctx, e); err != nil {
		t.Fatal(err)
	}
	garbageOnly := uuid.NewString()
	for _, subject := range []string{
		"keyledger.project." + e.ProjectID + ".ProjectCreated", "keyledger.project." + e.ProjectID + ".x",
		"keyledger.project." + garbageOnly + ".ProjectCreated", "keyledger.project." + garbageOnly + ".KeyCreated",
	} {
		if _, err := s.JetStream().Publish(ctx, subject, []byte(`{"garbage": true`)); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := s.LoadProject(ctx, e.ProjectID); err != nil || p.Name != "acme" {
		t.Errorf("project with garbage after its creation: %+v, %v; want it as created", p, err)
	}
	if _, err := s.LoadProject(ctx, garbageOnly); !errors.Is(err, domain.ErrProjectNotFound) || eventstore.IsUnavailable(err) {
		t.Errorf("project id with only garbage: %v, want ErrProjectNotFound", err)
	}
}
