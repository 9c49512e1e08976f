package domain

import (
	"time"
	"unicode/utf8"
	"unsafe"
)

// The fast decoder: a hand-written scanner for events of the current schema version as
// MarshalEvent writes them, which replays, verification and events tail run over millions of
// messages. It accepts only what it can decode exactly as the general decoder
// (unmarshalAnyVersion, encoding/json) would: every field name spelt exactly and at most
// once, strings without escapes in valid UTF-8, plain integers, times in UTC ("Z") and data
// holding only its type's fields. Anything else (another schema version, an escape, an
// unknown field, a null where a value belongs) makes it give up, and the general path
// decides: the result or the error is then the canonical one. TestFastDecoderAgrees and
// FuzzFastDecoderAgrees hold the two to the same answers.

// fastEvent is what the scanner found: string fields as spans of the document.
type fastEvent struct {
	id, typ, project, key, user, team, actorType, actorID, request span
	schemaVersion, version                                         int
	at                                                             time.Time
	// data, by type
	name, serverKeyID, serverKeyHash, description, secretHash, lastFour, old, new span
	expiresAt                                                                     time.Time
	hasExpiry                                                                     bool
	isPublic                                                                      bool
	createdAt, revokedAt                                                          time.Time
	// ExpiryChanged (its old and new are times, DescriptionChanged's strings)
	oldExpiry, newExpiry       time.Time
	hasOldExpiry, hasNewExpiry bool
	reason, replacedBy         span
	seen                       uint32 // fields present, by bit
}

// span is a string's bytes in the document, [from, to).
type span struct{ from, to int32 }

// Field bits of fastEvent.seen.
const (
	fID = 1 << iota
	fType
	fSchemaVersion
	fProject
	fKey
	fUser
	fVersion
	fTime
	fActor
	fRequest
	fData
	fActorType
	fActorID
	fName
	fServerKeyID
	fServerKeyHash
	fDescription
	fExpiresAt
	fIsPublic
	fSecretHash
	fLastFour
	fCreatedAt
	fOld
	fNew
	fRevokedAt
	fReason
	fReplacedBy
	fTeam
)

// decodeFast decodes b when it is an event of the current schema version in the plain form;
// ok is false when the general decoder must decide. With shared, the event's strings are
// b's bytes (b must then never change); without, they are copied, all into one allocation.
func decodeFast(b []byte, shared bool) (Event, bool) {
	var f fastEvent
	if !f.scan(b) {
		return Event{}, false
	}
	src := b
	if !shared {
		n := 0
		for _, s := range f.spans() {
			n += int(s.to - s.from)
		}
		arena := make([]byte, 0, n)
		for _, s := range f.spans() {
			from := int32(len(arena))
			arena = append(arena, b[s.from:s.to]...)
			*s = span{from, int32(len(arena))}
		}
		src = arena
	}
	str := func(s span) string {
		if s.to == s.from {
			return ""
		}
		return unsafe.String(&src[s.from], int(s.to-s.from))
	}
	e := Event{
		ID: str(f.id), Type: EventType(str(f.typ)), SchemaVersion: f.schemaVersion,
		ProjectID: str(f.project), KeyID: str(f.key), UserID: str(f.user), TeamID: str(f.team), Version: f.version,
		Time: f.at, Actor: Actor{Type: str(f.actorType), ID: str(f.actorID)}, RequestID: str(f.request),
	}
	switch e.Type {
	case TypeProjectCreated:
		e.Data = ProjectCreated{Name: str(f.name), ServerKeyID: str(f.serverKeyID), ServerKeyHash: str(f.serverKeyHash), CreatedAt: f.createdAt}
	case TypeKeyCreated:
		d := KeyCreated{Description: str(f.description), IsPublic: f.isPublic,
			SecretHash: str(f.secretHash), LastFour: str(f.lastFour), CreatedAt: f.createdAt}
		if f.hasExpiry {
			at := f.expiresAt
			d.ExpiresAt = &at
		}
		e.Data = d
	case TypeDescriptionChanged:
		e.Data = DescriptionChanged{Old: str(f.old), New: str(f.new)}
	case TypeKeyRevoked:
		e.Data = KeyRevoked{RevokedAt: f.revokedAt}
	case TypeExpiryChanged:
		d := ExpiryChanged{Reason: str(f.reason), ReplacedBy: str(f.replacedBy)}
		if f.hasOldExpiry {
			at := f.oldExpiry
			d.Old = &at
		}
		if f.hasNewExpiry {
			at := f.newExpiry
			d.New = &at
		}
		e.Data = d
	}
	if e.validate() != nil {
		return Event{}, false
	}
	return e, true
}

// spans lists the string fields, for copying them out.
func (f *fastEvent) spans() [19]*span {
	return [19]*span{&f.reason, &f.replacedBy, &f.id, &f.typ, &f.project, &f.key, &f.user, &f.team, &f.actorType, &f.actorID, &f.request,
		&f.name, &f.serverKeyID, &f.serverKeyHash, &f.description, &f.secretHash, &f.lastFour, &f.old, &f.new}
}

// scanner reads JSON from a document, giving up (false) on anything outside the plain form.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// byte consumes c after optional white space.
func (s *scanner) byte(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// peek is the next byte after white space (0 at the end).
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// str reads a string without escapes, in valid UTF-8 without control characters.
func (s *scanner) str() (span, bool) {
	if !s.byte('"') {
		return span{}, false
	}
	from := s.i
	ascii := true
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			sp := span{int32(from), int32(s.i)}
			s.i++
			if !ascii && !utf8.Valid(s.b[from:sp.to]) {
				return span{}, false
			}
			return sp, true
		case c == '\\' || c < 0x20:
			return span{}, false
		case c >= 0x80:
			ascii = false
		}
		s.i++
	}
	return span{}, false
}

// name reads an object member's name and its colon.
func (s *scanner) name() (string, bool) {
	sp, ok := s.str()
	if !ok || !s.byte(':') {
		return "", false
	}
	return unsafe.String(unsafe.SliceData(s.b[sp.from:]), int(sp.to-sp.from)), true
}

// int reads a JSON integer that fits an int comfortably: no fraction, no exponent.
func (s *scanner) int() (int, bool) {
	s.ws()
	neg := false
	if s.i < len(s.b) && s.b[s.i] == '-' {
		neg = true
		s.i++
	}
	from, n := s.i, 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		n = n*10 + int(s.b[s.i]-'0')
		s.i++
	}
	digits := s.i - from
	if digits == 0 || digits > 9 || (digits > 1 && s.b[from] == '0') {
		return 0, false
	}
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	if neg {
		n = -n
	}
	return n, true
}

// bool reads true or false.
func (s *scanner) bool() (bool, bool) {
	s.ws()
	switch {
	case len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "true":
		s.i += 4
		return true, true
	case len(s.b)-s.i >= 5 && string(s.b[s.i:s.i+5]) == "false":
		s.i += 5
		return false, true
	}
	return false, false
}

// null reads null.
func (s *scanner) null() bool {
	s.ws()
	if len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "null" {
		s.i += 4
		return true
	}
	return false
}

// time reads an RFC 3339 time in UTC: YYYY-MM-DDTHH:MM:SS[.fraction]Z.
func (s *scanner) time() (time.Time, bool) {
	sp, ok := s.str()
	if !ok {
		return time.Time{}, false
	}
	return parseUTC(s.b[sp.from:sp.to])
}

func parseUTC(b []byte) (time.Time, bool) {
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' || b[len(b)-1] != 'Z' {
		return time.Time{}, false
	}
	num := func(from, to int) (int, bool) {
		n := 0
		for _, c := range b[from:to] {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	year, ok1 := num(0, 4)
	month, ok2 := num(5, 7)
	day, ok3 := num(8, 10)
	hour, ok4 := num(11, 13)
	minute, ok5 := num(14, 16)
	sec, ok6 := num(17, 19)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || month < 1 || month > 12 || day < 1 ||
		day > daysIn(month, year) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	nsec := 0
	if rest := b[19 : len(b)-1]; len(rest) > 0 {
		if rest[0] != '.' || len(rest) < 2 || len(rest) > 10 {
			return time.Time{}, false
		}
		n, ok := num(20, len(b)-1)
		if !ok {
			return time.Time{}, false
		}
		for range 10 - len(rest) {
			n *= 10
		}
		nsec = n
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC), true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// once marks field bit as seen, refusing a second occurrence (encoding/json would keep the
// last; the general path decides such documents).
func (f *fastEvent) once(bit uint32) bool {
	if f.seen&bit != 0 {
		return false
	}
	f.seen |= bit
	return true
}

// scan reads a whole document into f.
func (f *fastEvent) scan(b []byte) bool {
	s := &scanner{b: b}
	if !s.byte('{') {
		return false
	}
	if s.peek() == '}' {
		return false
	}
	for {
		name, ok := s.name()
		if !ok {
			return false
		}
		switch name {
		case "id":
			ok = f.once(fID)
			f.id, ok = s.strIf(ok)
		case "type":
			ok = f.once(fType)
			f.typ, ok = s.strIf(ok)
		case "schema_version":
			ok = f.once(fSchemaVersion)
			if ok {
				f.schemaVersion, ok = s.int()
			}
			ok = ok && f.schemaVersion == CurrentSchemaVersion
		case "project_id":
			ok = f.once(fProject)
			f.project, ok = s.strIf(ok)
		case "key_id":
			ok = f.once(fKey)
			f.key, ok = s.strIf(ok)
		case "user_id":
			ok = f.once(fUser)
			f.user, ok = s.strIf(ok)
		case "team_id":
			ok = f.once(fTeam)
			f.team, ok = s.strIf(ok)
		case "version":
			ok = f.once(fVersion)
			if ok {
				f.version, ok = s.int()
			}
		case "time":
			ok = f.once(fTime)
			if ok {
				f.at, ok = s.time()
			}
		case "actor":
			ok = f.once(fActor) && f.scanActor(s)
		case "request_id":
			ok = f.once(fRequest)
			f.request, ok = s.strIf(ok)
		case "data":
			// The data's fields depend on the type, which MarshalEvent writes first.
			ok = f.seen&fType != 0 && f.once(fData) && f.scanData(s, unsafe.String(unsafe.SliceData(b[f.typ.from:]), int(f.typ.to-f.typ.from)))
		default:
			return false
		}
		if !ok {
			return false
		}
		if s.byte(',') {
			continue
		}
		if !s.byte('}') {
			return false
		}
		break
	}
	s.ws()
	return s.i == len(b) && f.seen&(fSchemaVersion|fActor|fData) == fSchemaVersion|fActor|fData
}

// strIf reads a string when ok.
func (s *scanner) strIf(ok bool) (span, bool) {
	if !ok {
		return span{}, false
	}
	return s.str()
}

func (f *fastEvent) scanActor(s *scanner) bool {
	if !s.byte('{') {
		return false
	}
	if s.byte('}') {
		return true
	}
	for {
		name, ok := s.name()
		if !ok {
			return false
		}
		switch name {
		case "type":
			ok = f.once(fActorType)
			f.actorType, ok = s.strIf(ok)
		case "id":
			ok = f.once(fActorID)
			f.actorID, ok = s.strIf(ok)
		default:
			return false
		}
		if !ok {
			return false
		}
		if s.byte(',') {
			continue
		}
		return s.byte('}')
	}
}

func (f *fastEvent) scanData(s *scanner, typ string) bool {
	switch EventType(typ) {
	case TypeProjectCreated, TypeKeyCreated, TypeDescriptionChanged, TypeKeyRevoked, TypeExpiryChanged:
	default:
		return false
	}
	if !s.byte('{') {
		return false
	}
	if s.byte('}') {
		return true
	}
	for {
		name, ok := s.name()
		if !ok {
			return false
		}
		t := EventType(typ)
		switch {
		case name == "name" && t == TypeProjectCreated:
			ok = f.once(fName)
			f.name, ok = s.strIf(ok)
		case name == "server_key_id" && t == TypeProjectCreated:
			ok = f.once(fServerKeyID)
			f.serverKeyID, ok = s.strIf(ok)
		case name == "server_key_hash" && t == TypeProjectCreated:
			ok = f.once(fServerKeyHash)
			f.serverKeyHash, ok = s.strIf(ok)
		case name == "created_at" && (t == TypeProjectCreated || t == TypeKeyCreated):
			ok = f.once(fCreatedAt)
			if ok {
				f.createdAt, ok = s.time()
			}
		case name == "description" && t == TypeKeyCreated:
			ok = f.once(fDescription)
			f.description, ok = s.strIf(ok)
		case name == "expires_at" && t == TypeKeyCreated:
			ok = f.once(fExpiresAt)
			if ok && !s.null() {
				f.expiresAt, ok = s.time()
				f.hasExpiry = true
			}
		case name == "is_public" && t == TypeKeyCreated:
			ok = f.once(fIsPublic)
			if ok {
				f.isPublic, ok = s.bool()
			}
		case name == "secret_hash" && t == TypeKeyCreated:
			ok = f.once(fSecretHash)
			f.secretHash, ok = s.strIf(ok)
		case name == "last_four" && t == TypeKeyCreated:
			ok = f.once(fLastFour)
			f.lastFour, ok = s.strIf(ok)
		case name == "old" && t == TypeDescriptionChanged:
			ok = f.once(fOld)
			f.old, ok = s.strIf(ok)
		case name == "new" && t == TypeDescriptionChanged:
			ok = f.once(fNew)
			f.new, ok = s.strIf(ok)
		case (name == "old" || name == "new") && t == TypeExpiryChanged:
			at, has, bit := &f.oldExpiry, &f.hasOldExpiry, uint32(fOld)
			if name == "new" {
				at, has, bit = &f.newExpiry, &f.hasNewExpiry, fNew
			}
			ok = f.once(bit)
			if ok && !s.null() {
				*at, ok = s.time()
				*has = true
			}
		case name == "reason" && t == TypeExpiryChanged:
			ok = f.once(fReason)
			f.reason, ok = s.strIf(ok)
		case name == "replaced_by" && t == TypeExpiryChanged:
			ok = f.once(fReplacedBy)
			f.replacedBy, ok = s.strIf(ok)
		case name == "revoked_at" && t == TypeKeyRevoked:
			ok = f.once(fRevokedAt)
			if ok {
				f.revokedAt, ok = s.time()
			}
		default:
			return false
		}
		if !ok {
			return false
		}
		if s.byte(',') {
			continue
		}
		return s.byte('}')
	}
}
