package eventstore_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
)

// A bulk read of every project's key events (read without a server-side filter, the other
// messages dropped by the reader) hands on exactly the key events, in order, bounded or
// not, also when the stream's last message is not one.
func TestReadBatchesOfTheKeyEvents(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testenv.NATS(t), eventstore.Config{EventKey: testEventKey(t)})
	var want []uint64
	for i := range 5 {
		p, err := domain.DecideCreateProject(domain.CreateProject{ProjectID: uuid.NewString(), Name: fmt.Sprint("p", i), ServerKeyID: "s", ServerKeyHash: "h"}, testMeta())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendProjectEvent(ctx, p); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			seq, err := s.AppendKeyEvents(ctx, 0, []domain.Event{newKeyEvent(t, p.ProjectID)})
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, seq)
		}
	}
	p, _ := domain.DecideCreateProject(domain.CreateProject{ProjectID: uuid.NewString(), Name: "last", ServerKeyID: "s", ServerKeyHash: "h"}, testMeta())
	if _, err := s.AppendProjectEvent(ctx, p); err != nil {
		t.Fatal(err)
	}
	for _, until := range []uint64{0, want[7]} {
		var got []uint64
		_, err := s.ReadBatches(ctx, 1, until, func(b []eventstore.RecordedEvent) error {
			for _, r := range b {
				if r.Err != nil || !strings.Contains(r.Subject, ".key.") || !domain.IsKeyEvent(r.Event) {
					t.Errorf("seq %d %s: not a key event (%v)", r.Seq, r.Subject, r.Err)
				}
				got = append(got, r.Seq)
			}
			return nil
		}, eventstore.WithSubjects(s.KeySubjectFilter("")))
		w := want
		if until != 0 {
			w = want[:8]
		}
		if err != nil || !slices.Equal(got, w) {
			t.Fatalf("until %d: read %v (%v), want %v", until, got, err, w)
		}
	}
}
