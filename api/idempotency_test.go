package api

import (
	"bytes"
	"encoding/json"
	"testing"
)

// A stored response replays byte for byte, and a record sealed before the binary form (JSON,
// the body in base64) still replays.
func TestStoredResponseReplaysTheSameBytes(t *testing.T) {
	t.Parallel()
	for _, r := range []storedResponse{
		{Status: 200, ETag: `"1"`, Body: []byte("{\"description\":\"<b>&amp; \\u2028 é</b>\",\"value\":\"sk_x\"}\n")},
		{Status: 404, Body: []byte(`{"code":"API_KEY_NOT_FOUND","error":"API key not found."}`)},
		{Status: 409, ETag: "", Body: nil},
	} {
		plain, err := r.encode()
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeStoredResponse(plain)
		if err != nil {
			t.Fatal(err)
		}
		if back.Status != r.Status || back.ETag != r.ETag || !bytes.Equal(back.Body, r.Body) {
			t.Fatalf("stored %+v, replays %+v", r, back)
		}
	}
	old, _ := json.Marshal(storedResponse{Status: 200, ETag: `"2"`, Body: []byte("{\"x\":\"<y>\"}\n")})
	back, err := decodeStoredResponse(old)
	if err != nil || back.Status != 200 || back.ETag != `"2"` || string(back.Body) != "{\"x\":\"<y>\"}\n" {
		t.Fatalf("an old record replays %+v, %v", back, err)
	}
	for _, bad := range [][]byte{nil, {1, 0}, {2, 0, 200, 0}, {1, 0, 200, 9, 'x'}} {
		if _, err := decodeStoredResponse(bad); err == nil {
			t.Fatalf("decoded %v", bad)
		}
	}
	if _, err := (storedResponse{Status: 0}).encode(); err == nil {
		t.Fatal("encoded a response without a status")
	}
}
