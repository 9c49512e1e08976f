package domain

import (
	"bytes"
	"crypto/hmac"
	"strings"
	"testing"
	"time"
)

// TestSecretsAreComparedInConstantTime: every check of a secret server key, a secret API key
// and an admin token's signature ends in one call of the constant-time MAC comparison, for
// right and wrong secrets of the right length, of another length, and against a stored hash
// that is not even hex; none is answered before it. (A timing measurement would be flaky;
// the path is what is asserted.)
func TestSecretsAreComparedInConstantTime(t *testing.T) {
	calls := 0
	equalMACs = func(a, b []byte) bool { calls++; return hmac.Equal(a, b) }
	t.Cleanup(func() { equalMACs = hmac.Equal })

	h, err := NewHasher(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	serverKey := FormatServerKey(bytes.Repeat([]byte{2}, 32))
	secretKey, err := FormatSecretKey("0b5f8a3e-5b1c-4c1e-9d6a-3f2e1d0c9b8a", KeyTypeUser, false, bytes.Repeat([]byte{3}, SecretKeyBytes))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	token, err := h.IssueAdminToken(AdminClaims{ProjectID: "p", Subject: "s", IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	flip := func(s string) string { // same length, last character changed
		last := s[len(s)-1]
		return s[:len(s)-1] + map[bool]string{true: "b", false: "a"}[last == 'a']
	}
	serverHash, secretHash := h.HashServerKey(serverKey), h.HashSecretKey(secretKey)
	cases := []struct {
		name  string
		check func() bool
		want  bool
	}{
		{"server key: right", func() bool { return h.ServerKeyMatches(serverKey, serverHash) }, true},
		{"server key: wrong, same length", func() bool { return h.ServerKeyMatches(flip(serverKey), serverHash) }, false},
		{"server key: wrong, shorter", func() bool { return h.ServerKeyMatches(serverKey[:10], serverHash) }, false},
		{"server key: wrong, longer", func() bool { return h.ServerKeyMatches(serverKey+strings.Repeat("x", 100), serverHash) }, false},
		{"server key: empty", func() bool { return h.ServerKeyMatches("", serverHash) }, false},
		{"server key: stored hash not hex", func() bool { return h.ServerKeyMatches(serverKey, "zz") }, false},
		{"server key: another project's hash", func() bool { return h.ServerKeyMatches(serverKey, h.HashServerKey(flip(serverKey))) }, false},
		{"secret key: right", func() bool { return h.SecretKeyMatches(secretKey, secretHash) }, true},
		{"secret key: wrong, same length", func() bool { return h.SecretKeyMatches(flip(secretKey), secretHash) }, false},
		{"secret key: wrong, shorter", func() bool { return h.SecretKeyMatches(secretKey[:5], secretHash) }, false},
		{"secret key: stored hash truncated", func() bool { return h.SecretKeyMatches(secretKey, secretHash[:10]) }, false},
		{"admin token: right", func() bool { _, err := h.VerifyAdminToken(token, "p", now); return err == nil }, true},
		{"admin token: signature changed", func() bool { _, err := h.VerifyAdminToken(flip(token), "p", now); return err == nil }, false},
		{"admin token: signature cut short", func() bool { _, err := h.VerifyAdminToken(token[:len(token)-4], "p", now); return err == nil }, false},
	}
	for _, c := range cases {
		calls = 0
		if got := c.check(); got != c.want {
			t.Errorf("%s: matched %v, want %v", c.name, got, c.want)
		}
		if calls != 1 {
			t.Errorf("%s: %d constant-time comparisons, want exactly 1", c.name, calls)
		}
	}
}
