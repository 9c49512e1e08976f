package main_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/internal/testenv"
)

// The cluster test runs keyledger as a production user runs it for high availability: three
// nats-server processes (built from the pinned module) clustered on loopback, one PostgreSQL,
// two keysd sharing them with --stream-replicas 3, clients PATCHing through both. Under that
// load it kills the stream leader with SIGKILL, freezes a follower (SIGSTOP, then SIGCONT),
// kills a keysd and starts it again, and takes the quorum away (2 of 3 nodes down) and gives
// it back. It asserts what a user must be able to rely on: nothing acknowledged lost or
// doubled, read-your-writes across instances, no instance needing a restart, /readyz not 200
// without a quorum and 200 again after. It measures, and logs, each instance's longest outage
// per fault and how long readiness took to follow; those numbers go to docs/reliability.md,
// never into an assertion. `make test` runs one round; `make cluster-test` more.

var clusterRounds = flag.Int("cluster.rounds", 1, "rounds of faults in the cluster test (make cluster-test raises it)")

// clusterLoad is clients each PATCHing keys of their own through the two keysd in turn, and
// after every 200 reading the key back through the other instance: each key has one writer,
// so that read must show exactly what was acknowledged.
type clusterLoad struct {
	t       *testing.T
	targets []*keysd
	p       project
	client  *http.Client
	stop    chan struct{}
	wg      sync.WaitGroup

	mu        sync.Mutex
	acked     map[string]string // description -> key id, for every 200
	statuses  map[int]int
	noAnswer  int
	stale     []string
	unexpects []string
	okAt      [][]time.Time // per target: when each of its requests succeeded
}

func startClusterLoad(t *testing.T, targets []*keysd, p project, keys [][]string) *clusterLoad {
	l := &clusterLoad{
		t: t, targets: targets, p: p, stop: make(chan struct{}),
		client: &http.Client{Timeout: 15 * time.Second},
		acked:  map[string]string{}, statuses: map[int]int{}, okAt: make([][]time.Time, len(targets)),
	}
	for c, own := range keys {
		l.wg.Add(1)
		go l.run(c, own)
	}
	return l
}

func (l *clusterLoad) run(c int, keys []string) {
	defer l.wg.Done()
	for i := 0; ; i++ {
		select {
		case <-l.stop:
			return
		default:
		}
		ti := (c + i) % len(l.targets)
		target, other := l.targets[ti], l.targets[(ti+1)%len(l.targets)]
		key := keys[i%len(keys)]
		desc := fmt.Sprintf("c%d-%d", c, i)
		status, header, body, err := (&patchLoad{p: l.p, client: l.client}).patch(target, key, desc)
		var readBack response
		readOK := false
		if err == nil && status == 200 {
			readBack, readOK = l.get(other, key)
		}
		now := time.Now()
		l.mu.Lock()
		switch {
		case err != nil:
			l.noAnswer++ // a keysd killed mid-request: the outcome is unknown, and that is allowed
		default:
			l.statuses[status]++
			switch {
			case status == 200:
				l.acked[desc] = key
				l.okAt[ti] = append(l.okAt[ti], now)
				if readOK && readBack.str("description") != desc {
					l.stale = append(l.stale, fmt.Sprintf("PATCH %q of key %s acknowledged by %s, then %s served %q", desc, key, target.base, other.base, readBack.str("description")))
				}
			case (status == 503 || status == 429) && header.Get("Retry-After") != "":
			default:
				l.unexpects = append(l.unexpects, fmt.Sprintf("%d %s", status, body))
			}
		}
		l.mu.Unlock()
		if err != nil || status != 200 {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// get reads a key through k; false when k did not answer 200 (a 503 while it fails over).
func (l *clusterLoad) get(k *keysd, key string) (response, bool) {
	req, _ := http.NewRequest("GET", k.base+"/api/v1/user-api-keys/"+key, nil)
	req.Header.Set("x-stack-project-id", l.p.ID)
	req.Header.Set("x-stack-secret-server-key", l.p.ServerKey)
	resp, err := l.client.Do(req)
	if err != nil {
		return response{}, false
	}
	defer resp.Body.Close()
	var r response
	r.Status = resp.StatusCode
	_ = json.NewDecoder(resp.Body).Decode(&r.Body)
	return r, r.Status == 200
}

func (l *clusterLoad) finish() map[string]string {
	l.t.Helper()
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, u := range l.unexpects {
		if i == 10 {
			l.t.Errorf("... and %d more", len(l.unexpects)-10)
			break
		}
		l.t.Errorf("unexpected answer: %s", u)
	}
	for i, s := range l.stale {
		if i == 10 {
			l.t.Errorf("... and %d more stale reads", len(l.stale)-10)
			break
		}
		l.t.Errorf("read-your-writes broken: %s", s)
	}
	l.t.Logf("load: statuses %v, %d without an answer", l.statuses, l.noAnswer)
	return l.acked
}

// longestOutage is the longest time target went without a successful PATCH between from and
// to (the load keeps sending it requests all along).
func (l *clusterLoad) longestOutage(target int, from, to time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, longest := from, time.Duration(0)
	for _, t := range l.okAt[target] {
		if t.Before(from) {
			continue
		}
		if t.After(to) {
			break
		}
		longest = max(longest, t.Sub(prev))
		prev = t
	}
	return max(longest, to.Sub(prev))
}

// acks is how many PATCHes target has acknowledged so far.
func (l *clusterLoad) acks(target int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.okAt[target])
}

// waitServing waits (bounded) until every target has acknowledged a PATCH after since.
func (l *clusterLoad) waitServing(since time.Time, bound time.Duration) time.Duration {
	l.t.Helper()
	deadline := time.Now().Add(bound)
	for {
		all := true
		l.mu.Lock()
		for _, ok := range l.okAt {
			if len(ok) == 0 || !ok[len(ok)-1].After(since) {
				all = false
			}
		}
		l.mu.Unlock()
		if all {
			return time.Since(since)
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("an instance has served no PATCH in the %s since %s: it needs a restart", bound, since.Format(time.TimeOnly))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// streamWatch asks the cluster about the event stream, through its own connection.
type streamWatch struct {
	t  *testing.T
	js jetstream.JetStream
}

func watchStream(t *testing.T, urls string) *streamWatch {
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.PingInterval(time.Second), nats.MaxPingsOutstanding(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &streamWatch{t: t, js: js}
}

func (w *streamWatch) info() (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := w.js.Stream(ctx, "KEYLEDGER")
	if err != nil {
		return nil, err
	}
	return s.CachedInfo(), nil
}

// healthy waits (bounded) until the stream has a leader and every replica is current, and
// returns the leader's name.
func (w *streamWatch) healthy(bound time.Duration) string {
	w.t.Helper()
	deadline := time.Now().Add(bound)
	for {
		info, err := w.info()
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
			current := 1
			for _, p := range info.Cluster.Replicas {
				if p.Current && !p.Offline {
					current++
				}
			}
			if current == info.Config.Replicas {
				return info.Cluster.Leader
			}
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("the stream is not healthy after %s: %+v %v", bound, info, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readiness polls each instance's /readyz every 100ms, for the fault timings.
type readiness struct {
	mu     sync.Mutex
	states [][]readyAt
	stop   chan struct{}
	done   chan struct{}
}

type readyAt struct {
	at    time.Time
	ready bool
}

func pollReadiness(targets []*keysd) *readiness {
	r := &readiness{states: make([][]readyAt, len(targets)), stop: make(chan struct{}), done: make(chan struct{})}
	client := &http.Client{Timeout: 2 * time.Second}
	go func() {
		defer close(r.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for i, k := range targets {
				ready := false
				if resp, err := client.Get(k.base + "/readyz"); err == nil {
					ready = resp.StatusCode == 200
					resp.Body.Close()
				}
				r.mu.Lock()
				r.states[i] = append(r.states[i], readyAt{time.Now(), ready})
				r.mu.Unlock()
			}
			select {
			case <-r.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return r
}

func (r *readiness) close() { close(r.stop); <-r.done }

// firstAfter is when target's /readyz was first seen ready (or not) after since; zero if not yet.
func (r *readiness) firstAfter(target int, since time.Time, ready bool) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.states[target] {
		if s.at.After(since) && s.ready == ready {
			return s.at
		}
	}
	return time.Time{}
}

// waitFor waits (bounded) until every target's /readyz is seen ready (or not) after since,
// and returns how long after since the slowest one took.
func (r *readiness) waitFor(t *testing.T, since time.Time, ready bool, bound time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		slowest := time.Duration(0)
		all := true
		for i := range r.states {
			at := r.firstAfter(i, since, ready)
			if at.IsZero() {
				all = false
				break
			}
			slowest = max(slowest, at.Sub(since))
		}
		if all {
			return slowest
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz of an instance not seen ready=%v within %s", ready, bound)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClusterFailover(t *testing.T) {
	testenv.Heavy(t, "a 3-node nats-server cluster and two keysd under faults")
	c := testenv.ExternalNATSCluster(t, 3)
	db := testenv.Postgres(t)
	secret := filepath.Join(t.TempDir(), "secret")
	args := []string{"--stream-replicas", "3", "--startup-timeout", "90s"}
	k1 := startKeysd(t, keysdOptions{natsURL: c.URLs(), databaseURL: db, secretFile: secret, extraArgs: args})
	k2 := startKeysd(t, keysdOptions{natsURL: c.URLs(), databaseURL: db, secretFile: secret, extraArgs: args})
	for _, k := range []*keysd{k1, k2} {
		if !strings.Contains(k.stdout.String(), "event stream KEYLEDGER: 3 replica(s) on a NATS cluster") {
			t.Fatalf("keysd does not report the stream's 3 replicas:\n%s", k.stdout)
		}
	}
	watch := watchStream(t, c.URLs())
	watch.healthy(60 * time.Second)
	info, err := watch.info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 {
		t.Fatalf("keysd created the stream with %d replicas, want 3", info.Config.Replicas)
	}
	dlq, err := watch.js.Stream(t.Context(), "KEYLEDGER_DLQ")
	if err != nil || dlq.CachedInfo().Config.Replicas != 3 {
		t.Fatalf("dead-letter stream: %v, replicas %d; want 3", err, dlq.CachedInfo().Config.Replicas)
	}

	p := k1.createProject("cluster")
	const clients, keysEach = 8, 2
	all := createKeys(t, k1, p, clients*keysEach)
	var keys [][]string
	for c := range clients {
		keys = append(keys, all[c*keysEach:(c+1)*keysEach])
	}
	targets := []*keysd{k1, k2}
	load := startClusterLoad(t, targets, p, keys)
	ready := pollReadiness(targets)
	defer ready.close()
	var measured []string
	measure := func(format string, a ...any) {
		line := fmt.Sprintf(format, a...)
		measured = append(measured, line)
		t.Log(line)
	}
	outages := func(from, to time.Time) string {
		return fmt.Sprintf("longest outage k1 %s, k2 %s",
			load.longestOutage(0, from, to).Round(10*time.Millisecond), load.longestOutage(1, from, to).Round(10*time.Millisecond))
	}
	settle := func() time.Time {
		time.Sleep(3 * time.Second)
		return time.Now()
	}

	steady := time.Now()
	before := load.acks(0) + load.acks(1)
	time.Sleep(5 * time.Second)
	measure("steady R3 throughput: %.0f acknowledged PATCHes/s (8 clients, 2 keysd; each followed by a GET on the other)",
		float64(load.acks(0)+load.acks(1)-before)/time.Since(steady).Seconds())

	for round := 1; round <= *clusterRounds; round++ {
		// 1. kill -9 the stream leader, then bring it back.
		leader := watch.healthy(60 * time.Second)
		fault := time.Now()
		c.Node(leader).Stop()
		back := load.waitServing(fault, 60*time.Second)
		end := settle()
		measure("round %d, kill -9 of the stream leader %s: both serving again %s after; %s", round, leader,
			back.Round(10*time.Millisecond), outages(fault, end))
		c.Node(leader).Start(t)
		watch.healthy(60 * time.Second)

		// 2. freeze a follower for 10s, then thaw it (in even rounds, the leader: a hung leader
		// is noticed by the others' missing heartbeats, not by a closed connection).
		leader = watch.healthy(60 * time.Second)
		var follower *testenv.NATSServer
		for _, n := range c.Nodes {
			if n.Name != leader {
				follower = n
				break
			}
		}
		role := "follower"
		if round%2 == 0 {
			follower, role = c.Node(leader), "stream leader"
		}
		fault = time.Now()
		if err := follower.Freeze(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second)
		if err := follower.Thaw(); err != nil {
			t.Fatal(err)
		}
		end = settle()
		measure("round %d, SIGSTOP of the %s %s for 10s: %s", round, role, follower.Name, outages(fault, end))
		watch.healthy(60 * time.Second)

		// 3. kill -9 one keysd and start it again; the other serves throughout.
		fault = time.Now()
		k2.kill()
		time.Sleep(2 * time.Second)
		k2.start()
		restarted := time.Since(fault)
		end = settle()
		measure("round %d, kill -9 of keysd k2 (restarted after 2s, ready %s after the kill): k1's longest outage %s", round,
			restarted.Round(10*time.Millisecond), load.longestOutage(0, fault, end).Round(10*time.Millisecond))
		load.waitServing(fault, 60*time.Second)

		// 4. take the quorum away (2 of 3 nodes down), then give it back.
		leader = watch.healthy(60 * time.Second)
		var down []*testenv.NATSServer
		for _, n := range c.Nodes {
			if n.Name != leader && len(down) < 1 {
				down = append(down, n)
			}
		}
		down = append(down, c.Node(leader))
		fault = time.Now()
		for _, n := range down {
			n.Stop()
		}
		notReady := ready.waitFor(t, fault, false, 30*time.Second)
		time.Sleep(5 * time.Second)
		restore := time.Now()
		// Without a quorum nothing can be acknowledged: an instance saying ready would lie.
		for i := range targets {
			if at := ready.firstAfter(i, fault.Add(notReady+time.Second), true); !at.IsZero() && at.Before(restore) {
				t.Errorf("keysd %d: /readyz 200 at %s without a quorum", i+1, at.Format(time.TimeOnly))
			}
		}
		for _, n := range down {
			n.Start(t)
		}
		readyAgain := ready.waitFor(t, restore, true, 60*time.Second)
		serving := load.waitServing(restore, 60*time.Second)
		end = settle()
		measure("round %d, quorum lost (%s and %s down) for %s: /readyz not 200 on both %s after; quorum back: /readyz 200 on both %s after, both serving PATCHes %s after",
			round, down[0].Name, down[1].Name, restore.Sub(fault).Round(100*time.Millisecond),
			notReady.Round(10*time.Millisecond), readyAgain.Round(10*time.Millisecond), serving.Round(10*time.Millisecond))
		watch.healthy(60 * time.Second)
	}

	acked := load.finish()
	if len(acked) == 0 {
		t.Fatal("no PATCH was acknowledged")
	}
	folded := replay(t, c.URLs(), acked)
	checkPostgresMatchesReplay(t, db, c.URLs(), folded)
	checkAPIMatchesReplay(t, k1, p, folded)
	checkAPIMatchesReplay(t, k2, p, folded)
	for _, k := range []*keysd{k1, k2} {
		if r := k.do("GET", "/readyz", project{}, nil); r.Status != 200 {
			t.Errorf("%s /readyz after the faults: %d %s", k.base, r.Status, r.Raw)
		}
	}
	t.Logf("measured (%d acknowledged PATCHes in all):\n%s", len(acked), strings.Join(measured, "\n"))
}

// TestClusterRaiseReplicasOnline: a deployment that began with one replica is raised to three
// while keysd keeps serving, the way docs/reliability.md tells an operator to (a stream update
// of its replicas: `nats stream edit KEYLEDGER --replicas 3`). Nothing acknowledged is lost,
// keysd needs no restart, and the throughput before and after is measured (R1 against R3 on
// the same cluster, in the same run).
func TestClusterRaiseReplicasOnline(t *testing.T) {
	testenv.Heavy(t, "a 3-node nats-server cluster and two keysd")
	c := testenv.ExternalNATSCluster(t, 3)
	db := testenv.Postgres(t)
	secret := filepath.Join(t.TempDir(), "secret")
	args := []string{"--stream-replicas", "1", "--startup-timeout", "90s"}
	k1 := startKeysd(t, keysdOptions{natsURL: c.URLs(), databaseURL: db, secretFile: secret, extraArgs: args})
	k2 := startKeysd(t, keysdOptions{natsURL: c.URLs(), databaseURL: db, secretFile: secret, extraArgs: args})
	if !strings.Contains(k1.stderr.String(), "the event stream has one replica on a NATS cluster") {
		t.Errorf("no warning for R1 on a cluster:\n%s", k1.stderr)
	}
	watch := watchStream(t, c.URLs())
	p := k1.createProject("raise")
	const clients, keysEach = 8, 2
	all := createKeys(t, k1, p, clients*keysEach)
	var keys [][]string
	for c := range clients {
		keys = append(keys, all[c*keysEach:(c+1)*keysEach])
	}
	load := startClusterLoad(t, []*keysd{k1, k2}, p, keys)
	rate := func() float64 {
		start, before := time.Now(), load.acks(0)+load.acks(1)
		time.Sleep(5 * time.Second)
		return float64(load.acks(0)+load.acks(1)-before) / time.Since(start).Seconds()
	}
	time.Sleep(time.Second)
	r1 := rate()

	info, err := watch.info()
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.Replicas = 3
	raised := time.Now()
	if _, err := watch.js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatalf("raise the stream to 3 replicas: %v", err)
	}
	watch.healthy(60 * time.Second)
	caughtUp := time.Since(raised)
	load.waitServing(time.Now(), 30*time.Second)
	time.Sleep(time.Second)
	r3 := rate()
	acked := load.finish()
	folded := replay(t, c.URLs(), acked)
	checkPostgresMatchesReplay(t, db, c.URLs(), folded)
	t.Logf("measured: R1 %.0f acknowledged PATCHes/s, R3 %.0f (%.2fx), same cluster, 8 clients, 2 keysd; R1 -> R3 online: all replicas current %s after the update; longest outage during it k1 %s, k2 %s",
		r1, r3, r3/r1, caughtUp.Round(10*time.Millisecond),
		load.longestOutage(0, raised, raised.Add(caughtUp)).Round(10*time.Millisecond), load.longestOutage(1, raised, raised.Add(caughtUp)).Round(10*time.Millisecond))
}
