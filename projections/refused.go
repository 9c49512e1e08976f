package projections

import (
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

// refusals finds the refusals among the messages of a read of the stream from its start, by
// the same rules as the read models (domain.EvolveKey's version order).
type refusals struct {
	versions map[keyRef]int
	report   func(Refusal)
}

func newRefusals(report func(Refusal)) *refusals {
	return &refusals{versions: make(map[keyRef]int), report: report}
}

// see checks one message, in stream order.
func (f *refusals) see(r eventstore.RecordedEvent) {
	if f == nil || f.report == nil || r.Control {
		return
	}
	if r.Err != nil {
		f.report(Refusal{Seq: r.Seq, Subject: r.Subject, Reason: r.Err.Error()})
		return
	}
	if !isKeyEvent(r.Event) {
		return
	}
	k := keyRef{r.Event.ProjectID, r.Event.KeyID}
	v := f.versions[k]
	created := r.Event.Type == domain.TypeKeyCreated
	if (v == 0) != created || r.Event.Version != v+1 {
		f.report(Refusal{Seq: r.Seq, Subject: r.Subject,
			Reason: fmt.Sprintf("%s version %d out of the key's version order (the key is at version %d)", r.Event.Type, r.Event.Version, v)})
		return
	}
	if v == 0 { // a new key: its ids may share a message's bytes, which must not be kept
		k = keyRef{strings.Clone(k.project), strings.Clone(k.key)}
	}
	f.versions[k] = r.Event.Version
}

// seeAll checks a batch of messages, in stream order.
func (f *refusals) seeAll(batch []eventstore.RecordedEvent) {
	if f == nil || f.report == nil {
		return
	}
	for _, r := range batch {
		f.see(r)
	}
}
