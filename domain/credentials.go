package domain

import (
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"strings"
	"sync"
	"time"
)

// Secret API keys have Stack Auth's shape, so that its SDKs and secret scanners accept them:
//
//	<prefix>_<secret: 45 chars of base32><key id: 32 hex><"user" | "team"><scanner flag>574ck4u7h<crc32: 8 hex>
//
// The secret part carries 224 bits of randomness; the checksum lets a mistyped key be
// rejected before any lookup; the embedded key id makes the lookup a primary-key read.
const (
	secretPartLen  = 45
	secretKeyLen   = 3 + secretPartLen + 32 + 4 + 1 + len(scannerMarker) + 8
	scannerMarker  = "574ck4u7h"
	SecretKeyBytes = 28 // random bytes the caller hands to FormatSecretKey (224 bits)
)

// crockford is lowercase Crockford base32, the alphabet Stack Auth's secrets use.
var crockford = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// FormatSecretKey builds the full secret value of a key of type typ from 28 random bytes.
func FormatSecretKey(keyID string, typ KeyType, isPublic bool, random []byte) (string, error) {
	if typ != KeyTypeUser && typ != KeyTypeTeam {
		return "", fmt.Errorf("secret key of unknown type %q", typ)
	}
	if len(random) != SecretKeyBytes {
		return "", fmt.Errorf("secret key needs %d random bytes, got %d", SecretKeyBytes, len(random))
	}
	hexID := strings.ReplaceAll(keyID, "-", "")
	if len(hexID) != 32 {
		return "", fmt.Errorf("key id %q is not a UUID", keyID)
	}
	prefix, scanner := "sk", "1" // 1: self-hosted secret key
	if isPublic {
		prefix, scanner = "pk", "3" // 3: self-hosted public key
	}
	body := prefix + "_" + crockford.EncodeToString(random) + hexID + string(typ) + scanner + scannerMarker
	return body + fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(body))), nil
}

// ParseSecretKey checks a presented secret key's shape and checksum and returns the key id
// it embeds (as a canonical UUID). Any failure is ErrInvalidSecretKey; the value itself is
// never put in the error.
func ParseSecretKey(s string) (keyID string, err error) {
	if len(s) != secretKeyLen || (!strings.HasPrefix(s, "sk_") && !strings.HasPrefix(s, "pk_")) {
		return "", ErrInvalidSecretKey
	}
	body, sum := s[:len(s)-8], s[len(s)-8:]
	if fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(body))) != sum {
		return "", ErrInvalidSecretKey
	}
	rest := body[3+secretPartLen:]
	hexID, typ, marker := rest[:32], rest[32:36], rest[37:]
	if (typ != string(KeyTypeUser) && typ != string(KeyTypeTeam)) || marker != scannerMarker {
		return "", ErrInvalidSecretKey
	}
	if _, err := hex.DecodeString(hexID); err != nil || strings.ToLower(hexID) != hexID {
		return "", ErrInvalidSecretKey
	}
	return hexID[0:8] + "-" + hexID[8:12] + "-" + hexID[12:16] + "-" + hexID[16:20] + "-" + hexID[20:], nil
}

// LastFour is the part of a secret key that may be shown after creation.
func LastFour(secret string) string {
	if len(secret) < 4 {
		return secret
	}
	return secret[len(secret)-4:]
}

// FormatServerKey builds a project's secret server key from 32 random bytes.
func FormatServerKey(random []byte) string { return "ssk_" + crockford.EncodeToString(random) }

// Hasher keys the hashes of secrets and signs admin tokens with the deployment's server-side
// secret. Each use derives its own subkey, so a hash can never pass as a signature.
type Hasher struct {
	secretKeys []byte
	serverKeys []byte
	tokens     []byte
	records    cipher.AEAD // seals stored responses (Seal, Open)
	events     []byte
	nats       []byte
	// Keyed HMAC states for the hashes checked on every request (the API key's, the server
	// key's): reset, not rebuilt from the key, each time (hmac.New costs two allocations and
	// two SHA-256 blocks of the key's pads).
	secretMACs, serverMACs macPool
}

// macPool hands out HMAC-SHA256 states keyed with one key.
type macPool struct {
	key  []byte
	pool sync.Pool // hash.Hash
}

// sum is mac(p.key, s), appended to dst.
func (p *macPool) sum(dst []byte, s string) []byte {
	m, _ := p.pool.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, p.key)
	} else {
		m.Reset()
	}
	m.Write([]byte(s))
	dst = m.Sum(dst)
	p.pool.Put(m)
	return dst
}

// NewHasher derives the subkeys from the server-side secret (at least 32 bytes).
func NewHasher(secret []byte) (*Hasher, error) {
	if len(secret) < 32 {
		return nil, fmt.Errorf("server-side secret must be at least 32 bytes, got %d", len(secret))
	}
	derive := func(label string) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte("keyledger/" + label))
		return m.Sum(nil)
	}
	records, err := newRecordCipher(derive("stored-response-seal/v1"))
	if err != nil {
		return nil, err
	}
	h := &Hasher{secretKeys: derive("secret-key-hash/v1"), serverKeys: derive("server-key-hash/v1"), tokens: derive("admin-token/v1"),
		records: records, events: derive("event-mac/v1"), nats: derive("nats-password/v1")}
	h.secretMACs.key, h.serverMACs.key = h.secretKeys, h.serverKeys
	return h, nil
}

// EventKey is the key that authenticates the events keyledger appends (the event store's
// Config.EventKey): a subkey of its own, so that no hash or token can pass as an event's MAC.
func (h *Hasher) EventKey() []byte { return append([]byte(nil), h.events...) }

// NATSPassword is the password of a user of keysd's embedded NATS server (keysd's own, or
// the read-only audit user), derived from the secret so that every holder of the secret file
// connects with no further configuration, and nobody else can.
func (h *Hasher) NATSPassword(user string) string {
	return hex.EncodeToString(mac(h.nats, user))
}

func mac(key []byte, s string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// HashSecretKey returns the keyed hash of a secret API key, as stored on KeyCreated.
func (h *Hasher) HashSecretKey(secret string) string {
	return hex.EncodeToString(mac(h.secretKeys, secret))
}

// HashServerKey returns the keyed hash of a secret server key, as stored on ProjectCreated.
func (h *Hasher) HashServerKey(secret string) string {
	return hex.EncodeToString(mac(h.serverKeys, secret))
}

// SecretKeyMatches compares a presented secret API key with a stored hash in constant time.
func (h *Hasher) SecretKeyMatches(secret, storedHash string) bool {
	var buf [sha256.Size]byte
	return equalHex(h.secretMACs.sum(buf[:0], secret), storedHash)
}

// ServerKeyMatches compares a presented secret server key with a stored hash in constant time.
func (h *Hasher) ServerKeyMatches(secret, storedHash string) bool {
	var buf [sha256.Size]byte
	return equalHex(h.serverMACs.sum(buf[:0], secret), storedHash)
}

// equalMACs compares two MACs in constant time: every secret comparison goes through it, so
// that a test can see that it does.
var equalMACs = hmac.Equal

// equalHex compares a MAC with a stored hex hash. The presented secret is always MACed first,
// so the time taken depends neither on how much of it is right nor on its length; a stored
// hash that is not hex is compared as zeros rather than answered early.
func equalHex(sum []byte, storedHash string) bool {
	var buf [sha256.Size]byte
	want := buf[:]
	if len(storedHash) != 2*len(buf) {
		want = make([]byte, len(storedHash)/2)
	}
	if _, err := hex.Decode(want, []byte(storedHash)); err != nil {
		want = make([]byte, len(sum))
	}
	return equalMACs(sum, want)
}

// Admin access token errors, each with its own error code at the API.
var (
	ErrTokenUnparsable = errors.New("admin access token is not parsable")
	ErrTokenExpired    = errors.New("admin access token has expired")
	ErrTokenNotAdmin   = errors.New("admin access token is not for this project")
)

// AdminClaims is what an admin access token asserts.
type AdminClaims struct {
	ProjectID string    `json:"pid"`
	Subject   string    `json:"sub"`
	IssuedAt  time.Time `json:"iat"`
	ExpiresAt time.Time `json:"exp"`
}

const tokenPrefix = "kla_"

// b64 is strict: a token has exactly one spelling, so a changed character never verifies.
var b64 = base64.RawURLEncoding.Strict()

// IssueAdminToken signs claims as an admin access token.
func (h *Hasher) IssueAdminToken(c AdminClaims) (string, error) {
	if c.Subject == "" || c.ProjectID == "" {
		return "", &ValidationError{"an admin token needs a project and a subject"}
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	p := tokenPrefix + b64.EncodeToString(payload)
	return p + "." + b64.EncodeToString(mac(h.tokens, p)), nil
}

// VerifyAdminToken checks a token's signature, expiry at now, and project. It returns
// ErrTokenUnparsable, ErrTokenExpired (the claims are still returned) or ErrTokenNotAdmin.
func (h *Hasher) VerifyAdminToken(token, projectID string, now time.Time) (AdminClaims, error) {
	p, sig, ok := strings.Cut(token, ".")
	if !ok || !strings.HasPrefix(p, tokenPrefix) {
		return AdminClaims{}, ErrTokenUnparsable
	}
	got, err := b64.DecodeString(sig)
	if err != nil {
		got = nil // still compared below, so a malformed signature costs what a wrong one does
	}
	if !equalMACs(got, mac(h.tokens, p)) || err != nil {
		return AdminClaims{}, ErrTokenUnparsable
	}
	payload, err := b64.DecodeString(p[len(tokenPrefix):])
	if err != nil {
		return AdminClaims{}, ErrTokenUnparsable
	}
	var c AdminClaims
	if err := json.Unmarshal(payload, &c); err != nil || c.Subject == "" {
		return AdminClaims{}, ErrTokenUnparsable
	}
	if c.ProjectID != projectID {
		return c, ErrTokenNotAdmin
	}
	if !now.Before(c.ExpiresAt) {
		return c, ErrTokenExpired
	}
	return c, nil
}
