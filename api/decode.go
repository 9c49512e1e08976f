package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/keyledger/keyledger/domain"
)

// MaxBodyBytes is the largest request body accepted (CONTRACT section 2: PAYLOAD_TOO_LARGE).
const MaxBodyBytes = 64 << 10

// MaxExpiresAtMillis is the latest expiry a key may have: the last millisecond of year 9999,
// the last instant an ISO 8601 timestamp of four-digit years can show.
const MaxExpiresAtMillis = 253402300799999

// readJSON reads a request body that must be one JSON document of at most MaxBodyBytes,
// sent as application/json. It answers, in this order: PAYLOAD_TOO_LARGE, BODY_PARSING_ERROR
// for a content type that is not JSON, SCHEMA_ERROR for bytes that are not UTF-8, and
// BODY_PARSING_ERROR for anything that is not exactly one JSON value (trailing data included).
func readJSON(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := readBody(w, r)
	if err != nil {
		return nil, err
	}
	return body, checkJSON(r, body)
}

// readBody is readJSON's first half: the size, the content type and the bytes, not yet
// checked to be UTF-8 and JSON (checkJSON).
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > MaxBodyBytes {
		return nil, payloadTooLarge()
	}
	if !isJSONContentType(r.Header.Values("Content-Type")) {
		return nil, bodyParsingError("The request body must be JSON, sent with Content-Type: application/json.")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, payloadTooLarge()
		}
		return nil, bodyParsingError("The request body could not be read.")
	}
	return body, nil
}

// checkJSON is readJSON's second half: the body is UTF-8 and exactly one JSON value.
func checkJSON(r *http.Request, body []byte) error {
	if !utf8.Valid(body) {
		return schemaError(r, "body must be valid UTF-8")
	}
	if !json.Valid(body) {
		return bodyParsingError("The request body is not valid JSON.")
	}
	return nil
}

func payloadTooLarge() *apiError {
	return &apiError{
		Status: http.StatusRequestEntityTooLarge, Code: CodePayloadTooLarge,
		Message: "The request body is larger than " + strconv.Itoa(MaxBodyBytes) + " bytes.",
	}
}

// isJSONContentType accepts exactly one Content-Type, application/json with at most a UTF-8
// charset.
func isJSONContentType(values []string) bool {
	if len(values) != 1 {
		return false
	}
	if values[0] == "application/json" || values[0] == "application/json; charset=utf-8" {
		return true // what clients send, without parsing
	}
	mt, params, err := mime.ParseMediaType(values[0])
	if err != nil || mt != "application/json" {
		return false
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return false
		}
	}
	return true
}

// validation collects every problem of a request's params, query and body, reported
// together as one SCHEMA_ERROR the way Stack Auth reports them.
type validation struct {
	r        *http.Request
	problems []string
}

func newValidation(r *http.Request) *validation { return &validation{r: r} }

func (v *validation) add(problem string) { v.problems = append(v.problems, problem) }

// err is the SCHEMA_ERROR of the problems found, or nil.
func (v *validation) err() error {
	if len(v.problems) == 0 {
		return nil
	}
	return schemaError(v.r, v.problems...)
}

// keyID returns the {api_key_id} path parameter as a lowercase UUID.
func (v *validation) keyID() string {
	id, ok := parseUUID(pathVar(v.r, "api_key_id"))
	if !ok {
		v.add("params.api_key_id must be a valid UUID")
	}
	return id
}

// pathVar is a path parameter as sent, still escaped: the router matches escaped paths, so
// that an escaped "/" in a user id does not split a segment.
func pathVar(r *http.Request, name string) string { return mux.Vars(r)[name] }

// query checks that the query string has only the allowed parameters, each at most once,
// and returns it.
func (v *validation) query(allowed ...string) url.Values {
	q, err := url.ParseQuery(v.r.URL.RawQuery)
	if err != nil {
		v.add("query must be a valid URL query string")
		return url.Values{}
	}
	var unknown []string
	for name, values := range q {
		switch {
		case !slices.Contains(allowed, name):
			unknown = append(unknown, name)
		case len(values) > 1:
			v.add("query." + name + " must be given at most once")
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		v.add("query contains unknown properties: " + strings.Join(unknown, ", "))
	}
	return q
}

// property is one field of a JSON body: its name, whether it must be present, and how its
// value is checked and stored.
type property struct {
	name     string
	required bool
	// decode checks the raw value and stores it; it returns the problem, or "".
	decode func(field string, raw json.RawMessage) string
}

// object checks that body is a JSON object whose members are exactly the properties given
// (no unknown or repeated ones, the required ones present) and decodes each.
func (v *validation) object(body []byte, props ...property) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		v.add("body must be a JSON object")
		return
	}
	type member struct {
		name string
		raw  json.RawMessage
	}
	var (
		members    []member
		unknown    []string
		duplicates []string
		seen       = map[string]bool{}
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			v.add("body must be a JSON object")
			return
		}
		name, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			v.add("body must be a JSON object")
			return
		}
		if seen[name] {
			if !slices.Contains(duplicates, name) {
				duplicates = append(duplicates, name)
			}
			continue
		}
		seen[name] = true
		if !slices.ContainsFunc(props, func(p property) bool { return p.name == name }) {
			unknown = append(unknown, name)
			continue
		}
		members = append(members, member{name, raw})
	}
	if len(unknown) > 0 {
		v.add("body contains unknown properties: " + strings.Join(unknown, ", "))
	}
	if len(duplicates) > 0 {
		v.add("body contains duplicate properties: " + strings.Join(duplicates, ", "))
	}
	for _, p := range props {
		field := "body." + p.name
		i := slices.IndexFunc(members, func(m member) bool { return m.name == p.name })
		if i < 0 {
			if p.required {
				v.add(field + " must be defined")
			}
			continue
		}
		if problem := p.decode(field, members[i].raw); problem != "" {
			v.add(problem)
		}
	}
}

// stringProperty is a string (null rejected) that check accepts; it is stored in *dst.
func stringProperty(name string, required bool, dst **string, check func(field, s string) error) property {
	return property{name: name, required: required, decode: func(field string, raw json.RawMessage) string {
		s, ok := decodeString(raw)
		if !ok {
			return field + " must be a string"
		}
		if !validEscapes(raw) {
			return field + " must be valid UTF-8"
		}
		if check != nil {
			if err := check(field, s); err != nil {
				return validationMessage(err)
			}
		}
		*dst = &s
		return ""
	}}
}

// boolProperty is a boolean (null rejected), stored in *dst.
func boolProperty(name string, required bool, dst **bool) property {
	return property{name: name, required: required, decode: func(field string, raw json.RawMessage) string {
		var b bool
		if len(raw) == 0 || (raw[0] != 't' && raw[0] != 'f') || json.Unmarshal(raw, &b) != nil {
			return field + " must be a boolean"
		}
		*dst = &b
		return ""
	}}
}

// millisProperty is an optional point in time in milliseconds since the epoch, an integer
// from 0 to MaxExpiresAtMillis, or null (stored as nil).
func millisProperty(name string, dst **time.Time) property {
	return property{name: name, decode: func(field string, raw json.RawMessage) string {
		if string(raw) == "null" {
			*dst = nil
			return ""
		}
		if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
			return field + " must be an integer or null"
		}
		ms, problem := parseMillis(string(raw))
		if problem != "" {
			return field + " " + problem
		}
		t := time.UnixMilli(ms).UTC()
		*dst = &t
		return ""
	}}
}

// secondsProperty is an integer from 0 to max (null rejected), stored in *dst.
func secondsProperty(name string, required bool, max int64, dst **int64) property {
	return property{name: name, required: required, decode: func(field string, raw json.RawMessage) string {
		problem := fmt.Sprintf("%s must be an integer from 0 to %d", field, max)
		if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
			return problem
		}
		n, bad := parseMillis(string(raw))
		if bad != "" || n > max {
			return problem
		}
		*dst = &n
		return ""
	}}
}

// parseMillis reads a JSON number literal that must be an integer from 0 to
// MaxExpiresAtMillis; an exponent is fine as long as the value is such an integer ("1.5e3" is
// 1500). It works on the digits, so no literal, however long its exponent, costs more than
// its length.
func parseMillis(lit string) (int64, string) {
	neg := strings.HasPrefix(lit, "-")
	lit = strings.TrimPrefix(lit, "-")
	mantissa, exp := lit, 0
	if i := strings.IndexAny(lit, "eE"); i >= 0 {
		mantissa = lit[:i]
		e := lit[i+1:]
		negExp := strings.HasPrefix(e, "-")
		e = strings.TrimLeft(strings.TrimLeft(e, "+-"), "0")
		if len(e) > 6 {
			e = "999999" // beyond any body's digits: saturating keeps the sign of the scale
		}
		if e != "" {
			exp, _ = strconv.Atoi(e)
		}
		if negExp {
			exp = -exp
		}
	}
	intPart, frac, _ := strings.Cut(mantissa, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	scale := exp - len(frac)
	for len(digits) > 0 && digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
		scale++
	}
	const tooLarge = "must be less than or equal to 253402300799999"
	switch {
	case digits == "":
		return 0, ""
	case scale < 0:
		return 0, "must be an integer"
	case neg:
		return 0, "must be greater than or equal to 0"
	case len(digits)+scale > len(strconv.Itoa(MaxExpiresAtMillis)):
		return 0, tooLarge
	}
	v, err := strconv.ParseInt(digits+strings.Repeat("0", scale), 10, 64)
	if err != nil || v > MaxExpiresAtMillis {
		return 0, tooLarge
	}
	return v, ""
}

func decodeString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// validEscapes reports whether every \u escape of a JSON string literal is a Unicode scalar
// value: a lone or reversed UTF-16 surrogate is not (encoding/json would silently make it
// U+FFFD).
func validEscapes(raw json.RawMessage) bool {
	s := string(raw)
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		if i+1 < len(s) && s[i+1] != 'u' {
			i++ // a two-character escape such as \\ or \"
			continue
		}
		r, ok := hex4(s, i+2)
		if !ok {
			return false
		}
		i += 5
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return false
		case r >= 0xD800 && r <= 0xDBFF:
			if i+6 >= len(s) || s[i+1] != '\\' || s[i+2] != 'u' {
				return false
			}
			low, ok := hex4(s, i+3)
			if !ok || low < 0xDC00 || low > 0xDFFF {
				return false
			}
			i += 6
		}
	}
	return true
}

func hex4(s string, at int) (rune, bool) {
	if at+4 > len(s) {
		return 0, false
	}
	v, err := strconv.ParseUint(s[at:at+4], 16, 32)
	return rune(v), err == nil
}

// validationMessage is the client-safe message of a validation failure.
func validationMessage(err error) string {
	if v, ok := errors.AsType[*domain.ValidationError](err); ok {
		return v.Msg
	}
	return err.Error()
}

// parseUUID accepts a UUID in its canonical 8-4-4-4-12 hex form, in any case, and returns it
// in lowercase. Other forms that some parsers accept (braces, urn:uuid:, no dashes) are not
// UUIDs here, so that one key has one spelling.
func parseUUID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return "", false
			}
		}
	}
	return strings.ToLower(s), true
}
