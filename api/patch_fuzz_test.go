package api_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/api"
	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/service"
	"github.com/keyledger/keyledger/internal/testenv"
	"github.com/keyledger/keyledger/projections"
)

// FuzzPatchHandler sends arbitrary PATCH requests (body, content type, key id, query, an
// admin token) through the real handler, on a real in-process NATS server and the in-process
// read model: every answer is a 2xx or 4xx JSON document, never a 5xx or a panic, and a
// refused request appends nothing to the stream.
func FuzzPatchHandler(f *testing.F) {
	ns := testenv.NATS(f)
	nc := ns.Connect(f)
	store, err := eventstore.Open(context.Background(), nc, eventstore.Config{})
	if err != nil {
		f.Fatal(err)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	hasher, err := domain.NewHasher(secret)
	if err != nil {
		f.Fatal(err)
	}
	svc, err := service.Start(service.Config{
		Store: store, ReadModel: projections.NewMemory(), Hasher: hasher,
		API: api.Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(svc.Stop)
	cmds, h := svc.Commands, svc.Handler
	ctx := context.Background()
	p, err := cmds.CreateProject(ctx, domain.Actor{Type: domain.ActorOperator, ID: "fuzz"}, "fuzz")
	if err != nil {
		f.Fatal(err)
	}
	caller := commands.Caller{ProjectID: p.Project.ID, Actor: domain.Actor{Type: domain.ActorServerKey, ID: p.Project.ServerKeyID}}
	active, err := cmds.CreateKey(ctx, caller, commands.NewKey{UserID: "u", Description: "d"})
	if err != nil {
		f.Fatal(err)
	}
	revoked, err := cmds.CreateKey(ctx, caller, commands.NewKey{UserID: "u", Description: "r"})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := cmds.UpdateKey(ctx, caller, revoked.Key.ID, domain.UpdateKey{Revoked: new(true)}); err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	token, err := hasher.IssueAdminToken(domain.AdminClaims{ProjectID: p.Project.ID, Subject: "alice", IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		f.Fatal(err)
	}

	for _, s := range []struct {
		body, contentType, id, query, admin string
	}{
		{`{"description":"new"}`, "application/json", "active", "", ""},
		{`{"description":"x","revoked":true}`, "application/json", "active", "user_id=u", "token"},
		{`{"revoked":false,"description":"sneaky"}`, "application/json", "revoked", "", ""},
		{`{"revoked":false}`, "application/json; charset=UTF-8", "revoked", "", "garbage"},
		{`{}`, "application/json", "6f1c1d3e-0000-4000-8000-000000000000", "", ""},
		{`{"description":null}`, "text/plain", "../check", "user_id=", ""},
		{`{"description":"` + strings.Repeat("é", 2049) + `"}`, "application/json", "active", "", ""},
	} {
		f.Add(s.body, s.contentType, s.id, s.query, s.admin)
	}
	f.Fuzz(func(t *testing.T, body, contentType, id, query, admin string) {
		switch id {
		case "active":
			id = active.Key.ID
		case "revoked":
			id = revoked.Key.ID
		}
		req := httptest.NewRequest(http.MethodPatch, "/api/v1/user-api-keys/x", strings.NewReader(body))
		req.URL.Path = "/api/v1/user-api-keys/" + id
		req.URL.RawPath = ""
		req.URL.RawQuery = query
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("x-stack-project-id", p.Project.ID)
		req.Header.Set("x-stack-secret-server-key", p.ServerKey)
		switch admin {
		case "":
		case "token":
			req.Header.Set("x-stack-admin-access-token", token)
		default:
			req.Header.Set("x-stack-admin-access-token", admin)
		}
		before, err := store.LastSeq(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var got map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatalf("%d answer is not JSON: %q", rec.Code, rec.Body)
		}
		switch {
		case rec.Code >= 500:
			t.Fatalf("server failure %d %s", rec.Code, rec.Body)
		case rec.Code == 200:
			if got["id"] != strings.ToLower(id) {
				t.Fatalf("200 for key %q answered %s", id, rec.Body)
			}
		default:
			if rec.Code < 400 || got["code"] == nil || rec.Header().Get("x-stack-known-error") != got["code"] {
				t.Fatalf("%d answer without the error shape: %s", rec.Code, rec.Body)
			}
			after, err := store.LastSeq(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if after != before {
				t.Fatalf("refused with %d %s, yet %d events were appended", rec.Code, got["code"], after-before)
			}
		}
	})
}
