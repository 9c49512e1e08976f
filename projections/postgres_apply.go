package projections

// This file is the PostgreSQL read model's one apply path: a batch of events evolved onto
// the rows it touches and written back in one transaction.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

// Apply implements ReadModel in one transaction of its own: lock the checkpoint, read the
// keys the batch touches, evolve them in memory, and write the changed rows, new projects
// and the new checkpoint with one statement each. The statements go in two pipelined round
// trips, BEGIN with the lock and the read, then the writes with COMMIT, whatever the
// batch's size. A failure anywhere leaves the transaction open, and the pool closes such a
// connection instead of reusing it: nothing of the batch is committed.
func (p *Postgres) Apply(ctx context.Context, events []eventstore.RecordedEvent) (uint64, error) {
	return p.applyWithPrior(ctx, events, nil)
}

// applyInTx is Apply within tx, which it leaves open for its caller to commit: the same
// statements without BEGIN and COMMIT. Rebuild uses it to apply the last events under the
// swap's lock; with no events it locks the checkpoint and returns it.
func (p *Postgres) applyInTx(ctx context.Context, tx pgx.Tx, events []eventstore.RecordedEvent) (uint64, error) {
	checkpoint, err := p.apply(ctx, tx, events, false, nil)
	if err != nil {
		return checkpoint, applyError(events, err)
	}
	return checkpoint, nil
}

// applyError is a failed apply's error: a *GapError as it is, anything else with the batch.
func applyError(events []eventstore.RecordedEvent, err error) error {
	var gap *GapError
	if errors.As(err, &gap) || len(events) == 0 {
		return err
	}
	return fmt.Errorf("apply events %d..%d: %w", events[0].Seq, events[len(events)-1].Seq, err)
}

// pgConn is what the apply path needs: a connection, or a transaction on one.
type pgConn interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// applyWithPrior is Apply starting from the states an index holds (KeyIndex), for the rows
// they are: those it holds as of the checkpoint the transaction finds.
func (p *Postgres) applyWithPrior(ctx context.Context, events []eventstore.RecordedEvent, prior priorStates) (uint64, error) {
	if len(events) == 0 {
		return p.Checkpoint(ctx)
	}
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return 0, applyError(events, err)
	}
	defer conn.Release() // closed rather than reused if still in the transaction
	checkpoint, err := p.apply(ctx, conn.Conn(), events, true, prior)
	if err != nil {
		return checkpoint, applyError(events, err)
	}
	return checkpoint, nil
}

// apply is the one apply path. With own it runs its own transaction on the connection c;
// without, c is a transaction its caller commits. prior, if not nil, gives the states of
// keys that need not be read back (KeyIndex.prior). A *GapError comes with the checkpoint.
func (p *Postgres) apply(ctx context.Context, c pgConn, events []eventstore.RecordedEvent, own bool, prior priorStates) (uint64, error) {
	// Read the keys of every event in the batch, before knowing which are beyond the
	// checkpoint (the rows of the others are read and not used), except those the index
	// holds: they are the table's rows if the checkpoint is the index's position.
	projects, ids := keyRefs(events)
	var cached map[keyRef]*keyState
	var cachedAt uint64
	if prior != nil {
		cached, projects, ids, cachedAt = prior(projects, ids)
	}
	b := &pgx.Batch{}
	if own {
		b.Queue("BEGIN")
	}
	b.Queue(p.sql.lockCheckpoint)
	if len(ids) > 0 {
		b.Queue(p.sql.selectKeysByRef, projects, ids)
	}
	br := c.SendBatch(ctx, b)
	var pos int64
	var found []keyRow
	var err error
	if own {
		_, err = br.Exec()
	}
	if err == nil {
		err = br.QueryRow().Scan(&pos)
	}
	if err == nil && len(ids) > 0 {
		rows, qerr := br.Query()
		found, err = pgx.CollectRows(rows, pgx.RowToStructByName[keyRow])
		if qerr != nil && err == nil {
			err = qerr
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("lock checkpoint and read keys: %w", err)
	}
	checkpoint := uint64(pos)
	if len(cached) > 0 && checkpoint != cachedAt {
		// The table is not where the index is (another keysd applied more): read them.
		var cp, ci []string
		for ref := range cached {
			cp, ci = append(cp, ref.project), append(ci, ref.key)
		}
		rows, _ := c.Query(ctx, p.sql.selectKeysByRef, cp, ci)
		more, err := pgx.CollectRows(rows, pgx.RowToStructByName[keyRow])
		if err != nil {
			return 0, fmt.Errorf("read keys: %w", err)
		}
		found, cached = append(found, more...), nil
	}
	todo, err := unapplied(checkpoint, events)
	if err != nil || len(todo) == 0 {
		if own {
			if _, rerr := c.Exec(ctx, "ROLLBACK"); rerr != nil && err == nil {
				err = rerr
			}
		}
		return checkpoint, err
	}
	keys := make(map[keyRef]*keyState, len(found)+len(cached))
	for ref, st := range cached {
		keys[ref] = st
	}
	for _, row := range found {
		st := row.state()
		keys[keyRef{st.ProjectID, st.ID}] = &st
	}
	w, checkpoint := fold(checkpoint, todo, keys)
	b = &pgx.Batch{}
	w.queue(b, p.sql)
	b.Queue(p.sql.updateCheckpoint, int64(checkpoint))
	if own {
		b.Queue("COMMIT")
	}
	if err := c.SendBatch(ctx, b).Close(); err != nil {
		return 0, err
	}
	reportRefused(ctx, w.refused)
	return checkpoint, nil
}

// fold evolves the keys (their rows as read, nil for keys without one) by the events beyond
// checkpoint and returns what to write and the new checkpoint.
func fold(checkpoint uint64, todo []eventstore.RecordedEvent, keys map[keyRef]*keyState) (pgWrites, uint64) {
	var w pgWrites
	for _, r := range todo {
		if r.Seq <= checkpoint {
			continue
		}
		checkpoint = r.Seq
		if r.Err != nil {
			continue
		}
		if isKeyEvent(r.Event) {
			ref := keyRef{r.Event.ProjectID, r.Event.KeyID}
			if next, ok := evolveKey(keys[ref], r); ok {
				if _, seen := w.changed[ref]; !seen {
					w.order = append(w.order, ref)
				}
				w.key(ref, next)
				keys[ref] = &next
			} else {
				w.refused = append(w.refused, r.Seq)
			}
		} else if proj, ok := projectOf(r); ok {
			w.project(proj, r.Seq)
		}
	}
	return w, checkpoint
}

type keyRef struct{ project, key string }

// keyRefs lists the keys that events touch, each once, as the two arrays of the lookup.
func keyRefs(events []eventstore.RecordedEvent) (projects, ids []string) {
	seen := make(map[keyRef]struct{}, len(events))
	for _, r := range events {
		if r.Err != nil || !isKeyEvent(r.Event) {
			continue
		}
		ref := keyRef{r.Event.ProjectID, r.Event.KeyID}
		if _, ok := seen[ref]; !ok {
			seen[ref] = struct{}{}
			projects = append(projects, ref.project)
			ids = append(ids, ref.key)
		}
	}
	return projects, ids
}

// pgWrites collects what one batch writes: the final state of each changed key and each new
// project, as the columns of one multi-row statement apiece.
type pgWrites struct {
	changed  map[keyRef]keyState
	order    []keyRef
	projects []domain.ProjectSnapshot
	projSeqs []int64
	refused  []uint64 // key events not applied (evolveKey), for reportRefused
}

func (w *pgWrites) key(ref keyRef, s keyState) {
	if w.changed == nil {
		w.changed = make(map[keyRef]keyState)
	}
	w.changed[ref] = s
}

func (w *pgWrites) project(p domain.ProjectSnapshot, seq uint64) {
	if slices.ContainsFunc(w.projects, func(q domain.ProjectSnapshot) bool { return q.ID == p.ID }) {
		return // the first creation wins, as in the database
	}
	w.projects = append(w.projects, p)
	w.projSeqs = append(w.projSeqs, int64(seq))
}

func (w *pgWrites) queue(b *pgx.Batch, sql pgStatements) {
	if n := len(w.order); n > 0 {
		var (
			projectIDs, ids, userIDs, descriptions = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
			expires, revoked                       = make([]*time.Time, n), make([]*time.Time, n)
			created                                = make([]time.Time, n)
			public                                 = make([]bool, n)
			hashes, lastFours                      = make([]string, n), make([]string, n)
			versions                               = make([]int32, n)
			lastSeqs, createdSeqs                  = make([]int64, n), make([]int64, n)
			teamIDs                                = make([]string, n)
		)
		for i, ref := range w.order {
			s := w.changed[ref]
			projectIDs[i], ids[i], userIDs[i], descriptions[i] = s.ProjectID, s.ID, s.UserID, s.Description
			expires[i], revoked[i], created[i] = s.ExpiresAt, s.RevokedAt, s.CreatedAt
			public[i], hashes[i], lastFours[i] = s.IsPublic, s.SecretHash, s.LastFour
			versions[i], lastSeqs[i], createdSeqs[i] = int32(s.Version), int64(s.LastSeq), int64(s.CreatedSeq)
			teamIDs[i] = s.TeamID
		}
		b.Queue(sql.upsertKeys, projectIDs, ids, userIDs, descriptions, expires, revoked, created,
			public, hashes, lastFours, versions, lastSeqs, createdSeqs, teamIDs)
	}
	if n := len(w.projects); n > 0 {
		ids, names, keyIDs, keyHashes := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		created := make([]time.Time, n)
		for i, p := range w.projects {
			ids[i], names[i], keyIDs[i], keyHashes[i], created[i] = p.ID, p.Name, p.ServerKeyID, p.ServerKeyHash, p.CreatedAt
		}
		b.Queue(sql.insertProjects, ids, names, keyIDs, keyHashes, created, w.projSeqs)
	}
}
