package domain

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestTeamKeyEvents: every key event type of a team key (team_id in place of user_id) goes
// through both encoders and both decoders alike, and folds into a key of type "team".
func TestTeamKeyEvents(t *testing.T) {
	t.Parallel()
	var created *Key
	for _, d := range EventDefinitions() {
		if !d.ForKey {
			continue
		}
		e := exampleEvent(d)
		e.UserID, e.TeamID = "", "team-1"
		b, err := marshalGeneral(e)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"team_id":"team-1"`) || strings.Contains(string(b), `"user_id"`) {
			t.Fatalf("%s of a team key written as %s", d.Type, b)
		}
		if fastB, ok := appendFast(nil, e); ok && string(fastB) != string(b) {
			t.Fatalf("the fast encoder writes %s as\n%s\nencoding/json as\n%s", d.Type, fastB, b)
		}
		fast, ok := decodeFast(b, false)
		if !ok {
			t.Fatalf("the fast decoder does not take a team key's %s", d.Type)
		}
		general, err := unmarshalAnyVersion(b)
		if err != nil {
			t.Fatalf("the general decoder refuses a team key's %s: %v", d.Type, err)
		}
		if !reflect.DeepEqual(fast, e) || !reflect.DeepEqual(general, e) {
			t.Fatalf("decoders disagree:\nwritten %+v\nfast    %+v\ngeneral %+v", e, fast, general)
		}
		if d.Creates {
			if created, err = EvolveKey(nil, e); err != nil {
				t.Fatal(err)
			}
			if s := created.Snapshot(); s.Type() != KeyTypeTeam || s.TeamID != "team-1" || s.UserID != "" || s.Owner() != "team-1" {
				t.Fatalf("team key folded as %+v", s)
			}
		}
	}
	for _, both := range []struct{ user, team string }{{"u", "t"}, {"", ""}} {
		e := exampleEvent(eventsByType[TypeKeyCreated])
		e.UserID, e.TeamID = both.user, both.team
		b, _ := marshalGeneral(e)
		if _, err := UnmarshalEvent(b); !errors.Is(err, ErrInvalidEvent) {
			t.Fatalf("a key event with user_id %q and team_id %q decoded: %v", both.user, both.team, err)
		}
	}
}

func TestDecideTeamKey(t *testing.T) {
	t.Parallel()
	m := Meta{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Actor: Actor{Type: ActorServerKey, ID: "s"}, NewID: func() string { return "e1" }}
	if _, err := DecideCreateKey(CreateKey{ProjectID: "p", KeyID: "k", UserID: "u", TeamID: "t"}, m); err == nil {
		t.Fatal("a key of a user and a team was created")
	}
	if _, err := DecideCreateKey(CreateKey{ProjectID: "p", KeyID: "k", TeamID: strings.Repeat("t", 129)}, m); err == nil {
		t.Fatal("a 129-character team id was accepted")
	}
	e, err := DecideCreateKey(CreateKey{ProjectID: "p", KeyID: "k", TeamID: "team-1", Description: "d"}, m)
	if err != nil {
		t.Fatal(err)
	}
	if e.TeamID != "team-1" || e.UserID != "" {
		t.Fatalf("KeyCreated of a team key: %+v", e)
	}
	k, err := EvolveKey(nil, e)
	if err != nil {
		t.Fatal(err)
	}
	// The wrong path does not find it; the right one does; a rotation keeps the team.
	yes := true
	if _, err := k.DecideUpdate(UpdateKey{Revoked: &yes, Type: KeyTypeUser}, m); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("a team key updated through the user path: %v", err)
	}
	if _, err := k.DecideRotate(RotateKey{NewKeyID: "k2", Type: KeyTypeUser}, m); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("a team key rotated through the user path: %v", err)
	}
	events, err := k.DecideRotate(RotateKey{NewKeyID: "k2", Type: KeyTypeTeam}, m)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if e.TeamID != "team-1" || e.UserID != "" {
			t.Fatalf("rotation event of a team key: %+v", e)
		}
	}
	events, err = k.DecideUpdate(UpdateKey{Revoked: &yes, Type: KeyTypeTeam}, m)
	if err != nil || len(events) != 1 || events[0].TeamID != "team-1" {
		t.Fatalf("revoke of a team key: %+v, %v", events, err)
	}
	var wrong *WrongKeyTypeError
	if err := k.CheckAs(KeyTypeUser, m.Time); !errors.As(err, &wrong) || wrong.Expected != KeyTypeUser || wrong.Actual != KeyTypeTeam {
		t.Fatalf("CheckAs(user) of a team key: %v", err)
	}
	if err := k.CheckAs(KeyTypeTeam, m.Time); err != nil {
		t.Fatalf("CheckAs(team) of a valid team key: %v", err)
	}
}

func TestTeamSecretKey(t *testing.T) {
	t.Parallel()
	id := "0b9f3c6e-8d1a-4c2b-9f00-123456789abc"
	s, err := FormatSecretKey(id, KeyTypeTeam, false, make([]byte, SecretKeyBytes))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s, "team1574ck4u7h") {
		t.Fatalf("team secret %q has no team type part", s)
	}
	if got, err := ParseSecretKey(s); err != nil || got != id {
		t.Fatalf("ParseSecretKey(team) = %q, %v", got, err)
	}
	if _, err := FormatSecretKey(id, "robot", false, make([]byte, SecretKeyBytes)); err == nil {
		t.Fatal("a secret of an unknown type was formatted")
	}
}
