package main_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/internal/testenv"
	"github.com/keyledger/keyledger/projections"
)

// The crash tests inject real faults into real processes while clients keep PATCHing:
// kill -9 of keysd, a nats-server stopped and started again, and the read model's PostgreSQL
// cut off behind a TCP proxy. After each, every PATCH that got a 200 must be on the stream
// exactly once, versions must be contiguous, and the read model must equal a fold of the
// stream. `make test` runs one round of each; `make crash-test` runs several
// (-crash.rounds).

var crashRounds = flag.Int("crash.rounds", 1, "fault injections per crash test (make crash-test raises it)")

// patchLoad is a set of clients PATCHing keys with a unique description each time, through
// any of several keysd instances, until stopped. It records what every request got.
type patchLoad struct {
	t       *testing.T
	targets []*keysd
	p       project
	keys    []string
	client  *http.Client
	stop    chan struct{}
	wg      sync.WaitGroup
	oks     atomic.Int64

	mu        sync.Mutex
	acked     map[string]string // description -> key id, for every 200
	statuses  map[int]int
	noAnswer  int
	unexpects []string // anything but 200, or 503/429 with Retry-After
}

func startPatchLoad(t *testing.T, targets []*keysd, p project, keys []string, clients int) *patchLoad {
	l := &patchLoad{
		t: t, targets: targets, p: p, keys: keys, stop: make(chan struct{}),
		client:   &http.Client{Timeout: 20 * time.Second},
		acked:    map[string]string{},
		statuses: map[int]int{},
	}
	for c := range clients {
		l.wg.Add(1)
		go l.run(c)
	}
	return l
}

func (l *patchLoad) run(c int) {
	defer l.wg.Done()
	for i := 0; ; i++ {
		select {
		case <-l.stop:
			return
		default:
		}
		target := l.targets[(c+i)%len(l.targets)]
		key := l.keys[(c+i)%len(l.keys)]
		desc := fmt.Sprintf("c%d-%d-%s", c, i, key[:8])
		status, header, body, err := l.patch(target, key, desc)
		l.mu.Lock()
		switch {
		case err != nil:
			l.noAnswer++ // keysd killed mid-request: the outcome is unknown, and that is allowed
		case status == 200:
			l.statuses[status]++
			var got struct{ Description string }
			if json.Unmarshal(body, &got) != nil || got.Description != desc {
				l.unexpects = append(l.unexpects, fmt.Sprintf("200 for %q answered %s", desc, body))
			}
			l.acked[desc] = key
			l.oks.Add(1)
		case (status == 503 || status == 429) && header.Get("Retry-After") != "":
			l.statuses[status]++
		default:
			l.statuses[status]++
			l.unexpects = append(l.unexpects, fmt.Sprintf("%d %s", status, body))
		}
		l.mu.Unlock()
		if err != nil || status != 200 {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (l *patchLoad) patch(k *keysd, key, desc string) (int, http.Header, []byte, error) {
	body, _ := json.Marshal(map[string]string{"description": desc})
	req, err := http.NewRequest("PATCH", k.base+"/api/v1/user-api-keys/"+key, strings.NewReader(string(body)))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-stack-project-id", l.p.ID)
	req.Header.Set("x-stack-secret-server-key", l.p.ServerKey)
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw, err
}

// waitAcked blocks until the load has had n PATCHes acknowledged in all.
func (l *patchLoad) waitAcked(n int64) {
	l.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for l.oks.Load() < n {
		if time.Now().After(deadline) {
			l.t.Fatalf("only %d of %d PATCHes acknowledged after 90s; statuses %v", l.oks.Load(), n, l.summary())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// finish stops the clients and fails the test on any answer the contract does not allow.
func (l *patchLoad) finish() map[string]string {
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
	l.t.Logf("load: %s", l.summaryLocked())
	return l.acked
}

func (l *patchLoad) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.summaryLocked()
}

func (l *patchLoad) summaryLocked() string {
	return fmt.Sprintf("statuses %v, %d without an answer", l.statuses, l.noAnswer)
}

// statusesSince returns how many answers of each status the load has had.
func (l *patchLoad) count(status int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.statuses[status]
}

// replay reads the whole stream as a replay tool would and checks it against the
// acknowledged PATCHes: each acknowledged description is on the stream exactly once and on
// the key it was sent to, no description is there twice, every key's versions run 1, 2, 3...
// It returns every key folded from its events with the stream sequence of its last event.
func replay(t *testing.T, natsURL string, acked map[string]string) map[string]projections.KeyView {
	t.Helper()
	perKey := map[string][]domain.Event{}
	lastSeqOf := map[string]uint64{}
	seen := map[string][]string{} // description -> key ids it was set on
	for _, r := range streamEvents(t, natsURL) {
		if r.Err != nil {
			t.Errorf("event %d on %s does not decode: %v", r.Seq, r.Subject, r.Err)
			continue
		}
		if r.Event.KeyID == "" {
			continue // a project event
		}
		evs := perKey[r.Event.KeyID]
		if r.Event.Version != len(evs)+1 {
			t.Errorf("key %s: event %d has version %d, want %d (versions not contiguous)", r.Event.KeyID, r.Seq, r.Event.Version, len(evs)+1)
		}
		perKey[r.Event.KeyID] = append(evs, r.Event)
		lastSeqOf[r.Event.KeyID] = r.Seq
		if d, ok := r.Event.Data.(domain.DescriptionChanged); ok {
			seen[d.New] = append(seen[d.New], r.Event.KeyID)
		}
	}
	for desc, keys := range seen {
		if len(keys) > 1 {
			t.Errorf("description %q is on the stream %d times: a change was applied twice", desc, len(keys))
		}
	}
	lost := 0
	for desc, key := range acked {
		if keys := seen[desc]; len(keys) == 0 || keys[0] != key {
			lost++
			if lost <= 10 {
				t.Errorf("acknowledged PATCH %q of key %s is not on the stream (on %v)", desc, key, keys)
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged PATCHes lost", lost, len(acked))
	}
	folded := map[string]projections.KeyView{}
	for id, evs := range perKey {
		k, err := domain.FoldKey(evs)
		if err != nil {
			t.Errorf("key %s does not fold from its events: %v", id, err)
			continue
		}
		folded[id] = projections.KeyView{KeySnapshot: k.Snapshot(), LastSeq: lastSeqOf[id]}
	}
	return folded
}

// checkPostgresMatchesReplay waits until the PostgreSQL read model's checkpoint reaches the
// stream's end (the projectors must catch up by themselves), then checks that it holds
// exactly the keys of the replay, each equal to its fold, with the right last sequence.
func checkPostgresMatchesReplay(t *testing.T, databaseURL, natsURL string, folded map[string]projections.KeyView) {
	t.Helper()
	ctx := context.Background()
	rm, err := projections.OpenPostgres(ctx, databaseURL, projections.PostgresConfig{MaxConns: 2})
	if err != nil {
		t.Fatalf("open the read model: %v", err)
	}
	defer rm.Close()
	end := lastSeq(t, natsURL)
	deadline := time.Now().Add(60 * time.Second)
	for {
		cp, err := rm.Checkpoint(ctx)
		if err == nil && cp >= end {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("read model checkpoint %d has not reached the stream's end %d after 60s (%v)", cp, end, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	inDB := 0
	err = rm.EachKey(ctx, func(v projections.KeyView) error {
		inDB++
		want, ok := folded[v.ID]
		switch {
		case !ok:
			t.Errorf("read model has key %s that the stream does not", v.ID)
		case !sameKey(v, want):
			t.Errorf("key %s: read model %+v, replay of the stream %+v", v.ID, v, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if inDB != len(folded) {
		t.Errorf("read model has %d keys, the stream %d", inDB, len(folded))
	}
}

// checkAPIMatchesReplay checks, through GET, that a keysd serves every key as its fold.
func checkAPIMatchesReplay(t *testing.T, k *keysd, p project, folded map[string]projections.KeyView) {
	t.Helper()
	for id, want := range folded {
		if want.ProjectID != p.ID {
			continue
		}
		got := k.do("GET", "/api/v1/user-api-keys/"+id, p, nil)
		if got.Status != 200 || got.str("description") != want.Description || (got.Body["manually_revoked_at"] == nil) != (want.RevokedAt == nil) {
			t.Errorf("GET key %s: %d %s; replay of the stream: %+v", id, got.Status, got.Raw, want.KeySnapshot)
		}
	}
}

// sameKey compares a read model's key with a fold, timestamps at PostgreSQL's microseconds.
func sameKey(a, b projections.KeyView) bool {
	norm := func(v projections.KeyView) projections.KeyView {
		us := func(t *time.Time) *time.Time {
			if t == nil {
				return nil
			}
			x := t.UTC().Truncate(time.Microsecond)
			return &x
		}
		v.CreatedAt = *us(&v.CreatedAt)
		v.ExpiresAt, v.RevokedAt = us(v.ExpiresAt), us(v.RevokedAt)
		return v
	}
	a, b = norm(a), norm(b)
	return a.KeySnapshot.ID == b.KeySnapshot.ID && a.ProjectID == b.ProjectID && a.UserID == b.UserID &&
		a.Description == b.Description && a.CreatedAt.Equal(b.CreatedAt) && eqTime(a.ExpiresAt, b.ExpiresAt) &&
		eqTime(a.RevokedAt, b.RevokedAt) && a.IsPublic == b.IsPublic && a.SecretHash == b.SecretHash &&
		a.LastFour == b.LastFour && a.Version == b.Version && a.LastSeq == b.LastSeq
}

func eqTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// createKeys creates n keys of one user and returns their ids.
func createKeys(t *testing.T, k *keysd, p project, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		r := k.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "load", "description": fmt.Sprintf("key %d", i)})
		if r.Status != 200 {
			t.Fatalf("create key: %d %s", r.Status, r.Raw)
		}
		ids = append(ids, r.str("id"))
	}
	return ids
}

// TestCrashKill9DuringPatchLoad kills keysd with SIGKILL while clients PATCH, and starts it
// again: with the embedded NATS server and in-process read model (the defaults: the stream
// dies with the process), and with an external nats-server and PostgreSQL (the projector is
// killed wherever it is, between applying a batch and committing its checkpoint included).
func TestCrashKill9DuringPatchLoad(t *testing.T) {
	testenv.Heavy(t, "crash loop")
	t.Run("embedded NATS, in-process read model", func(t *testing.T) {
		t.Parallel()
		k := startKeysd(t, keysdOptions{})
		p := k.createProject("kill9")
		keys := createKeys(t, k, p, 4)
		load := startPatchLoad(t, []*keysd{k}, p, keys, 8)
		for round := range *crashRounds {
			load.waitAcked(int64(40 * (round + 1)))
			k.kill()
			k.start()
		}
		load.waitAcked(load.oks.Load() + 20)
		acked := load.finish()
		folded := replay(t, k.natsURL, acked)
		checkAPIMatchesReplay(t, k, p, folded)
	})
	t.Run("external NATS, PostgreSQL", func(t *testing.T) {
		t.Parallel()
		ns := testenv.ExternalNATS(t)
		db := testenv.Postgres(t)
		k := startKeysd(t, keysdOptions{natsURL: ns.URL, databaseURL: db})
		p := k.createProject("kill9-pg")
		keys := createKeys(t, k, p, 4)
		load := startPatchLoad(t, []*keysd{k}, p, keys, 8)
		for round := range *crashRounds {
			load.waitAcked(int64(40 * (round + 1)))
			k.kill()
			k.start()
		}
		load.waitAcked(load.oks.Load() + 20)
		acked := load.finish()
		folded := replay(t, ns.URL, acked)
		checkPostgresMatchesReplay(t, db, ns.URL, folded)
		checkAPIMatchesReplay(t, k, p, folded)
	})
}

// TestCrashNATSRestartDuringLoad stops the nats-server under a PATCH load and starts it again:
// meanwhile keysd answers 503 with Retry-After (the load fails the test on any other 5xx),
// then it recovers by itself, and nothing acknowledged is lost.
func TestCrashNATSRestartDuringLoad(t *testing.T) {
	testenv.Heavy(t, "crash loop")
	t.Parallel()
	ns := testenv.ExternalNATS(t)
	db := testenv.Postgres(t)
	k := startKeysd(t, keysdOptions{natsURL: ns.URL, databaseURL: db})
	p := k.createProject("nats-restart")
	keys := createKeys(t, k, p, 4)
	load := startPatchLoad(t, []*keysd{k}, p, keys, 8)
	for round := range *crashRounds {
		load.waitAcked(load.oks.Load() + 40)
		ns.Stop()
		// While it is down, a PATCH is refused with 503 and Retry-After.
		r := k.do("PATCH", "/api/v1/user-api-keys/"+keys[0], p, map[string]any{"description": fmt.Sprintf("while down %d", round)})
		if r.Status != 503 || r.str("code") != "SERVICE_UNAVAILABLE" || r.Header.Get("Retry-After") == "" {
			t.Fatalf("PATCH with NATS down: %d %v %s", r.Status, r.Header, r.Raw)
		}
		if resp, err := http.Get(k.base + "/readyz"); err != nil || resp.StatusCode != 503 {
			t.Fatalf("readyz with NATS down: %v %v", resp, err)
		}
		ns.Start(t)
		// keysd reconnects by itself: the load gets 200s again.
		load.waitAcked(load.oks.Load() + 40)
	}
	acked := load.finish()
	if load.count(503) == 0 {
		t.Errorf("no PATCH of the load got a 503 while NATS was down")
	}
	folded := replay(t, ns.URL, acked)
	checkPostgresMatchesReplay(t, db, ns.URL, folded)
}

// tcpProxy forwards TCP connections to a target, and can cut them all off and refuse new ones
// (as a stopped PostgreSQL or a broken network would) until restored.
type tcpProxy struct {
	t      *testing.T
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
}

func startProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{t: t, addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), target: target, conns: map[net.Conn]struct{}{}}
	p.restore()
	t.Cleanup(p.cut)
	return p
}

// restore listens again on the same address.
func (p *tcpProxy) restore() {
	p.t.Helper()
	var ln net.Listener
	var err error
	for range 100 { // the port may take a moment to be free again
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("proxy listen %s: %v", p.addr, err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go p.accept(ln)
}

func (p *tcpProxy) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.ln != ln { // cut meanwhile
			p.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *tcpProxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// cut closes the listener and every connection: new connections are refused.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// TestCrashReadModelUnreachable cuts keysd off from its PostgreSQL read model under a PATCH
// load (a TCP proxy between them refuses and breaks connections, as a stopped PostgreSQL
// does, without stopping the cluster other tests share) and restores it. Meanwhile reads,
// checks and PATCHes get 503 SERVICE_UNAVAILABLE with Retry-After, never a 500; afterwards
// the projector catches up by itself and the read model equals a replay of the stream.
func TestCrashReadModelUnreachable(t *testing.T) {
	testenv.Heavy(t, "crash loop")
	t.Parallel()
	ns := testenv.ExternalNATS(t)
	db := testenv.Postgres(t)
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startProxy(t, u.Host)
	u.Host = proxy.addr
	k := startKeysd(t, keysdOptions{natsURL: ns.URL, databaseURL: u.String()})
	p := k.createProject("db-outage")
	keys := createKeys(t, k, p, 4)
	secret := k.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "u", "description": "checked"}).str("value")
	load := startPatchLoad(t, []*keysd{k}, p, keys, 8)
	for round := range *crashRounds {
		load.waitAcked(load.oks.Load() + 40)
		proxy.cut()
		for _, req := range []struct {
			method, path string
			body         any
		}{
			{"GET", "/api/v1/user-api-keys/" + keys[0], nil},
			{"GET", "/api/v1/user-api-keys?user_id=load", nil},
			{"POST", "/api/v1/user-api-keys/check", map[string]any{"api_key": secret}},
			{"PATCH", "/api/v1/user-api-keys/" + keys[1], map[string]any{"description": fmt.Sprintf("db down %d", round)}},
		} {
			r := k.do(req.method, req.path, p, req.body)
			if r.Status != 503 || r.str("code") != "SERVICE_UNAVAILABLE" || r.Header.Get("Retry-After") == "" {
				t.Fatalf("%s %s with the read model unreachable: %d %s", req.method, req.path, r.Status, r.Raw)
			}
		}
		proxy.restore()
		load.waitAcked(load.oks.Load() + 40)
	}
	acked := load.finish()
	folded := replay(t, ns.URL, acked)
	checkPostgresMatchesReplay(t, db, ns.URL, folded)
	if c := k.do("POST", "/api/v1/user-api-keys/check", p, map[string]any{"api_key": secret}); c.Status != 200 {
		t.Fatalf("check after the outage: %d %s", c.Status, c.Raw)
	}
}
