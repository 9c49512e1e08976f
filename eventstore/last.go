package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LastOf is the stream sequence and storage time of the last message on a subject filter
// (such as KeySubjectFilter), or 0 when there is none: where a bounded read of that filter
// ends.
func (s *Store) LastOf(ctx context.Context, filter string) (uint64, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	m, err := s.getLast(ctx, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, time.Time{}, nil
	}
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("last message on %s: %w: %w", filter, ErrUnavailable, err)
	}
	return m.Sequence, m.Time, nil
}

// KeyLastSeq is the stream sequence of the last message on one key's subjects, read from the
// stream leader (0: the key has none). It tells a command whether the state it decided on is
// still the key's latest without reading the key's events.
func (s *Store) KeyLastSeq(ctx context.Context, projectID, keyID string) (uint64, error) {
	if !validToken(projectID) || !validToken(keyID) {
		return 0, nil
	}
	seq, _, err := s.LastOf(ctx, s.subj.key(projectID, keyID))
	return seq, err
}
