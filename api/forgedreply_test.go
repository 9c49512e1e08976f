package api_test

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
)

// TestForgedErrorRepliesDoNotFailCommittedPatches: a NATS client that subscribes to the
// event subjects sees each append with its reply subject, and answers it with a JetStream
// error before the server's acknowledgement arrives (the server syncs every write, so its
// answer comes late). The PATCH was committed all the same: keysd must resolve the outcome
// from the stream and answer 200, with the change stored once, never a 5xx nor a 503.
func TestForgedErrorRepliesDoNotFailCommittedPatches(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{syncAlways: true})
	p := e.newProject(t)
	key := e.createKey(t, p, `{"user_id":"u","description":"d"}`)
	id, _ := key.body["id"].(string)

	forger := e.nats.Connect(t)
	var forged atomic.Int64
	if _, err := forger.Subscribe("keyledger.key.>", func(m *nats.Msg) {
		if m.Reply == "" {
			return
		}
		forged.Add(1)
		_ = forger.Publish(m.Reply, []byte(`{"type":"io.nats.jetstream.api.v1.pub_ack_response","error":{"code":500,"err_code":10077,"description":"forged: message store failed"}}`))
	}); err != nil {
		t.Fatal(err)
	}
	if err := forger.Flush(); err != nil {
		t.Fatal(err)
	}
	const n = 10
	for i := range n {
		r := call(t, e.url, http.MethodPatch, v1+"/"+id, p.headers(), fmt.Sprintf(`{"description":"rename %d"}`, i))
		if r.status != http.StatusOK {
			t.Fatalf("PATCH %d under forged error replies (%d forged so far): %s", i, forged.Load(), r)
		}
	}
	if forged.Load() < n {
		t.Fatalf("only %d replies forged for %d PATCHes", forged.Load(), n)
	}
	renames := 0
	for _, r := range e.events(t, p.id, id) {
		if r.Event.Type == domain.TypeDescriptionChanged {
			if c := r.Event.Data.(domain.DescriptionChanged); c.New != fmt.Sprintf("rename %d", renames) {
				t.Fatalf("rename %d on the stream is %q", renames, c.New)
			}
			renames++
		}
	}
	if renames != n {
		t.Fatalf("%d renames on the stream for %d PATCHes", renames, n)
	}
}
