package eventstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
)

// Import appends events as they are, in order, without the per-key concurrency check and
// without de-duplication ids: for seeding a stream (keysbench seed) and importing histories
// whose versions the caller has made contiguous, never for commands. Publishes are
// pipelined, so a batch costs about one round trip; it returns once the server has stored
// every event, or the first failure (events before it may be stored).
func (s *Store) Import(ctx context.Context, events []domain.Event) error {
	if err := s.writable(); err != nil {
		return err
	}
	futures := make([]jetstream.PubAckFuture, 0, len(events))
	for _, e := range events {
		var subject string
		switch {
		case e.Type == domain.TypeProjectCreated && validToken(e.ProjectID):
			subject = s.subj.projectEvent(e)
		case validToken(e.ProjectID) && validToken(e.KeyID):
			subject = s.subj.keyEvent(e)
		default:
			return fmt.Errorf("import: invalid address %q/%q of event %s", e.ProjectID, e.KeyID, e.ID)
		}
		m, err := s.msg(subject, e)
		if err != nil {
			return err
		}
		m.Header.Del(jetstream.MsgIDHeader)
		f, err := s.js.PublishMsgAsync(m, jetstream.WithExpectStream(s.cfg.Stream))
		if err != nil {
			return fmt.Errorf("import: %w: %w", ErrUnavailable, err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("import: %w", err)
		case <-ctx.Done():
			return errors.Join(ctx.Err(), errors.New("import: stopped before every event was acknowledged"))
		}
	}
	return nil
}
