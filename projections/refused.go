package projections

import (
	"fmt"

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
	return Refusal{Seq: r.Seq, Subject: r.Subject,
		Reason: fmt.Sprintf("%s version %d out of the key's version order (the key is at version %d)", r.Event.Type, r.Event.Version, v)}, true
}
