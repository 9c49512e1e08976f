// Package storetest is the event-store conformance suite, exported in the shape of
// watermill's tests.TestPubSub: TestStore(t, factory) runs every guarantee of
// eventstore.Store against the servers the factory starts (in-process, a separate
// nats-server process, group commit on).
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

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

// Opener opens stores on one fresh server and stream; each call is another process's view
// of the same stream (as a second keysd opens it).
type Opener func(t *testing.T) *eventstore.Store

// TestStore runs the event-store conformance suite: newServer starts a fresh server (or
// stream) for each test and returns how to open stores on it. Every guarantee of
// eventstore.Store is tested here once and run against each kind of server.
func TestStore(t *testing.T, newServer func(t *testing.T) Opener) {
	ctx := context.Background()

	t.Run("append and load one key", func(t *testing.T) {
		s := newServer(t)(t)
		p := uuid.NewString()
		created := newKeyEvent(t, p)
		seq1, err := s.AppendKeyEvents(ctx, 0, []domain.Event{created})
		if err != nil {
			t.Fatalf("append KeyCreated: %v", err)
		}
		both := update(t, []domain.Event{created}, domain.UpdateKey{Description: ptr("second"), Revoked: ptr(true)})
		if len(both) != 2 {
			t.Fatalf("PATCH with both fields decided %d events, want 2", len(both))
		}
		seq3, err := s.AppendKeyEvents(ctx, seq1, both)
		if err != nil {
			t.Fatalf("append two events: %v", err)
		}
		if seq3 != seq1+2 {
			t.Fatalf("last seq %d, want %d", seq3, seq1+2)
		}
		recs, err := s.LoadKey(ctx, p, created.KeyID)
		if err != nil {
			t.Fatal(err)
		}
		var types []domain.EventType
		for _, r := range recs {
			if r.Err != nil {
				t.Fatalf("decode %d: %v", r.Seq, r.Err)
			}
			types = append(types, r.Event.Type)
		}
		want := []domain.EventType{domain.TypeKeyCreated, domain.TypeDescriptionChanged, domain.TypeKeyRevoked}
		if fmt.Sprint(types) != fmt.Sprint(want) {
			t.Fatalf("loaded %v, want %v", types, want)
		}
		if _, err := s.LoadKey(ctx, p, uuid.NewString()); !errors.Is(err, domain.ErrKeyNotFound) {
			t.Fatalf("unknown key: %v, want ErrKeyNotFound", err)
		}
	})

	t.Run("load a key's events after a sequence", func(t *testing.T) {
		s := newServer(t)(t)
		p := uuid.NewString()
		created := newKeyEvent(t, p)
		seq1, err := s.AppendKeyEvents(ctx, 0, []domain.Event{created})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendKeyEvents(ctx, 0, []domain.Event{newKeyEvent(t, p)}); err != nil { // another key between
			t.Fatal(err)
		}
		both := update(t, []domain.Event{created}, domain.UpdateKey{Description: ptr("second"), Revoked: ptr(true)})
		seq3, err := s.AppendKeyEvents(ctx, seq1, both)
		if err != nil {
			t.Fatal(err)
		}
		tail, err := s.LoadKeyAfter(ctx, p, created.KeyID, seq1)
		if err != nil {
			t.Fatal(err)
		}
		if len(tail) != 2 || tail[0].Event.Type != domain.TypeDescriptionChanged || tail[1].Seq != seq3 {
			t.Fatalf("events after %d: %d, want the rename and the revocation ending at %d", seq1, len(tail), seq3)
		}
		if tail, err := s.LoadKeyAfter(ctx, p, created.KeyID, seq3); err != nil || len(tail) != 0 {
			t.Fatalf("events after the last: %d, %v; want none", len(tail), err)
		}
	})

	t.Run("stale expected sequence is a conflict and appends nothing", func(t *testing.T) {
		s := newServer(t)(t)
		created := newKeyEvent(t, uuid.NewString())
		seq1, err := s.AppendKeyEvents(ctx, 0, []domain.Event{created})
		if err != nil {
			t.Fatal(err)
		}
		rename := update(t, []domain.Event{created}, domain.UpdateKey{Description: ptr("a")})
		if _, err := s.AppendKeyEvents(ctx, seq1, rename); err != nil {
			t.Fatal(err)
		}
		before, _ := s.LastSeq(ctx)
		// A second writer that loaded the same state: both a single event and a batch lose.
		stale := update(t, []domain.Event{created}, domain.UpdateKey{Description: ptr("b")})
		if _, err := s.AppendKeyEvents(ctx, seq1, stale); !errors.Is(err, eventstore.ErrConflict) {
			t.Fatalf("stale single append: %v, want ErrConflict", err)
		}
		staleBatch := update(t, []domain.Event{created}, domain.UpdateKey{Description: ptr("c"), Revoked: ptr(true)})
		if _, err := s.AppendKeyEvents(ctx, seq1, staleBatch); !errors.Is(err, eventstore.ErrConflict) {
			t.Fatalf("stale batch append: %v, want ErrConflict", err)
		}
		if _, err := s.AppendKeyEvents(ctx, 0, []domain.Event{newKeyEventWithID(t, created)}); !errors.Is(err, eventstore.ErrConflict) {
			t.Fatalf("second creation of one key: %v, want ErrConflict", err)
		}
		after, _ := s.LastSeq(ctx)
		if after != before {
			t.Fatalf("rejected appends moved the stream from %d to %d", before, after)
		}
	})

	t.Run("a retried append is stored once", func(t *testing.T) {
		s := newServer(t)(t)
		created := newKeyEvent(t, uuid.NewString())
		seq1, err := s.AppendKeyEvents(ctx, 0, []domain.Event{created})
		if err != nil {
			t.Fatal(err)
		}
		again, err := s.AppendKeyEvents(ctx, 0, []domain.Event{created})
		if err != nil || again != seq1 {
			t.Fatalf("retry of KeyCreated: seq %d err %v, want seq %d and no error", again, err, seq1)
		}
		both := update(t, []domain.Event{created}, domain.UpdateKey{Description: ptr("x"), Revoked: ptr(true)})
		seq3, err := s.AppendKeyEvents(ctx, seq1, both)
		if err != nil {
			t.Fatal(err)
		}
		again, err = s.AppendKeyEvents(ctx, seq1, both)
		if err != nil || again != seq3 {
			t.Fatalf("retry of a batch: seq %d err %v, want %d", again, err, seq3)
		}
		recs, _ := s.LoadKey(ctx, created.ProjectID, created.KeyID)
		if len(recs) != 3 {
			t.Fatalf("key has %d events after retries, want 3", len(recs))
		}
	})

	t.Run("concurrent writers of one key never both win", func(t *testing.T) {
		s := newServer(t)(t)
		created := newKeyEvent(t, uuid.NewString())
		seq1, err := s.AppendKeyEvents(ctx, 0, []domain.Event{created})
		if err != nil {
			t.Fatal(err)
		}
		var wins, conflicts atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				evs := update(t, []domain.Event{created}, domain.UpdateKey{Description: ptr(fmt.Sprint("writer ", i))})
				_, err := s.AppendKeyEvents(ctx, seq1, evs)
				switch {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, eventstore.ErrConflict):
					conflicts.Add(1)
				default:
					t.Errorf("writer %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 || conflicts.Load() != 15 {
			t.Fatalf("%d wins and %d conflicts, want 1 and 15", wins.Load(), conflicts.Load())
		}
		recs, _ := s.LoadKey(ctx, created.ProjectID, created.KeyID)
		for i, r := range recs {
			if r.Event.Version != i+1 {
				t.Fatalf("event %d has version %d", i, r.Event.Version)
			}
		}
	})

	t.Run("projects are created once", func(t *testing.T) {
		s := newServer(t)(t)
		e, err := domain.DecideCreateProject(domain.CreateProject{
			ProjectID: uuid.NewString(), Name: "p", ServerKeyID: uuid.NewString(), ServerKeyHash: "aa",
		}, testMeta())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendProjectEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
		other := e
		other.ID = uuid.NewString()
		if _, err := s.AppendProjectEvent(ctx, other); !errors.Is(err, domain.ErrProjectExists) {
			t.Fatalf("second creation: %v, want ErrProjectExists", err)
		}
		p, err := s.LoadProject(ctx, e.ProjectID)
		if err != nil || p.Name != "p" || p.ServerKeyHash != "aa" {
			t.Fatalf("load project: %+v, %v", p, err)
		}
		if _, err := s.LoadProject(ctx, uuid.NewString()); !errors.Is(err, domain.ErrProjectNotFound) {
			t.Fatalf("unknown project: %v", err)
		}
	})

	t.Run("the stream refuses deletes, purges and limits", func(t *testing.T) {
		s := newServer(t)(t)
		created := newKeyEvent(t, uuid.NewString())
		seq, err := s.AppendKeyEvents(ctx, 0, []domain.Event{created})
		if err != nil {
			t.Fatal(err)
		}
		str, err := s.JetStream().Stream(ctx, s.StreamName())
		if err != nil {
			t.Fatal(err)
		}
		if err := str.DeleteMsg(ctx, seq); err == nil {
			t.Fatal("deleting an event succeeded")
		}
		if err := str.Purge(ctx); err == nil {
			t.Fatal("purging the stream succeeded")
		}
		cfg := str.CachedInfo().Config
		if !cfg.DenyDelete || !cfg.DenyPurge || cfg.AllowRollup || cfg.MaxAge != 0 || cfg.MaxMsgs != -1 ||
			cfg.MaxBytes != -1 || cfg.MaxMsgsPerSubject != -1 || cfg.Retention != jetstream.LimitsPolicy || cfg.AllowMsgTTL {
			t.Fatalf("stream config can drop events: %+v", cfg)
		}
		if _, err := s.LoadKey(ctx, created.ProjectID, created.KeyID); err != nil {
			t.Fatalf("event gone after delete/purge attempts: %v", err)
		}
	})

	t.Run("subscribe and read ranges in stream order", func(t *testing.T) {
		s := newServer(t)(t)
		p := uuid.NewString()
		var last uint64
		for range 5 {
			seq, err := s.AppendKeyEvents(ctx, 0, []domain.Event{newKeyEvent(t, p)})
			if err != nil {
				t.Fatal(err)
			}
			last = seq
		}
		sub, err := s.Subscribe(ctx, 3)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Stop()
		for want := uint64(3); want <= last; want++ {
			r, err := sub.Next(ctx, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if r.Seq != want || r.Err != nil {
				t.Fatalf("got seq %d (err %v), want %d", r.Seq, r.Err, want)
			}
			if want == last && r.Pending != 0 {
				t.Fatalf("pending %d at the end", r.Pending)
			}
		}
		var seen []uint64
		read, err := s.ReadRange(ctx, 2, 4, func(r eventstore.RecordedEvent) error {
			seen = append(seen, r.Seq)
			return nil
		})
		if err != nil || read != 4 || fmt.Sprint(seen) != "[2 3 4]" {
			t.Fatalf("ReadRange 2..4: read %d seen %v err %v", read, seen, err)
		}
	})

	t.Run("garbage on an event subject is delivered as an error, not a stop", func(t *testing.T) {
		open := newServer(t)
		s := open(t)
		p := uuid.NewString()
		if _, err := s.AppendKeyEvents(ctx, 0, []domain.Event{newKeyEvent(t, p)}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.JetStream().Publish(ctx, "keyledger.key."+p+".x.KeyRevoked", []byte("not json")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendKeyEvents(ctx, 0, []domain.Event{newKeyEvent(t, p)}); err != nil {
			t.Fatal(err)
		}
		var bad, good int
		if _, err := s.ReadRange(ctx, 1, 0, func(r eventstore.RecordedEvent) error {
			switch {
			case r.Control: // the authentication marker
			case r.Err != nil:
				bad++
			default:
				good++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if bad != 1 || good != 2 {
			t.Fatalf("read %d good and %d bad messages, want 2 and 1", good, bad)
		}
	})

	t.Run("a refused message is set aside once, outside the event stream", func(t *testing.T) {
		open := newServer(t)
		s := open(t)
		p := uuid.NewString()
		subject := "keyledger.key." + p + ".x.KeyRevoked"
		// Published as a misbehaving client would, but acknowledged, so it is stored before
		// the read below starts.
		if _, err := s.JetStream().Publish(ctx, subject, []byte(`{"type":"KeyRevoked"`)); err != nil {
			t.Fatal(err)
		}
		var garbage eventstore.RecordedEvent
		if _, err := s.ReadRange(ctx, 1, 0, func(r eventstore.RecordedEvent) error { garbage = r; return nil }); err != nil {
			t.Fatal(err)
		}
		if garbage.Err == nil || garbage.Subject != subject {
			t.Fatalf("read %+v, want the garbage on %s with an error", garbage, subject)
		}
		before, err := s.LastSeq(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range []bool{false, true, true} {
			// A second Open (another process) must find the dead-letter stream as it is.
			already, err := open(t).SetAside(ctx, eventstore.DeadLetterOf(garbage, "projector"))
			if err != nil || already != want {
				t.Fatalf("SetAside #%d = %v, %v; want already=%v", i+1, already, err, want)
			}
		}
		if _, err := s.SetAside(ctx, eventstore.DeadLetterOf(garbage, "events-tail")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SetAside(ctx, eventstore.DeadLetterOf(garbage, "not.a.token")); err == nil {
			t.Fatal("SetAside accepted a consumer name with dots")
		}
		if after, err := s.LastSeq(ctx); err != nil || after != before {
			t.Fatalf("event stream last sequence %d -> %d (%v): setting aside must not touch it", before, after, err)
		}
		dead, err := s.DeadLetters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 2 {
			t.Fatalf("%d dead letters, want one per consumer: %+v", len(dead), dead)
		}
		for i, consumer := range []string{"projector", "events-tail"} {
			d := dead[i]
			if d.Consumer != consumer || d.Seq != garbage.Seq || d.Subject != subject || string(d.Raw) != `{"type":"KeyRevoked"` ||
				!strings.Contains(d.Reason, "invalid event") || !d.Time.Equal(garbage.Time) {
				t.Errorf("dead letter %d = %+v, want the garbage set aside by %s with its reason", i, d, consumer)
			}
		}
	})
}

// newKeyEventWithID is another KeyCreated for the same key id (a second creation).
func newKeyEventWithID(t *testing.T, e domain.Event) domain.Event {
	t.Helper()
	again, err := domain.DecideCreateKey(domain.CreateKey{
		ProjectID: e.ProjectID, KeyID: e.KeyID, UserID: "someone-else", SecretHash: "11", LastFour: "wxyz",
	}, testMeta())
	if err != nil {
		t.Fatal(err)
	}
	return again
}
