package eventstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
)

// RecordAll writes new entries and moves entries forward, and where another writer got there
// first (the revision it was given is stale) keeps the later of the two uses, as Record does.
func TestRecordAllKeepsTheLaterUse(t *testing.T) {
	s := openStore(t, testenv.NATS(t), eventstore.Config{})
	ctx := context.Background()
	bucket, err := s.OpenLastUse(ctx)
	if err != nil {
		t.Fatalf("open the bucket: %v", err)
	}
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	recs, errs := bucket.RecordAll(ctx, []eventstore.LastUse{
		{ProjectID: "p", KeyID: "fresh", At: at(0)},
		{ProjectID: "p", KeyID: "taken", At: at(0)},
		{ProjectID: "p", KeyID: "bad.id", At: at(0)},
	})
	if errs[0] != nil || errs[1] != nil || errs[2] == nil {
		t.Fatalf("first writes: errors %v", errs)
	}
	if recs[0].Revision == 0 || !recs[0].At.Equal(at(0)) {
		t.Fatalf("a new entry: %+v", recs[0])
	}
	// Another keysd moves "taken" to a later use.
	later, err := bucket.Record(ctx, "p", "taken", at(10*time.Second), recs[1].Revision)
	if err != nil {
		t.Fatalf("the other writer: %v", err)
	}

	recs2, errs := bucket.RecordAll(ctx, []eventstore.LastUse{
		{ProjectID: "p", KeyID: "fresh", At: at(5 * time.Second), Revision: recs[0].Revision}, // forward
		{ProjectID: "p", KeyID: "taken", At: at(5 * time.Second), Revision: recs[1].Revision}, // stale, earlier
	})
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("second writes: errors %v", errs)
	}
	if !recs2[0].At.Equal(at(5*time.Second)) || recs2[0].Revision <= recs[0].Revision {
		t.Fatalf("moving an entry forward: %+v after %+v", recs2[0], recs[0])
	}
	if !recs2[1].At.Equal(later.At) || recs2[1].Revision != later.Revision {
		t.Fatalf("a stale write over a later use returned %+v, want the later %+v", recs2[1], later)
	}

	seen := map[string]time.Time{}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- bucket.Watch(wctx, func(u eventstore.LastUse) { seen[u.KeyID] = u.At }, cancel)
	}()
	<-done
	if !seen["fresh"].Equal(at(5*time.Second)) || !seen["taken"].Equal(at(10*time.Second)) {
		t.Fatalf("the bucket holds %v", seen)
	}
}
