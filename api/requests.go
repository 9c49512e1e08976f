package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
)

// The decoders below turn each endpoint's request into a command or query argument, or into
// the one error response its params, query and body deserve (see readJSON for the order).

// decodeCreate reads POST /user-api-keys or POST /team-api-keys: the owner in the kind's
// field (user_id or team_id).
func decodeCreate(w http.ResponseWriter, r *http.Request, kind keyKind) (commands.NewKey, error) {
	body, err := readJSON(w, r)
	if err != nil {
		return commands.NewKey{}, err
	}
	var b struct {
		Owner, Description *string
		ExpiresAt          *time.Time
		IsPublic           *bool
	}
	v := newValidation(r)
	v.query()
	v.object(body,
		stringProperty(kind.ownerField, true, &b.Owner, kind.validateOwner),
		stringProperty("description", true, &b.Description, domain.ValidateDescription),
		millisProperty("expires_at_millis", &b.ExpiresAt),
		boolProperty("is_public", false, &b.IsPublic),
	)
	if err := v.err(); err != nil {
		return commands.NewKey{}, err
	}
	k := commands.NewKey{Description: *b.Description, ExpiresAt: b.ExpiresAt, IsPublic: b.IsPublic != nil && *b.IsPublic}
	if kind.typ == domain.KeyTypeTeam {
		k.TeamID = *b.Owner
	} else {
		k.UserID = *b.Owner
	}
	return k, nil
}

// decodeList reads GET /user-api-keys?user_id=U (or /team-api-keys?team_id=T) and returns the
// owner.
func decodeList(r *http.Request, kind keyKind) (string, error) {
	v := newValidation(r)
	q := v.query(kind.ownerField)
	if err := v.err(); err != nil {
		return "", err
	}
	if _, ok := q[kind.ownerField]; !ok {
		return "", plainSchemaError(kind.ownerField + " is required for " + string(kind.typ) + " API keys")
	}
	owner := q.Get(kind.ownerField)
	if err := kind.validateOwner("query."+kind.ownerField, owner); err != nil {
		v.add(validationMessage(err))
		return "", v.err()
	}
	return owner, nil
}

// decodeGet reads GET /user-api-keys/{api_key_id} (or the team path) and returns the key id.
func decodeGet(r *http.Request, kind keyKind) (string, error) {
	v := newValidation(r)
	id := v.keyID()
	optionalOwnerQuery(v, kind)
	return id, v.err()
}

// decodeHistory reads GET /user-api-keys/{api_key_id}/events: the key id, and the optional
// cursor (a stream sequence from the previous page) and limit (1 to historyPageLimit).
func decodeHistory(r *http.Request, kind keyKind) (id string, after uint64, limit int, err error) {
	v := newValidation(r)
	id = v.keyID()
	q := v.query(kind.ownerField, "cursor", "limit")
	checkOwnerQuery(v, kind, q)
	limit = historyPageLimit
	if values, ok := q["cursor"]; ok && len(values) == 1 {
		n, perr := strconv.ParseUint(values[0], 10, 64)
		if perr != nil || n == 0 {
			v.add("query.cursor must be a cursor from a previous page (a positive integer)")
		}
		after = n
	}
	if values, ok := q["limit"]; ok && len(values) == 1 {
		n, perr := strconv.Atoi(values[0])
		if perr != nil || n < 1 || n > historyPageLimit {
			v.add(fmt.Sprintf("query.limit must be an integer from 1 to %d", historyPageLimit))
		}
		limit = n
	}
	return id, after, limit, v.err()
}

// decodeUpdate reads PATCH /user-api-keys/{api_key_id} (or the team path).
func decodeUpdate(w http.ResponseWriter, r *http.Request, kind keyKind) (string, domain.UpdateKey, error) {
	body, err := readJSON(w, r)
	if err != nil {
		return "", domain.UpdateKey{}, err
	}
	var u domain.UpdateKey
	v := newValidation(r)
	id := v.keyID()
	optionalOwnerQuery(v, kind)
	v.object(body,
		stringProperty("description", false, &u.Description, domain.ValidateDescription),
		boolProperty("revoked", false, &u.Revoked),
	)
	if err := v.err(); err != nil {
		return "", domain.UpdateKey{}, err
	}
	return id, u, nil
}

// decodeCheck reads POST /user-api-keys/check and returns the presented secret.
func decodeCheck(w http.ResponseWriter, r *http.Request) (string, error) {
	body, err := readBody(w, r)
	if err != nil {
		return "", err
	}
	if r.URL.RawQuery == "" {
		if secret, ok := plainCheckBody(body); ok {
			return secret, nil
		}
	}
	return decodeCheckBody(r, body)
}

// decodeCheckBody is decodeCheck's full decoder, for any body.
func decodeCheckBody(r *http.Request, body []byte) (string, error) {
	if err := checkJSON(r, body); err != nil {
		return "", err
	}
	var secret *string
	v := newValidation(r)
	v.query()
	v.object(body, stringProperty("api_key", true, &secret, nil))
	if err := v.err(); err != nil {
		return "", err
	}
	return *secret, nil
}

// plainCheckBody reads the body every client sends to check, {"api_key":"..."} with only
// printable ASCII in the secret and no escapes, without encoding/json: it is the hot path of
// the service. Whatever else a body is (escapes, other or repeated members, anything invalid)
// is not plain, and goes through the full decoder, which reports its problems; for a plain
// body the full decoder would return the same secret with no problem (TestPlainCheckBody).
func plainCheckBody(b []byte) (string, bool) {
	i := skipJSONSpace(b, 0)
	const member = `"api_key"`
	if i >= len(b) || b[i] != '{' {
		return "", false
	}
	i = skipJSONSpace(b, i+1)
	if len(b)-i < len(member) || string(b[i:i+len(member)]) != member {
		return "", false
	}
	i = skipJSONSpace(b, i+len(member))
	if i >= len(b) || b[i] != ':' {
		return "", false
	}
	i = skipJSONSpace(b, i+1)
	if i >= len(b) || b[i] != '"' {
		return "", false
	}
	start := i + 1
	for i = start; i < len(b) && b[i] != '"'; i++ {
		if c := b[i]; c < 0x20 || c > 0x7e || c == '\\' {
			return "", false
		}
	}
	if i >= len(b) {
		return "", false
	}
	end := i
	i = skipJSONSpace(b, i+1)
	if i >= len(b) || b[i] != '}' || skipJSONSpace(b, i+1) != len(b) {
		return "", false
	}
	return string(b[start:end]), true
}

// skipJSONSpace returns the index of the first byte at or after i that is not JSON's
// whitespace.
func skipJSONSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// decodeCredentialScanning reads POST /integrations/credential-scanning/revoke and returns
// the reported secret.
func decodeCredentialScanning(w http.ResponseWriter, r *http.Request) (string, error) {
	return decodeCheck(w, r)
}

// optionalOwnerQuery accepts Stack Auth's optional ?user_id= (?team_id= on the team paths) on
// get and update, which its SDK sends. As there, it is validated and otherwise ignored: the
// key id alone names the key in the project.
func optionalOwnerQuery(v *validation, kind keyKind) {
	checkOwnerQuery(v, kind, v.query(kind.ownerField))
}

// checkOwnerQuery validates the optional owner parameter of a query.
func checkOwnerQuery(v *validation, kind keyKind, q url.Values) {
	if values, ok := q[kind.ownerField]; ok && len(values) == 1 {
		if err := kind.validateOwner("query."+kind.ownerField, values[0]); err != nil {
			v.add(validationMessage(err))
		}
	}
}

// decodeRotate reads POST /user-api-keys/{api_key_id}/rotate: the key id and the grace
// period, a required integer of seconds from 0 to 604800 (7 days).
func decodeRotate(w http.ResponseWriter, r *http.Request) (string, time.Duration, error) {
	body, err := readJSON(w, r)
	if err != nil {
		return "", 0, err
	}
	var grace *int64
	v := newValidation(r)
	id := v.keyID()
	v.query()
	v.object(body, secondsProperty("grace_period_seconds", true, int64(domain.MaxRotationGrace/time.Second), &grace))
	if err := v.err(); err != nil {
		return "", 0, err
	}
	return id, time.Duration(*grace) * time.Second, nil
}
