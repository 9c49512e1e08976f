package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
	"github.com/keyledger/keyledger/projections"
)

// lastJSONLine decodes the last line of stdout as a JSON object.
func lastJSONLine(t *testing.T, o outcome) map[string]any {
	t.Helper()
	if o.code != exitOK {
		t.Fatalf("exit %d, stderr %q", o.code, o.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(o.stdout, "\n"), "\n")
	var v map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &v); err != nil {
		t.Fatalf("last line of stdout %q is not JSON: %v", lines[len(lines)-1], err)
	}
	return v
}

// projectOnAStream is a NATS server of the test's own with a project created through the
// commands, and a caller of that project.
func projectOnAStream(t *testing.T) (*testenv.NATSServer, *eventstore.Store, *commands.Handler, commands.CreatedProject, commands.Caller, string) {
	t.Helper()
	ns := testenv.NATS(t)
	secretPath, hasher := deployment(t)
	store, err := eventstore.Open(context.Background(), ns.Connect(t), eventstore.Config{EventKey: hasher.EventKey()})
	if err != nil {
		t.Fatal(err)
	}
	h, err := commands.New(store, nil, hasher, commands.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.CreateProject(context.Background(), domain.Actor{Type: domain.ActorOperator, ID: "test"}, "acme")
	if err != nil {
		t.Fatal(err)
	}
	return ns, store, h, p, commands.Caller{ProjectID: p.Project.ID, Actor: domain.Actor{Type: domain.ActorServerKey, ID: "sk"}, RequestID: "r"}, secretPath
}

func TestReplayVerifyAndKeyState(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns, _, h, p, caller, secretPath := projectOnAStream(t)
	dbURL := testenv.Postgres(t)
	created, err := h.CreateKey(ctx, caller, commands.NewKey{UserID: "u1", Description: "first"})
	if err != nil {
		t.Fatal(err)
	}
	key := created.Key.ID
	time.Sleep(5 * time.Millisecond) // stored times apart from the next events
	then := time.Now().UTC()
	time.Sleep(5 * time.Millisecond)
	renamed := "second"
	if _, err := h.UpdateKey(ctx, caller, key, domain.UpdateKey{Description: &renamed, Revoked: new(true)}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{envNATSURL: ns.URL, envDatabaseURL: dbURL, envSecretFile: secretPath}

	// keys state: now, and as it was then, rendered like the API's key object.
	now := lastJSONLine(t, keysctl(t, env, "keys", "state", "--project", p.Project.ID, "--key", key))
	if now["description"] != "second" || now["manually_revoked_at"] == nil || now["type"] != "user" || now["value"].(map[string]any)["last_four"] == "" {
		t.Errorf("keys state now = %v", now)
	}
	past := lastJSONLine(t, keysctl(t, env, "keys", "state", "--project", p.Project.ID, "--key", key, "--at", then.Format(time.RFC3339Nano)))
	if past["description"] != "first" || past["manually_revoked_at"] != nil || past["id"] != key || past["created_at"] != created.Key.CreatedAt.Format("2006-01-02T15:04:05.000Z") {
		t.Errorf("keys state --at %s = %v; want the key before the rename and revocation", then.Format(time.RFC3339Nano), past)
	}
	keysctl(t, env, "keys", "state", "--project", p.Project.ID, "--key", key, "--at", "2000-01-01T00:00:00Z").wantOneErrorLine(t, exitFailure, "did not exist yet")
	keysctl(t, env, "keys", "state", "--project", p.Project.ID, "--key", "00000000-0000-4000-8000-000000000000").wantOneErrorLine(t, exitFailure, "not found")

	// replay builds the live read model (none yet); verify agrees with it. The stream holds
	// the authentication marker (sequence 1) and the four events.
	sum := lastJSONLine(t, keysctl(t, env, "replay"))
	if sum["events"] != 5.0 || sum["keys"] != 1.0 || sum["schema"] != "keyledger" || sum["until_seq"] != 5.0 || sum["seconds"] == nil {
		t.Errorf("replay summary %v", sum)
	}
	if o := keysctl(t, env, "verify"); o.code != exitOK || o.stdout != "" {
		t.Errorf("verify of a fresh replay: exit %d, stdout %q, stderr %q", o.code, o.stdout, o.stderr)
	}

	// A stream whose keys do not fit the fold's memory limit stops replay and verify with one
	// line naming the limit, where it came from and how to raise it; the live read model stays.
	o := keysctl(t, env, "replay", "--memory", "1MiB")
	lines := strings.Split(strings.TrimSuffix(o.stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	if o.code != exitFailure || o.stdout != "" || !strings.HasPrefix(last, "keysctl: replay: the stream's keys do not fit the memory limit of 1 MiB: 1 keys so far, 0 at most") ||
		!strings.Contains(last, "; the limit is --memory;") || !strings.Contains(last, "raise the limit with --memory SIZE or GOMEMLIMIT") {
		t.Errorf("replay --memory 1MiB: exit %d, stdout %q, stderr %q", o.code, o.stdout, o.stderr)
	}
	for _, l := range lines[:len(lines)-1] {
		if !strings.HasPrefix(l, "keysctl replay: read: ") {
			t.Errorf("replay --memory 1MiB: stderr line %q is neither progress nor the error", l)
		}
	}
	limited := map[string]string{"GOMEMLIMIT": "100MiB"}
	for k, v := range env {
		limited[k] = v
	}
	keysctl(t, limited, "verify").wantOneErrorLine(t, exitFailure, "verify: the stream's keys do not fit the memory limit of 100 MiB: 1 keys so far, 0 at most")
	keysctl(t, limited, "verify").wantOneErrorLine(t, exitFailure, "; the limit is GOMEMLIMIT;")
	keysctl(t, env, "verify", "--memory", "lots").wantOneErrorLine(t, exitUsage, "--memory \"lots\"")
	if o := keysctl(t, env, "verify", "--memory", "1GiB"); o.code != exitOK {
		t.Errorf("verify --memory 1GiB: exit %d, stderr %q", o.code, o.stderr)
	}
	if k, err := projections.OpenPostgres(ctx, dbURL, projections.PostgresConfig{}); err != nil {
		t.Fatal(err)
	} else if v, err := k.Key(ctx, p.Project.ID, key); err != nil || v.Description != "second" {
		t.Errorf("live read model after the refused replay: %+v, %v", v, err)
	} else {
		k.Close()
	}

	// --until: the read model as it was then, in its own schema.
	sum = lastJSONLine(t, keysctl(t, env, "replay", "--until", then.Format(time.RFC3339Nano), "--schema", "asof_test"))
	if sum["until_seq"] != 3.0 || sum["schema"] != "asof_test" {
		t.Errorf("replay --until summary %v", sum)
	}
	asOf, err := projections.OpenPostgres(ctx, dbURL, projections.PostgresConfig{Schema: "asof_test"})
	if err != nil {
		t.Fatal(err)
	}
	defer asOf.Close()
	if v, err := asOf.Key(ctx, p.Project.ID, key); err != nil || v.Description != "first" || v.RevokedAt != nil {
		t.Errorf("as-of read model: %+v, %v; want the key before the rename", v, err)
	}

	// verify finds a row changed behind the projector's back.
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "UPDATE keyledger.api_keys SET description = 'tampered'"); err != nil {
		t.Fatal(err)
	}
	o = keysctl(t, env, "verify")
	if o.code != exitFailure || !strings.HasPrefix(o.stdout, key+" ") || !strings.Contains(o.stdout, "tampered") || strings.Count(o.stdout, "\n") != 1 {
		t.Errorf("verify after tampering: exit %d, stdout %q, stderr %q; want exit 1 and the key's id", o.code, o.stdout, o.stderr)
	}
	keysctl(t, env, "replay", "--until-seq", "1", "--schema", "keyledger").wantOneErrorLine(t, exitUsage, "live read model")

	// verify compares up to the stream's end: a read model behind it (no projector runs here)
	// is reported with its lag once --wait has passed, not compared up to its checkpoint.
	third := "third"
	if _, err := h.UpdateKey(ctx, caller, key, domain.UpdateKey{Description: &third}); err != nil {
		t.Fatal(err)
	}
	o = keysctl(t, env, "verify", "--wait", "300ms")
	if o.code != exitFailure || !strings.Contains(o.stdout, "1 events behind the stream's last sequence ") || !strings.Contains(o.stderr, "did not reach the stream's last sequence ") {
		t.Errorf("verify of a read model behind the stream: exit %d, stdout %q, stderr %q; want exit 1 and the lag", o.code, o.stdout, o.stderr)
	}
}

// The fold's memory limit comes from --memory, GOMEMLIMIT, 90% of the container's limit or
// the memory available, in that order, and the runtime is tuned for it unless GOGC or
// GOMEMLIMIT say otherwise.
func TestFoldMemoryLimit(t *testing.T) {
	t.Parallel()
	type tuned struct {
		percent int
		limit   int64
	}
	for _, c := range []struct {
		flag      string
		env       map[string]string
		container int64
		available int64
		want      foldMemory
		tuned     *tuned
	}{
		{flag: "4GiB", container: 8 << 30, available: 16 << 30, want: foldMemory{4 << 30, "--memory"}, tuned: &tuned{400, 4 << 30}},
		{flag: "12345", want: foldMemory{12345, "--memory"}, tuned: &tuned{400, 12345}},
		{env: map[string]string{"GOMEMLIMIT": "2GiB"}, container: 8 << 30, want: foldMemory{2 << 30, "GOMEMLIMIT"}},
		{env: map[string]string{"GOMEMLIMIT": "off"}, container: 8 << 30, want: foldMemory{}},
		{container: 10 << 30, available: 16 << 30, want: foldMemory{9 << 30, "90% of the container's memory limit"}, tuned: &tuned{400, 9 << 30}},
		{available: 16 << 30, want: foldMemory{16 << 30, "the memory available on this machine"}, tuned: &tuned{400, 16 << 30}},
		{available: 16 << 30, env: map[string]string{"GOGC": "100"}, want: foldMemory{16 << 30, "the memory available on this machine"}},
		{want: foldMemory{}, tuned: &tuned{400, 0}},
	} {
		var got *tuned
		src := memorySources{
			getenv:    func(k string) string { return c.env[k] },
			container: func() (int64, bool) { return c.container, c.container > 0 },
			available: func() (int64, bool) { return c.available, c.available > 0 },
			tune:      func(p int, l int64) { got = &tuned{p, l} },
		}
		m, err := resolveFoldMemory("replay", c.flag, src)
		if err != nil || m != c.want {
			t.Errorf("%+v: %+v, %v; want %+v", c, m, err, c.want)
		}
		if (got == nil) != (c.tuned == nil) || (got != nil && *got != *c.tuned) {
			t.Errorf("%+v: tuned %+v, want %+v", c, got, c.tuned)
		}
	}
	for _, bad := range []string{"lots", "0", "-1GiB", "1.5GiB", "4GB", "9999999TiB"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}

// keys state reads a long history through the bulk reader, batch by batch, and stops at the
// last event stored by --at: a key renamed 1,500 times (three batches of the reader), shown
// as of a time after the 1,000th rename, with other keys' events in between.
func TestKeyStateOfALongHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns, store, h, p, caller, secretPath := projectOnAStream(t)
	created, err := h.CreateKey(ctx, caller, commands.NewKey{UserID: "u1", Description: "rename 0"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := h.CreateKey(ctx, caller, commands.NewKey{UserID: "u2", Description: "other"})
	if err != nil {
		t.Fatal(err)
	}
	k := domain.RestoreKey(created.Key)
	o := domain.RestoreKey(other.Key)
	meta := domain.Meta{Time: time.Now(), Actor: caller.Actor, RequestID: "r", NewID: uuid.NewString}
	var then time.Time
	for round := 1; round <= 1500; round += 100 {
		var evs []domain.Event
		for i := round; i < round+100; i++ {
			next, err := k.DecideUpdate(domain.UpdateKey{Description: new(fmt.Sprint("rename ", i))}, meta)
			if err != nil {
				t.Fatal(err)
			}
			if k, err = domain.EvolveKey(k, next[0]); err != nil {
				t.Fatal(err)
			}
			evs = append(evs, next...)
			if i%3 == 0 {
				next, _ := o.DecideUpdate(domain.UpdateKey{Description: new(fmt.Sprint("other ", i))}, meta)
				o, _ = domain.EvolveKey(o, next[0])
				evs = append(evs, next...)
			}
		}
		if err := store.Import(ctx, evs); err != nil {
			t.Fatal(err)
		}
		if round+99 == 1000 {
			time.Sleep(5 * time.Millisecond)
			then = time.Now().UTC()
			time.Sleep(5 * time.Millisecond)
		}
	}
	env := map[string]string{envNATSURL: ns.URL, envSecretFile: secretPath}
	past := lastJSONLine(t, keysctl(t, env, "keys", "state", "--project", p.Project.ID, "--key", created.Key.ID, "--at", then.Format(time.RFC3339Nano)))
	if past["description"] != "rename 1000" {
		t.Errorf("keys state --at after the 1,000th rename: %v", past)
	}
	now := lastJSONLine(t, keysctl(t, env, "keys", "state", "--project", p.Project.ID, "--key", created.Key.ID))
	if now["description"] != "rename 1500" {
		t.Errorf("keys state now: %v", now)
	}
}
