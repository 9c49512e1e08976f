package main_test

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/keyledger/keyledger/internal/testenv"
)

// TestSyncAlwaysGroupCommitsConcurrentPatches: with --sync-always, concurrent PATCHes on
// different keys share atomic batches (one flush each on the server), and each still lands
// once, in order, on its own key.
func TestSyncAlwaysGroupCommitsConcurrentPatches(t *testing.T) {
	testenv.Heavy(t, "a keysd process under concurrent load")
	k := startKeysd(t, keysdOptions{extraArgs: []string{"--sync-always", "--rate-limit", "0"}})
	p := k.createProject("group-commit")
	const keys = 24
	ids := make([]string, keys)
	for i := range ids {
		r := k.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": "u", "description": "start"})
		if r.Status != 200 {
			t.Fatalf("create key: %d %s", r.Status, r.Raw)
		}
		ids[i] = r.str("id")
	}
	patch := func(id, desc string) error {
		req, _ := http.NewRequest("PATCH", k.base+"/api/v1/user-api-keys/"+id, strings.NewReader(`{"description":"`+desc+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("x-stack-project-id", p.ID)
		req.Header.Set("x-stack-secret-server-key", p.ServerKey)
		req.Header.Set("x-stack-access-type", "server")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"description":"`+desc+`"`) {
			return fmt.Errorf("PATCH %s: %d %s", id, resp.StatusCode, body)
		}
		return nil
	}
	// Waves of concurrent PATCHes, until the server has seen a shared batch (the first wave
	// nearly always does; a slow machine may need a few).
	waves := 0
	for ; waves < 20; waves++ {
		var wg sync.WaitGroup
		errs := make(chan error, keys)
		for i, id := range ids {
			wg.Go(func() {
				if err := patch(id, fmt.Sprintf("wave %d key %d", waves, i)); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if metric(t, k, "keyledger_group_commit_commands_total") > 0 {
			break
		}
	}
	if waves == 20 {
		t.Fatalf("20 waves of %d concurrent PATCHes and no batch carried two commands", keys)
	}
	if r := metric(t, k, "keyledger_group_commit_retried_total"); r != 0 {
		t.Fatalf("%v commands were sent again alone; no PATCH here conflicts", r)
	}
	// On the stream: each key has its creation and then one rename per wave, versions in order.
	perKey := map[string][]int{}
	for _, e := range streamEvents(t, k.natsURL) {
		if e.Event.KeyID != "" {
			perKey[e.Event.KeyID] = append(perKey[e.Event.KeyID], e.Event.Version)
		}
	}
	for _, id := range ids {
		v := perKey[id]
		if len(v) != waves+2 {
			t.Fatalf("key %s has %d events, want %d", id, len(v), waves+2)
		}
		for i, ver := range v {
			if ver != i+1 {
				t.Fatalf("key %s versions %v, want 1..%d", id, v, len(v))
			}
		}
	}
}

// metric reads one counter or gauge from keysd's /metrics.
func metric(t *testing.T, k *keysd, name string) float64 {
	t.Helper()
	resp, err := http.Get(k.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %q", name, line)
			}
			return f
		}
	}
	t.Fatalf("no metric %s in /metrics", name)
	return 0
}
