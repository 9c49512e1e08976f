package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestKeyHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.newProject(t)
	h := p.headers()
	created := e.createKey(t, p, `{"user_id":"u","description":"first"}`)
	id := created.body["id"].(string)
	path := v1 + "/" + id
	admin := with(h, "X-Stack-Admin-Access-Token", str(e.adminToken(t, p.id, "alice@example.com", time.Hour)))
	renamed := e.ok(t, http.MethodPatch, path, admin, `{"description":"second"}`)
	revoked := e.ok(t, http.MethodPatch, path, h, `{"revoked":true}`)
	// Garbage on the key's own subject is not part of its history.
	nc := e.nats.Connect(t)
	if err := nc.Publish("keyledger.key."+p.id+"."+id+".KeyRevoked", []byte("garbage {")); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()

	r := e.ok(t, http.MethodGet, path+"/events", h, "")
	var got historyPage
	if err := json.Unmarshal(r.raw, &got); err != nil || !got.IsPaginated || got.Pagination.NextCursor != nil {
		t.Fatalf("body %s (%v), want is_paginated true, items, and no next cursor", r.raw, err)
	}
	stored := e.events(t, p.id, id)
	if len(got.Items) != 3 || len(stored) != 4 {
		t.Fatalf("%d items from %d stored messages, want the 3 events without the garbage: %s", len(got.Items), len(stored), r.raw)
	}
	type event struct {
		ID            string `json:"id"`
		Type          string `json:"type"`
		SchemaVersion int    `json:"schema_version"`
		ProjectID     string `json:"project_id"`
		KeyID         string `json:"key_id"`
		UserID        string `json:"user_id"`
		Version       int    `json:"version"`
		Time          string `json:"time"`
		Actor         struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		} `json:"actor"`
		RequestID string         `json:"request_id"`
		Data      map[string]any `json:"data"`
	}
	want := []struct {
		typ, actorType, actorID, requestID string
	}{
		{"KeyCreated", "server_key", "", created.header.Get("x-stack-request-id")},
		{"DescriptionChanged", "admin", "alice@example.com", renamed.header.Get("x-stack-request-id")},
		{"KeyRevoked", "server_key", "", revoked.header.Get("x-stack-request-id")},
	}
	for i, item := range got.Items {
		// Each item is the event as stored on the stream, oldest first.
		var compact bytes.Buffer
		if err := json.Compact(&compact, item); err != nil || compact.String() != string(stored[i].Raw) {
			t.Errorf("item %d = %s, want the stored event %s", i, item, stored[i].Raw)
		}
		var ev event
		if err := json.Unmarshal(item, &ev); err != nil {
			t.Fatal(err)
		}
		w := want[i]
		if ev.Type != w.typ || ev.Version != i+1 || ev.SchemaVersion != 1 || ev.ProjectID != p.id || ev.KeyID != id ||
			ev.UserID != "u" || ev.Actor.Type != w.actorType || (w.actorID != "" && ev.Actor.ID != w.actorID) ||
			ev.Actor.ID == "" || ev.RequestID != w.requestID || ev.ID == "" || !isoUTC.MatchString(ev.Time) {
			t.Errorf("item %d = %s, want %s version %d by %s %q for request %s", i, item, w.typ, i+1, w.actorType, w.actorID, w.requestID)
		}
	}
	if !strings.Contains(string(got.Items[1]), `"data":{"old":"first","new":"second"}`) {
		t.Errorf("DescriptionChanged %s lacks old and new", got.Items[1])
	}
	if strings.Contains(string(r.raw), created.body["value"].(string)) {
		t.Error("the secret key is in the history")
	}

	t.Run("same errors as GET of the key", func(t *testing.T) {
		other := e.newProject(t)
		e.refused(t, http.MethodGet, path+"/events", other.headers(), "", http.StatusNotFound, "API_KEY_NOT_FOUND")
		e.refused(t, http.MethodGet, v1+"/"+uuid.NewString()+"/events", h, "", http.StatusNotFound, "API_KEY_NOT_FOUND")
		e.refused(t, http.MethodGet, v1+"/not-a-uuid/events", h, "", http.StatusBadRequest, "SCHEMA_ERROR")
		e.refused(t, http.MethodGet, path+"/events", with(h, "X-Stack-Secret-Server-Key", nil), "", http.StatusUnauthorized, "SERVER_AUTHENTICATION_REQUIRED")
		e.refused(t, http.MethodGet, path+"/events", with(h, "X-Stack-Secret-Server-Key", str(other.serverKey)), "", http.StatusUnauthorized, "INVALID_SECRET_SERVER_KEY")
		e.refused(t, http.MethodPost, path+"/events", h, `{}`, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED")
	})
}

type historyPage struct {
	IsPaginated bool              `json:"is_paginated"`
	Items       []json.RawMessage `json:"items"`
	Pagination  struct {
		NextCursor *string `json:"next_cursor"`
	} `json:"pagination"`
}

// A long history is read a page at a time: the cursors lead through every event once, in
// order, and the last page says there is no next.
func TestKeyHistoryPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.newProject(t)
	h := p.headers()
	id := e.createKey(t, p, `{"user_id":"u","description":"d0"}`).body["id"].(string)
	path := v1 + "/" + id + "/events"
	for i := 1; i <= 6; i++ {
		e.ok(t, http.MethodPatch, v1+"/"+id, h, fmt.Sprintf(`{"description":"d%d"}`, i))
	}
	var versions []float64
	pages := 0
	for url := path + "?limit=3"; url != ""; pages++ {
		var page historyPage
		if err := json.Unmarshal(e.ok(t, http.MethodGet, url, h, "").raw, &page); err != nil {
			t.Fatal(err)
		}
		for _, item := range page.Items {
			var ev struct{ Version float64 }
			_ = json.Unmarshal(item, &ev)
			versions = append(versions, ev.Version)
		}
		url = ""
		if page.Pagination.NextCursor != nil {
			url = path + "?limit=3&cursor=" + *page.Pagination.NextCursor
		}
		if pages > 5 {
			t.Fatal("the cursors do not end")
		}
	}
	if fmt.Sprint(versions) != "[1 2 3 4 5 6 7]" || pages != 3 {
		t.Fatalf("versions %v in %d pages, want 1..7 in 3 pages of at most 3", versions, pages)
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x", "?cursor=0", "?cursor=-1", "?cursor=a", "?page=2", "?limit=1&limit=2"} {
		e.refused(t, http.MethodGet, path+q, h, "", http.StatusBadRequest, "SCHEMA_ERROR")
	}
	// A cursor on a key that does not exist, or that is not one of the key's messages.
	for _, q := range []string{"/" + uuid.NewString() + "/events?cursor=1", "/" + uuid.NewString() + "/events?cursor=1&limit=1", "/" + id + "/events?cursor=99999"} {
		e.refused(t, http.MethodGet, v1+q, h, "", http.StatusNotFound, "API_KEY_NOT_FOUND")
	}
}
