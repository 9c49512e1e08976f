package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
)

const (
	testKeyID  = "0b5f8a3e-5b1c-4c1e-9d6a-3f2e1d0c9b8a"
	keysPath   = "/api/v1/user-api-keys"
	jsonType   = "application/json"
	noType     = "-" // send no Content-Type header
	schemaCode = CodeSchemaError
	parseCode  = CodeBodyParsingError
)

// request builds a request as a client would send it; id, when not empty, is the
// {api_key_id} path parameter as the router would extract it.
func request(method, target, contentType, body, id string) *http.Request {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if contentType != noType {
		r.Header.Set("Content-Type", contentType)
	}
	if id != "" {
		r = mux.SetURLVars(r, map[string]string{"api_key_id": id})
	}
	return r
}

// wantError checks that err is the error response with that status, code and, when msg is
// not empty, that message.
func wantError(t *testing.T, err error, status int, code, msg string) {
	t.Helper()
	var ae *apiError
	if !errors.As(err, &ae) {
		t.Fatalf("got %v, want a %d %s", err, status, code)
	}
	if ae.Status != status || ae.Code != code {
		t.Fatalf("got %d %s (%q), want %d %s", ae.Status, ae.Code, ae.Message, status, code)
	}
	if msg != "" && ae.Message != msg {
		t.Fatalf("message\n got %q\nwant %q", ae.Message, msg)
	}
	if code == CodeSchemaError && ae.Details["message"] != ae.Message {
		t.Fatalf("details.message %q differs from error %q", ae.Details["message"], ae.Message)
	}
}

func schemaMsg(method, path string, problems ...string) string {
	return "Request validation failed on " + method + " " + path + ":\n  - " + strings.Join(problems, "\n  - ")
}

func ptr[T any](v T) *T { return &v }

func TestDecodeCreate(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 2048) // 4096 bytes
	cases := []struct {
		name        string
		contentType string
		query       string
		body        string
		want        commands.NewKey
		// when the request is refused:
		status  int
		code    string
		problem []string // SCHEMA_ERROR problems, in order
	}{
		{name: "minimal", body: `{"user_id":"u1","description":""}`, want: commands.NewKey{UserID: "u1"}},
		{name: "all fields", body: `{"user_id":"u1","description":"ci","expires_at_millis":1767225599000,"is_public":true}`,
			want: commands.NewKey{UserID: "u1", Description: "ci", ExpiresAt: ptr(time.UnixMilli(1767225599000).UTC()), IsPublic: true}},
		{name: "expiry null", body: `{"user_id":"u","description":"","expires_at_millis":null}`, want: commands.NewKey{UserID: "u"}},
		{name: "expiry zero is the epoch", body: `{"user_id":"u","description":"","expires_at_millis":0}`,
			want: commands.NewKey{UserID: "u", ExpiresAt: ptr(time.UnixMilli(0).UTC())}},
		{name: "expiry with exponent", body: `{"user_id":"u","description":"","expires_at_millis":1.5e3}`,
			want: commands.NewKey{UserID: "u", ExpiresAt: ptr(time.UnixMilli(1500).UTC())}},
		{name: "expiry with zero fraction", body: `{"user_id":"u","description":"","expires_at_millis":2000.000}`,
			want: commands.NewKey{UserID: "u", ExpiresAt: ptr(time.UnixMilli(2000).UTC())}},
		{name: "expiry at the end of year 9999", body: `{"user_id":"u","description":"","expires_at_millis":253402300799999}`,
			want: commands.NewKey{UserID: "u", ExpiresAt: ptr(time.UnixMilli(MaxExpiresAtMillis).UTC())}},
		{name: "charset utf-8", contentType: "Application/JSON; charset=UTF-8", body: `{"user_id":"u","description":""}`,
			want: commands.NewKey{UserID: "u"}},
		{name: "description of 4096 bytes", body: `{"user_id":"u","description":"` + long + `"}`,
			want: commands.NewKey{UserID: "u", Description: long}},
		{name: "user id of 128 characters", body: `{"user_id":"` + strings.Repeat("ü", 128) + `","description":""}`,
			want: commands.NewKey{UserID: strings.Repeat("ü", 128)}},
		{name: "surrogate pair", body: `{"user_id":"u","description":"\ud83d\ude00 \\u"}`,
			want: commands.NewKey{UserID: "u", Description: "😀 \\u"}},
		{name: "body of exactly 64 KiB", body: `{"user_id":"u","description":""}` + strings.Repeat(" ", MaxBodyBytes-32),
			want: commands.NewKey{UserID: "u"}},

		{name: "fractional expiry", body: `{"user_id":"u","description":"","expires_at_millis":1.5}`,
			status: 400, code: schemaCode, problem: []string{"body.expires_at_millis must be an integer"}},
		{name: "tiny expiry", body: `{"user_id":"u","description":"","expires_at_millis":1e-400}`,
			status: 400, code: schemaCode, problem: []string{"body.expires_at_millis must be an integer"}},
		{name: "negative expiry", body: `{"user_id":"u","description":"","expires_at_millis":-1}`,
			status: 400, code: schemaCode, problem: []string{"body.expires_at_millis must be greater than or equal to 0"}},
		{name: "expiry after year 9999", body: `{"user_id":"u","description":"","expires_at_millis":253402300800000}`,
			status: 400, code: schemaCode, problem: []string{"body.expires_at_millis must be less than or equal to 253402300799999"}},
		{name: "huge exponent", body: `{"user_id":"u","description":"","expires_at_millis":1e999999999999}`,
			status: 400, code: schemaCode, problem: []string{"body.expires_at_millis must be less than or equal to 253402300799999"}},
		{name: "expiry as string", body: `{"user_id":"u","description":"","expires_at_millis":"1000"}`,
			status: 400, code: schemaCode, problem: []string{"body.expires_at_millis must be an integer or null"}},
		{name: "expiry as bool", body: `{"user_id":"u","description":"","expires_at_millis":true}`,
			status: 400, code: schemaCode, problem: []string{"body.expires_at_millis must be an integer or null"}},
		{name: "missing fields", body: `{}`,
			status: 400, code: schemaCode, problem: []string{"body.user_id must be defined", "body.description must be defined"}},
		{name: "user id null", body: `{"user_id":null,"description":""}`,
			status: 400, code: schemaCode, problem: []string{"body.user_id must be a string"}},
		{name: "user id number", body: `{"user_id":7,"description":""}`,
			status: 400, code: schemaCode, problem: []string{"body.user_id must be a string"}},
		{name: "user id empty", body: `{"user_id":"","description":""}`,
			status: 400, code: schemaCode, problem: []string{"body.user_id must not be empty"}},
		{name: "user id too long", body: `{"user_id":"` + strings.Repeat("a", 129) + `","description":""}`,
			status: 400, code: schemaCode, problem: []string{"body.user_id must be at most 128 characters"}},
		{name: "description null", body: `{"user_id":"u","description":null}`,
			status: 400, code: schemaCode, problem: []string{"body.description must be a string"}},
		{name: "description object", body: `{"user_id":"u","description":{"a":1}}`,
			status: 400, code: schemaCode, problem: []string{"body.description must be a string"}},
		{name: "description over 4096 bytes", body: `{"user_id":"u","description":"` + long + `a"}`,
			status: 400, code: schemaCode, problem: []string{"body.description must be at most 4096 bytes"}},
		{name: "description with U+0000", body: `{"user_id":"u","description":"a\u0000b"}`,
			status: 400, code: schemaCode, problem: []string{"body.description must not contain U+0000"}},
		{name: "lone surrogate", body: `{"user_id":"u","description":"\ud800"}`,
			status: 400, code: schemaCode, problem: []string{"body.description must be valid UTF-8"}},
		{name: "reversed surrogates", body: `{"user_id":"u","description":"\ude00\ud83d"}`,
			status: 400, code: schemaCode, problem: []string{"body.description must be valid UTF-8"}},
		{name: "is_public as string", body: `{"user_id":"u","description":"","is_public":"true"}`,
			status: 400, code: schemaCode, problem: []string{"body.is_public must be a boolean"}},
		{name: "is_public null", body: `{"user_id":"u","description":"","is_public":null}`,
			status: 400, code: schemaCode, problem: []string{"body.is_public must be a boolean"}},
		{name: "unknown properties", body: `{"user_id":"u","description":"","prefix":"x","team_id":1}`,
			status: 400, code: schemaCode, problem: []string{"body contains unknown properties: prefix, team_id"}},
		{name: "duplicate property", body: `{"user_id":"u","user_id":"v","description":""}`,
			status: 400, code: schemaCode, problem: []string{"body contains duplicate properties: user_id"}},
		{name: "array", body: `[{"user_id":"u","description":""}]`,
			status: 400, code: schemaCode, problem: []string{"body must be a JSON object"}},
		{name: "string", body: `"x"`, status: 400, code: schemaCode, problem: []string{"body must be a JSON object"}},
		{name: "number", body: `12`, status: 400, code: schemaCode, problem: []string{"body must be a JSON object"}},
		{name: "null body", body: `null`, status: 400, code: schemaCode, problem: []string{"body must be a JSON object"}},
		{name: "invalid UTF-8", body: "{\"user_id\":\"u\",\"description\":\"\xff\xfe\"}",
			status: 400, code: schemaCode, problem: []string{"body must be valid UTF-8"}},
		{name: "unknown query parameter", query: "?debug=1&a=2", body: `{"user_id":"u","description":""}`,
			status: 400, code: schemaCode, problem: []string{"query contains unknown properties: a, debug"}},
		{name: "several problems", query: "?x=1", body: `{"user_id":1,"description":null,"is_public":0,"z":0}`,
			status: 400, code: schemaCode, problem: []string{
				"query contains unknown properties: x",
				"body contains unknown properties: z",
				"body.user_id must be a string",
				"body.description must be a string",
				"body.is_public must be a boolean",
			}},

		{name: "trailing object", body: `{"user_id":"u","description":""} {}`, status: 400, code: parseCode},
		{name: "trailing garbage", body: `{"user_id":"u","description":""}x`, status: 400, code: parseCode},
		{name: "truncated", body: `{"user_id":"u","description":`, status: 400, code: parseCode},
		{name: "empty body", body: ``, status: 400, code: parseCode},
		{name: "single quotes", body: `{'user_id':'u'}`, status: 400, code: parseCode},
		{name: "raw control character", body: "{\"user_id\":\"u\",\"description\":\"a\x00b\"}", status: 400, code: parseCode},
		{name: "no content type", contentType: noType, body: `{"user_id":"u","description":""}`, status: 400, code: parseCode},
		{name: "text/plain", contentType: "text/plain", body: `{"user_id":"u","description":""}`, status: 400, code: parseCode},
		{name: "form", contentType: "application/x-www-form-urlencoded", body: `user_id=u`, status: 400, code: parseCode},
		{name: "latin1 charset", contentType: "application/json; charset=iso-8859-1", body: `{"user_id":"u","description":""}`, status: 400, code: parseCode},
		{name: "json lookalike", contentType: "application/jsonp", body: `{"user_id":"u","description":""}`, status: 400, code: parseCode},
		{name: "malformed content type", contentType: "application/json;;", body: `{"user_id":"u","description":""}`, status: 400, code: parseCode},

		{name: "over 64 KiB", body: `{"user_id":"u","description":""}` + strings.Repeat(" ", MaxBodyBytes-31),
			status: 413, code: CodePayloadTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ct := c.contentType
			if ct == "" {
				ct = jsonType
			}
			r := request(http.MethodPost, keysPath+c.query, ct, c.body, "")
			got, err := decodeCreate(httptest.NewRecorder(), r, userKeys)
			if c.code == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if got.UserID != c.want.UserID || got.Description != c.want.Description || got.IsPublic != c.want.IsPublic ||
					(got.ExpiresAt == nil) != (c.want.ExpiresAt == nil) || (got.ExpiresAt != nil && !got.ExpiresAt.Equal(*c.want.ExpiresAt)) {
					t.Fatalf("got %+v, want %+v", got, c.want)
				}
				return
			}
			msg := ""
			if c.problem != nil {
				msg = schemaMsg(http.MethodPost, keysPath, c.problem...)
			}
			wantError(t, err, c.status, c.code, msg)
		})
	}
}

func TestDecodeBodyLimitWithoutContentLength(t *testing.T) {
	t.Parallel()
	body := `{"user_id":"u","description":"` + strings.Repeat("a", MaxBodyBytes) + `"}`
	r := request(http.MethodPost, keysPath, jsonType, body, "")
	r.ContentLength = -1 // chunked: the limit is enforced while reading
	_, err := decodeCreate(httptest.NewRecorder(), r, userKeys)
	wantError(t, err, 413, CodePayloadTooLarge, "")
}

func TestDecodeUpdate(t *testing.T) {
	t.Parallel()
	path := keysPath + "/" + testKeyID
	cases := []struct {
		name    string
		id      string
		query   string
		body    string
		want    domain.UpdateKey
		wantID  string
		code    string
		problem []string
	}{
		{name: "empty object", body: `{}`},
		{name: "description", body: `{"description":"new"}`, want: domain.UpdateKey{Description: ptr("new")}},
		{name: "empty description", body: `{"description":""}`, want: domain.UpdateKey{Description: ptr("")}},
		{name: "revoke", body: `{"revoked":true}`, want: domain.UpdateKey{Revoked: ptr(true)}},
		{name: "revoked false is for the domain to judge", body: `{"revoked":false}`, want: domain.UpdateKey{Revoked: ptr(false)}},
		{name: "both", body: `{"description":"d","revoked":true}`, want: domain.UpdateKey{Description: ptr("d"), Revoked: ptr(true)}},
		{name: "upper-case id is normalised", id: strings.ToUpper(testKeyID), body: `{}`, wantID: testKeyID},
		{name: "user_id query is accepted", query: "?user_id=u1", body: `{}`},

		{name: "malformed id", id: "uak_1234567890", body: `{}`, code: schemaCode,
			problem: []string{"params.api_key_id must be a valid UUID"}},
		{name: "id without dashes", id: strings.ReplaceAll(testKeyID, "-", ""), body: `{}`, code: schemaCode,
			problem: []string{"params.api_key_id must be a valid UUID"}},
		{name: "id in braces", id: "{" + testKeyID[1:35] + "}", body: `{}`, code: schemaCode,
			problem: []string{"params.api_key_id must be a valid UUID"}},
		{name: "description null", body: `{"description":null}`, code: schemaCode,
			problem: []string{"body.description must be a string"}},
		{name: "description number", body: `{"description":5}`, code: schemaCode,
			problem: []string{"body.description must be a string"}},
		{name: "revoked null", body: `{"revoked":null}`, code: schemaCode,
			problem: []string{"body.revoked must be a boolean"}},
		{name: "revoked string", body: `{"revoked":"true"}`, code: schemaCode,
			problem: []string{"body.revoked must be a boolean"}},
		{name: "revoked number", body: `{"revoked":1}`, code: schemaCode,
			problem: []string{"body.revoked must be a boolean"}},
		{name: "user_id in body", body: `{"description":"Updated Description","user_id":"some-other-user-id"}`, code: schemaCode,
			problem: []string{"body contains unknown properties: user_id"}},
		{name: "expiry in body", body: `{"expires_at_millis":1}`, code: schemaCode,
			problem: []string{"body contains unknown properties: expires_at_millis"}},
		{name: "duplicate revoked", body: `{"revoked":true,"revoked":false}`, code: schemaCode,
			problem: []string{"body contains duplicate properties: revoked"}},
		{name: "not an object", body: `[]`, code: schemaCode, problem: []string{"body must be a JSON object"}},
		{name: "bool body", body: `true`, code: schemaCode, problem: []string{"body must be a JSON object"}},
		{name: "U+0000", body: `{"description":"\u0000"}`, code: schemaCode,
			problem: []string{"body.description must not contain U+0000"}},
		{name: "description over 4096 bytes", body: `{"description":"` + strings.Repeat("a", 4097) + `"}`, code: schemaCode,
			problem: []string{"body.description must be at most 4096 bytes"}},
		{name: "unknown query", query: "?user_id=u&team_id=t", body: `{}`, code: schemaCode,
			problem: []string{"query contains unknown properties: team_id"}},
		{name: "repeated query", query: "?user_id=u&user_id=v", body: `{}`, code: schemaCode,
			problem: []string{"query.user_id must be given at most once"}},
		{name: "bad id and bad body together", id: "x", body: `{"revoked":"yes"}`, code: schemaCode,
			problem: []string{"params.api_key_id must be a valid UUID", "body.revoked must be a boolean"}},
		{name: "trailing data", body: `{}{}`, code: parseCode},
		{name: "not JSON", body: `description=x`, code: parseCode},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			id := c.id
			if id == "" {
				id = testKeyID
			}
			r := request(http.MethodPatch, path+c.query, jsonType, c.body, id)
			gotID, got, err := decodeUpdate(httptest.NewRecorder(), r, userKeys)
			if c.code == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				wantID := c.wantID
				if wantID == "" {
					wantID = testKeyID
				}
				if gotID != wantID {
					t.Fatalf("id %q, want %q", gotID, wantID)
				}
				if !equalPtr(got.Description, c.want.Description) || !equalPtr(got.Revoked, c.want.Revoked) {
					t.Fatalf("got %s, want %s", showUpdate(got), showUpdate(c.want))
				}
				return
			}
			msg := ""
			if c.problem != nil {
				msg = schemaMsg(http.MethodPatch, path, c.problem...)
			}
			wantError(t, err, 400, c.code, msg)
		})
	}
}

func equalPtr[T comparable](a, b *T) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

func showUpdate(u domain.UpdateKey) string {
	s := "{"
	if u.Description != nil {
		s += " description=" + *u.Description
	}
	if u.Revoked != nil {
		if *u.Revoked {
			s += " revoked=true"
		} else {
			s += " revoked=false"
		}
	}
	return s + " }"
}

func TestDecodeCheck(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, query, body, want string
		code                    string
		problem                 []string
	}{
		{name: "any string", body: `{"api_key":"sk_whatever"}`, want: "sk_whatever"},
		{name: "empty string is looked at later", body: `{"api_key":""}`, want: ""},
		{name: "missing", body: `{}`, code: schemaCode, problem: []string{"body.api_key must be defined"}},
		{name: "null", body: `{"api_key":null}`, code: schemaCode, problem: []string{"body.api_key must be a string"}},
		{name: "number", body: `{"api_key":1}`, code: schemaCode, problem: []string{"body.api_key must be a string"}},
		{name: "unknown property", body: `{"api_key":"k","user_id":"u"}`, code: schemaCode,
			problem: []string{"body contains unknown properties: user_id"}},
		{name: "query", query: "?user_id=u", body: `{"api_key":"k"}`, code: schemaCode,
			problem: []string{"query contains unknown properties: user_id"}},
		{name: "not JSON", body: `sk_abc`, code: parseCode},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := request(http.MethodPost, keysPath+"/check"+c.query, jsonType, c.body, "")
			got, err := decodeCheck(httptest.NewRecorder(), r)
			if c.code == "" {
				if err != nil || got != c.want {
					t.Fatalf("got %q, %v; want %q", got, err, c.want)
				}
				return
			}
			msg := ""
			if c.problem != nil {
				msg = schemaMsg(http.MethodPost, keysPath+"/check", c.problem...)
			}
			wantError(t, err, 400, c.code, msg)
		})
	}
}

func TestDecodeListAndGet(t *testing.T) {
	t.Parallel()
	t.Run("list needs user_id", func(t *testing.T) {
		_, err := decodeList(request(http.MethodGet, keysPath, noType, "", ""), userKeys)
		wantError(t, err, 400, schemaCode, "user_id is required for user API keys")
	})
	t.Run("list", func(t *testing.T) {
		got, err := decodeList(request(http.MethodGet, keysPath+"?user_id=u%201", noType, "", ""), userKeys)
		if err != nil || got != "u 1" {
			t.Fatalf("got %q, %v", got, err)
		}
	})
	t.Run("list with empty user_id", func(t *testing.T) {
		_, err := decodeList(request(http.MethodGet, keysPath+"?user_id=", noType, "", ""), userKeys)
		wantError(t, err, 400, schemaCode, schemaMsg(http.MethodGet, keysPath, "query.user_id must not be empty"))
	})
	t.Run("list with unknown parameter", func(t *testing.T) {
		_, err := decodeList(request(http.MethodGet, keysPath+"?user_id=u&extra=1", noType, "", ""), userKeys)
		wantError(t, err, 400, schemaCode, schemaMsg(http.MethodGet, keysPath, "query contains unknown properties: extra"))
	})
	t.Run("list with malformed query", func(t *testing.T) {
		_, err := decodeList(request(http.MethodGet, keysPath+"?user_id=%zz", noType, "", ""), userKeys)
		wantError(t, err, 400, schemaCode, schemaMsg(http.MethodGet, keysPath, "query must be a valid URL query string"))
	})
	t.Run("get", func(t *testing.T) {
		got, err := decodeGet(request(http.MethodGet, keysPath+"/x?user_id=u", noType, "", strings.ToUpper(testKeyID)), userKeys)
		if err != nil || got != testKeyID {
			t.Fatalf("got %q, %v", got, err)
		}
	})
	t.Run("get with malformed id", func(t *testing.T) {
		_, err := decodeGet(request(http.MethodGet, keysPath+"/check", noType, "", "check"), userKeys)
		wantError(t, err, 400, schemaCode, schemaMsg(http.MethodGet, keysPath+"/check", "params.api_key_id must be a valid UUID"))
	})
	t.Run("get with team_id", func(t *testing.T) {
		path := keysPath + "/" + testKeyID
		_, err := decodeGet(request(http.MethodGet, path+"?user_id=u&team_id=some-team-id", noType, "", testKeyID), userKeys)
		wantError(t, err, 400, schemaCode, schemaMsg(http.MethodGet, path, "query contains unknown properties: team_id"))
	})
}

func TestParseMillis(t *testing.T) {
	t.Parallel()
	cases := []struct {
		lit     string
		want    int64
		problem string
	}{
		{"0", 0, ""}, {"-0", 0, ""}, {"0.0e5", 0, ""}, {"0e-999", 0, ""}, {"1", 1, ""}, {"10", 10, ""},
		{"1e3", 1000, ""}, {"1E+3", 1000, ""}, {"12.5e1", 125, ""}, {"1500e-3", 0, "must be an integer"},
		{"1500000e-3", 1500, ""}, {"100.00", 100, ""}, {"253402300799999", MaxExpiresAtMillis, ""},
		{"2.53402300799999e14", MaxExpiresAtMillis, ""},
		{"0.5", 0, "must be an integer"}, {"1e-1", 0, "must be an integer"},
		{"-1", 0, "must be greater than or equal to 0"}, {"-1e3", 0, "must be greater than or equal to 0"},
		{"253402300800000", 0, "must be less than or equal to 253402300799999"},
		{"999999999999999", 0, "must be less than or equal to 253402300799999"},
		{"1e15", 0, "must be less than or equal to 253402300799999"},
		{"1e9999999999999999999", 0, "must be less than or equal to 253402300799999"},
		{"1e-9999999999999999999", 0, "must be an integer"},
		{"18446744073709551617", 0, "must be less than or equal to 253402300799999"},
	}
	for _, c := range cases {
		got, problem := parseMillis(c.lit)
		if got != c.want || problem != c.problem {
			t.Errorf("parseMillis(%s) = %d, %q; want %d, %q", c.lit, got, problem, c.want, c.problem)
		}
	}
}

func TestParseUUID(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in, want string
		ok       bool
	}{
		{testKeyID, testKeyID, true},
		{"0B5F8A3E-5B1C-4C1E-9D6A-3F2E1D0C9B8A", testKeyID, true},
		{"00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000", true},
		{"", "", false},
		{"0b5f8a3e5b1c4c1e9d6a3f2e1d0c9b8a", "", false},
		{"urn:uuid:0b5f8a3e-5b1c-4c1e-9d6a-3f2e1d0c9b8a", "", false},
		{"0b5f8a3e-5b1c-4c1e-9d6a-3f2e1d0c9b8g", "", false},
		{"0b5f8a3e-5b1c-4c1e-9d6a_3f2e1d0c9b8a", "", false},
		{"0b5f8a3e-5b1c-4c1e-9d6a-3f2e1d0c9b8a ", "", false},
	}
	for _, c := range cases {
		got, ok := parseUUID(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("parseUUID(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}
