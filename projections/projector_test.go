package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
)

// Projector tests run a real in-process NATS JetStream server and both read models.

// readModels are the implementations every projector test runs against. open returns a
// read model and a way to open another handle on the same storage (a restarted process,
// or a second instance); the in-process read model has only the one.
var readModels = []struct {
	name string
	open func(t *testing.T) (ReadModel, func() ReadModel)
}{
	{"Memory", func(t *testing.T) (ReadModel, func() ReadModel) {
		m := NewMemory()
		return m, func() ReadModel { return m }
	}},
	{"Postgres", func(t *testing.T) (ReadModel, func() ReadModel) {
		url := testenv.Postgres(t)
		return openPostgres(t, url, PostgresConfig{}), func() ReadModel { return openPostgres(t, url, PostgresConfig{}) }
	}},
}

func forEachReadModel(t *testing.T, test func(t *testing.T, rm ReadModel, reopen func() ReadModel)) {
	for _, m := range readModels {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			rm, reopen := m.open(t)
			test(t, rm, reopen)
		})
	}
}

func TestProjectorProjectsTheStream(t *testing.T) {
	t.Parallel()
	forEachReadModel(t, func(t *testing.T, rm ReadModel, _ func() ReadModel) {
		env := newStreamEnv(t)
		w := env.writer()
		// A backlog before the projector starts.
		p := w.createProject("acme")
		keys := make([]string, 5)
		for i := range keys {
			keys[i], _ = w.createKey(p, "u", fmt.Sprint("key ", i))
		}
		backlog := w.rename(p, keys[0], "renamed")

		proj := NewProjector(env.store, rm, testProjectorConfig())
		if proj.Ready() {
			t.Fatal("Ready before the projector ran")
		}
		env.run(t, proj)
		waitFor(t, proj, backlog)
		eventually(t, "projector ready after catching up", proj.Ready)

		// Live events, each awaited as a request would.
		seq := w.revoke(p, keys[1])
		waitFor(t, proj, seq)
		if v, err := rm.Key(context.Background(), p, keys[1]); err != nil || v.RevokedAt == nil || v.LastSeq != seq {
			t.Fatalf("after WaitFor(%d): key = %+v, %v; want it revoked at sequence %d", seq, v, err, seq)
		}
		both := w.update(p, keys[2], "renamed and revoked", true) // two events, one append
		waitFor(t, proj, both)
		assertMatchesStream(t, env.store, rm)

		st := proj.Stats()
		if st.Position != both || !st.Ready || st.EventsApplied != both || st.Poison != 0 || st.Batches == 0 || st.Lag != 0 {
			t.Errorf("Stats = %+v; want position and events applied %d, ready, no poison, no lag", st, both)
		}
	})
}

func TestProjectorSetsPoisonAside(t *testing.T) {
	t.Parallel()
	forEachReadModel(t, func(t *testing.T, rm ReadModel, _ func() ReadModel) {
		env := newStreamEnv(t)
		w := env.writer()
		proj := env.run(t, NewProjector(env.store, rm, testProjectorConfig()))
		p := w.createProject("acme")
		k, _ := w.createKey(p, "u", "before")

		// Garbage on an event subject: stored by the stream like any message.
		subject := "keyledger.key." + p + "." + newUUID() + ".KeyRevoked"
		if err := env.nc.Publish(subject, []byte("garbage {")); err != nil {
			t.Fatal(err)
		}
		if err := env.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		seq := w.rename(p, k, "after")
		waitFor(t, proj, seq)

		if v, err := rm.Key(context.Background(), p, k); err != nil || v.Description != "after" {
			t.Fatalf("event after the poison message: key = %+v, %v", v, err)
		}
		if st := proj.Stats(); st.Poison != 1 || st.EventsApplied != seq-1 || st.DeadLettered != 1 || st.DeadLetterFailures != 0 {
			t.Errorf("Stats = %+v; want 1 poison message set aside and %d events applied", st, seq-1)
		}
		assertMatchesStream(t, env.store, rm)

		// Another projector reading the same stream from the start (a rebuild, or a second
		// keysd) meets the garbage again and leaves one dead letter all the same.
		again := env.run(t, NewProjector(env.store, NewMemory(), testProjectorConfig()))
		waitFor(t, again, seq)
		if st := again.Stats(); st.Poison != 1 || st.DeadLettered != 0 || st.DeadLetterFailures != 0 {
			t.Errorf("second projector Stats = %+v; want the poison message found already set aside", st)
		}
		dead, err := env.store.DeadLetters(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 1 || dead[0].Subject != subject || string(dead[0].Raw) != "garbage {" || dead[0].Consumer != "projector" ||
			dead[0].Seq != seq-1 || !strings.Contains(dead[0].Reason, "invalid event") {
			t.Fatalf("dead letters %+v, want the garbage (sequence %d) once, with its reason", dead, seq-1)
		}
	})
}

func TestProjectorSurvivesAFailingDeadLetterStream(t *testing.T) {
	t.Parallel()
	env := newStreamEnv(t)
	w := env.writer()
	logs := &testenv.Buffer{}
	cfg := testProjectorConfig(func(c *ProjectorConfig) { c.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	proj := env.run(t, NewProjector(env.store, NewMemory(), cfg))
	p := w.createProject("acme")
	k, _ := w.createKey(p, "u", "before")

	// The dead-letter stream is gone (an operator deleted it) and cannot be made again (another
	// stream took its subjects): setting aside fails.
	js, err := jetstream.New(env.nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(context.Background(), env.store.DeadLetterStream()); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: "SQUATTER", Subjects: []string{env.store.DeadLetterSubjects()}, Storage: jetstream.MemoryStorage,
	}); err != nil {
		t.Fatal(err)
	}
	if err := env.nc.Publish("keyledger.key."+p+"."+newUUID()+".KeyCreated", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	seq := w.rename(p, k, "after")
	waitFor(t, proj, seq)
	if st := proj.Stats(); st.Poison != 1 || st.DeadLettered != 0 || st.DeadLetterFailures != 1 || st.EventsApplied != seq-1 {
		t.Errorf("Stats = %+v; want the poison message skipped, its dead letter failed, and %d events applied", st, seq-1)
	}
	if !strings.Contains(logs.String(), "could not set it aside") || !strings.Contains(logs.String(), fmt.Sprintf("seq=%d", seq-1)) {
		t.Errorf("logs do not report the failed dead letter with its sequence:\n%s", logs)
	}
}

func TestProjectorRestartContinuesFromCheckpoint(t *testing.T) {
	t.Parallel()
	forEachReadModel(t, func(t *testing.T, rm ReadModel, reopen func() ReadModel) {
		env := newStreamEnv(t)
		w := env.writer()
		p := w.createProject("acme")
		k, _ := w.createKey(p, "u", "v1")
		first := w.rename(p, k, "v2")

		proj := NewProjector(env.store, rm, testProjectorConfig())
		stop := env.start(t, proj)
		waitFor(t, proj, first)
		stop()

		// Written while no projector runs.
		k2, _ := w.createKey(p, "u", "while stopped")
		last := w.revoke(p, k)

		restarted := NewProjector(env.store, reopen(), testProjectorConfig())
		env.run(t, restarted)
		waitFor(t, restarted, last)
		if got := restarted.Stats().EventsApplied; got != last-first {
			t.Errorf("restarted projector applied %d events, want the %d written after the checkpoint", got, last-first)
		}
		v, err := rm.Key(context.Background(), p, k)
		if err != nil || v.Version != 3 || v.Description != "v2" || v.RevokedAt == nil {
			t.Errorf("key after restart = %+v, %v; want version 3, v2, revoked", v, err)
		}
		if _, err := rm.Key(context.Background(), p, k2); err != nil {
			t.Errorf("key created while stopped: %v", err)
		}
		assertMatchesStream(t, env.store, rm)
	})
}

func TestProjectorWaitFor(t *testing.T) {
	t.Parallel()
	env := newStreamEnv(t)
	w := env.writer()
	rm := NewMemory()
	proj := NewProjector(env.store, rm, testProjectorConfig())

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := proj.WaitFor(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitFor with a cancelled context = %v, want context.Canceled", err)
	}
	if err := proj.WaitFor(ctx, 0); err != nil {
		t.Fatalf("WaitFor(0) = %v, want nil at once", err)
	}

	// Many waiters for sequences that do not exist yet.
	const n = 40
	errs := make(chan error, n)
	for i := range n {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			errs <- proj.WaitFor(ctx, uint64(i%10+1))
		}()
	}
	env.run(t, proj)
	p := w.createProject("acme")
	k, _ := w.createKey(p, "u", "v0")
	for i := range 8 {
		w.rename(p, k, fmt.Sprint("v", i+1))
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("WaitFor: %v", err)
		}
	}
	if pos := proj.Position(); pos < 10 {
		t.Fatalf("waiters returned at position %d", pos)
	}
}

func TestProjectorsShareOnePostgres(t *testing.T) {
	t.Parallel()
	env := newStreamEnv(t)
	url := testenv.Postgres(t)
	rm1, rm2 := openPostgres(t, url, PostgresConfig{}), openPostgres(t, url, PostgresConfig{})
	proj1 := env.run(t, NewProjector(env.store, rm1, testProjectorConfig()))
	proj2 := env.run(t, NewProjector(env.store, rm2, testProjectorConfig(func(c *ProjectorConfig) { c.MaxBatch = 7 })))

	p := env.writer().createProject("acme")
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		last uint64
	)
	for g := range 4 {
		wg.Go(func() {
			w := env.writer()
			for i := range 15 {
				k, _ := w.createKey(p, fmt.Sprint("user-", g), fmt.Sprint("key ", i))
				seq := w.update(p, k, fmt.Sprint("renamed ", i), i%3 == 0)
				mu.Lock()
				last = max(last, seq)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	waitFor(t, proj1, last)
	waitFor(t, proj2, last)

	// What two projectors built together is what one builds alone.
	alone := NewMemory()
	waitFor(t, env.run(t, NewProjector(env.store, alone, testProjectorConfig())), last)
	assertSameKeys(t, rm1, alone)
	assertMatchesStream(t, env.store, rm2)
}

func TestProjectorSurvivesNATSRestart(t *testing.T) {
	testenv.Heavy(t, "NATS restarts")
	t.Parallel()
	env := newStreamEnv(t)
	w := env.writer()
	rm := NewMemory()
	proj := env.run(t, NewProjector(env.store, rm, testProjectorConfig()))
	p := w.createProject("acme")
	k, _ := w.createKey(p, "u", "before")
	waitFor(t, proj, w.rename(p, k, "before restart"))

	env.ns.Restart(t)

	// The client reconnects on its own; appends fail until it has.
	var seq uint64
	eventually(t, "append after NATS restart", func() bool {
		var err error
		seq, err = w.tryUpdate(p, k, "after restart", false)
		return err == nil
	})
	waitFor(t, proj, seq)
	assertMatchesStream(t, env.store, rm)
}

func TestProjectorFollowsARebuiltReadModel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newStreamEnv(t)
	w := env.writer()
	url := testenv.Postgres(t)
	live := openPostgres(t, url, PostgresConfig{})
	proj := env.run(t, NewProjector(env.store, live, testProjectorConfig()))

	p := w.createProject("acme")
	k, _ := w.createKey(p, "u", "v0")
	for i := range 8 {
		w.rename(p, k, fmt.Sprint("v", i+1))
	}
	waitFor(t, proj, 10)

	// A rebuild (keysctl replay) fills another schema up to sequence 6 and swaps it in.
	rebuilt := openPostgres(t, url, PostgresConfig{Schema: "keyledger_rebuild"})
	var upTo6 []eventstore.RecordedEvent
	if _, err := env.store.ReadRange(ctx, 1, 6, func(r eventstore.RecordedEvent) error {
		upTo6 = append(upTo6, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := rebuilt.Apply(ctx, upTo6); err != nil {
		t.Fatal(err)
	}
	if _, err := rebuilt.pool.Exec(ctx, `ALTER SCHEMA keyledger RENAME TO keyledger_old;
ALTER SCHEMA keyledger_rebuild RENAME TO keyledger`); err != nil {
		t.Fatalf("swap schemas: %v", err)
	}
	if cp, err := live.Checkpoint(ctx); err != nil || cp != 6 {
		t.Fatalf("live read model after the swap: checkpoint %d, %v; want 6", cp, err)
	}

	// The next event finds the read model behind; the projector reads 7 onwards again.
	last := w.rename(p, k, "after the swap")
	eventually(t, "projector past the swap", func() bool { return proj.Position() >= last })
	assertMatchesStream(t, env.store, live)
}

// streamEnv is one test's JetStream server and event store.
type streamEnv struct {
	ns    *testenv.NATSServer
	nc    *nats.Conn
	store *eventstore.Store
}

func newStreamEnv(t *testing.T) *streamEnv {
	t.Helper()
	ns := testenv.NATS(t)
	nc := ns.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := eventstore.Open(ctx, nc, eventstore.Config{})
	if err != nil {
		t.Fatalf("open event store: %v", err)
	}
	return &streamEnv{ns: ns, nc: nc, store: store}
}

// run starts the projector until the test ends.
func (env *streamEnv) run(t *testing.T, p *Projector) *Projector {
	t.Helper()
	env.start(t, p)
	return p
}

// start starts the projector until the test ends; the returned function stops it earlier.
func (env *streamEnv) start(t *testing.T, p *Projector) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func testProjectorConfig(opts ...func(*ProjectorConfig)) ProjectorConfig {
	c := ProjectorConfig{Logger: slog.New(slog.DiscardHandler), IdleWait: 100 * time.Millisecond}
	for _, o := range opts {
		o(&c)
	}
	return c
}

func waitFor(t *testing.T, p *Projector, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.WaitFor(ctx, seq); err != nil {
		t.Fatalf("%v (stats %+v)", err, p.Stats())
	}
}

// eventually polls cond until it holds, failing the test after a generous deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 20s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// streamWriter appends events the way the command side does: decide with the domain on the
// key's current state, append with the key's last sequence as the expectation.
type streamWriter struct {
	t     *testing.T
	store *eventstore.Store
	keys  map[string]*domain.Key
	seqs  map[string]uint64
}

func (env *streamEnv) writer() *streamWriter {
	return &streamWriter{store: env.store, keys: map[string]*domain.Key{}, seqs: map[string]uint64{}}
}

func (w *streamWriter) meta() domain.Meta {
	return domain.Meta{Time: time.Now(), Actor: domain.Actor{Type: domain.ActorOperator, ID: "test"}, RequestID: newUUID(), NewID: newUUID}
}

func (w *streamWriter) createProject(name string) string {
	id := newUUID()
	e, err := domain.DecideCreateProject(domain.CreateProject{ProjectID: id, Name: name, ServerKeyID: newUUID(), ServerKeyHash: "00"}, w.meta())
	must(err)
	_, err = w.store.AppendProjectEvent(context.Background(), e)
	must(err)
	return id
}

func (w *streamWriter) createKey(project, user, description string) (string, uint64) {
	id := newUUID()
	e, err := domain.DecideCreateKey(domain.CreateKey{ProjectID: project, KeyID: id, UserID: user, Description: description, SecretHash: "00", LastFour: "abcd"}, w.meta())
	must(err)
	seq, err := w.store.AppendKeyEvents(context.Background(), 0, []domain.Event{e})
	must(err)
	w.keys[id], err = domain.EvolveKey(nil, e)
	must(err)
	w.seqs[id] = seq
	return id, seq
}

func (w *streamWriter) tryUpdate(project, key, description string, revoke bool) (uint64, error) {
	u := domain.UpdateKey{Description: &description}
	if revoke {
		u.Revoked = &revoke
	}
	events, err := w.keys[key].DecideUpdate(u, w.meta())
	must(err)
	if len(events) == 0 {
		return w.seqs[key], nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	seq, err := w.store.AppendKeyEvents(ctx, w.seqs[key], events)
	if err != nil {
		return 0, err
	}
	for _, e := range events {
		w.keys[key], err = domain.EvolveKey(w.keys[key], e)
		must(err)
	}
	w.seqs[key] = seq
	return seq, nil
}

func (w *streamWriter) update(project, key, description string, revoke bool) uint64 {
	seq, err := w.tryUpdate(project, key, description, revoke)
	must(err)
	return seq
}

func (w *streamWriter) rename(project, key, description string) uint64 {
	return w.update(project, key, description, false)
}

func (w *streamWriter) revoke(project, key string) uint64 {
	return w.update(project, key, w.keys[key].Snapshot().Description, true)
}

// must panics on a failure of the test's own set-up (it may run outside the test goroutine).
func must(err error) {
	if err != nil {
		panic(err)
	}
}

// assertMatchesStream checks that the read model holds exactly the fold of the whole stream
// with the domain's own EvolveKey, at the stream's last sequence.
func assertMatchesStream(t *testing.T, store *eventstore.Store, rm ReadModel) {
	t.Helper()
	ctx := context.Background()
	type ref struct{ project, key string }
	folded := map[ref]KeyView{}
	last, err := store.ReadRange(ctx, 1, 0, func(r eventstore.RecordedEvent) error {
		if r.Err != nil || !isKeyEvent(r.Event) {
			return nil
		}
		id := ref{r.Event.ProjectID, r.Event.KeyID}
		var cur *domain.Key
		if v, ok := folded[id]; ok {
			cur = domain.RestoreKey(v.KeySnapshot)
		}
		next, err := domain.EvolveKey(cur, r.Event)
		if err != nil {
			return nil
		}
		folded[id] = KeyView{KeySnapshot: next.Snapshot(), LastSeq: r.Seq}
		return nil
	})
	if err != nil {
		t.Fatalf("read stream: %v", err)
	}
	if cp, err := rm.Checkpoint(ctx); err != nil || cp != last {
		t.Fatalf("read model checkpoint %d, %v; stream's last sequence %d", cp, err, last)
	}
	var got []string
	if err := rm.EachKey(ctx, func(v KeyView) error { got = append(got, describeKey(v)); return nil }); err != nil {
		t.Fatal(err)
	}
	var wantKeys []string
	for _, v := range folded {
		wantKeys = append(wantKeys, describeKey(v))
	}
	slices.Sort(got)
	slices.Sort(wantKeys)
	if !slices.Equal(got, wantKeys) {
		t.Fatalf("read model differs from the stream:\n got %v\nwant %v", got, wantKeys)
	}
}

// assertSameKeys checks that two read models hold the same keys and checkpoint.
func assertSameKeys(t *testing.T, a, b ReadModel) {
	t.Helper()
	ctx := context.Background()
	dump := func(rm ReadModel) []string {
		var out []string
		if err := rm.EachKey(ctx, func(v KeyView) error { out = append(out, describeKey(v)); return nil }); err != nil {
			t.Fatal(err)
		}
		slices.Sort(out)
		return out
	}
	cpA, _ := a.Checkpoint(ctx)
	cpB, _ := b.Checkpoint(ctx)
	if da, db := dump(a), dump(b); cpA != cpB || !slices.Equal(da, db) {
		t.Fatalf("read models differ: checkpoints %d and %d\n%v\n%v", cpA, cpB, da, db)
	}
}
