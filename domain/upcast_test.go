package domain_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// The fixtures in testdata/ are events as the prototype's draft format (schema_version 0)
// stored them; reading them must give the current event, field for field.
func TestUpcastSchemaV0Fixtures(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	expires := at("2025-12-31T23:59:59Z")
	const (
		project = "5d7a4c1e-2b9f-4e8a-9c3d-1f2e3a4b5c6d"
		key     = "8f14e45f-ceea-467f-a0e6-b1c2d3e4f5a6"
		server  = "3c9e1b7a-4d2f-4a8b-8e6c-0f1d2e3c4b5a"
	)
	want := map[domain.EventType]domain.Event{
		domain.TypeProjectCreated: {
			ID: "0193a9e1-0a1b-7c2d-8e3f-4a5b6c7d8e9f", Type: domain.TypeProjectCreated, SchemaVersion: 1,
			ProjectID: project, Version: 1, Time: at("2024-11-26T09:14:00Z"),
			Actor: domain.Actor{Type: domain.ActorOperator, ID: "root"},
			Data: domain.ProjectCreated{Name: "my-project", ServerKeyID: server,
				ServerKeyHash: "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8", CreatedAt: at("2024-11-26T09:14:00Z")},
		},
		domain.TypeKeyCreated: {
			ID: "0193a9e2-6f0c-7c3e-9a51-2b8f0e6d1c44", Type: domain.TypeKeyCreated, SchemaVersion: 1,
			ProjectID: project, KeyID: key, UserID: "user-42", Version: 1, Time: at("2024-11-26T09:15:02.123Z"),
			Actor: domain.Actor{Type: domain.ActorServerKey, ID: server}, RequestID: "2b7c9e4f1a3d5c6e",
			Data: domain.KeyCreated{Description: "ci deploy key", ExpiresAt: &expires,
				SecretHash: "9b71d224bd62f3785d96d46ad3ea3d73319bfbc2890caadae2dff72519673ca7", LastFour: "9f3a",
				CreatedAt: at("2024-11-26T09:15:02.123Z")},
		},
		domain.TypeDescriptionChanged: {
			ID: "0193a9e3-1a2b-7c3d-8e4f-5a6b7c8d9e0f", Type: domain.TypeDescriptionChanged, SchemaVersion: 1,
			ProjectID: project, KeyID: key, UserID: "user-42", Version: 2, Time: at("2024-11-26T09:16:10.5Z"),
			// The id of a v0 actor is everything after the first colon.
			Actor: domain.Actor{Type: domain.ActorAdmin, ID: "alice@example.com:ops"}, RequestID: "7e1f0a2b3c4d5e6f",
			Data: domain.DescriptionChanged{Old: "ci deploy key", New: "ci deploy key (rotating)"},
		},
		domain.TypeKeyRevoked: {
			ID: "0193a9e4-2b3c-7d4e-9f50-6a7b8c9d0e1f", Type: domain.TypeKeyRevoked, SchemaVersion: 1,
			ProjectID: project, KeyID: key, UserID: "user-42", Version: 3, Time: at("2024-11-26T09:17:00Z"),
			Actor: domain.Actor{Type: domain.ActorServerKey, ID: server}, RequestID: "91ab2c3d4e5f6a7b",
			Data: domain.KeyRevoked{RevokedAt: at("2024-11-26T09:17:00Z")},
		},
	}
	var keyEvents []domain.Event
	for _, typ := range []domain.EventType{domain.TypeProjectCreated, domain.TypeKeyCreated, domain.TypeDescriptionChanged, domain.TypeKeyRevoked} {
		t.Run(string(typ), func(t *testing.T) {
			stored, err := os.ReadFile(filepath.Join("testdata", "schema_v0_"+string(typ)+".json"))
			if err != nil {
				t.Fatal(err)
			}
			got, err := domain.UnmarshalEvent(stored)
			if err != nil {
				t.Fatalf("decode stored v0 event: %v", err)
			}
			if !reflect.DeepEqual(got, want[typ]) {
				t.Fatalf("upcast:\n got %+v\nwant %+v", got, want[typ])
			}
			// Written again, it is a current event, and reads back unchanged.
			b, err := domain.MarshalEvent(got)
			if err != nil {
				t.Fatal(err)
			}
			var fields struct {
				SchemaVersion int             `json:"schema_version"`
				Actor         domain.Actor    `json:"actor"`
				Data          json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(b, &fields); err != nil || fields.SchemaVersion != domain.CurrentSchemaVersion || fields.Actor != want[typ].Actor {
				t.Fatalf("re-encoded as %s (%v)", b, err)
			}
			again, err := domain.UnmarshalEvent(b)
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("current form %s reads back as %+v, %v", b, again, err)
			}
			if typ != domain.TypeProjectCreated {
				keyEvents = append(keyEvents, got)
			}
		})
	}
	// The upcast history folds into the key it describes.
	k, err := domain.FoldKey(keyEvents)
	if err != nil {
		t.Fatalf("fold upcast events: %v", err)
	}
	s := k.Snapshot()
	if s.Description != "ci deploy key (rotating)" || s.RevokedAt == nil || !s.RevokedAt.Equal(at("2024-11-26T09:17:00Z")) || s.Version != 3 {
		t.Fatalf("folded key %+v", s)
	}
}

func TestUpcastRejectsMalformedV0(t *testing.T) {
	base := `{"id":"e","type":"%s","schema_version":0,"project_id":"p","key_id":"k","user_id":"u","version":2,"time":"2024-01-01T00:00:00Z","actor":%s,"request_id":"","data":%s}`
	for _, c := range []struct{ typ, actor, data string }{
		{"DescriptionChanged", `"no-colon"`, `{"from":"a","to":"b"}`},
		{"DescriptionChanged", `{"type":"admin","id":"a"}`, `{"from":"a","to":"b"}`}, // v1 actor in a v0 event
		{"DescriptionChanged", `"admin:a"`, `{"to":"b"}`},
		{"KeyRevoked", `"admin:a"`, `{"revoked_at":"2024-01-01T00:00:00Z"}`},
		{"KeyRevoked", `"admin:a"`, `null`},
	} {
		doc := []byte(fmt.Sprintf(base, c.typ, c.actor, c.data))
		if _, err := domain.UnmarshalEvent(doc); !errors.Is(err, domain.ErrInvalidEvent) {
			t.Errorf("UnmarshalEvent(%s) = %v, want ErrInvalidEvent", doc, err)
		}
	}
}
