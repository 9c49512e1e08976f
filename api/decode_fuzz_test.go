package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/keyledger/keyledger/domain"
)

// checkDecoded fails unless a decoder's outcome is either a 4xx error response or a request
// the domain's own validation accepts.
func checkDecoded(t *testing.T, err error, fields ...*string) {
	t.Helper()
	if err != nil {
		ae := toAPIError(httptestRequest(), err)
		if ae.Status < 400 || ae.Status > 499 || ae.Code == CodeInternalServerError {
			t.Fatalf("decode error maps to %d %s: %v", ae.Status, ae.Code, err)
		}
		return
	}
	for _, f := range fields {
		if f != nil && (!utf8.ValidString(*f) || strings.ContainsRune(*f, 0)) {
			t.Fatalf("accepted %q: not valid UTF-8 or contains U+0000", *f)
		}
	}
}

func httptestRequest() *http.Request { return request(http.MethodPatch, keysPath, jsonType, "", "") }

// FuzzDecodeUpdate feeds arbitrary bodies, content types, ids and queries to the PATCH
// decoder: it answers a 4xx or a valid update, never panics.
func FuzzDecodeUpdate(f *testing.F) {
	for _, s := range []struct{ body, ct, id, query string }{
		{`{}`, jsonType, testKeyID, ""},
		{`{"description":"d","revoked":true}`, jsonType, testKeyID, "user_id=u"},
		{`{"description":null}`, jsonType, testKeyID, ""},
		{`{"description":"\ud800"}`, jsonType, testKeyID, ""},
		{`{"revoked":"true","revoked":1}`, "application/json; charset=utf-8", strings.ToUpper(testKeyID), "a=b&a=c"},
		{`[]`, "text/plain", "not-a-uuid", "%zz"},
		{"{\"description\":\"\xff\"}", jsonType, testKeyID, ""},
		{`{"description":"a\u0000b"} {}`, jsonType, "", ""},
	} {
		f.Add(s.body, s.ct, s.id, s.query)
	}
	f.Fuzz(func(t *testing.T, body, contentType, id, query string) {
		r := request(http.MethodPatch, keysPath+"/x", contentType, body, id)
		r.URL.RawQuery = query
		gotID, u, err := decodeUpdate(httptest.NewRecorder(), r, userKeys)
		checkDecoded(t, err, u.Description)
		if err == nil {
			if _, ok := parseUUID(gotID); !ok || gotID != strings.ToLower(gotID) {
				t.Fatalf("accepted key id %q", gotID)
			}
			if u.Description != nil && len(*u.Description) > domain.MaxDescriptionBytes {
				t.Fatalf("accepted a description of %d bytes", len(*u.Description))
			}
		}
	})
}

// FuzzDecodeCreate feeds arbitrary bodies to the create decoder.
func FuzzDecodeCreate(f *testing.F) {
	for _, s := range []string{
		`{"user_id":"u","description":"d"}`,
		`{"user_id":"u","description":"","expires_at_millis":1.5e3,"is_public":true}`,
		`{"user_id":"u","description":"d","expires_at_millis":1e999999999}`,
		`{"user_id":"u","description":"d","expires_at_millis":-0.0e-5}`,
		`{"user_id":"","description":"d","expires_at_millis":null}`,
		`{"user_id":1}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := request(http.MethodPost, keysPath, jsonType, body, "")
		k, err := decodeCreate(httptest.NewRecorder(), r, userKeys)
		checkDecoded(t, err, &k.UserID, &k.Description)
		if err == nil {
			if k.UserID == "" || utf8.RuneCountInString(k.UserID) > domain.MaxUserIDChars {
				t.Fatalf("accepted user id %q", k.UserID)
			}
			if k.ExpiresAt != nil && (k.ExpiresAt.UnixMilli() < 0 || k.ExpiresAt.UnixMilli() > MaxExpiresAtMillis) {
				t.Fatalf("accepted expiry %v", k.ExpiresAt)
			}
		}
	})
}

// FuzzDecodeCheck feeds arbitrary bodies to the check decoder.
func FuzzDecodeCheck(f *testing.F) {
	f.Add(`{"api_key":"sk_x"}`)
	f.Add(`{"api_key":null}`)
	f.Add(`{"api_key":"a","api_key":"b"}`)
	f.Fuzz(func(t *testing.T, body string) {
		r := request(http.MethodPost, keysPath+"/check", jsonType, body, "")
		_, err := decodeCheck(httptest.NewRecorder(), r)
		checkDecoded(t, err)
	})
}
