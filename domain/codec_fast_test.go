package domain

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fastCorpus is the documents the fast codec is held to the general one on: events of every
// type as MarshalEvent writes them, the stored fixtures of older schema versions, the fuzz
// corpus, and variations of each that the fast decoder must leave to the general one.
func fastCorpus(t testing.TB) [][]byte {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	m := Meta{Time: at, Actor: Actor{Type: ActorAdmin, ID: "alice"}, RequestID: "r", NewID: func() string { return "e1" }}
	exp := at.Add(time.Hour)
	project, _ := DecideCreateProject(CreateProject{ProjectID: "p", Name: "n", ServerKeyID: "s", ServerKeyHash: "h"}, m)
	created, _ := DecideCreateKey(CreateKey{ProjectID: "p", KeyID: "k", UserID: "u", Description: "d", ExpiresAt: &exp, IsPublic: true, SecretHash: "h", LastFour: "abcd"}, m)
	plainKey, _ := DecideCreateKey(CreateKey{ProjectID: "p", KeyID: "k2", UserID: "ü <user> & co", Description: "tab\there \"quoted\" \u2028 é", SecretHash: "h", LastFour: "abcd"}, m)
	key, _ := EvolveKey(nil, created)
	desc, yes := "new", true
	both, _ := key.DecideUpdate(UpdateKey{Description: &desc, Revoked: &yes}, m)
	var docs [][]byte
	for _, e := range append([]Event{project, created, plainKey}, both...) {
		b, err := marshalGeneral(e)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, b)
	}
	docs = append(docs,
		[]byte(`{"id":"e","type":"KeyRevoked","schema_version":1,"project_id":"p","key_id":"k","user_id":"u","version":2,"time":"2026-01-01T00:00:00Z","actor":{"type":"admin","id":"a"},"request_id":"","data":{"revoked_at":"2026-01-01T00:00:00Z","extra":1}}`),
		[]byte(`{"id":"e","type":"DescriptionChanged","schema_version":1,"project_id":"p","key_id":"k","user_id":"u","version":2,"time":"2026-01-01T00:00:00Z","actor":{"type":"admin","id":"a"},"data":{}}`),
		[]byte(` { "id" : "e" , "type":"KeyRevoked","schema_version":1,"project_id":"p","key_id":"k","user_id":"u","version":2,"time":"2026-02-29T23:59:59.999999999Z","actor":{},"data":{"revoked_at":"2024-02-29T00:00:00.1Z"}} `),
		[]byte(`{"id":"e","type":"KeyRevoked","schema_version":1,"project_id":"p","key_id":"k","user_id":"u","version":2,"time":"2025-02-29T00:00:00Z","actor":{},"data":{}}`),
		[]byte(`{"id":"e","type":"KeyRevoked","schema_version":1,"project_id":"p","key_id":"k","user_id":"u","version":-0,"actor":{},"data":{}}`),
	)
	for _, dir := range []string{"testdata", "testdata/fuzz/FuzzUnmarshalEvent"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil || len(b) == 0 || bytes.HasSuffix([]byte(f), []byte("fuzz")) {
				continue
			}
			if bytes.HasPrefix(b, []byte("go test fuzz v1")) {
				// []byte("...") in Go syntax: good enough to take the quoted text as is.
				if i, j := bytes.IndexByte(b, '"'), bytes.LastIndexByte(b, '"'); i >= 0 && j > i {
					b = []byte(strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(string(b[i+1 : j])))
				}
			}
			docs = append(docs, b)
		}
	}
	// Variations: each must give the general decoder's answer, whoever gives it.
	n := len(docs)
	for _, b := range docs[:n] {
		for _, r := range [][2]string{
			{`"id":`, `"ID":`}, {`"version":`, `"version":1,"version":`}, {`"Z"`, `"+00:00"`}, {`Z"`, `+01:00"`},
			{`"schema_version":1`, `"schema_version":1.0`}, {`"schema_version":1`, `"schema_version":0`},
			{`"d"`, `"\u0064"`}, {`"u"`, `"u\xff"`}, {`"data":{`, `"data":{"":0,`}, {`"actor":{`, `"actor":null,"x":{`},
			{`}}`, `}} x`}, {`"version":2`, `"version":02`}, {`"version":2`, `"version":2e0`}, {`"is_public":true`, `"is_public":null`},
			{`"expires_at":"`, `"expires_at":null,"y":"`}, {`T`, `t`}, {`"time":"2026`, `"time":"10000`}, {`"version":2`, `"version":9999999999`},
		} {
			if v := bytes.Replace(b, []byte(r[0]), []byte(r[1]), 1); !bytes.Equal(v, b) {
				docs = append(docs, v)
			}
		}
	}
	return docs
}

// checkFastCodec fails t when the fast decoder or encoder disagrees with the general one on b.
func checkFastCodec(t testing.TB, b []byte) {
	general, gerr := unmarshalAnyVersion(b)
	for _, shared := range []bool{false, true} {
		fast, ok := decodeFast(bytes.Clone(b), shared)
		if !ok {
			continue
		}
		if gerr != nil {
			t.Fatalf("fast decoder (shared %v) accepted what the general one refuses (%v): %s", shared, gerr, b)
		}
		if !reflect.DeepEqual(fast, general) {
			t.Fatalf("decoders disagree (shared %v) on %s:\n    fast %#v\n general %#v", shared, b, fast, general)
		}
	}
	if gerr == nil {
		want, err := marshalGeneral(general)
		if err != nil {
			return
		}
		got, err := AppendEvent([]byte("prefix"), general)
		if err != nil || !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Fatalf("encoders disagree on %#v:\n    fast %s\n general %s", general, got, want)
		}
	}
}

// The fast decoder must agree with the general one on everything it accepts, and accept the
// documents MarshalEvent writes.
func TestFastDecoderAgrees(t *testing.T) {
	docs := fastCorpus(t)
	for _, b := range docs {
		checkFastCodec(t, b)
	}
	for _, i := range []int{0, 1, 3, 4} { // the events as written, without escapes: the fast path
		if _, ok := decodeFast(docs[i], false); !ok {
			b := docs[i]
			t.Errorf("fast decoder refused %s", b)
		}
	}
	for _, odd := range []string{
		`{"id":"e","type":"KeyRevoked","schema_version":1,"project_id":"p","key_id":"k","user_id":"u","version":2,"actor":{"type":"a","id":"b"}}`,
		`{"id":"e","type":"KeyRevoked","schema_version":1,"project_id":"p","key_id":"k","user_id":"u","version":2,"data":{}}`,
		`{"id":"e","type":"KeyRevoked","schema_version":0,"project_id":"p","key_id":"k","user_id":"u","version":2,"actor":"admin:a","data":{"revoked_at_millis":1}}`,
		`{"id":"e","type":"Nope","schema_version":1,"project_id":"p","version":1,"actor":{"type":"a","id":"b"},"data":{}}`,
	} {
		if _, ok := decodeFast([]byte(odd), false); ok {
			t.Errorf("fast decoder accepted %s; the general decoder must decide", odd)
		}
	}
}

// FuzzFastDecoderAgrees: on any bytes the fast codec gives the general one's answer.
func FuzzFastDecoderAgrees(f *testing.F) {
	for _, b := range fastCorpus(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkFastCodec(t, b) })
}

// The copying decoder's strings must not share the document's memory.
func TestUnmarshalEventCopiesStrings(t *testing.T) {
	b := fastCorpus(t)[1]
	e, err := UnmarshalEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	want := e.KeyID
	for i := range b {
		b[i] = 'x'
	}
	if e.KeyID != want || e.KeyID == "" {
		t.Fatalf("key id changed with the document: %q", e.KeyID)
	}
}
