package projections

import (
	"context"
	"fmt"
	"strings"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

// Refusal is a message of the stream that no read model applies: not an event (forged,
// altered, garbage: eventstore refused it), or a key event out of its key's version order (a
// genuine event published again later). Replay and verify list them for the operator.
type Refusal struct {
	Seq     uint64
	Subject string
	Reason  string
}

// notAnEvent is the refusal of a message eventstore could not take as an event.
func notAnEvent(r *eventstore.RecordedEvent) Refusal {
	return Refusal{Seq: r.Seq, Subject: r.Subject, Reason: r.Err.Error()}
}

// outOfOrder is the refusal of a key event that is not the next of its key, whose version is
// v (0: the key does not exist), by the read models' rule (domain.EvolveKey's version
// order); ok is false when the event is in order. The fold asks it with the version of the
// key it holds, so finding refusals costs no state of its own.
func outOfOrder(r *eventstore.RecordedEvent, v int) (Refusal, bool) {
	created := r.Event.Type == domain.TypeKeyCreated
	if (v == 0) == created && r.Event.Version == v+1 {
		return Refusal{}, false
	}
	return Refusal{Seq: r.Seq, Subject: r.Subject, Reason: OutOfOrderReason(r.Event, v)}, true
}

// VersionOrder follows the version of every key through a read of the stream, for readers
// without a read model (keysctl events tail): an authenticated key event that does not follow
// its key's version (a genuine event published again later, a version gap, a second
// creation) is refused, as every read model refuses it (domain.EvolveKey).
type VersionOrder struct {
	// index is where each key's version is in versions. An update writes versions only:
	// assigning to a map entry that exists replaces its key too (Go does for strings), and
	// the key of an update shares the bytes of that update's message, so a map of versions
	// kept every key's last message alive (events tail: 869 MB for 250,000 keys).
	index    map[keyRef]int
	versions []int
	// midStream: the read did not start at the stream's beginning, so a key first seen with
	// an event other than its creation is taken at that event's version.
	midStream bool
}

// NewVersionOrder returns an empty VersionOrder; midStream for a read that starts after the
// stream's first message.
func NewVersionOrder(midStream bool) *VersionOrder {
	return &VersionOrder{index: make(map[keyRef]int), midStream: midStream}
}

// Refuse checks the next message of the read and returns why it breaks its key's version
// order, or "" when it does not (or is no key event: invalid messages are eventstore's).
func (o *VersionOrder) Refuse(r eventstore.RecordedEvent) string {
	if o == nil || r.Err != nil || r.Control || !isKeyEvent(r.Event) {
		return ""
	}
	k := keyRef{r.Event.ProjectID, r.Event.KeyID}
	i, seen := o.index[k]
	v := 0
	if seen {
		v = o.versions[i]
	}
	created := r.Event.Type == domain.TypeKeyCreated
	switch {
	case !seen && o.midStream && !created:
		// The key's earlier events are before the read: take it where it is.
	case (v == 0) != created || r.Event.Version != v+1:
		return OutOfOrderReason(r.Event, v)
	}
	if seen {
		o.versions[i] = r.Event.Version
		return ""
	}
	// A new key: its ids may share a message's bytes, which must not be kept.
	o.index[keyRef{strings.Clone(k.project), strings.Clone(k.key)}] = len(o.versions)
	o.versions = append(o.versions, r.Event.Version)
	return ""
}

// OutOfOrderReason says why a key event at the key's version v is not applied.
func OutOfOrderReason(e domain.Event, v int) string {
	return fmt.Sprintf("%s version %d out of the key's version order (the key is at version %d): a genuine event published again, or a version gap; not applied", e.Type, e.Version, v)
}

// Read models report, through the context of Apply, the messages beyond their checkpoint
// that are valid events and that they did not apply (a key event out of its key's version
// order, a second creation, text no read model stores), so that the projector sets them
// aside like invalid messages.
type refusedReportKey struct{}

// withRefusedReport returns ctx carrying report, called with each such message's sequence.
func withRefusedReport(ctx context.Context, report func(seq uint64)) context.Context {
	return context.WithValue(ctx, refusedReportKey{}, report)
}

// reportRefused tells the report in ctx, if any, of the messages at seqs.
func reportRefused(ctx context.Context, seqs []uint64) {
	if report, ok := ctx.Value(refusedReportKey{}).(func(uint64)); ok {
		for _, seq := range seqs {
			report(seq)
		}
	}
}
