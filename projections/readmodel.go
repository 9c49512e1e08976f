// Package projections owns keyledger's read models and the projector that keeps them up to
// date from the event stream. The read model is written only here.
//
// There are two read models with one behaviour: Postgres, shared by every keysd instance of
// a deployment, and Memory, rebuilt from the stream at each start when there is no
// database. What an event does to a key is decided once, by the domain's own EvolveKey
// (evolve.go), so that replaying the stream into either reproduces the other exactly. The
// Projector feeds a read model in batches from its checkpoint and lets requests wait until
// their events are visible (read-your-writes).
package projections

import (
	"context"
	"fmt"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

// KeyView is a key as the read model serves it, with the stream sequences of its latest
// event (the expected sequence for the next append to it) and of its creation (0 from a
// KeyIndex that holds a command's write of a key whose creation the command did not know).
type KeyView struct {
	domain.KeySnapshot
	LastSeq    uint64
	CreatedSeq uint64
}

// ReadModel is what the API queries and the projector writes. The PostgreSQL and the
// in-process implementations pass one conformance suite (projections/readmodeltest).
type ReadModel interface {
	// Apply applies events in stream order and advances the checkpoint to the last one, in
	// one atomic step: after a crash either all of the batch is applied or none of it.
	// Events at or below the checkpoint are skipped (applied already, perhaps by another
	// instance). If the first event is beyond checkpoint+1 nothing is applied and the error
	// is a *GapError: the caller must read again from its Checkpoint+1. Messages whose Err is
	// set are not applied but advance the checkpoint. It returns the new checkpoint.
	Apply(ctx context.Context, events []eventstore.RecordedEvent) (uint64, error)
	// Checkpoint is the stream sequence of the last event applied (0: none).
	Checkpoint(ctx context.Context) (uint64, error)
	// Key returns one key of one project, or domain.ErrKeyNotFound.
	Key(ctx context.Context, projectID, keyID string) (KeyView, error)
	// KeysByUser returns a user's keys in a project, newest first, revoked and expired ones
	// included.
	KeysByUser(ctx context.Context, projectID, userID string) ([]KeyView, error)
	// KeysByTeam returns a team's keys in a project, as KeysByUser a user's.
	KeysByTeam(ctx context.Context, projectID, teamID string) ([]KeyView, error)
	// Project returns a project, or domain.ErrProjectNotFound.
	Project(ctx context.Context, projectID string) (domain.ProjectSnapshot, error)
	// EachKey calls fn for every key of every project (order unspecified), for verification.
	EachKey(ctx context.Context, fn func(KeyView) error) error
	// Ping reports whether the read model's storage answers now (readiness); the in-process
	// read model always does.
	Ping(ctx context.Context) error
	// Close releases the read model's resources.
	Close()
}

// GapError says the read model's checkpoint is behind the first event offered to Apply:
// events in between were never applied (after a rebuild swapped in older tables, say).
type GapError struct{ Checkpoint, Offered uint64 }

func (e *GapError) Error() string {
	return fmt.Sprintf("read model is at sequence %d but was offered %d: read again from %d", e.Checkpoint, e.Offered, e.Checkpoint+1)
}
