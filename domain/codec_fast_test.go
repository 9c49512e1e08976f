package domain

import (
	"reflect"
	"testing"
	"time"
)

// The one-pass decoder must agree with the general one on everything it accepts.
func TestOnePassDecoderAgreesWithTheGeneralOne(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	m := Meta{Time: at, Actor: Actor{Type: ActorAdmin, ID: "alice"}, RequestID: "r", NewID: func() string { return "e1" }}
	exp := at.Add(time.Hour)
	project, _ := DecideCreateProject(CreateProject{ProjectID: "p", Name: "n", ServerKeyID: "s", ServerKeyHash: "h"}, m)
	created, _ := DecideCreateKey(CreateKey{ProjectID: "p", KeyID: "k", UserID: "u", Description: "d", ExpiresAt: &exp, IsPublic: true, SecretHash: "h", LastFour: "abcd"}, m)
	key, _ := EvolveKey(nil, created)
	desc, yes := "new", true
	both, _ := key.DecideUpdate(UpdateKey{Description: &desc, Revoked: &yes}, m)
	docs := [][]byte{}
	for _, e := range append([]Event{project, created}, both...) {
		b, err := MarshalEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, b)
	}
	docs = append(docs,
		[]byte(`{"id":"e","type":"KeyRevoked","schema_version":1,"project_id":"p","key_id":"k","user_id":"u","version":2,"time":"2026-01-01T00:00:00Z","actor":{"type":"admin","id":"a"},"request_id":"","data":{"revoked_at":"2026-01-01T00:00:00Z","extra":1}}`),
		[]byte(`{"id":"e","type":"DescriptionChanged","schema_version":1,"project_id":"p","key_id":"k","user_id":"u","version":2,"time":"2026-01-01T00:00:00Z","actor":{"type":"admin","id":"a"},"data":{}}`),
	)
	for _, b := range docs {
		fast, ok := unmarshalCurrent(b)
		if !ok {
			t.Fatalf("one-pass decoder refused %s", b)
		}
		general, err := unmarshalAnyVersion(b)
		if err != nil {
			t.Fatalf("general decoder refused %s: %v", b, err)
		}
		if !reflect.DeepEqual(fast, general) {
			t.Fatalf("decoders disagree on %s:\n one-pass %+v\n  general %+v", b, fast, general)
		}
	}
	for _, odd := range []string{
		`{"id":"e","type":"KeyRevoked","schema_version":1,"project_id":"p","key_id":"k","user_id":"u","version":2,"actor":{"type":"a","id":"b"}}`,
		`{"id":"e","type":"KeyRevoked","schema_version":1,"project_id":"p","key_id":"k","user_id":"u","version":2,"data":{}}`,
		`{"id":"e","type":"KeyRevoked","schema_version":0,"project_id":"p","key_id":"k","user_id":"u","version":2,"actor":"admin:a","data":{"revoked_at_millis":1}}`,
		`{"id":"e","type":"Nope","schema_version":1,"project_id":"p","version":1,"actor":{"type":"a","id":"b"},"data":{}}`,
	} {
		if _, ok := unmarshalCurrent([]byte(odd)); ok {
			t.Errorf("one-pass decoder accepted %s; the general decoder must decide", odd)
		}
	}
}
