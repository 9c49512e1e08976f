package domain

import (
	"reflect"
	"testing"
	"time"
)

// exampleEvent wraps a definition's example data in an envelope: version 1 for a type that
// starts its aggregate, 2 for one that follows the creation.
func exampleEvent(d EventDefinition) Event {
	e := Event{
		ID: "00000000-0000-7000-8000-0000000000e1", Type: d.Type, SchemaVersion: CurrentSchemaVersion,
		ProjectID: "00000000-0000-4000-8000-0000000000p1", Version: 1,
		Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Actor: Actor{Type: ActorServerKey, ID: "sk"},
		RequestID: "req", Data: d.Example,
	}
	if d.ForKey {
		e.KeyID, e.UserID = "00000000-0000-4000-8000-0000000000k1", "user-1"
	}
	if !d.Creates {
		e.Version = 2
	}
	return e
}

// TestEveryEventTypeIsHandled fails for an event type that one of the decoders or
// EvolveKey does not handle. The read models are checked by the read-model conformance
// suite (projections/readmodeltest), which replays every type's example.
func TestEveryEventTypeIsHandled(t *testing.T) {
	t.Parallel()
	creations := 0
	var keyCreation EventDefinition
	for _, d := range EventDefinitions() {
		if d.ForKey && d.Creates {
			creations++
			keyCreation = d
		}
	}
	if creations != 1 {
		t.Fatalf("%d key event types start a key, want exactly one", creations)
	}
	for _, d := range EventDefinitions() {
		t.Run(string(d.Type), func(t *testing.T) {
			t.Parallel()
			if d.Example == nil || d.Example.eventType() != d.Type {
				t.Fatalf("example data %T is not of type %s", d.Example, d.Type)
			}
			if got, ok := LookupEventType(d.Type); !ok || got.Type != d.Type {
				t.Fatalf("LookupEventType(%s) = %v, %v", d.Type, got.Type, ok)
			}
			e := exampleEvent(d)
			b, err := marshalGeneral(e)
			if err != nil {
				t.Fatal(err)
			}
			fastB, ok := appendFast(nil, e)
			if !ok {
				t.Fatalf("the fast encoder (codec_fast_encode.go) does not write %s: add its data there", d.Type)
			}
			if string(fastB) != string(b) {
				t.Fatalf("the fast encoder writes %s as\n%s\nencoding/json as\n%s", d.Type, fastB, b)
			}
			fast, ok := decodeFast(b, false)
			if !ok {
				t.Fatalf("the fast decoder (codec_fast.go) does not take %s: add its data fields to the scanner", d.Type)
			}
			general, err := unmarshalAnyVersion(b)
			if err != nil {
				t.Fatalf("the general decoder refuses %s: %v", d.Type, err)
			}
			if !reflect.DeepEqual(fast, e) || !reflect.DeepEqual(general, e) {
				t.Fatalf("decoders disagree with the event written:\nwritten %+v\nfast    %+v\ngeneral %+v", e, fast, general)
			}
			if !d.ForKey {
				if IsKeyEvent(e) {
					t.Fatalf("%s is a project's event but IsKeyEvent says a key's", d.Type)
				}
				return
			}
			if !IsKeyEvent(e) {
				t.Fatalf("%s is a key's event but IsKeyEvent says not", d.Type)
			}
			if d.Creates {
				k, err := EvolveKey(nil, e)
				if err != nil {
					t.Fatalf("EvolveKey does not start a key with %s: %v", d.Type, err)
				}
				if k.Snapshot().ID != e.KeyID || k.Version() != 1 {
					t.Fatalf("EvolveKey(nil, %s) = %+v", d.Type, k.Snapshot())
				}
				return
			}
			created, err := EvolveKey(nil, exampleEvent(keyCreation))
			if err != nil {
				t.Fatal(err)
			}
			next, err := EvolveKey(created, e)
			if err != nil {
				t.Fatalf("EvolveKey does not take %s on an existing key: %v", d.Type, err)
			}
			if next.Version() != 2 {
				t.Fatalf("EvolveKey(%s) left version %d", d.Type, next.Version())
			}
			before, after := created.Snapshot(), next.Snapshot()
			before.Version = after.Version
			if reflect.DeepEqual(before, after) {
				t.Fatalf("EvolveKey(%s) changed nothing but the version: its example must show what it does to a key", d.Type)
			}
			if _, err := EvolveKey(nil, e); err == nil {
				t.Fatalf("EvolveKey started a key with %s", d.Type)
			}
		})
	}
}
