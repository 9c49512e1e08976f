package domain_test

import (
	"bytes"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// stackAuthKey is the parse pattern of Stack Auth's SDK; our keys must satisfy it.
var stackAuthKey = regexp.MustCompile(`^([a-zA-Z0-9_]+)_([a-zA-Z0-9_]{45})([a-zA-Z0-9_]{32})([a-zA-Z0-9_]{4})([a-zA-Z0-9_]{1})(574ck4u7h)([a-zA-Z0-9_]{8})$`)

func TestSecretKeyFormat(t *testing.T) {
	id := "0b9f3c6e-8d1a-4c2b-9f00-123456789abc"
	random := bytes.Repeat([]byte{0xa5}, domain.SecretKeyBytes)
	for _, public := range []bool{false, true} {
		s, err := domain.FormatSecretKey(id, domain.KeyTypeUser, public, random)
		if err != nil {
			t.Fatal(err)
		}
		if !stackAuthKey.MatchString(s) {
			t.Fatalf("%q does not match Stack Auth's key pattern", s)
		}
		if public != (s[:3] == "pk_") {
			t.Fatalf("prefix of %q for public=%v", s, public)
		}
		got, err := domain.ParseSecretKey(s)
		if err != nil || got != id {
			t.Fatalf("ParseSecretKey = %q, %v; want %q", got, err, id)
		}
		// Any single-character typo fails the checksum or the shape.
		for i := range s {
			typo := []byte(s)
			typo[i] ^= 0x01
			if _, err := domain.ParseSecretKey(string(typo)); !errors.Is(err, domain.ErrInvalidSecretKey) {
				t.Fatalf("typo at %d accepted", i)
			}
		}
	}
	for _, bad := range []string{"", "sk_", "hello", "sk_" + string(bytes.Repeat([]byte("a"), 99))} {
		if _, err := domain.ParseSecretKey(bad); !errors.Is(err, domain.ErrInvalidSecretKey) {
			t.Errorf("ParseSecretKey(%q) = %v", bad, err)
		}
	}
}

func TestHasherAndAdminTokens(t *testing.T) {
	h, err := domain.NewHasher(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := domain.NewHasher(bytes.Repeat([]byte{2}, 32))
	hash := h.HashSecretKey("sk_x")
	if !h.SecretKeyMatches("sk_x", hash) || h.SecretKeyMatches("sk_y", hash) || other.SecretKeyMatches("sk_x", hash) {
		t.Fatal("secret key hash comparison is wrong")
	}
	if h.ServerKeyMatches("sk_x", hash) {
		t.Fatal("a secret-key hash passed as a server-key hash")
	}
	if h.SecretKeyMatches("sk_x", "not hex") {
		t.Fatal("a malformed stored hash matched")
	}
	if _, err := domain.NewHasher([]byte("short")); err == nil {
		t.Fatal("short secret accepted")
	}
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	tok, err := h.IssueAdminToken(domain.AdminClaims{ProjectID: "p1", Subject: "alice", IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := h.VerifyAdminToken(tok, "p1", now); err != nil || c.Subject != "alice" {
		t.Fatalf("valid token: %+v %v", c, err)
	}
	cases := []struct {
		name  string
		token string
		proj  string
		at    time.Time
		want  error
	}{
		{"expired", tok, "p1", now.Add(2 * time.Hour), domain.ErrTokenExpired},
		{"another project", tok, "p2", now, domain.ErrTokenNotAdmin},
		{"garbage", "nope", "p1", now, domain.ErrTokenUnparsable},
		{"tampered", tok[:len(tok)-2] + "AA", "p1", now, domain.ErrTokenUnparsable},
		{"signed with another secret", mustToken(t, other, now), "p1", now, domain.ErrTokenUnparsable},
	}
	for _, c := range cases {
		if _, err := h.VerifyAdminToken(c.token, c.proj, c.at); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

func mustToken(t *testing.T, h *domain.Hasher, now time.Time) string {
	tok, err := h.IssueAdminToken(domain.AdminClaims{ProjectID: "p1", Subject: "mallory", IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestSealOpensOnlyWithItsSecretAndContext(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	h, _ := domain.NewHasher(secret)
	other, _ := domain.NewHasher(bytes.Repeat([]byte{8}, 32))
	nonce := make([]byte, domain.SealNonceBytes)
	sealed, err := h.Seal(nonce, []byte("sk_secret"), []byte("ctx"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("sk_secret")) {
		t.Fatal("sealed bytes hold the plaintext")
	}
	if got, err := h.Open(sealed, []byte("ctx")); err != nil || string(got) != "sk_secret" {
		t.Fatalf("open: %q %v", got, err)
	}
	if _, err := h.Open(sealed, []byte("other ctx")); !errors.Is(err, domain.ErrUnsealable) {
		t.Fatalf("opened with another context: %v", err)
	}
	if _, err := other.Open(sealed, []byte("ctx")); !errors.Is(err, domain.ErrUnsealable) {
		t.Fatalf("opened with another secret: %v", err)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := h.Open(sealed, []byte("ctx")); !errors.Is(err, domain.ErrUnsealable) {
		t.Fatalf("opened changed bytes: %v", err)
	}
}
