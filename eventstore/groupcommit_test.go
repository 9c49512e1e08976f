package eventstore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/internal/testenv"
)

func groupTestEvents(t testing.TB, projectID string, n int) [][]domain.Event {
	t.Helper()
	meta := domain.Meta{Time: time.Now(), Actor: domain.Actor{Type: domain.ActorOperator, ID: "test"}, NewID: uuid.NewString}
	var out [][]domain.Event
	for range n {
		e, err := domain.DecideCreateKey(domain.CreateKey{
			ProjectID: projectID, KeyID: uuid.NewString(), UserID: "u", Description: "d",
			SecretHash: "00", LastFour: "abcd",
		}, meta)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, []domain.Event{e})
	}
	return out
}

// gatherThenCommit starts one AppendKeyEvents per command while the committer is held, waits
// until all of them are queued, and then lets the committer run: they must go as one batch.
func gatherThenCommit(t *testing.T, s *Store, cmds [][]domain.Event, expected []uint64) ([]uint64, []error) {
	t.Helper()
	// Hold the committer: wait for one still finishing earlier appends to stop, then mark it
	// running so that appends queue up without one.
	for {
		s.gc.mu.Lock()
		if !s.gc.running {
			s.gc.running = true
			s.gc.mu.Unlock()
			break
		}
		s.gc.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	seqs, errs := make([]uint64, len(cmds)), make([]error, len(cmds))
	var wg sync.WaitGroup
	for i := range cmds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seqs[i], errs[i] = s.AppendKeyEvents(context.Background(), expected[i], cmds[i])
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		s.gc.mu.Lock()
		queued := len(s.gc.queue)
		s.gc.mu.Unlock()
		if queued == len(cmds) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d appends queued", queued, len(cmds))
		}
		time.Sleep(time.Millisecond)
	}
	go s.gc.run()
	wg.Wait()
	return seqs, errs
}

func TestGroupCommitSendsConcurrentAppendsAsOneBatch(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, testenv.NATS(t).Connect(t), Config{GroupCommit: true})
	if err != nil {
		t.Fatal(err)
	}
	project := uuid.NewString()
	cmds := groupTestEvents(t, project, 20)
	// One command renames and revokes (two messages) a key created by the batch before.
	first, err := s.AppendKeyEvents(ctx, 0, cmds[0])
	if err != nil {
		t.Fatal(err)
	}
	k, _ := domain.FoldKey(cmds[0])
	desc, revoked := "renamed", true
	two, err := k.DecideUpdate(domain.UpdateKey{Description: &desc, Revoked: &revoked},
		domain.Meta{Time: time.Now(), Actor: domain.Actor{Type: domain.ActorOperator, ID: "t"}, NewID: uuid.NewString})
	if err != nil || len(two) != 2 {
		t.Fatalf("decide: %v (%d events)", err, len(two))
	}
	cmds[0] = two
	expected := make([]uint64, len(cmds))
	expected[0] = first

	seqs, errs := gatherThenCommit(t, s, cmds, expected)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
	}
	if b, c, r := s.gc.batches.Load(), s.gc.commands.Load(), s.gc.retried.Load(); b != 1 || c != 20 || r != 0 {
		t.Fatalf("batches %d, commands %d, retried %d; want 1, 20, 0", b, c, r)
	}
	// Every command's answer is the stream sequence of its own last event.
	for i, cmd := range cmds {
		recs, err := s.LoadKey(ctx, project, cmd[0].KeyID)
		if err != nil {
			t.Fatal(err)
		}
		last := recs[len(recs)-1]
		if last.Seq != seqs[i] || last.Event.ID != cmd[len(cmd)-1].ID {
			t.Fatalf("command %d answered seq %d; its last event %s is at %d (event %s)", i, seqs[i], cmd[len(cmd)-1].ID, last.Seq, last.Event.ID)
		}
	}
	if got, want := len(mustLoad(t, s, project, cmds[0][0].KeyID)), 3; got != want {
		t.Fatalf("renamed key has %d events, want %d", got, want)
	}
}

func TestGroupCommitIsolatesAConflict(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, testenv.NATS(t).Connect(t), Config{GroupCommit: true})
	if err != nil {
		t.Fatal(err)
	}
	project := uuid.NewString()
	cmds := groupTestEvents(t, project, 10)
	// The last command creates a key that already exists: its expectation (no events yet)
	// fails, the server refuses the batch, and the other nine must still land, once each.
	existing := cmds[0]
	if _, err := s.AppendKeyEvents(ctx, 0, existing); err != nil {
		t.Fatal(err)
	}
	cmds[0] = groupTestEvents(t, project, 1)[0]
	again := existing[0]
	again.ID = uuid.NewString()
	cmds = append(cmds, []domain.Event{again})
	before, err := s.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}

	_, errs := gatherThenCommit(t, s, cmds, make([]uint64, len(cmds)))
	for i, err := range errs[:10] {
		if err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
	}
	if !errors.Is(errs[10], ErrConflict) {
		t.Fatalf("creating an existing key: %v, want ErrConflict", errs[10])
	}
	if r := s.gc.retried.Load(); r != 11 {
		t.Fatalf("%d commands sent again alone, want 11", r)
	}
	after, err := s.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after-before != 10 {
		t.Fatalf("stream grew by %d events, want 10", after-before)
	}
	for _, cmd := range cmds[:10] {
		if n := len(mustLoad(t, s, project, cmd[0].KeyID)); n != 1 {
			t.Fatalf("key %s has %d events, want 1", cmd[0].KeyID, n)
		}
	}
}

func mustLoad(t *testing.T, s *Store, project, key string) []RecordedEvent {
	t.Helper()
	recs, err := s.LoadKey(context.Background(), project, key)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// TestGroupCommitNeverBatchesOneKeyTwice: two appends to one key expecting the same sequence
// must not both land. nats-server checks an atomic batch's per-subject expectations against
// the stream before the batch, so the committer must not put them in one batch: the second
// goes in the next and loses there.
func TestGroupCommitNeverBatchesOneKeyTwice(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, testenv.NATS(t).Connect(t), Config{GroupCommit: true})
	if err != nil {
		t.Fatal(err)
	}
	project := uuid.NewString()
	created := groupTestEvents(t, project, 1)[0]
	seq, err := s.AppendKeyEvents(ctx, 0, created)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := domain.FoldKey(created)
	var cmds [][]domain.Event
	for _, d := range []string{"a", "b", "c"} {
		evs, err := k.DecideUpdate(domain.UpdateKey{Description: &d},
			domain.Meta{Time: time.Now(), Actor: domain.Actor{Type: domain.ActorOperator, ID: "t"}, NewID: uuid.NewString})
		if err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, evs)
	}
	cmds = append(cmds, groupTestEvents(t, project, 2)...) // and two other keys
	_, errs := gatherThenCommit(t, s, cmds, []uint64{seq, seq, seq, 0, 0})
	wins := 0
	for i, err := range errs[:3] {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, ErrConflict):
			t.Fatalf("rename %d: %v", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of 3 renames expecting the same sequence landed, want 1", wins)
	}
	if errs[3] != nil || errs[4] != nil {
		t.Fatalf("creations of other keys: %v, %v", errs[3], errs[4])
	}
	if n := len(mustLoad(t, s, project, created[0].KeyID)); n != 2 {
		t.Fatalf("key has %d events, want 2", n)
	}
}
