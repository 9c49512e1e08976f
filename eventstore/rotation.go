package eventstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
)

// AppendRotation appends a rotation, all or none: the events of the rotated key (perhaps
// none) and the new key's KeyCreated, last. The whole batch is checked against the rotated
// key's expected last sequence (its first message carries the expectation on the rotated
// key's subjects), so a rotation decided on a state that has changed since (a revocation
// through another keysd, say) is refused with ErrConflict. The new key's id is fresh, so
// its own subjects need no check. It returns the stream sequence of the new key's event.
func (s *Store) AppendRotation(ctx context.Context, expected uint64, events []domain.Event) (uint64, error) {
	if len(events) == 0 {
		return 0, errors.New("append rotation: no events")
	}
	if err := s.writable(); err != nil {
		return 0, err
	}
	created := events[len(events)-1]
	if created.Type != domain.TypeKeyCreated {
		return 0, errors.New("append rotation: the last event must create the new key")
	}
	rotated, ok := created.Data.(domain.KeyCreated)
	if !ok || rotated.RotatedFrom == "" {
		return 0, errors.New("append rotation: the new key must name the key it replaces")
	}
	msgs := make([]*nats.Msg, len(events))
	for i, e := range events {
		if !validToken(e.ProjectID) || !validToken(e.KeyID) || e.ProjectID != created.ProjectID {
			return 0, fmt.Errorf("append rotation: invalid key address %q/%q", e.ProjectID, e.KeyID)
		}
		if i < len(events)-1 && e.KeyID != rotated.RotatedFrom {
			return 0, errors.New("append rotation: events before the new key's must be the rotated key's")
		}
		m, err := s.msg(s.subj.keyEvent(e), e)
		if err != nil {
			return 0, err
		}
		msgs[i] = m
	}
	oldFilter := s.subj.key(created.ProjectID, rotated.RotatedFrom)
	seq, err := s.publish(ctx, msgs, expected, oldFilter)
	if err == nil {
		return seq, nil
	}
	conflict := isWrongLastSequence(err) || isDuplicateInBatch(err)
	if !conflict {
		s.recheck()
	}
	// A conflict or any other answer (an error reply may be forged by another subscriber of
	// the reply subject, see AppendKeyEvents): did the new key's event land (then all did)?
	// The new key's subjects stay empty after a genuine conflict, so a conflict is looked up
	// once; any other failure waits for an append that may still be on its way.
	newFilter := s.subj.key(created.ProjectID, created.KeyID)
	wait := min(s.cfg.Timeout, resolveWait)
	if conflict {
		wait = 0
	}
	if seq, found, lerr := s.resolveAppendWithin(ctx, newFilter, created.ID, 0, wait); lerr == nil && found {
		return seq, nil
	} else if lerr != nil && !conflict {
		return 0, fmt.Errorf("rotate key %s: %w: %w", rotated.RotatedFrom, ErrUnavailable, err)
	}
	if conflict {
		return 0, ErrConflict
	}
	return 0, fmt.Errorf("rotate key %s: %w: %w", rotated.RotatedFrom, ErrUnavailable, err)
}
