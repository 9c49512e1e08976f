package main_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
)

// TestEmbeddedNATSAdmitsOnlyKeyledger: a client without credentials is refused by keysd's
// embedded server; keysctl, given only the secret file, connects with a plain URL; the URL
// of keysctl audit-url reads the stream and cannot publish onto it.
func TestEmbeddedNATSAdmitsOnlyKeyledger(t *testing.T) {
	testenv.Heavy(t, "a keysd process")
	t.Parallel()
	k := startKeysd(t, keysdOptions{})
	plain := "nats://" + k.embeddedAddr
	if nc, err := nats.Connect(plain); err == nil {
		nc.Close()
		t.Fatal("an unauthenticated client connected to the embedded server")
	}
	out, errOut, code := k.keysctl("--nats-url", plain, "projects", "create", "--name", "plain url")
	if code != 0 || !strings.Contains(out, "project_id") {
		t.Fatalf("keysctl with a plain URL and the secret file: exit %d %s %s", code, out, errOut)
	}
	out, errOut, code = k.keysctl("--nats-url", plain, "audit-url")
	if code != 0 {
		t.Fatalf("audit-url: %d %s", code, errOut)
	}
	audit, err := nats.Connect(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("connect with the audit URL: %v", err)
	}
	defer audit.Close()
	js, _ := jetstream.New(audit)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	before := lastSeq(t, k.natsURL)
	if _, err := js.Publish(ctx, "keyledger.key."+uuid.NewString()+"."+uuid.NewString()+".KeyCreated", []byte("{}")); err == nil {
		t.Error("the audit URL published onto the event stream")
	}
	if err := js.DeleteStream(ctx, "KEYLEDGER"); err == nil {
		t.Error("the audit URL deleted the stream")
	}
	if after := lastSeq(t, k.natsURL); after != before {
		t.Errorf("the stream moved from %d to %d", before, after)
	}
}

// TestForgedEventsAreNeverApplied: events published from outside keysd onto its stream,
// forged, altered, replayed out of order or re-addressed to another key or project, change
// no key as the API shows it, never make a key valid for check, and are listed by keysctl
// verify; the read model equals the replay of the stream all the same.
func TestForgedEventsAreNeverApplied(t *testing.T) {
	testenv.Heavy(t, "keysd processes")
	t.Parallel()
	ns := testenv.NATS(t) // an external NATS without authentication: anyone can publish
	db := testenv.Postgres(t)
	k := startKeysd(t, keysdOptions{natsURL: ns.URL, databaseURL: db})
	a, b := k.createProject("a"), k.createProject("b")
	create := func(p project, user, desc string) response {
		r := k.do("POST", "/api/v1/user-api-keys", p, map[string]any{"user_id": user, "description": desc})
		if r.Status != 200 {
			t.Fatalf("create: %d %s", r.Status, r.Raw)
		}
		return r
	}
	k1, k2, k3 := create(a, "u1", "one"), create(a, "u2", "two"), create(b, "u3", "three")
	if r := k.do("PATCH", "/api/v1/user-api-keys/"+k1.str("id"), a, map[string]any{"description": "one, renamed"}); r.Status != 200 {
		t.Fatal(r.Raw)
	}
	if r := k.do("PATCH", "/api/v1/user-api-keys/"+k1.str("id"), a, map[string]any{"description": "one, again"}); r.Status != 200 {
		t.Fatal(r.Raw)
	}
	nc := ns.Connect(t)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	str, err := js.Stream(ctx, "KEYLEDGER")
	if err != nil {
		t.Fatal(err)
	}
	subj := func(p, key, typ string) string { return "keyledger.key." + p + "." + key + "." + typ }
	get := func(subject string) *jetstream.RawStreamMsg {
		m, err := str.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	created1 := get(subj(a.ID, k1.str("id"), "KeyCreated"))
	renamed1 := get(subj(a.ID, k1.str("id"), "DescriptionChanged")) // version 3
	firstRename, err := str.GetMsg(ctx, renamed1.Sequence-1)        // version 2? find it by subject below
	_ = firstRename
	var rename2 *jetstream.RawStreamMsg
	for seq := created1.Sequence + 1; seq < renamed1.Sequence; seq++ {
		if m, err := str.GetMsg(ctx, seq); err == nil && m.Subject == renamed1.Subject {
			rename2 = m
			break
		}
	}
	if rename2 == nil {
		t.Fatal("no first rename on the stream")
	}
	publish := func(subject string, data []byte, hdr nats.Header) {
		t.Helper()
		m := nats.NewMsg(subject)
		m.Data = data
		for key, v := range hdr {
			m.Header[key] = v
		}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	forgedRename := bytes.Replace(renamed1.Data, []byte(`"version":3`), []byte(`"version":4`), 1)
	forgedRename = bytes.Replace(forgedRename, []byte(`"new":"one, again"`), []byte(`"new":"forged"`), 1)
	revoke := []byte(`{"id":"` + uuid.NewString() + `","type":"KeyRevoked","schema_version":1,"project_id":"` + a.ID + `","key_id":"` + k2.str("id") +
		`","user_id":"u2","version":2,"time":"2026-01-01T00:00:00Z","actor":{"type":"admin","id":"mallory"},"request_id":"x","data":{"revoked_at":"2026-01-01T00:00:00Z"}}`)
	planted := uuid.NewString()
	plant := []byte(`{"id":"` + uuid.NewString() + `","type":"KeyCreated","schema_version":1,"project_id":"` + a.ID + `","key_id":"` + planted +
		`","user_id":"victim","version":1,"time":"2026-01-01T00:00:00Z","actor":{"type":"admin","id":"mallory"},"request_id":"x","data":{"description":"planted","expires_at":null,"is_public":false,"secret_hash":"00","last_four":"abcd","created_at":"2026-01-01T00:00:00Z"}}`)
	mac := func(m *jetstream.RawStreamMsg) nats.Header {
		return nats.Header{"Keyledger-Mac": {m.Header.Get("Keyledger-Mac")}}
	}
	before := lastSeq(t, ns.URL)
	publish(renamed1.Subject, forgedRename, nil)                                        // forged, no MAC
	publish(renamed1.Subject, forgedRename, mac(renamed1))                              // altered bytes, genuine MAC
	publish(subj(a.ID, k2.str("id"), "KeyRevoked"), revoke, nil)                        // forged revocation
	publish(subj(a.ID, planted, "KeyCreated"), plant, nil)                              // planted key
	publish(rename2.Subject, rename2.Data, mac(rename2))                                // replayed out of order
	publish(subj(a.ID, k2.str("id"), "DescriptionChanged"), rename2.Data, mac(rename2)) // re-addressed to another key
	publish(subj(b.ID, k3.str("id"), "DescriptionChanged"), rename2.Data, mac(rename2)) // re-addressed to another project
	publish(subj(b.ID, k1.str("id"), "KeyCreated"), created1.Data, mac(created1))       // re-addressed creation
	forged := int(lastSeq(t, ns.URL) - before)

	// Give the projector time to see them all, then look at everything a client can.
	deadline := time.Now().Add(10 * time.Second)
	for metric(t, k, "keyledger_projector_poison_total") < 7 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	want := map[string]string{k1.str("id"): "one, again", k2.str("id"): "two"}
	for id, desc := range want {
		r := k.do("GET", "/api/v1/user-api-keys/"+id, a, nil)
		if r.Status != 200 || r.str("description") != desc || r.Body["manually_revoked_at"] != nil {
			t.Errorf("key %s after the forgeries: %d %s, want %q and not revoked", id, r.Status, r.Raw, desc)
		}
		h := k.do("GET", "/api/v1/user-api-keys/"+id+"/events", a, nil)
		if strings.Contains(h.Raw, "forged") || strings.Contains(h.Raw, "mallory") || (id == k1.str("id") && strings.Count(h.Raw, `"schema_version"`) != 3) || (id == k2.str("id") && strings.Count(h.Raw, `"schema_version"`) != 1) {
			t.Errorf("history of %s shows a forgery: %s", id, h.Raw)
		}
	}
	if r := k.do("GET", "/api/v1/user-api-keys/"+k3.str("id"), b, nil); r.Status != 200 || r.str("description") != "three" {
		t.Errorf("project b's key: %d %s", r.Status, r.Raw)
	}
	for _, p := range []struct {
		p    project
		path string
	}{{a, "/api/v1/user-api-keys/" + planted}, {b, "/api/v1/user-api-keys/" + k1.str("id")}} {
		if r := k.do("GET", p.path, p.p, nil); r.Status != 404 {
			t.Errorf("GET %s: %d %s, want 404", p.path, r.Status, r.Raw)
		}
	}
	if l := k.do("GET", "/api/v1/user-api-keys?user_id=victim", a, nil); l.Status != 200 || len(l.Body["items"].([]any)) != 0 {
		t.Errorf("the planted key is listed: %s", l.Raw)
	}
	if c := k.do("POST", "/api/v1/user-api-keys/check", a, map[string]any{"api_key": k2.str("value")}); c.Status != 200 {
		t.Errorf("check of the key a forged event revoked: %d %s", c.Status, c.Raw)
	}
	if got := metric(t, k, "keyledger_projector_poison_total"); got < 7 {
		t.Errorf("poison counted %v, want at least the 7 forgeries that are not events", got)
	}

	out, errOut, code := k.keysctl("verify", "--database-url", db)
	if code != 0 {
		t.Errorf("verify: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if n := strings.Count(errOut, "refused stream sequence"); n != forged {
		t.Errorf("verify lists %d refused messages, want the %d forged ones:\n%s", n, forged, errOut)
	}
	for _, reason := range []string{"not authenticated by keyledger", "out of the key's version order"} {
		if !strings.Contains(errOut, reason) {
			t.Errorf("verify's stderr does not say %q:\n%s", reason, errOut)
		}
	}

	// The genuine rename published again (its exact bytes and MAC, at before+5) is set aside by
	// the projector with its reason and counted, and events tail and replay list it on stderr
	// instead of printing or applying it.
	replayed := before + 5
	deadline = time.Now().Add(10 * time.Second)
	for metric(t, k, "keyledger_projector_refused_total") < 1 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := metric(t, k, "keyledger_projector_refused_total"); got != 1 {
		t.Errorf("keyledger_projector_refused_total = %v, want 1 (the replayed rename)", got)
	}
	if !strings.Contains(k.stderr.String(), "version order") {
		t.Errorf("keysd logged nothing of the replayed rename:\n%s", k.stderr)
	}
	reader, err := eventstore.Open(ctx, nc, eventstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	letters, err := reader.DeadLetters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range letters {
		if d.Seq == replayed && d.Consumer == "projector" && strings.Contains(d.Reason, "version order") && bytes.Equal(d.Raw, rename2.Data) {
			found = true
		}
	}
	if !found {
		t.Errorf("no dead letter of the projector for the replayed rename at %d: %+v", replayed, letters)
	}
	tailOut, tailErr, code := k.keysctl("events", "tail")
	if code != 0 || !strings.Contains(tailErr, fmt.Sprintf("stream sequence %d", replayed)) || !strings.Contains(tailErr, "version order") {
		t.Errorf("events tail: exit %d, stderr %q", code, tailErr)
	}
	if n := strings.Count(tailOut, `"id":"`+rename2.Header.Get("Nats-Msg-Id")+`"`); n != 1 {
		t.Errorf("events tail printed the replayed rename's event %d times, want once:\n%s", n, tailOut)
	}
	_, replayErr, code := k.keysctl("replay", "--database-url", db)
	if code != 0 || !strings.Contains(replayErr, fmt.Sprintf("%d", replayed)) || !strings.Contains(replayErr, "version order") {
		t.Errorf("replay: exit %d, stderr %q", code, replayErr)
	}
}
