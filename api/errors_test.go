package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

func TestErrorTable(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return fmt.Errorf("update key %s: %w", testKeyID, err) }
	cases := []struct {
		name       string
		err        error
		status     int
		code       string
		message    string
		retryAfter string
	}{
		{"key not found", wrap(domain.ErrKeyNotFound), 404, CodeAPIKeyNotFound, "API key not found.", ""},
		{"malformed secret", domain.ErrInvalidSecretKey, 404, CodeAPIKeyNotFound, "API key not found.", ""},
		{"un-revoke", wrap(domain.ErrKeyAlreadyRevoked), 409, CodeAPIKeyAlreadyRevoked, "", ""},
		{"revoked", domain.ErrKeyRevoked, 401, CodeAPIKeyRevoked, "API key has been revoked.", ""},
		{"expired", domain.ErrKeyExpired, 401, CodeAPIKeyExpired, "API key has expired.", ""},
		{"wrong key type", &domain.WrongKeyTypeError{Expected: domain.KeyTypeUser, Actual: domain.KeyTypeTeam}, 400, CodeWrongAPIKeyType,
			"This endpoint is for user API keys, but a team API key was provided.", ""},
		{"validation", wrap(&domain.ValidationError{Msg: "body.description must be at most 4096 bytes"}), 400, CodeSchemaError,
			schemaMsg(http.MethodPatch, "/p", "body.description must be at most 4096 bytes"), ""},
		{"contention", wrap(commands.ErrContention), 503, CodeServiceUnavailable, "", "1"},
		{"local key lock timed out", wrap(fmt.Errorf("%w: %w", commands.ErrKeyBusy, context.DeadlineExceeded)), 503, CodeServiceUnavailable,
			"Earlier changes to this API key are still in progress; retry the request.", "2"},
		{"store unavailable", wrap(eventstore.ErrUnavailable), 503, CodeServiceUnavailable, "", "2"},
		{"store timeout", wrap(context.DeadlineExceeded), 503, CodeServiceUnavailable, "", "2"},
		{"projector behind", fmt.Errorf("wait: %w (%w)", errProjectorBehind, errors.New("x")), 503, CodeServiceUnavailable, "", "2"},
		{"read model refused the connection", wrap(&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), 503, CodeServiceUnavailable,
			"The read model is unavailable; retry the request.", "2"},
		{"read model shutting down", wrap(&pgconn.PgError{Code: "57P01"}), 503, CodeServiceUnavailable, "", "2"},
		{"read model constraint violation", wrap(&pgconn.PgError{Code: "23505"}), 500, CodeInternalServerError, "", ""},
		{"shaped error passes through", &apiError{Status: 401, Code: CodeServerAuthRequired, Message: "m"}, 401, CodeServerAuthRequired, "m", ""},
		{"anything else", errors.New("disk on fire"), 500, CodeInternalServerError, "", ""},
		{"a conflict that escaped the retry", eventstore.ErrConflict, 500, CodeInternalServerError, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodPatch, "/p", nil)
			rec := httptest.NewRecorder()
			writeError(rec, r, c.err)
			if rec.Code != c.status {
				t.Fatalf("status %d, want %d", rec.Code, c.status)
			}
			var body struct {
				Code    string         `json:"code"`
				Error   string         `json:"error"`
				Details map[string]any `json:"details"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			if body.Code != c.code {
				t.Fatalf("code %q, want %q", body.Code, c.code)
			}
			if c.message != "" && body.Error != c.message {
				t.Fatalf("error %q, want %q", body.Error, c.message)
			}
			known := rec.Header().Get(headerKnownError)
			if c.status == 500 {
				if known != "" {
					t.Fatalf("a 500 carries x-stack-known-error %q", known)
				}
				if strings.Contains(body.Error, "disk on fire") {
					t.Fatalf("the cause of a 500 leaked to the client: %q", body.Error)
				}
			} else if known != c.code {
				t.Fatalf("x-stack-known-error %q, want %q", known, c.code)
			}
			if got := rec.Header().Get("Retry-After"); got != c.retryAfter {
				t.Fatalf("Retry-After %q, want %q", got, c.retryAfter)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
}

// TestInstrument covers what the outermost middleware adds to every response: a request id,
// no-store, a JSON 500 for a panic, and metrics labelled by route template.
func TestInstrument(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg, stoppedProjector{}, nil, nil, &streamPosition{}, nil, &replayCache{})
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	s := &server{log: slog.New(slog.NewJSONHandler(&logs, nil)), metrics: m}
	h := s.instrument(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("boom")
		}
		writeJSON(w, 200, map[string]string{"ok": "yes"})
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()

	ids := map[string]bool{}
	for _, path := range []string{"/ok", "/ok", "/panic"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Header.Set(headerRequestID, "client-chosen")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		id := resp.Header.Get(headerRequestID)
		if id == "" || id == "client-chosen" || ids[id] {
			t.Fatalf("%s: request id %q: want a fresh one per request", path, id)
		}
		ids[id] = true
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Fatalf("%s: Cache-Control %q", path, cc)
		}
		if path == "/panic" {
			if resp.StatusCode != 500 || !strings.Contains(string(b), `"code":"INTERNAL_SERVER_ERROR"`) || !strings.Contains(string(b), id) {
				t.Fatalf("panic answered %d %s", resp.StatusCode, b)
			}
		}
	}
	if !strings.Contains(logs.String(), `"panic":"boom"`) {
		t.Fatalf("panic not logged: %s", logs.String())
	}
	if got := testCounter(t, reg, "keyledger_http_panics_total"); got != 1 {
		t.Fatalf("panics counted %v, want 1", got)
	}
	if got := testCounter(t, reg, "keyledger_http_requests_total"); got != 3 {
		t.Fatalf("requests counted %v, want 3", got)
	}
}

type stoppedProjector struct{}

func (stoppedProjector) WaitFor(ctx context.Context, _ uint64) error { <-ctx.Done(); return ctx.Err() }
func (stoppedProjector) Position() uint64                            { return 0 }
func (stoppedProjector) Ready() bool                                 { return false }

// testCounter sums every series of a counter family.
func testCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
