package api

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// plainAgrees fails unless plainCheckBody either declines body or returns exactly what the
// full decoder returns for it, with no error.
func plainAgrees(t *testing.T, body string) {
	t.Helper()
	got, ok := plainCheckBody([]byte(body))
	if !ok {
		return
	}
	r := httptest.NewRequest("POST", "/api/v1/user-api-keys/check", strings.NewReader(body))
	want, err := decodeCheckBody(r, []byte(body))
	if err != nil || got != want {
		t.Fatalf("%q: plain %q; full decoder %q, %v", body, got, want, err)
	}
}

func TestPlainCheckBody(t *testing.T) {
	plain := []string{
		`{"api_key":"sk_user_abc"}`, ` { "api_key" : "x" } `, "{\n\t\"api_key\":\r\"\"}\n", `{"api_key":"<&>' ~"}`,
	}
	for _, b := range plain {
		if _, ok := plainCheckBody([]byte(b)); !ok {
			t.Errorf("%q: not plain", b)
		}
		plainAgrees(t, b)
	}
	notPlain := []string{
		``, `{}`, `{"api_key":1}`, `{"api_key":null}`, `{"api_key":"a\"b"}`, `{"api_key":"a\u0041"}`,
		`{"api_key":"é"}`, "{\"api_key\":\"a\x01\"}", `{"api_key":"a"`, `{"api_key":"a"}x`, `{"api_key":"a"}}`,
		`{"api_key":"a","x":1}`, `{"api_key":"a","api_key":"b"}`, `{"api_key" "a"}`, `["api_key","a"]`,
		`{"API_KEY":"a"}`, `{"api_key":"a}`, `{ "api_key":"a" ,}`, "\v{\"api_key\":\"a\"}",
	}
	for _, b := range notPlain {
		if s, ok := plainCheckBody([]byte(b)); ok {
			t.Errorf("%q: plain, %q", b, s)
		}
	}
}

// FuzzPlainCheckBody: on any body the fast path declines or agrees with the full decoder.
func FuzzPlainCheckBody(f *testing.F) {
	for _, s := range []string{`{"api_key":"sk_user_abc"}`, ` { "api_key" : "x" } `, `{"api_key":"a\"b"}`, `{"api_key":"a"}x`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) { plainAgrees(t, body) })
}
