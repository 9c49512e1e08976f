package domain_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/keyledger/keyledger/domain"
)

func TestCodecRoundTrip(t *testing.T) {
	created, err := domain.DecideCreateKey(domain.CreateKey{ProjectID: "p1", KeyID: "k1", UserID: "u1", Description: "d", SecretHash: "ab", LastFour: "wxyz"}, meta(t0))
	if err != nil {
		t.Fatal(err)
	}
	k, _ := domain.EvolveKey(nil, created)
	both, _ := k.DecideUpdate(domain.UpdateKey{Description: str("n"), Revoked: boolean(true)}, meta(later))
	for _, e := range append([]domain.Event{created}, both...) {
		b, err := domain.MarshalEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := domain.UnmarshalEvent(b)
		if err != nil {
			t.Fatalf("%s: %v", e.Type, err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("round trip of %s:\n got %+v\nwant %+v", e.Type, got, e)
		}
		var fields map[string]any
		_ = json.Unmarshal(b, &fields)
		for _, f := range []string{"id", "type", "schema_version", "project_id", "key_id", "user_id", "version", "time", "actor", "request_id", "data"} {
			if _, ok := fields[f]; !ok {
				t.Errorf("%s lacks field %q: %s", e.Type, f, b)
			}
		}
	}
}

func TestUnmarshalRejectsGarbage(t *testing.T) {
	for _, in := range []string{``, `garbage`, `[]`, `{}`, `{"type":"Nope","schema_version":1}`,
		`{"id":"e","type":"KeyRevoked","schema_version":1,"project_id":"p","key_id":"k","user_id":"u","version":2,"data":null}`,
		`{"id":"e","type":"KeyRevoked","schema_version":99,"project_id":"p","key_id":"k","user_id":"u","version":2,"data":{}}`,
	} {
		if _, err := domain.UnmarshalEvent([]byte(in)); !errors.Is(err, domain.ErrInvalidEvent) {
			t.Errorf("UnmarshalEvent(%q) = %v, want ErrInvalidEvent", in, err)
		}
	}
}
