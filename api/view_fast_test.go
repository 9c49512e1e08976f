package api

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

// TestAppendKeyObjectIsEncodeJSON: the hand-written encoder writes the bytes encodeJSON
// writes, for every shape of key object and strings that need escaping.
func TestAppendKeyObjectIsEncodeJSON(t *testing.T) {
	strs := []string{"", "plain", `q"uote`, `back\slash`, "<&>", "tab\tnl\n", "é ü", "\u2028", "\x7f", "bad\xffutf8", "\x00"}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return strs[rng.IntN(len(strs))] }
	opt := func() *string {
		if rng.IntN(2) == 0 {
			return nil
		}
		s := pick()
		return &s
	}
	optInt := func() *int64 {
		if rng.IntN(2) == 0 {
			return nil
		}
		n := rng.Int64N(1<<50) - 1<<40
		return &n
	}
	for i := range 2000 {
		o := keyObject{
			ID: pick(), Description: pick(), UserID: opt(), TeamID: opt(), ExpiresAt: opt(), ManuallyRevokedAt: opt(),
			CreatedAt: time.UnixMilli(rng.Int64N(1 << 45)).UTC().Format(timeLayout), ExpiresAtMillis: optInt(),
			ManuallyRevokedAtMillis: optInt(), CreatedAtMillis: rng.Int64N(1 << 45), Type: pick(), IsPublic: rng.IntN(2) == 0,
			LastUsedAt: opt(), LastUsedAtMillis: optInt(),
		}
		switch i % 3 {
		case 0:
			o.Value = lastFour{LastFour: pick()}
		case 1:
			o.Value = pick()
		default:
			o.Value = lastFour{LastFour: "abcd"}
			o.RotatedFrom = pick()
		}
		var want bytes.Buffer
		if err := encodeJSON(&want, o); err != nil {
			t.Fatal(err)
		}
		got, ok := appendKeyObject(nil, &o)
		if !ok || !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("appendKeyObject:\n%s\nencodeJSON:\n%s", got, want.Bytes())
		}
		var buf bytes.Buffer
		buf.WriteString("left over")
		buf.Reset()
		if err := encodeResponse(&buf, o); err != nil || !bytes.Equal(buf.Bytes(), want.Bytes()) {
			t.Fatalf("encodeResponse: %s, %v", buf.Bytes(), err)
		}
	}
	if _, ok := appendKeyObject(nil, &keyObject{Value: 42}); ok {
		t.Fatal("an unknown value was encoded by hand")
	}
}
