package projections

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
)

// keysdLike is what keysd runs: the command handler, loading through the live PostgreSQL
// read model, and a projector keeping that read model up to date.
type keysdLike struct {
	env     *streamEnv
	url     string
	live    *Postgres
	index   *KeyIndex // in front of live, as keysd runs it
	proj    *Projector
	handler *commands.Handler
	project string
}

func newKeysdLike(t *testing.T) *keysdLike {
	t.Helper()
	env := newStreamEnv(t)
	url := testenv.Postgres(t)
	live := openPostgres(t, url, PostgresConfig{})
	index := NewKeyIndex(live, 1000)
	proj := env.run(t, NewProjector(env.store, index, testProjectorConfig(func(c *ProjectorConfig) { c.MaxBatch = 50 })))
	hasher, err := domain.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := commands.New(env.store, index, hasher, commands.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.CreateProject(t.Context(), domain.Actor{Type: domain.ActorOperator, ID: "test"}, "acme")
	if err != nil {
		t.Fatal(err)
	}
	return &keysdLike{env: env, url: url, live: live, index: index, proj: proj, handler: h, project: p.Project.ID}
}

func (k *keysdLike) caller() commands.Caller {
	return commands.Caller{ProjectID: k.project, Actor: domain.Actor{Type: domain.ActorServerKey, ID: "sk"}, RequestID: newUUID()}
}

// load runs writers that create and PATCH keys, each request waiting for its events to be
// projected and reading its own write back from the live read model, as a client of keysd
// would, until stop is closed. It returns how many requests succeeded.
func (k *keysdLike) load(t *testing.T, ids []string, writers int, stop <-chan struct{}) (wait func() int) {
	var (
		wg   sync.WaitGroup
		done atomic.Int64
		fail = make(chan error, writers)
	)
	for g := range writers {
		wg.Go(func() {
			ctx := context.Background()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var res commands.Result
				var err error
				if i%10 == 0 {
					var c commands.CreatedKey
					c, err = k.handler.CreateKey(ctx, k.caller(), commands.NewKey{UserID: fmt.Sprint("user-", g), Description: "new"})
					res = c.Result
				} else {
					d := fmt.Sprintf("writer %d request %d", g, i)
					u := domain.UpdateKey{Description: &d}
					if rand.N(20) == 0 {
						u.Revoked = new(true)
					}
					res, err = k.handler.UpdateKey(ctx, k.caller(), ids[rand.N(len(ids))], u)
				}
				if errors.Is(err, commands.ErrContention) {
					continue
				}
				if err == nil {
					err = k.proj.WaitFor(ctx, res.Seq)
				}
				if err == nil {
					// Read-your-writes, whichever schema is live by now, as keysd serves it.
					var v KeyView
					v, err = k.index.Key(ctx, k.project, res.Key.ID)
					if err == nil && (v.Version < res.Key.Version || v.LastSeq < res.Seq) {
						err = fmt.Errorf("after waiting for %d, key %s is at version %d (sequence %d), want at least %d", res.Seq, res.Key.ID, v.Version, v.LastSeq, res.Key.Version)
					}
				}
				if err != nil {
					fail <- err
					return
				}
				done.Add(1)
			}
		})
	}
	return func() int {
		wg.Wait()
		close(fail)
		for err := range fail {
			t.Errorf("load: %v", err)
		}
		return int(done.Load())
	}
}

func (k *keysdLike) seedKeys(t *testing.T, n int) []string {
	t.Helper()
	ids := make([]string, n)
	var last uint64
	for i := range ids {
		nk := commands.NewKey{UserID: fmt.Sprint("user-", i%7), Description: fmt.Sprint("key ", i)}
		if i%5 == 0 { // some teams' keys, so that rebuilds and verification carry team_id too
			nk.TeamID, nk.UserID = fmt.Sprint("team-", i%3), ""
		}
		c, err := k.handler.CreateKey(t.Context(), k.caller(), nk)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = c.Key.ID
		d := fmt.Sprint("renamed ", i)
		r, err := k.handler.UpdateKey(t.Context(), k.caller(), c.Key.ID, domain.UpdateKey{Description: &d})
		if err != nil {
			t.Fatal(err)
		}
		last = r.Seq
	}
	waitFor(t, k.proj, last)
	return ids
}

func TestRebuildSwapsUnderLoad(t *testing.T) {
	testenv.Heavy(t, "a rebuild under write load")
	t.Parallel()
	ctx := context.Background()
	k := newKeysdLike(t)
	ids := k.seedKeys(t, 100)

	stop := make(chan struct{})
	wait := k.load(t, ids, 3, stop)
	var results []RebuildResult
	for i := range 3 {
		res, err := Rebuild(ctx, k.url, k.env.store, RebuildConfig{SwapLag: uint64(10 * i), KeepOld: i == 0})
		if err != nil {
			t.Fatalf("rebuild %d: %v", i, err)
		}
		results = append(results, res)
	}
	close(stop)
	requests := wait()
	last, err := k.env.store.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, k.proj, last)

	for i, res := range results {
		if res.Schema != DefaultSchema || res.UntilSeq < 201 || res.Events != res.UntilSeq || res.Keys < 100 || res.Projects != 1 {
			t.Errorf("rebuild %d: %+v; want schema %s, every event up to its end read, at least 100 keys, 1 project", i, res, DefaultSchema)
		}
	}
	if results[0].OldSchema == "" {
		t.Error("KeepOld: no old schema reported")
	} else if n := countRows(t, k.live, results[0].OldSchema); n < 100 {
		t.Errorf("kept old schema %s has %d keys", results[0].OldSchema, n)
	}
	if results[1].OldSchema != "" || schemaExists(t, k.live, results[1].OldSchema) {
		t.Errorf("rebuild without KeepOld left schema %q", results[1].OldSchema)
	}
	t.Logf("%d requests during the rebuilds; rebuilt up to %d, %d, %d; stream at %d",
		requests, results[0].UntilSeq, results[1].UntilSeq, results[2].UntilSeq, last)
	if last <= results[0].UntilSeq {
		t.Errorf("no load ran past the first rebuild (stream at %d)", last)
	}

	// No event lost or applied twice across the swaps: the live read model is exactly the
	// fold of the stream, equals a replay from scratch, and Verify agrees.
	assertMatchesStream(t, k.env.store, k.live)
	scratch := NewMemory()
	waitFor(t, k.env.run(t, NewProjector(k.env.store, scratch, testProjectorConfig())), last)
	assertSameKeys(t, k.live, scratch)
	v, err := k.live.Verify(ctx, k.env.store, FoldConfig{})
	if err != nil || len(v.Differences) != 0 || v.Checkpoint != last {
		t.Fatalf("Verify = %+v, %v; want no differences at %d", v, err, last)
	}
}

func TestRebuildAsOf(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	k := newKeysdLike(t)
	ids := k.seedKeys(t, 20)

	// What GET would have returned at sequence `at`.
	at, err := k.env.store.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	then := NewMemory()
	if _, err := k.env.store.ReadRange(ctx, 1, at, func(r eventstore.RecordedEvent) error {
		_, err := then.Apply(ctx, []eventstore.RecordedEvent{r})
		return err
	}); err != nil {
		t.Fatal(err)
	}

	for i, id := range ids[:10] {
		d := fmt.Sprint("later ", i)
		if _, err := k.handler.UpdateKey(ctx, k.caller(), id, domain.UpdateKey{Description: &d, Revoked: new(i%2 == 0)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := k.handler.CreateKey(ctx, k.caller(), commands.NewKey{UserID: "later", Description: "later"}); err != nil {
		t.Fatal(err)
	}
	// An old read model of that name is replaced.
	old := openPostgres(t, k.url, PostgresConfig{Schema: AsOfSchema})
	if _, err := old.pool.Exec(ctx, "CREATE TABLE keyledger_asof.leftover (x int)"); err != nil {
		t.Fatal(err)
	}

	res, err := Rebuild(ctx, k.url, k.env.store, RebuildConfig{AsOf: true, Until: at})
	if err != nil {
		t.Fatal(err)
	}
	if res.Schema != AsOfSchema || res.UntilSeq != at || res.Events != at || res.Keys != 20 {
		t.Errorf("result %+v; want schema %s, until %d, %d events, 20 keys", res, AsOfSchema, at, at)
	}
	asOf := openPostgres(t, k.url, PostgresConfig{Schema: AsOfSchema})
	assertSameKeys(t, asOf, then)
	if schemaHasTable(t, asOf, AsOfSchema, "leftover") {
		t.Error("the old keyledger_asof schema was not replaced")
	}
	// The live read model is untouched.
	last, _ := k.env.store.LastSeq(ctx)
	waitFor(t, k.proj, last)
	assertMatchesStream(t, k.env.store, k.live)

	// The live schema cannot be the target of an as-of build.
	if _, err := Rebuild(ctx, k.url, k.env.store, RebuildConfig{AsOf: true, Until: 1, Schema: DefaultSchema}); err == nil {
		t.Error("an as-of build into the live schema was accepted")
	}
}

func TestVerifyFindsATamperedRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	k := newKeysdLike(t)
	ids := k.seedKeys(t, 5)
	if res, err := k.live.Verify(ctx, k.env.store, FoldConfig{}); err != nil || len(res.Differences) != 0 || res.Keys != 5 {
		t.Fatalf("Verify before tampering = %+v, %v", res, err)
	}
	if _, err := k.live.pool.Exec(ctx, "UPDATE keyledger.api_keys SET description = 'tampered' WHERE id = $1", ids[3]); err != nil {
		t.Fatal(err)
	}
	if _, err := k.live.pool.Exec(ctx, "DELETE FROM keyledger.api_keys WHERE id = $1", ids[1]); err != nil {
		t.Fatal(err)
	}
	res, err := k.live.Verify(ctx, k.env.store, FoldConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range res.Differences {
		got[d.KeyID] = d.What
	}
	if len(got) != 2 || got[ids[3]] != `description: read model "tampered", stream "renamed 3"` ||
		got[ids[1]] != "in the stream but missing from the read model" {
		t.Errorf("differences %+v; want the tampered description of %s and the missing %s", res.Differences, ids[3], ids[1])
	}
}

func countRows(t *testing.T, p *Postgres, schema string) int {
	t.Helper()
	var n int
	if err := p.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{schema, "api_keys"}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func schemaExists(t *testing.T, p *Postgres, schema string) bool {
	t.Helper()
	var ok bool
	if err := p.pool.QueryRow(context.Background(), "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", schema).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func schemaHasTable(t *testing.T, p *Postgres, schema, table string) bool {
	t.Helper()
	var ok bool
	if err := p.pool.QueryRow(context.Background(), "SELECT EXISTS (SELECT FROM pg_tables WHERE schemaname = $1 AND tablename = $2)", schema, table).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}
