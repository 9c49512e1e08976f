package domain_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/domain"
)

// FuzzParseSecretKey: any string is either rejected with ErrInvalidSecretKey or is a key of
// the documented shape whose embedded id comes back as a canonical lowercase UUID.
func FuzzParseSecretKey(f *testing.F) {
	random := bytes.Repeat([]byte{7}, domain.SecretKeyBytes)
	for _, public := range []bool{false, true} {
		k, err := domain.FormatSecretKey("0b5f8a3e-5b1c-4c1e-9d6a-3f2e1d0c9b8a", domain.KeyTypeUser, public, random)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(k)
		f.Add(strings.ToUpper(k))
		f.Add(k[:len(k)-1] + "0")
	}
	f.Add("")
	f.Add("sk_")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := domain.ParseSecretKey(s)
		if err != nil {
			if !errors.Is(err, domain.ErrInvalidSecretKey) {
				t.Fatalf("ParseSecretKey error %v is not ErrInvalidSecretKey", err)
			}
			if s != "" && len(s) > 8 && strings.Contains(err.Error(), s) {
				t.Fatalf("the presented key is in the error: %v", err)
			}
			return
		}
		if !strings.HasPrefix(s, "sk_") && !strings.HasPrefix(s, "pk_") {
			t.Fatalf("accepted %q without the sk_/pk_ prefix", s)
		}
		if len(id) != 36 || strings.ToLower(id) != id || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' {
			t.Fatalf("accepted %q with key id %q", s, id)
		}
		if !strings.Contains(s, strings.ReplaceAll(id, "-", "")) {
			t.Fatalf("key id %q is not the one embedded in %q", id, s)
		}
	})
}

// FuzzUnmarshalEvent: any bytes on an event subject either decode to a valid event, which
// encodes and decodes back to itself, or are refused with ErrInvalidEvent (and set aside by
// the projector); never a panic.
func FuzzUnmarshalEvent(f *testing.F) {
	created, err := domain.DecideCreateKey(domain.CreateKey{ProjectID: "p1", KeyID: "k1", UserID: "u1", Description: "d", SecretHash: "ab", LastFour: "wxyz"}, meta(t0))
	if err != nil {
		f.Fatal(err)
	}
	k, _ := domain.EvolveKey(nil, created)
	both, _ := k.DecideUpdate(domain.UpdateKey{Description: str("n"), Revoked: boolean(true)}, meta(later))
	for _, e := range append([]domain.Event{created}, both...) {
		b, err := domain.MarshalEvent(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"id":"e","type":"KeyRevoked","schema_version":1,"project_id":"p","key_id":"k","user_id":"u","version":2,"data":null}`))
	f.Add([]byte(`{"type":"ProjectCreated","schema_version":1,"data":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := domain.UnmarshalEvent(b)
		if err != nil {
			if !errors.Is(err, domain.ErrInvalidEvent) {
				t.Fatalf("UnmarshalEvent error %v does not wrap ErrInvalidEvent", err)
			}
			return
		}
		m1, err := domain.MarshalEvent(e)
		if err != nil {
			t.Fatalf("a decoded event does not encode: %v", err)
		}
		e2, err := domain.UnmarshalEvent(m1)
		if err != nil {
			t.Fatalf("a re-encoded event does not decode: %v\n%s", err, m1)
		}
		m2, err := domain.MarshalEvent(e2)
		if err != nil || !bytes.Equal(m1, m2) {
			t.Fatalf("encode/decode is not stable:\n%s\n%s", m1, m2)
		}
	})
}
