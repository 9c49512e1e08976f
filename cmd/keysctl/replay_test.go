package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

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

func TestReplayVerifyAndKeyState(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := testenv.NATS(t)
	dbURL := testenv.Postgres(t)
	secretPath, hasher := deployment(t)
	store, err := eventstore.Open(ctx, ns.Connect(t), eventstore.Config{EventKey: hasher.EventKey()})
	if err != nil {
		t.Fatal(err)
	}
	h, err := commands.New(store, nil, hasher, commands.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.CreateProject(ctx, domain.Actor{Type: domain.ActorOperator, ID: "test"}, "acme")
	if err != nil {
		t.Fatal(err)
	}
	caller := commands.Caller{ProjectID: p.Project.ID, Actor: domain.Actor{Type: domain.ActorServerKey, ID: "sk"}, RequestID: "r"}
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
	o := keysctl(t, env, "verify")
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
