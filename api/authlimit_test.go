package api_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyledger/keyledger/api"
	"github.com/keyledger/keyledger/internal/service"
	"github.com/keyledger/keyledger/projections"
)

// TestFailedAuthenticationsRateLimited: an address that keeps failing authentication (wrong
// server keys, unknown projects, bad admin tokens) gets 429 RATE_LIMITED with Retry-After
// for every API request once its burst is spent, before its credentials are looked at, and
// again one attempt per token after that; malformed headers, which guess nothing, are not
// counted.
func TestFailedAuthenticationsRateLimited(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.newProject(t)
	const burst = 5
	svc, err := service.Start(service.Config{
		Store: e.store, ReadModel: projections.NewMemory(), Hasher: e.hasher,
		API: api.Deps{Logger: slog.New(slog.NewJSONHandler(e.logs, nil)), AuthFailureRate: 0.001, AuthFailureBurst: burst},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	srv := httptest.NewServer(svc.Handler)
	t.Cleanup(srv.Close)

	wrongKey := with(p.headers(), "x-stack-secret-server-key", str("ssk_wrong"))
	unknownProject := with(p.headers(), "x-stack-project-id", str(uuid.NewString()))
	noProject := with(p.headers(), "x-stack-project-id", nil)
	badToken := with(p.headers(), "x-stack-admin-access-token", str("not-a-token"))

	// Requests with malformed or missing credentials are answered and never counted.
	for range 3 * burst {
		if r := call(t, srv.URL, http.MethodGet, v1+"?user_id=u", noProject, ""); r.status != 400 || r.code() != "ACCESS_TYPE_WITHOUT_PROJECT_ID" {
			t.Fatalf("no project id: %s", r)
		}
	}
	// The burst of guesses is answered as usual...
	for i := range burst {
		h, want := wrongKey, "INVALID_SECRET_SERVER_KEY"
		switch i % 3 {
		case 1:
			h, want = unknownProject, "CURRENT_PROJECT_NOT_FOUND"
		case 2:
			h, want = badToken, "UNPARSABLE_ADMIN_ACCESS_TOKEN"
		}
		if r := call(t, srv.URL, http.MethodGet, v1+"?user_id=u", h, ""); r.code() != want {
			t.Fatalf("guess %d: %s, want %s", i, r, want)
		}
	}
	// ...and then every API request from the address is refused, the right credentials too,
	// with nothing appended.
	before := e.lastSeq(t)
	for _, h := range []http.Header{wrongKey, unknownProject, p.headers()} {
		r := call(t, srv.URL, http.MethodPost, v1, h, `{"user_id":"u","description":"d"}`)
		if r.status != http.StatusTooManyRequests || r.code() != "RATE_LIMITED" || r.header.Get("Retry-After") == "" {
			t.Fatalf("after %d failures: %s (Retry-After %q)", burst, r, r.header.Get("Retry-After"))
		}
	}
	if after := e.lastSeq(t); after != before {
		t.Fatalf("rate-limited requests moved the stream from %d to %d", before, after)
	}
	// (A token comes back every 1000 s here: TestAuthFailureLimiter checks the refill.)
}

// TestUnknownProjectsCostNoRoundTripEach: requests naming a project id that does not exist are
// answered from a short-lived negative cache, not with a read-model and NATS lookup each, and
// a project created after its id was asked for is found once the entry expires.
func TestUnknownProjectsCostNoRoundTripEach(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.newProject(t)
	unknown := with(p.headers(), "x-stack-project-id", str(uuid.NewString()))
	nc := e.store.Conn()
	call(t, e.url, http.MethodGet, v1+"?user_id=u", unknown, "") // the lookup, remembered
	before := nc.Stats().OutMsgs
	// Within one second (half the entry's life, on a machine however busy), at most 200.
	n, start := 0, time.Now()
	for n < 200 && time.Since(start) < time.Second {
		if r := call(t, e.url, http.MethodGet, v1+"?user_id=u", unknown, ""); r.code() != "CURRENT_PROJECT_NOT_FOUND" {
			t.Fatalf("unknown project: %s", r)
		}
		n++
	}
	// The projector's own pulls go over the same connection; a lookup per request would be
	// n messages or more.
	if sent := nc.Stats().OutMsgs - before; sent > 5 && sent*4 > uint64(n) {
		t.Fatalf("%d requests for one unknown project sent %d NATS messages", n, sent)
	}
}
