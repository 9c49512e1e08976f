// Package readmodeltest is the read-model conformance suite, exported in the shape of
// watermill's tests.TestPubSub so that every implementation of projections.ReadModel, in
// this repository or outside it, runs the same tests: TestReadModel(t, factory). History
// builds streams of events for such tests.
package readmodeltest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/projections"
)

// TestReadModel runs the read-model conformance suite against the read models newRM makes,
// a fresh one for each test (they run in parallel). Every behaviour of projections.ReadModel
// is tested here once and run against each implementation; in -short mode the heavy cases
// (large batches, reads during applies) are skipped.
func TestReadModel(t *testing.T, newRM func(t *testing.T) projections.ReadModel) {
	tests := []struct {
		name string
		run  func(t *testing.T, rm projections.ReadModel)
	}{
		{"EmptyReadModel", testEmptyReadModel},
		{"CreateProjectAndKey", testCreateProjectAndKey},
		{"KeysByUserNewestFirst", testKeysByUserNewestFirst},
		{"DescriptionChanged", testDescriptionChanged},
		{"RevokeKeepsFirstTimestamp", testRevokeKeepsFirstTimestamp},
		{"ReapplyingIsIdempotent", testReapplyingIsIdempotent},
		{"GapIsRefused", testGapIsRefused},
		{"PoisonAdvancesCheckpoint", testPoisonAdvancesCheckpoint},
		{"EventsTheAggregateRejectsAreIgnored", testEventsTheAggregateRejectsAreIgnored},
		{"NotFound", testNotFound},
		{"EachKey", testEachKey},
		{"TimesRoundTripInUTCMilliseconds", testTimesRoundTrip},
		{"LargeBatchMatchesFold", testLargeBatchMatchesFold},
		{"ReadsDuringApply", testReadsDuringApply},
		{"EveryEventTypeIsStored", testEveryEventTypeIsStored},
		{"TeamKeys", testTeamKeys},
		{"EveryEventTypeOfATeamKeyIsStored", testEveryEventTypeOfATeamKeyIsStored},
	}
	heavy := map[string]bool{"LargeBatchMatchesFold": true, "ReadsDuringApply": true}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if testing.Short() && heavy[tt.name] {
				t.Skip("heavy: skipped in -short mode")
			}
			t.Parallel()
			tt.run(t, newRM(t))
		})
	}
}

// testEveryEventTypeIsStored applies every event type's example (domain.EventDefinitions)
// and checks that the read model shows what the domain's fold says: a type a read model
// does not store, or stores only in part, fails here.
func testEveryEventTypeIsStored(t *testing.T, rm projections.ReadModel) {
	ctx := context.Background()
	h := NewHistory(t)
	defs := domain.EventDefinitions()
	var creation domain.EventDefinition
	for _, d := range defs {
		if d.ForKey && d.Creates {
			creation = d
		}
	}
	wantProjects := map[string]domain.ProjectSnapshot{}
	p := h.CreateProject("every event type")
	var keys []string
	for _, d := range defs {
		switch {
		case !d.ForKey:
			e := domain.Event{ID: newUUID(), Type: d.Type, SchemaVersion: domain.CurrentSchemaVersion,
				ProjectID: newUUID(), Version: 1, Time: h.now, Actor: domain.Actor{Type: domain.ActorOperator, ID: "test"},
				RequestID: "every-type", Data: d.Example}
			snap, err := domain.ProjectFromEvent(h.appendRaw(e).Event)
			if err != nil {
				t.Fatalf("%s: %v", d.Type, err)
			}
			snap.CreatedAt = snap.CreatedAt.Truncate(time.Millisecond)
			wantProjects[e.ProjectID] = snap
		case d.Creates:
			key := newUUID()
			h.evolve(h.appendRawKeyEvent(p, key, 1, d.Example))
			h.names[key] = string(d.Type)
			keys = append(keys, key)
		default:
			key := newUUID()
			h.evolve(h.appendRawKeyEvent(p, key, 1, creation.Example))
			h.appendKeyEvent(p, key, d.Example)
			h.names[key] = string(d.Type)
			keys = append(keys, key)
		}
	}
	h.ApplyAll(rm)
	for _, key := range keys {
		h.AssertKey(rm, p, key)
	}
	for id, want := range wantProjects {
		got, err := rm.Project(ctx, id)
		if err != nil {
			t.Fatalf("Project(%s): %v", id, err)
		}
		if describeProject(got) != describeProject(want) {
			t.Fatalf("project\n got %s\nwant %s", describeProject(got), describeProject(want))
		}
	}
}

// testTeamKeys: a team's keys are listed by KeysByTeam, newest first, apart from the keys of
// a user with the same id, and keep their team through every change.
func testTeamKeys(t *testing.T, rm projections.ReadModel) {
	h := NewHistory(t)
	p, other := h.CreateProject("acme"), h.CreateProject("other")
	oldest := h.CreateKey(p, "acme", "team oldest", ForTeam())
	h.Tick(time.Second)
	userKey := h.CreateKey(p, "acme", "a user called acme")
	h.Tick(time.Second)
	revoked := h.CreateKey(p, "acme", "team revoked", ForTeam(), Public())
	h.Revoke(p, revoked)
	h.Tick(time.Second)
	renamed := h.CreateKey(p, "acme", "team renamed", ForTeam(), WithExpiry(h.now.Add(time.Hour)))
	h.Rename(p, renamed, "team renamed, again")
	h.CreateKey(p, "beta", "another team", ForTeam())
	h.CreateKey(other, "acme", "same team id, another project", ForTeam())
	h.ApplyAll(rm)

	ctx := context.Background()
	got, err := rm.KeysByTeam(ctx, p, "acme")
	if err != nil {
		t.Fatalf("KeysByTeam: %v", err)
	}
	if ids, want := keyIDs(got), []string{renamed, revoked, oldest}; !slices.Equal(ids, want) {
		t.Fatalf("KeysByTeam order = %v\nwant %v", h.describeIDs(ids), h.describeIDs(want))
	}
	for _, v := range got {
		h.assertView(v, p, v.ID)
		if v.Type() != domain.KeyTypeTeam || v.TeamID != "acme" || v.UserID != "" {
			t.Fatalf("team key read as %s", describeKey(v))
		}
	}
	users, err := rm.KeysByUser(ctx, p, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if ids := keyIDs(users); !slices.Equal(ids, []string{userKey}) {
		t.Fatalf("KeysByUser(acme) = %v, want only the user's key", h.describeIDs(ids))
	}
	if v := h.AssertKey(rm, p, userKey); v.Type() != domain.KeyTypeUser {
		t.Fatalf("user key read as %s", describeKey(v))
	}
	h.AssertKey(rm, p, revoked)
	h.assertKeysByTeam(rm, p, "acme")
	h.assertKeysByTeam(rm, p, "beta")
	h.assertKeysByTeam(rm, other, "acme")
	if keys, err := rm.KeysByTeam(ctx, p, "nobody"); err != nil || len(keys) != 0 {
		t.Fatalf("KeysByTeam(nobody) = %v, %v; want none", keys, err)
	}
}

// testEveryEventTypeOfATeamKeyIsStored is testEveryEventTypeIsStored for a team's key.
func testEveryEventTypeOfATeamKeyIsStored(t *testing.T, rm projections.ReadModel) {
	h := NewHistory(t)
	p := h.CreateProject("every event type of a team key")
	var creation domain.EventDefinition
	for _, d := range domain.EventDefinitions() {
		if d.ForKey && d.Creates {
			creation = d
		}
	}
	var keys []string
	for _, d := range domain.EventDefinitions() {
		if !d.ForKey {
			continue
		}
		key := newUUID()
		h.teams[key] = "team-" + string(d.Type)
		if d.Creates {
			h.evolve(h.appendRawKeyEvent(p, key, 1, d.Example))
		} else {
			h.evolve(h.appendRawKeyEvent(p, key, 1, creation.Example))
			h.appendKeyEvent(p, key, d.Example)
		}
		h.names[key] = string(d.Type)
		keys = append(keys, key)
	}
	h.ApplyAll(rm)
	for _, key := range keys {
		if v := h.AssertKey(rm, p, key); v.TeamID != h.teams[key] {
			t.Fatalf("key %q read with team %q", h.names[key], v.TeamID)
		}
		h.assertKeysByTeam(rm, p, h.teams[key])
	}
}

func testEmptyReadModel(t *testing.T, rm projections.ReadModel) {
	ctx := context.Background()
	if cp, err := rm.Checkpoint(ctx); err != nil || cp != 0 {
		t.Fatalf("Checkpoint = %d, %v; want 0", cp, err)
	}
	if cp, err := rm.Apply(ctx, nil); err != nil || cp != 0 {
		t.Fatalf("Apply(nothing) = %d, %v; want 0", cp, err)
	}
	if keys, err := rm.KeysByUser(ctx, newUUID(), "u"); err != nil || len(keys) != 0 {
		t.Fatalf("KeysByUser = %v, %v; want none", keys, err)
	}
	if keys, err := rm.KeysByTeam(ctx, newUUID(), "t"); err != nil || len(keys) != 0 {
		t.Fatalf("KeysByTeam = %v, %v; want none", keys, err)
	}
}

func testCreateProjectAndKey(t *testing.T, rm projections.ReadModel) {
	h := NewHistory(t)
	p := h.CreateProject("acme")
	expires := h.now.Add(30 * 24 * time.Hour)
	k := h.CreateKey(p, "user-1", "ci deploys", WithExpiry(expires), Public())
	h.ApplyAll(rm)

	h.AssertKey(rm, p, k)
	got, err := rm.Project(context.Background(), p)
	if err != nil {
		t.Fatalf("Project: %v", err)
	}
	if want := h.projects[p]; describeProject(got) != describeProject(want) {
		t.Errorf("Project = %s\nwant      %s", describeProject(got), describeProject(want))
	}
	h.AssertCheckpoint(rm, h.seq)
}

func testKeysByUserNewestFirst(t *testing.T, rm projections.ReadModel) {
	h := NewHistory(t)
	p, other := h.CreateProject("acme"), h.CreateProject("other")
	oldest := h.CreateKey(p, "u", "oldest")
	h.Tick(time.Second)
	middle := h.CreateKey(p, "u", "middle")
	h.Revoke(p, middle)
	sameMilli := h.CreateKey(p, "u", "same millisecond, created later") // same created_at: the later event is newer
	h.Tick(time.Hour)
	newest := h.CreateKey(p, "u", "newest", WithExpiry(h.now.Add(-time.Minute))) // expired already
	h.Tick(-30 * time.Minute)                                                    // another instance's clock
	lateButOlder := h.CreateKey(p, "u", "appended last, created earlier")
	h.CreateKey(p, "someone else", "not theirs")
	h.CreateKey(other, "u", "same user id, another project")
	h.ApplyAll(rm)

	got, err := rm.KeysByUser(context.Background(), p, "u")
	if err != nil {
		t.Fatalf("KeysByUser: %v", err)
	}
	want := []string{newest, lateButOlder, sameMilli, middle, oldest}
	if ids := keyIDs(got); !slices.Equal(ids, want) {
		t.Fatalf("KeysByUser order = %v\nwant %v", h.describeIDs(ids), h.describeIDs(want))
	}
	for _, v := range got {
		h.assertView(v, p, v.ID)
	}
	if got[3].RevokedAt == nil {
		t.Errorf("revoked key listed without its revocation")
	}
}

func testDescriptionChanged(t *testing.T, rm projections.ReadModel) {
	h := NewHistory(t)
	p := h.CreateProject("acme")
	k := h.CreateKey(p, "u", "before")
	h.ApplyAll(rm)
	h.Rename(p, k, "after")
	h.ApplyAll(rm)
	v := h.AssertKey(rm, p, k)
	if v.Description != "after" || v.Version != 2 || v.LastSeq != h.seq {
		t.Errorf("after rename: description %q version %d last seq %d; want %q 2 %d", v.Description, v.Version, v.LastSeq, "after", h.seq)
	}
	h.Rename(p, k, "")
	h.ApplyAll(rm)
	h.AssertKey(rm, p, k)
}

func testRevokeKeepsFirstTimestamp(t *testing.T, rm projections.ReadModel) {
	h := NewHistory(t)
	p := h.CreateProject("acme")
	k := h.CreateKey(p, "u", "to revoke")
	h.Tick(time.Minute)
	first := h.Revoke(p, k)
	h.ApplyAll(rm)
	v := h.AssertKey(rm, p, k)
	if v.RevokedAt == nil || !v.RevokedAt.Equal(first) {
		t.Fatalf("RevokedAt = %v, want %v", v.RevokedAt, first)
	}
	// The domain emits no second KeyRevoked, but the stream may hold one (an older writer,
	// a hand-made event): the first revocation still wins, and the version moves on.
	h.Tick(time.Hour)
	h.appendKeyEvent(p, k, domain.KeyRevoked{RevokedAt: h.now})
	h.Rename(p, k, "renamed after revocation")
	h.ApplyAll(rm)
	v = h.AssertKey(rm, p, k)
	if !v.RevokedAt.Equal(first) || v.Version != 4 {
		t.Fatalf("after a second revocation: RevokedAt %v version %d; want %v 4", v.RevokedAt, v.Version, first)
	}
}

func testReapplyingIsIdempotent(t *testing.T, rm projections.ReadModel) {
	ctx := context.Background()
	h := NewHistory(t)
	p := h.CreateProject("acme")
	k := h.CreateKey(p, "u", "one")
	h.Rename(p, k, "two")
	batch := slices.Clone(h.events)
	h.ApplyAll(rm)
	for range 2 {
		cp, err := rm.Apply(ctx, batch)
		if err != nil || cp != h.seq {
			t.Fatalf("re-Apply = %d, %v; want %d, nil", cp, err, h.seq)
		}
	}
	h.AssertKey(rm, p, k)

	// A batch that overlaps the checkpoint applies only its new part.
	h.Rename(p, k, "three")
	overlap := append(slices.Clone(batch[1:]), h.Pending()...)
	if cp, err := rm.Apply(ctx, overlap); err != nil || cp != h.seq {
		t.Fatalf("Apply(overlapping) = %d, %v; want %d, nil", cp, err, h.seq)
	}
	h.applied = len(h.events)
	v := h.AssertKey(rm, p, k)
	if v.Version != 3 {
		t.Errorf("version %d after overlapping batch, want 3", v.Version)
	}
	h.assertKeysByUser(rm, p, "u")
}

func testGapIsRefused(t *testing.T, rm projections.ReadModel) {
	ctx := context.Background()
	h := NewHistory(t)
	p := h.CreateProject("acme")
	k := h.CreateKey(p, "u", "one")
	early := h.Pending()
	h.applied = len(h.events)

	// Nothing applied yet: a batch starting at 2 leaves out 1.
	_, err := rm.Apply(ctx, early[1:])
	var gap *projections.GapError
	if !errors.As(err, &gap) || gap.Checkpoint != 0 || gap.Offered != 2 {
		t.Fatalf("Apply(from 2) on an empty read model = %v; want projections.GapError{0, 2}", err)
	}
	if _, err := rm.Key(ctx, p, k); !errors.Is(err, domain.ErrKeyNotFound) {
		t.Fatalf("a refused batch was applied: Key = %v", err)
	}
	if _, err := rm.Apply(ctx, early); err != nil {
		t.Fatal(err)
	}

	h.Rename(p, k, "two")
	h.Rename(p, k, "three")
	later := h.Pending()
	h.applied = len(h.events)
	cp, err := rm.Apply(ctx, later[1:])
	if !errors.As(err, &gap) || *gap != (projections.GapError{Checkpoint: 2, Offered: 4}) {
		t.Fatalf("Apply(from 4) at checkpoint 2 = %d, %v; want projections.GapError{2, 4}", cp, err)
	}
	if !strings.Contains(err.Error(), "read again from 3") {
		t.Errorf("projections.GapError says %q; want it to say where to read from", err)
	}
	h.AssertCheckpoint(rm, 2)
	if v, _ := rm.Key(ctx, p, k); v.Description != "one" {
		t.Fatalf("a refused batch was applied: description %q", v.Description)
	}
	if cp, err := rm.Apply(ctx, later); err != nil || cp != 4 {
		t.Fatalf("Apply(from 3) = %d, %v", cp, err)
	}
	h.AssertKey(rm, p, k)
}

func testPoisonAdvancesCheckpoint(t *testing.T, rm projections.ReadModel) {
	h := NewHistory(t)
	p := h.CreateProject("acme")
	k := h.CreateKey(p, "u", "one")
	h.poison(p)
	h.Rename(p, k, "two")
	h.ApplyAll(rm)
	h.AssertCheckpoint(rm, 4)
	h.AssertKey(rm, p, k)

	h.poison(p) // a batch of poison only
	h.ApplyAll(rm)
	h.AssertCheckpoint(rm, 5)
}

func testEventsTheAggregateRejectsAreIgnored(t *testing.T, rm projections.ReadModel) {
	h := NewHistory(t)
	p := h.CreateProject("acme")
	k := h.CreateKey(p, "u", "one")
	created := h.events[len(h.events)-1].Event

	// A second creation of the same key with other content.
	dup := created
	dup.ID, dup.UserID = newUUID(), "intruder"
	h.appendRaw(dup)
	// A change skipping a version, and one of a key that does not exist.
	h.appendRawKeyEvent(p, k, 5, domain.DescriptionChanged{Old: "one", New: "skipped a version"})
	ghost := newUUID()
	h.appendRawKeyEvent(p, ghost, 2, domain.DescriptionChanged{Old: "", New: "ghost"})
	// Text PostgreSQL cannot store.
	h.appendRawKeyEvent(p, k, 2, domain.DescriptionChanged{Old: "one", New: "nul\x00byte"})
	// A second creation of the project.
	proj := h.events[0].Event
	proj.ID = newUUID()
	proj.Data = domain.ProjectCreated{Name: "hijacked", ServerKeyID: "x", ServerKeyHash: "y", CreatedAt: h.now}
	h.appendRaw(proj)
	// And then a valid change, which applies.
	h.Rename(p, k, "two")
	h.ApplyAll(rm)

	h.AssertCheckpoint(rm, h.seq)
	v := h.AssertKey(rm, p, k)
	if v.UserID != "u" || v.Description != "two" || v.Version != 2 {
		t.Errorf("key = user %q description %q version %d; want u, two, 2", v.UserID, v.Description, v.Version)
	}
	if _, err := rm.Key(context.Background(), p, ghost); !errors.Is(err, domain.ErrKeyNotFound) {
		t.Errorf("a change of a key that does not exist created it: %v", err)
	}
	got, _ := rm.Project(context.Background(), p)
	if got.Name != "acme" {
		t.Errorf("project name %q, want the first creation's", got.Name)
	}
	h.assertKeysByUser(rm, p, "u")
	h.assertKeysByUser(rm, p, "intruder")
}

func testNotFound(t *testing.T, rm projections.ReadModel) {
	ctx := context.Background()
	h := NewHistory(t)
	p, other := h.CreateProject("acme"), h.CreateProject("other")
	k := h.CreateKey(p, "u", "one")
	h.ApplyAll(rm)

	for _, c := range []struct{ project, key string }{
		{p, newUUID()},          // no such key
		{other, k},              // another project's key
		{newUUID(), k},          // no such project
		{p, strings.ToUpper(k)}, // ids are compared exactly
		{p, "not-a-uuid"},
	} {
		if v, err := rm.Key(ctx, c.project, c.key); !errors.Is(err, domain.ErrKeyNotFound) {
			t.Errorf("Key(%s, %s) = %+v, %v; want ErrKeyNotFound", c.project, c.key, v, err)
		}
	}
	if _, err := rm.Project(ctx, newUUID()); !errors.Is(err, domain.ErrProjectNotFound) {
		t.Errorf("Project(unknown) = %v, want ErrProjectNotFound", err)
	}
	if keys, err := rm.KeysByUser(ctx, other, "u"); err != nil || len(keys) != 0 {
		t.Errorf("KeysByUser(other project) = %v, %v; want none", keys, err)
	}
}

func testEachKey(t *testing.T, rm projections.ReadModel) {
	ctx := context.Background()
	h := NewHistory(t)
	p, other := h.CreateProject("acme"), h.CreateProject("other")
	var want []string
	for i := range 1100 { // more than one page or chunk
		project := p
		if i%3 == 0 {
			project = other
		}
		want = append(want, h.CreateKey(project, fmt.Sprintf("user-%d", i%7), "key"))
	}
	h.Revoke(p, want[1])
	h.ApplyAll(rm)

	var got []string
	err := rm.EachKey(ctx, func(v projections.KeyView) error {
		got = append(got, v.ID)
		h.assertView(v, v.ProjectID, v.ID)
		return nil
	})
	if err != nil {
		t.Fatalf("EachKey: %v", err)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("EachKey visited %d keys, want each of %d once", len(got), len(want))
	}

	stop := errors.New("stop")
	calls := 0
	err = rm.EachKey(ctx, func(projections.KeyView) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("EachKey after fn failed: %v after %d calls; want fn's error after 1", err, calls)
	}
}

func testTimesRoundTrip(t *testing.T, rm projections.ReadModel) {
	ctx := context.Background()
	h := NewHistory(t)
	kolkata := time.FixedZone("IST", 5*3600+30*60)
	h.now = time.Date(2024, 2, 29, 23, 59, 59, 987_654_321, kolkata) // sub-millisecond, not UTC
	p := h.CreateProject("acme")
	cases := []struct {
		name    string
		expires time.Time
	}{
		{"sub-millisecond in another zone", time.Date(2030, 1, 1, 0, 0, 0, 123_456_789, kolkata)},
		{"far future", time.Date(9999, 12, 31, 23, 59, 59, 999_000_000, time.UTC)},
		{"before 1970", time.Date(1969, 7, 20, 20, 17, 40, 5_000_000, time.UTC)},
		{"before 2000 with millis", time.Date(1999, 12, 31, 23, 59, 59, 999_000_000, time.UTC)},
	}
	ids := make([]string, len(cases))
	for i, c := range cases {
		ids[i] = h.CreateKey(p, "u", c.name, WithExpiry(c.expires))
	}
	h.Revoke(p, ids[0])
	h.ApplyAll(rm)
	for i, c := range cases {
		v, err := rm.Key(ctx, p, ids[i])
		if err != nil {
			t.Fatal(err)
		}
		want := c.expires.UTC().Truncate(time.Millisecond)
		if v.ExpiresAt == nil || !v.ExpiresAt.Equal(want) || v.ExpiresAt.Location() != time.UTC {
			t.Errorf("%s: ExpiresAt = %v, want %v in UTC", c.name, v.ExpiresAt, want)
		}
		if created := h.now.UTC().Truncate(time.Millisecond); !v.CreatedAt.Equal(created) || v.CreatedAt.Location() != time.UTC {
			t.Errorf("%s: CreatedAt = %v, want %v in UTC", c.name, v.CreatedAt, created)
		}
		h.assertView(v, p, ids[i])
	}
	proj, err := rm.Project(ctx, p)
	if err != nil || proj.CreatedAt.Location() != time.UTC || !proj.CreatedAt.Equal(h.now.Truncate(time.Millisecond)) {
		t.Errorf("Project CreatedAt = %v, %v; want %v in UTC", proj.CreatedAt, err, h.now.UTC().Truncate(time.Millisecond))
	}
}

func testLargeBatchMatchesFold(t *testing.T, rm projections.ReadModel) {
	ctx := context.Background()
	h := NewHistory(t)
	projects := []string{h.CreateProject("a"), h.CreateProject("b")}
	var keys [][2]string
	for i := range 3000 {
		h.Tick(time.Duration(i%3) * time.Millisecond)
		switch {
		case i%4 != 3 || len(keys) == 0:
			p := projects[i%2]
			keys = append(keys, [2]string{p, h.CreateKey(p, fmt.Sprintf("u%d", i%11), fmt.Sprint("key ", i))})
		case i%8 == 3:
			k := keys[(i*7)%len(keys)]
			h.Rename(k[0], k[1], fmt.Sprint("renamed at ", i))
		default:
			k := keys[(i*13)%len(keys)]
			h.Revoke(k[0], k[1])
		}
		if i%997 == 0 {
			h.poison(projects[0])
		}
	}
	// Three uneven batches, each changing some keys several times over.
	events := h.Pending()
	h.applied = len(h.events)
	for _, part := range [][]eventstore.RecordedEvent{events[:1234], events[1234:1235], events[1235:]} {
		if _, err := rm.Apply(ctx, part); err != nil {
			t.Fatalf("Apply: %v", err)
		}
	}
	h.AssertCheckpoint(rm, h.seq)
	n := 0
	if err := rm.EachKey(ctx, func(v projections.KeyView) error { n++; h.assertView(v, v.ProjectID, v.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if n != len(keys) {
		t.Errorf("read model has %d keys, the stream %d", n, len(keys))
	}
	for u := range 11 {
		h.assertKeysByUser(rm, projects[u%2], fmt.Sprintf("u%d", u))
	}
}

func testReadsDuringApply(t *testing.T, rm projections.ReadModel) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := NewHistory(t)
	p := h.CreateProject("acme")
	k := h.CreateKey(p, "u", "v0")
	h.ApplyAll(rm)

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			last := 0
			for ctx.Err() == nil {
				v, err := rm.Key(ctx, p, k)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("Key during Apply: %v", err)
					}
					return
				}
				if v.Version < last {
					t.Errorf("version went back from %d to %d", last, v.Version)
				}
				last = v.Version
				if _, err := rm.KeysByUser(ctx, p, "u"); err != nil && ctx.Err() == nil {
					t.Errorf("KeysByUser during Apply: %v", err)
				}
			}
		})
	}
	for i := range 50 {
		h.Rename(p, k, fmt.Sprint("v", i+1))
		h.ApplyAll(rm)
	}
	cancel()
	wg.Wait()
	h.AssertKey(rm, p, k)
}

// history builds a stream of events with the domain's own decisions, numbers them as the
// event store would, and folds them into the state every read model must show.
// History is a stream of events made for a test, numbered as the stream would number them,
// with the fold the domain makes of each key: what a read model must show.
type History struct {
	t        testing.TB
	seq      uint64
	now      time.Time
	events   []eventstore.RecordedEvent
	applied  int // events handed to the read model so far
	keys     map[string]*domain.Key
	lastSeq  map[string]uint64
	created  map[string]uint64 // key id -> stream sequence of its creation
	projects map[string]domain.ProjectSnapshot
	names    map[string]string // key id -> description at creation, for messages
	teams    map[string]string // key id -> team id, for hand-made events of a team's key
}

// NewHistory starts an empty stream whose helpers fail t.
func NewHistory(t testing.TB) *History {
	return &History{
		t: t, now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC),
		keys: map[string]*domain.Key{}, lastSeq: map[string]uint64{}, created: map[string]uint64{},
		projects: map[string]domain.ProjectSnapshot{}, names: map[string]string{}, teams: map[string]string{},
	}
}

func (h *History) meta() domain.Meta {
	return domain.Meta{
		Time: h.now, Actor: domain.Actor{Type: domain.ActorOperator, ID: "test"},
		RequestID: "req-" + newUUID(), NewID: newUUID,
	}
}

// Tick moves the history's clock on.
func (h *History) Tick(d time.Duration) { h.now = h.now.Add(d) }

// record numbers an event and decodes it back from its stored form, as a reader gets it.
func (h *History) record(e domain.Event) eventstore.RecordedEvent {
	h.t.Helper()
	raw, err := domain.MarshalEvent(e)
	if err != nil {
		h.t.Fatalf("marshal %s: %v", e.Type, err)
	}
	h.seq++
	r := eventstore.RecordedEvent{Seq: h.seq, Raw: raw, Time: h.now}
	if e.KeyID != "" {
		r.Subject = "keyledger.key." + e.ProjectID + "." + e.KeyID + "." + string(e.Type)
	} else {
		r.Subject = "keyledger.project." + e.ProjectID + "." + string(e.Type)
	}
	r.Event, r.Err = domain.UnmarshalEvent(raw)
	if r.Err != nil {
		h.t.Fatalf("unmarshal %s: %v", e.Type, r.Err)
	}
	h.events = append(h.events, r)
	return r
}

// CreateProject records a project's creation and returns its id.
func (h *History) CreateProject(name string) string {
	h.t.Helper()
	id := newUUID()
	e, err := domain.DecideCreateProject(domain.CreateProject{ProjectID: id, Name: name, ServerKeyID: newUUID(), ServerKeyHash: strings.Repeat("ab", 32)}, h.meta())
	if err != nil {
		h.t.Fatal(err)
	}
	r := h.record(e)
	snap, err := domain.ProjectFromEvent(r.Event)
	if err != nil {
		h.t.Fatal(err)
	}
	h.projects[id] = snap
	return id
}

// KeyOption sets something of a key CreateKey creates.
type KeyOption func(*domain.CreateKey)

// WithExpiry makes the key expire at t.
func WithExpiry(t time.Time) KeyOption { return func(c *domain.CreateKey) { c.ExpiresAt = &t } }

// ForTeam makes the key a team's: the owner CreateKey is given is a team id.
func ForTeam() KeyOption { return func(c *domain.CreateKey) { c.TeamID, c.UserID = c.UserID, "" } }

// Public makes the key a public one.
func Public() KeyOption { return func(c *domain.CreateKey) { c.IsPublic = true } }

// CreateKey records a key's creation and returns its id.
func (h *History) CreateKey(project, user, description string, opts ...KeyOption) string {
	h.t.Helper()
	id := newUUID()
	hash := make([]byte, 32)
	_, _ = rand.Read(hash)
	c := domain.CreateKey{ProjectID: project, KeyID: id, UserID: user, Description: description,
		SecretHash: fmt.Sprintf("%x", hash), LastFour: fmt.Sprintf("%04x", hash[0:2])}
	for _, o := range opts {
		o(&c)
	}
	e, err := domain.DecideCreateKey(c, h.meta())
	if err != nil {
		h.t.Fatal(err)
	}
	h.evolve(h.record(e))
	h.names[id] = description
	return id
}

// Update records the events the domain decides for a PATCH of the key.
func (h *History) Update(project, key string, u domain.UpdateKey) {
	h.t.Helper()
	events, err := h.keys[key].DecideUpdate(u, h.meta())
	if err != nil {
		h.t.Fatal(err)
	}
	for _, e := range events {
		h.evolve(h.record(e))
	}
}

// Rename records a change of the key's description.
func (h *History) Rename(project, key, description string) {
	h.Update(project, key, domain.UpdateKey{Description: &description})
}

// Revoke revokes a key and returns the revocation time as the read models store it.
func (h *History) Revoke(project, key string) time.Time {
	revoked := true
	h.Update(project, key, domain.UpdateKey{Revoked: &revoked})
	return h.now.UTC().Truncate(time.Millisecond)
}

// appendKeyEvent appends an event the domain would not decide, at the key's next version.
func (h *History) appendKeyEvent(project, key string, data domain.EventData) {
	h.t.Helper()
	h.evolve(h.appendRawKeyEvent(project, key, h.keys[key].Version()+1, data))
}

// appendRawKeyEvent appends a hand-made key event without folding it.
func (h *History) appendRawKeyEvent(project, key string, version int, data domain.EventData) eventstore.RecordedEvent {
	user, team := "u", h.teams[key]
	if team != "" {
		user = ""
	}
	if k := h.keys[key]; k != nil {
		user, team = k.Snapshot().UserID, k.Snapshot().TeamID
	}
	e := domain.Event{
		ID: newUUID(), SchemaVersion: domain.CurrentSchemaVersion, ProjectID: project, KeyID: key,
		UserID: user, TeamID: team, Version: version, Time: h.now, Actor: domain.Actor{Type: domain.ActorOperator, ID: "test"},
		RequestID: "hand-made", Data: data,
	}
	e.Type = domain.TypeOf(data)
	return h.appendRaw(e)
}

func (h *History) appendRaw(e domain.Event) eventstore.RecordedEvent { return h.record(e) }

// poison appends a message that is not an event.
func (h *History) poison(project string) {
	h.seq++
	raw := []byte("garbage {")
	_, err := domain.UnmarshalEvent(raw)
	h.events = append(h.events, eventstore.RecordedEvent{
		Seq: h.seq, Subject: "keyledger.key." + project + "." + newUUID() + ".KeyRevoked",
		Raw: raw, Err: err, Time: h.now,
	})
}

func (h *History) evolve(r eventstore.RecordedEvent) {
	h.t.Helper()
	next, err := domain.EvolveKey(h.keys[r.Event.KeyID], r.Event)
	if err != nil {
		h.t.Fatalf("fold %s: %v", r.Event.Type, err)
	}
	h.keys[r.Event.KeyID] = next
	h.lastSeq[r.Event.KeyID] = r.Seq
	if r.Event.Type == domain.TypeKeyCreated {
		h.created[r.Event.KeyID] = r.Seq
	}
}

// Events returns every message recorded so far, in stream order.
func (h *History) Events() []eventstore.RecordedEvent { return slices.Clone(h.events) }

// Pending returns the events not yet handed to a read model.
func (h *History) Pending() []eventstore.RecordedEvent {
	return slices.Clone(h.events[h.applied:])
}

// ApplyAll applies the pending events as one batch and checks the returned checkpoint.
func (h *History) ApplyAll(rm projections.ReadModel) {
	h.t.Helper()
	cp, err := rm.Apply(context.Background(), h.Pending())
	if err != nil {
		h.t.Fatalf("Apply: %v", err)
	}
	if cp != h.seq {
		h.t.Fatalf("Apply returned checkpoint %d, want %d", cp, h.seq)
	}
	h.applied = len(h.events)
}

// AssertCheckpoint fails the test unless the read model's checkpoint is want.
func (h *History) AssertCheckpoint(rm projections.ReadModel, want uint64) {
	h.t.Helper()
	if cp, err := rm.Checkpoint(context.Background()); err != nil || cp != want {
		h.t.Fatalf("Checkpoint = %d, %v; want %d", cp, err, want)
	}
}

// want is the key as the fold of the stream has it, with times at millisecond precision.
func (h *History) want(key string) projections.KeyView {
	s := h.keys[key].Snapshot()
	s.CreatedAt = s.CreatedAt.Truncate(time.Millisecond)
	if s.ExpiresAt != nil {
		t := s.ExpiresAt.Truncate(time.Millisecond)
		s.ExpiresAt = &t
	}
	return projections.KeyView{KeySnapshot: s, LastSeq: h.lastSeq[key], CreatedSeq: h.created[key]}
}

// Want is the key as the fold of the stream so far has it (times at millisecond precision),
// with the stream sequences of its last event and its creation.
func (h *History) Want(key string) projections.KeyView { return h.want(key) }

// AssertKey fails the test unless the read model shows the key as the domain's fold has it.
func (h *History) AssertKey(rm projections.ReadModel, project, key string) projections.KeyView {
	h.t.Helper()
	v, err := rm.Key(context.Background(), project, key)
	if err != nil {
		h.t.Fatalf("Key(%q): %v", h.names[key], err)
	}
	h.assertView(v, project, key)
	return v
}

func (h *History) assertView(v projections.KeyView, project, key string) {
	h.t.Helper()
	if h.keys[key] == nil {
		h.t.Fatalf("read model has key %s, which the stream never created", key)
	}
	if got, want := describeKey(v), describeKey(h.want(key)); got != want || v.ProjectID != project {
		h.t.Fatalf("key %q\n got %s\nwant %s", h.names[key], got, want)
	}
}

func (h *History) assertKeysByUser(rm projections.ReadModel, project, user string) {
	h.t.Helper()
	h.assertKeysByOwner(rm, project, domain.KeyTypeUser, user)
}

func (h *History) assertKeysByTeam(rm projections.ReadModel, project, team string) {
	h.t.Helper()
	h.assertKeysByOwner(rm, project, domain.KeyTypeTeam, team)
}

// assertKeysByOwner checks KeysByUser or KeysByTeam against the fold of the stream.
func (h *History) assertKeysByOwner(rm projections.ReadModel, project string, typ domain.KeyType, user string) {
	h.t.Helper()
	list := rm.KeysByUser
	if typ == domain.KeyTypeTeam {
		list = rm.KeysByTeam
	}
	got, err := list(context.Background(), project, user)
	if err != nil {
		h.t.Fatal(err)
	}
	var want []projections.KeyView
	for id, k := range h.keys {
		if s := k.Snapshot(); s.ProjectID == project && s.Type() == typ && s.Owner() == user {
			want = append(want, h.want(id))
		}
	}
	slices.SortFunc(want, func(a, b projections.KeyView) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return -compareSeq(h.createdSeq(a.ID), h.createdSeq(b.ID))
	})
	if len(got) != len(want) {
		h.t.Fatalf("keys of %s %s: %d, want %d", typ, user, len(got), len(want))
	}
	for i := range got {
		if describeKey(got[i]) != describeKey(want[i]) {
			h.t.Fatalf("keys of %s %s [%d]\n got %s\nwant %s", typ, user, i, describeKey(got[i]), describeKey(want[i]))
		}
	}
}

func (h *History) createdSeq(key string) uint64 { return h.created[key] }

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (h *History) describeIDs(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = fmt.Sprintf("%q", h.names[id])
	}
	return out
}

func keyIDs(views []projections.KeyView) []string {
	ids := make([]string, len(views))
	for i, v := range views {
		ids[i] = v.ID
	}
	return ids
}

// describeKey renders every field of the key (all of KeySnapshot's, so that a field a new
// event type adds is compared too), times with their zone, so that two views compare equal
// exactly when they are the same key at the same instants, in UTC.
func describeKey(v projections.KeyView) string {
	var b strings.Builder
	s := reflect.ValueOf(v.KeySnapshot)
	b.WriteString("{")
	for i := range s.NumField() {
		f := s.Field(i)
		fmt.Fprintf(&b, "%s:", s.Type().Field(i).Name)
		switch x := f.Interface().(type) {
		case time.Time:
			b.WriteString(describeTime(&x))
		case *time.Time:
			b.WriteString(describeTime(x))
		case string:
			fmt.Fprintf(&b, "%q", x)
		default:
			fmt.Fprintf(&b, "%v", x)
		}
		b.WriteString(" ")
	}
	fmt.Fprintf(&b, "LastSeq:%d CreatedSeq:%d}", v.LastSeq, v.CreatedSeq)
	return b.String()
}

func describeProject(p domain.ProjectSnapshot) string {
	return fmt.Sprintf("{id:%s name:%q server_key:%s/%s created:%s}", p.ID, p.Name, p.ServerKeyID, p.ServerKeyHash, describeTime(&p.CreatedAt))
}

func describeTime(t *time.Time) string {
	if t == nil {
		return "null"
	}
	return t.Format(time.RFC3339Nano) + "@" + t.Location().String()
}

// newUUID returns a random (version 4) UUID in canonical form.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
