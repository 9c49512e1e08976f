package domain

import (
	"strconv"
	"time"
)

// appendFast appends the document MarshalEvent writes, byte for byte as encoding/json writes
// it, for the common case: strings of printable ASCII that need no escaping, times in UTC
// within years 0 to 9999, and data of one of the four types. ok is false otherwise, and
// encoding/json writes it. TestFastEncoderAgrees and FuzzFastDecoderAgrees compare the two.
func appendFast(buf []byte, e Event) ([]byte, bool) {
	if !plain(e.ID, string(e.Type), e.ProjectID, e.KeyID, e.UserID, e.TeamID, e.Actor.Type, e.Actor.ID, e.RequestID) ||
		!plainTime(e.Time) {
		return buf, false
	}
	start := len(buf)
	buf = append(buf, `{"id":"`...)
	buf = append(buf, e.ID...)
	buf = append(buf, `","type":"`...)
	buf = append(buf, e.Type...)
	buf = append(buf, `","schema_version":`...)
	buf = strconv.AppendInt(buf, int64(e.SchemaVersion), 10)
	buf = append(buf, `,"project_id":"`...)
	buf = append(buf, e.ProjectID...)
	buf = append(buf, '"')
	if e.KeyID != "" {
		buf = append(buf, `,"key_id":"`...)
		buf = append(buf, e.KeyID...)
		buf = append(buf, '"')
	}
	if e.UserID != "" {
		buf = append(buf, `,"user_id":"`...)
		buf = append(buf, e.UserID...)
		buf = append(buf, '"')
	}
	if e.TeamID != "" {
		buf = append(buf, `,"team_id":"`...)
		buf = append(buf, e.TeamID...)
		buf = append(buf, '"')
	}
	buf = append(buf, `,"version":`...)
	buf = strconv.AppendInt(buf, int64(e.Version), 10)
	buf = append(buf, `,"time":`...)
	buf = appendTime(buf, e.Time)
	buf = append(buf, `,"actor":{"type":"`...)
	buf = append(buf, e.Actor.Type...)
	buf = append(buf, `","id":"`...)
	buf = append(buf, e.Actor.ID...)
	buf = append(buf, `"},"request_id":"`...)
	buf = append(buf, e.RequestID...)
	buf = append(buf, `","data":`...)
	ok := true
	switch d := e.Data.(type) {
	case ProjectCreated:
		ok = plain(d.Name, d.ServerKeyID, d.ServerKeyHash) && plainTime(d.CreatedAt)
		buf = append(buf, `{"name":"`...)
		buf = append(buf, d.Name...)
		buf = append(buf, `","server_key_id":"`...)
		buf = append(buf, d.ServerKeyID...)
		buf = append(buf, `","server_key_hash":"`...)
		buf = append(buf, d.ServerKeyHash...)
		buf = append(buf, `","created_at":`...)
		buf = appendTime(buf, d.CreatedAt)
	case KeyCreated:
		// A rotated key's rotated_from is left to encoding/json, like any other rare shape.
		ok = plain(d.Description, d.SecretHash, d.LastFour) && plainTime(d.CreatedAt) && (d.ExpiresAt == nil || plainTime(*d.ExpiresAt)) &&
			d.RotatedFrom == ""
		buf = append(buf, `{"description":"`...)
		buf = append(buf, d.Description...)
		buf = append(buf, `","expires_at":`...)
		if d.ExpiresAt == nil {
			buf = append(buf, "null"...)
		} else {
			buf = appendTime(buf, *d.ExpiresAt)
		}
		buf = append(buf, `,"is_public":`...)
		buf = strconv.AppendBool(buf, d.IsPublic)
		buf = append(buf, `,"secret_hash":"`...)
		buf = append(buf, d.SecretHash...)
		buf = append(buf, `","last_four":"`...)
		buf = append(buf, d.LastFour...)
		buf = append(buf, `","created_at":`...)
		buf = appendTime(buf, d.CreatedAt)
	case DescriptionChanged:
		ok = plain(d.Old, d.New)
		buf = append(buf, `{"old":"`...)
		buf = append(buf, d.Old...)
		buf = append(buf, `","new":"`...)
		buf = append(buf, d.New...)
		buf = append(buf, '"')
	case KeyRevoked:
		ok = plainTime(d.RevokedAt)
		buf = append(buf, `{"revoked_at":`...)
		buf = appendTime(buf, d.RevokedAt)
	case ExpiryChanged:
		ok = plain(d.Reason, d.ReplacedBy) && (d.Old == nil || plainTime(*d.Old)) && (d.New == nil || plainTime(*d.New))
		for i, t := range [2]*time.Time{d.Old, d.New} {
			buf = append(buf, [2]string{`{"old":`, `,"new":`}[i]...)
			if t == nil {
				buf = append(buf, "null"...)
			} else {
				buf = appendTime(buf, *t)
			}
		}
		buf = append(buf, `,"reason":"`...)
		buf = append(buf, d.Reason...)
		buf = append(buf, '"')
		if d.ReplacedBy != "" {
			buf = append(buf, `,"replaced_by":"`...)
			buf = append(buf, d.ReplacedBy...)
			buf = append(buf, '"')
		}
	default:
		ok = false
	}
	if !ok {
		return buf[:start], false
	}
	return append(buf, "}}"...), true
}

// plain reports whether encoding/json writes every string as it is: printable ASCII other
// than the quote, the backslash and the characters it escapes for HTML (<, >, &).
func plain(ss ...string) bool {
	for _, s := range ss {
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return false
			}
		}
	}
	return true
}

// plainTime reports whether time.Time's MarshalJSON writes t as appendTime does.
func plainTime(t time.Time) bool {
	return t.Location() == time.UTC && t.Year() >= 0 && t.Year() <= 9999
}

func appendTime(buf []byte, t time.Time) []byte {
	buf = append(buf, '"')
	buf = t.AppendFormat(buf, time.RFC3339Nano)
	return append(buf, '"')
}
