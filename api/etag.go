package api

import (
	"net/http"
	"strconv"
	"strings"
)

// A key's ETag is its version (CONTRACT section 7): the number of events it has, which is
// what a conditional PATCH's append is checked against.

// etag is the strong entity tag of a key at a version: "3".
func etag(version int) string { return `"` + strconv.Itoa(version) + `"` }

// setETag puts the ETag of a key object's version on the response.
func setETag(w http.ResponseWriter, version int) { w.Header().Set("ETag", etag(version)) }

// entityTag is one member of an If-Match or If-None-Match list (RFC 9110 section 8.8.3).
type entityTag struct {
	weak   bool
	opaque string // between the quotes
}

// tagList is a parsed If-Match or If-None-Match field: "*", or a list of entity tags. Members
// that are not entity tags are dropped: they can match no version.
type tagList struct {
	any  bool
	tags []entityTag
}

// parseTagList reads every line of a conditional header field; ok is false when the
// request does not have it.
func parseTagList(h http.Header, name string) (tagList, bool) {
	values := h.Values(name)
	if len(values) == 0 {
		return tagList{}, false
	}
	var l tagList
	for _, v := range values {
		for member := range strings.SplitSeq(v, ",") {
			member = strings.Trim(member, " \t")
			if member == "*" {
				l.any = true
				continue
			}
			if t, ok := parseEntityTag(member); ok {
				l.tags = append(l.tags, t)
			}
		}
	}
	return l, true
}

// parseEntityTag reads W/"opaque" or "opaque", the opaque part being etagc characters.
func parseEntityTag(s string) (entityTag, bool) {
	var t entityTag
	if rest, ok := strings.CutPrefix(s, "W/"); ok {
		t.weak, s = true, rest
	}
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return entityTag{}, false
	}
	t.opaque = s[1 : len(s)-1]
	for i := 0; i < len(t.opaque); i++ {
		if c := t.opaque[i]; c == '"' || c < 0x21 || c == 0x7f {
			return entityTag{}, false
		}
	}
	return t, true
}

// matchesStrong is If-Match's test (RFC 9110 section 13.1.1): "*" matches any current
// representation, and a listed tag only by strong comparison, so a weak tag never matches.
func (l tagList) matchesStrong(version int) bool {
	if l.any {
		return true
	}
	current := strconv.Itoa(version)
	for _, t := range l.tags {
		if !t.weak && t.opaque == current {
			return true
		}
	}
	return false
}

// matchesWeak is If-None-Match's test (RFC 9110 section 13.1.2): "*" matches any current
// representation, and a listed tag by weak comparison, W/"3" matching "3".
func (l tagList) matchesWeak(version int) bool {
	if l.any {
		return true
	}
	current := strconv.Itoa(version)
	for _, t := range l.tags {
		if t.opaque == current {
			return true
		}
	}
	return false
}

// ifMatch is a PATCH's If-Match as the domain's precondition on the key's version, nil when
// the request has none.
func ifMatch(r *http.Request) func(version int) bool {
	l, ok := parseTagList(r.Header, "If-Match")
	if !ok {
		return nil
	}
	return l.matchesStrong
}

// notModified answers 304 with no body when a GET's If-None-Match lists the key's current
// ETag, and reports whether it did.
func notModified(w http.ResponseWriter, r *http.Request, version int) bool {
	l, ok := parseTagList(r.Header, "If-None-Match")
	if !ok || !l.matchesWeak(version) {
		return false
	}
	setETag(w, version)
	w.WriteHeader(http.StatusNotModified)
	return true
}
