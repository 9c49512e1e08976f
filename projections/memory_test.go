package projections

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
)

// What only the in-process read model has: its compact storage. Its behaviour as a read
// model is in the conformance suite.

func TestMemoryKeepsIdsAndHashesItDidNotIssue(t *testing.T) {
	// Keys keyledger issues have UUID ids and hex hashes, stored as bytes; anything else
	// that reaches the stream must come back exactly as written.
	ctx := context.Background()
	m := NewMemory()
	meta := domain.Meta{Time: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), NewID: newUUID}
	var events []eventstore.RecordedEvent
	cases := []domain.CreateKey{
		{KeyID: "not-a-uuid", SecretHash: "", LastFour: ""},
		{KeyID: "6BA7B810-9DAD-11D1-80B4-00C04FD430C8", SecretHash: strings.Repeat("AB", 32), LastFour: "toolong"},
		{KeyID: newUUID(), SecretHash: strings.Repeat("0f", 31), LastFour: "ab"},
		{KeyID: newUUID(), SecretHash: strings.Repeat("0f", 32), LastFour: "wxyz"},
	}
	for i, c := range cases {
		c.ProjectID, c.UserID, c.Description = "p", "u", fmt.Sprint(i)
		e, err := domain.DecideCreateKey(c, meta)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, eventstore.RecordedEvent{Seq: uint64(i + 1), Event: e})
	}
	if _, err := m.Apply(ctx, events); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		v, err := m.Key(ctx, "p", c.KeyID)
		if err != nil {
			t.Fatalf("Key(%q): %v", c.KeyID, err)
		}
		if v.ID != c.KeyID || v.SecretHash != c.SecretHash || v.LastFour != c.LastFour {
			t.Errorf("key %q came back as id %q hash %q last four %q", c.KeyID, v.ID, v.SecretHash, v.LastFour)
		}
	}
}

func TestUUIDRoundTrip(t *testing.T) {
	for range 100 {
		id := newUUID()
		u, ok := parseUUID(id)
		if !ok || formatUUID(u) != id {
			t.Fatalf("parseUUID(%q) = %x, %t; formats back as %q", id, u, ok, formatUUID(u))
		}
	}
	for _, s := range []string{"", "6ba7b810-9dad-11d1-80b4-00c04fd430c", "6ba7b8109dad11d180b400c04fd430c8",
		"6ba7b810-9dad-11d1-80b4-00c04fd430cg", "6ba7b810-9dad-11d1-80b4_00c04fd430c8", "6BA7B810-9dad-11d1-80b4-00c04fd430c8"} {
		if _, ok := parseUUID(s); ok {
			t.Errorf("parseUUID(%q) accepted a non-canonical id", s)
		}
	}
}

// TestMemoryFootprint guards the sizing target: a million keys in a process under 1 GiB.
// It measures the live heap per key for a realistic mix and allows 500 bytes (the garbage
// collector may double the live heap before collecting, and the process needs room for
// everything else).
func TestMemoryFootprint(t *testing.T) {
	testenv.Heavy(t, "a large read model")
	const n = 50_000
	perKey := measureFootprint(t, n)
	t.Logf("in-process read model: %.0f bytes of live heap per key (%d keys)", perKey, n)
	if perKey > 500 {
		t.Errorf("%.0f bytes per key; a million keys would not fit the 1 GiB target", perKey)
	}
}

// BenchmarkMemoryFootprint reports the live heap per key for larger counts:
// go test ./projections -run '^$' -bench Footprint -benchtime 1x
func BenchmarkMemoryFootprint(b *testing.B) {
	for range b.N {
		b.ReportMetric(measureFootprint(b, 1_000_000), "heap-bytes/key")
	}
}

func measureFootprint(tb testing.TB, n int) float64 {
	tb.Helper()
	ctx := context.Background()
	project := newUUID()
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	meta := domain.Meta{Time: at, Actor: domain.Actor{Type: domain.ActorServerKey, ID: "k"}, RequestID: "r", NewID: newUUID}
	event := func(i int) eventstore.RecordedEvent {
		meta.Time = at.Add(time.Duration(i) * time.Millisecond)
		var expires *time.Time
		if i%4 == 0 {
			e := meta.Time.Add(90 * 24 * time.Hour)
			expires = &e
		}
		e, err := domain.DecideCreateKey(domain.CreateKey{
			ProjectID: project, KeyID: newUUID(), UserID: fmt.Sprintf("user_%08d", i/3),
			Description: fmt.Sprintf("deploy key %d", i), ExpiresAt: expires,
			SecretHash: fmt.Sprintf("%064x", i), LastFour: fmt.Sprintf("%04x", i%65536),
		}, meta)
		if err != nil {
			tb.Fatal(err)
		}
		return eventstore.RecordedEvent{Seq: uint64(i + 1), Event: e}
	}
	before := liveHeap()
	m := NewMemory()
	batch := make([]eventstore.RecordedEvent, 0, 1000)
	for i := 0; i < n; {
		batch = batch[:0]
		for ; i < n && len(batch) < cap(batch); i++ {
			batch = append(batch, event(i))
		}
		if _, err := m.Apply(ctx, batch); err != nil {
			tb.Fatal(err)
		}
	}
	batch = nil
	after := liveHeap()
	runtime.KeepAlive(m)
	return float64(after-before) / float64(n)
}

func liveHeap() uint64 {
	var s runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&s)
	return s.HeapAlloc
}
