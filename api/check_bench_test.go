package api

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
)

const benchCheckBody = `{"api_key":"sk_user_abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrs0123456789abcdef0123456789abcdefuser0574ck4u7h01234567"}`

// BenchmarkDecodeCheck: the check body through the plain path and through the full decoder.
func BenchmarkDecodeCheck(b *testing.B) {
	r := httptest.NewRequest("POST", "/api/v1/user-api-keys/check", strings.NewReader(benchCheckBody))
	body := []byte(benchCheckBody)
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := plainCheckBody(body); !ok {
				b.Fatal("not plain")
			}
		}
	})
	b.Run("full", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeCheckBody(r, body); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEncodeKeyObject: check's answer by hand and through encoding/json.
func BenchmarkEncodeKeyObject(b *testing.B) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	o := newKeyObject(domain.KeySnapshot{ID: "0b7f3a52-8c1d-4c5e-9f3a-2d6e8b1c4a7f", Description: "bench key", UserID: "user-1",
		CreatedAt: created, LastFour: "abcd"}).withLastUse(created, true)
	var buf bytes.Buffer
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf.Reset()
			_ = encodeResponse(&buf, o)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf.Reset()
			_ = encodeJSON(&buf, o)
		}
	})
}
