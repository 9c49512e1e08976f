package projections

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

// This file holds what an event does to a read model, shared by both implementations so that
// they cannot drift apart: the conformance suite tests the storage, this file the rules.

// keyState is a key as a read model keeps it: its snapshot and the stream sequences of its
// creation (the tie-break of "newest first") and of its latest event.
type keyState struct {
	domain.KeySnapshot
	LastSeq    uint64
	CreatedSeq uint64
}

func (k keyState) view() KeyView {
	return KeyView{KeySnapshot: k.KeySnapshot, LastSeq: k.LastSeq, CreatedSeq: k.CreatedSeq}
}

// unapplied returns the events of a batch that lie beyond the checkpoint. If the first of
// them is not checkpoint+1 it returns a *GapError instead: events in between were never
// offered and applying these would skip them.
func unapplied(checkpoint uint64, events []eventstore.RecordedEvent) ([]eventstore.RecordedEvent, error) {
	i := 0
	for i < len(events) && events[i].Seq <= checkpoint {
		i++
	}
	rest := events[i:]
	if len(rest) > 0 && rest[0].Seq > checkpoint+1 {
		return nil, &GapError{Checkpoint: checkpoint, Offered: rest[0].Seq}
	}
	return rest, nil
}

// isKeyEvent tells whether an event belongs to a key (rather than to a project).
func isKeyEvent(e domain.Event) bool { return domain.IsKeyEvent(e) }

// evolveKey returns the key after event r, or false when r does not change it: a creation of
// a key that exists already, an event out of version order or for a key that does not exist
// (the aggregate's own rules, domain.EvolveKey), or text no read model can store. Read models
// leave the key as it is in those cases, so replaying the stream reproduces them exactly.
func evolveKey(cur *keyState, r eventstore.RecordedEvent) (keyState, bool) {
	var k *domain.Key
	if cur != nil {
		k = domain.RestoreKey(cur.KeySnapshot)
	}
	next, err := domain.EvolveKey(k, r.Event)
	if err != nil {
		return keyState{}, false
	}
	s := keyState{KeySnapshot: next.Snapshot(), LastSeq: r.Seq}
	if cur != nil {
		s.CreatedSeq = cur.CreatedSeq
	} else {
		s.CreatedSeq = r.Seq
	}
	s.CreatedAt = toMillis(s.CreatedAt)
	s.ExpiresAt = toMillisPtr(s.ExpiresAt)
	s.RevokedAt = toMillisPtr(s.RevokedAt)
	if !storable(s.ID, s.ProjectID, s.UserID, s.TeamID, s.Description, s.SecretHash, s.LastFour) {
		return keyState{}, false
	}
	return s, true
}

// projectOf returns the project a ProjectCreated event creates, or false when it is not one
// or carries text no read model can store.
func projectOf(r eventstore.RecordedEvent) (domain.ProjectSnapshot, bool) {
	p, err := domain.ProjectFromEvent(r.Event)
	if err != nil {
		return domain.ProjectSnapshot{}, false
	}
	p.CreatedAt = toMillis(p.CreatedAt)
	if !storable(p.ID, p.Name, p.ServerKeyID, p.ServerKeyHash) {
		return domain.ProjectSnapshot{}, false
	}
	return p, true
}

// storable reports whether every string can be stored as PostgreSQL text: valid UTF-8
// without U+0000. The domain never emits anything else; this guards against hand-made
// events on the stream, which would otherwise stop the projector for good.
func storable(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			return false
		}
	}
	return true
}

// toMillis is t in UTC at millisecond precision, the precision of every timestamp keyledger
// records (the domain truncates to it); both read models store exactly that.
func toMillis(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()).UTC() }

func toMillisPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := toMillis(*t)
	return &u
}
