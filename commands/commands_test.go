package commands_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
)

var caller = commands.Caller{Actor: domain.Actor{Type: domain.ActorServerKey, ID: "sk"}, RequestID: "req"}

func setup(t *testing.T) (*eventstore.Store, *domain.Hasher) {
	t.Helper()
	store, err := eventstore.Open(context.Background(), testenv.NATS(t).Connect(t), eventstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := domain.NewHasher([]byte(strings.Repeat("s", 32)))
	if err != nil {
		t.Fatal(err)
	}
	return store, h
}

func newHandler(t *testing.T, store *eventstore.Store, h *domain.Hasher, states commands.KeyStates, attempts int) *commands.Handler {
	t.Helper()
	cmds, err := commands.New(store, states, h, commands.Config{MaxAttempts: attempts})
	if err != nil {
		t.Fatal(err)
	}
	return cmds
}

// readOnly is an index that answers with lookup and learns nothing from commands.
type readOnly func(ctx context.Context, p, k string) (domain.KeySnapshot, uint64, error)

func (r readOnly) KeyState(ctx context.Context, p, k string) (domain.KeySnapshot, uint64, error) {
	return r(ctx, p, k)
}

func (readOnly) Remember(domain.KeySnapshot, uint64, uint64) {}

// frozen is an index that never learns anything after the key's creation: the worst stale
// state there can be.
func frozen(created commands.Result) readOnly {
	return func(context.Context, string, string) (domain.KeySnapshot, uint64, error) {
		return created.Key, created.Seq, nil
	}
}

// ownWrites is an index that holds what its instance remembered, in front of fallback.
type ownWrites struct {
	mu       sync.Mutex
	held     map[string]commands.Result
	fallback func(ctx context.Context, p, k string) (domain.KeySnapshot, uint64, error)
}

func (o *ownWrites) KeyState(ctx context.Context, p, k string) (domain.KeySnapshot, uint64, error) {
	o.mu.Lock()
	r, ok := o.held[k]
	o.mu.Unlock()
	if ok {
		return r.Key, r.Seq, nil
	}
	return o.fallback(ctx, p, k)
}

func (o *ownWrites) Remember(key domain.KeySnapshot, seq, _ uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.held == nil {
		o.held = map[string]commands.Result{}
	}
	if seq > o.held[key.ID].Seq {
		o.held[key.ID] = commands.Result{Key: key, Seq: seq}
	}
}

func desc(s string) domain.UpdateKey { return domain.UpdateKey{Description: &s} }

func TestCreateKeyPutsNoSecretOnTheStream(t *testing.T) {
	store, h := setup(t)
	cmds := newHandler(t, store, h, nil, 0)
	c := caller
	c.ProjectID = "5d7a4c1e-2b9f-4e8a-9c3d-1f2e3a4b5c6d"
	k, err := cmds.CreateKey(context.Background(), c, commands.NewKey{UserID: "u", Description: "d"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := domain.ParseSecretKey(k.Secret); err != nil {
		t.Fatalf("secret %q does not parse: %v", k.Secret[:6], err)
	}
	recs, err := store.LoadKey(context.Background(), c.ProjectID, k.Key.ID)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(recs[0].Raw), k.Secret) || !h.SecretKeyMatches(k.Secret, recs[0].Event.Data.(domain.KeyCreated).SecretHash) {
		t.Fatalf("KeyCreated must carry the keyed hash and not the secret: %s", recs[0].Raw)
	}
}

// Writers that start from stale state (two instances, a lagging read model) lose the race,
// reload from the stream and still apply every change exactly once.
func TestStaleStateIsReloadedAndNoUpdateIsLost(t *testing.T) {
	store, h := setup(t)
	ctx := context.Background()
	c := caller
	c.ProjectID = "5d7a4c1e-2b9f-4e8a-9c3d-1f2e3a4b5c6d"
	created, err := newHandler(t, store, h, nil, 0).CreateKey(ctx, c, commands.NewKey{UserID: "u", Description: "v0"})
	if err != nil {
		t.Fatal(err)
	}
	instances := []*commands.Handler{
		newHandler(t, store, h, frozen(created.Result), 50),
		newHandler(t, store, h, frozen(created.Result), 50),
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := instances[i%2].UpdateKey(ctx, c, created.Key.ID, desc(fmt.Sprint("d", i)))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("update: %v", err)
		}
	}
	recs, err := store.LoadKey(ctx, c.ProjectID, created.Key.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 41 {
		t.Fatalf("%d events, want 41 (creation and 40 renames)", len(recs))
	}
	seen := map[string]bool{}
	for i, r := range recs {
		if r.Event.Version != i+1 {
			t.Fatalf("event %d has version %d", i, r.Event.Version)
		}
		if d, ok := r.Event.Data.(domain.DescriptionChanged); ok {
			if seen[d.New] {
				t.Fatalf("%s applied twice", d.New)
			}
			seen[d.New] = true
			if prev := recs[i-1].Event; i > 1 && prev.Data.(domain.DescriptionChanged).New != d.Old {
				t.Fatalf("event %d changed %q, but the description was %q", i, d.Old, prev.Data.(domain.DescriptionChanged).New)
			}
		}
	}
}

func TestContentionIsReportedAfterBoundedAttempts(t *testing.T) {
	store, h := setup(t)
	ctx := context.Background()
	c := caller
	c.ProjectID = "5d7a4c1e-2b9f-4e8a-9c3d-1f2e3a4b5c6d"
	created, err := newHandler(t, store, h, nil, 0).CreateKey(ctx, c, commands.NewKey{UserID: "u", Description: "v0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newHandler(t, store, h, nil, 0).UpdateKey(ctx, c, created.Key.ID, desc("moved on")); err != nil {
		t.Fatal(err)
	}
	before, _ := store.LastSeq(ctx)
	_, err = newHandler(t, store, h, frozen(created.Result), 1).UpdateKey(ctx, c, created.Key.ID, desc("stale"))
	if !errors.Is(err, commands.ErrContention) {
		t.Fatalf("one attempt from stale state: %v, want ErrContention", err)
	}
	if after, _ := store.LastSeq(ctx); after != before {
		t.Fatal("a failed command appended events")
	}
}

func TestUnknownKeyAndConflicts(t *testing.T) {
	store, h := setup(t)
	ctx := context.Background()
	cmds := newHandler(t, store, h, nil, 0)
	c := caller
	c.ProjectID = "5d7a4c1e-2b9f-4e8a-9c3d-1f2e3a4b5c6d"
	if _, err := cmds.UpdateKey(ctx, c, "8f14e45f-ceea-467f-a0e6-b1c2d3e4f5a6", desc("x")); !errors.Is(err, domain.ErrKeyNotFound) {
		t.Fatalf("unknown key: %v", err)
	}
	created, _ := cmds.CreateKey(ctx, c, commands.NewKey{UserID: "u"})
	other := c
	other.ProjectID = "00000000-0000-4000-8000-000000000001"
	if _, err := cmds.UpdateKey(ctx, other, created.Key.ID, desc("x")); !errors.Is(err, domain.ErrKeyNotFound) {
		t.Fatalf("another project's key: %v", err)
	}
	yes, no := true, false
	if _, err := cmds.UpdateKey(ctx, c, created.Key.ID, domain.UpdateKey{Revoked: &yes}); err != nil {
		t.Fatal(err)
	}
	if _, err := cmds.UpdateKey(ctx, c, created.Key.ID, domain.UpdateKey{Revoked: &no}); !errors.Is(err, domain.ErrKeyAlreadyRevoked) {
		t.Fatalf("un-revoke: %v", err)
	}
}

func TestCreateProject(t *testing.T) {
	store, h := setup(t)
	cmds := newHandler(t, store, h, nil, 0)
	p, err := cmds.CreateProject(context.Background(), domain.Actor{Type: domain.ActorOperator, ID: "op"}, "acme")
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.LoadProject(context.Background(), p.Project.ID)
	if err != nil || !h.ServerKeyMatches(p.ServerKey, got.ServerKeyHash) || got.Name != "acme" {
		t.Fatalf("project on the stream: %+v %v", got, err)
	}
	if _, err := cmds.CreateProject(context.Background(), domain.Actor{}, ""); err == nil {
		t.Fatal("a project without a name was created")
	}
}

// A no-op appends nothing, so no concurrency check can catch a change made through another
// instance since this one last wrote the key: the answer must still show that change (the
// read model is current for every acknowledged change).
func TestNoOpAnswersWithChangesMadeElsewhere(t *testing.T) {
	store, h := setup(t)
	ctx := context.Background()
	c := caller
	c.ProjectID = "5d7a4c1e-2b9f-4e8a-9c3d-1f2e3a4b5c6d"
	// Each instance's index holds what it wrote itself, in front of a read model that has
	// applied every acknowledged event.
	current := func(ctx context.Context, p, k string) (domain.KeySnapshot, uint64, error) {
		key, seq, err := newHandler(t, store, h, nil, 0).LoadKey(ctx, p, k)
		if err != nil {
			return domain.KeySnapshot{}, 0, err
		}
		return key.Snapshot(), seq, nil
	}
	a := newHandler(t, store, h, &ownWrites{fallback: current}, 0)
	b := newHandler(t, store, h, &ownWrites{fallback: current}, 0)
	created, err := b.CreateKey(ctx, c, commands.NewKey{UserID: "u", Description: "v0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.UpdateKey(ctx, c, created.Key.ID, desc("x")); err != nil {
		t.Fatal(err)
	}
	revoked := true
	if _, err := a.UpdateKey(ctx, c, created.Key.ID, domain.UpdateKey{Revoked: &revoked}); err != nil {
		t.Fatal(err)
	}
	res, err := b.UpdateKey(ctx, c, created.Key.ID, desc("x"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Key.RevokedAt == nil {
		t.Fatalf("a rename to the same description through b answers with the key unrevoked: %+v", res.Key)
	}
	active := false
	if _, err := b.UpdateKey(ctx, c, created.Key.ID, domain.UpdateKey{Revoked: &active}); !errors.Is(err, domain.ErrKeyAlreadyRevoked) {
		t.Fatalf("revoked:false through b after a revoke through a: %v, want ErrKeyAlreadyRevoked", err)
	}
}

// The same when the other instance's read model lags behind (per-process read models on one
// external NATS): the no-op is checked against the stream, not against the read model.
func TestNoOpIsCheckedAgainstTheStreamNotALaggingReadModel(t *testing.T) {
	store, h := setup(t)
	ctx := context.Background()
	c := caller
	c.ProjectID = "5d7a4c1e-2b9f-4e8a-9c3d-1f2e3a4b5c6d"
	created, err := newHandler(t, store, h, nil, 0).CreateKey(ctx, c, commands.NewKey{UserID: "u", Description: "v0"})
	if err != nil {
		t.Fatal(err)
	}
	a := newHandler(t, store, h, frozen(created.Result), 0)
	b := newHandler(t, store, h, frozen(created.Result), 0)
	revoked := true
	if _, err := a.UpdateKey(ctx, c, created.Key.ID, domain.UpdateKey{Revoked: &revoked}); err != nil {
		t.Fatal(err)
	}
	active := false
	if _, err := b.UpdateKey(ctx, c, created.Key.ID, domain.UpdateKey{Revoked: &active}); !errors.Is(err, domain.ErrKeyAlreadyRevoked) {
		t.Fatalf("revoked:false through b, whose read model never saw a's revoke: %v, want ErrKeyAlreadyRevoked", err)
	}
	res, err := b.UpdateKey(ctx, c, created.Key.ID, desc("v0"))
	if err != nil || res.Key.RevokedAt == nil {
		t.Fatalf("a no-op rename through b answers %+v, %v; want the revoked key", res.Key, err)
	}
}

// After a conflict the key is reloaded from the read model's row and the events the stream
// has after it, not from its whole history: a key renamed a million times must not take
// seconds to load under its lock. The read model here marks its rows (a user id the stream
// never had), so the answer shows which load was used; the tail after the row still counts.
func TestReloadAfterAConflictFoldsOnlyTheTailOntoTheReadModel(t *testing.T) {
	store, h := setup(t)
	ctx := context.Background()
	c := caller
	c.ProjectID = "5d7a4c1e-2b9f-4e8a-9c3d-1f2e3a4b5c6d"
	other := newHandler(t, store, h, nil, 0)
	created, err := other.CreateKey(ctx, c, commands.NewKey{UserID: "u", Description: "v0"})
	if err != nil {
		t.Fatal(err)
	}
	renamed, err := other.UpdateKey(ctx, c, created.Key.ID, desc("v1"))
	if err != nil {
		t.Fatal(err)
	}
	// The read model has applied the rename; its row is marked.
	row := renamed.Key
	row.UserID = "from the read model"
	lookup := func(context.Context, string, string) (domain.KeySnapshot, uint64, error) {
		return row, renamed.Seq, nil
	}
	cmds := newHandler(t, store, h, readOnly(lookup), 0)
	// The row becomes stale when the other instance renames the key again, so the next
	// command conflicts and reloads.
	if _, err := cmds.UpdateKey(ctx, c, created.Key.ID, desc("v2")); err != nil {
		t.Fatal(err)
	}
	row = renamed.Key // the read model has not applied v2 and v3 yet
	row.UserID = "from the read model"
	if _, err := other.UpdateKey(ctx, c, created.Key.ID, desc("v3")); err != nil {
		t.Fatal(err)
	}
	res, err := cmds.UpdateKey(ctx, c, created.Key.ID, desc("v4"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Key.UserID != "from the read model" {
		t.Fatalf("reloaded key has user id %q: it was folded from the whole stream, not from the read model's row", res.Key.UserID)
	}
	if res.Key.Description != "v4" || res.Key.Version != 5 {
		t.Fatalf("after the reload: %q version %d, want v4 version 5 (the tail v2, v3 folded in)", res.Key.Description, res.Key.Version)
	}
	recs, err := store.LoadKey(ctx, c.ProjectID, created.Key.ID)
	if err != nil {
		t.Fatal(err)
	}
	last := recs[len(recs)-1]
	if d, ok := last.Event.Data.(domain.DescriptionChanged); !ok || d.Old != "v3" || d.New != "v4" || last.Seq != res.Seq {
		t.Fatalf("last event %+v at %d, want v3 -> v4 at %d", last.Event.Data, last.Seq, res.Seq)
	}
}
