package projections

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

// This file rebuilds a PostgreSQL read model from the stream (keysctl replay) without
// stopping the keysd instances that serve from it:
//
//  1. fold the stream up to its current end into an in-process Memory read model, which
//     applies the very rules of evolve.go and keeps a key in about 150 bytes;
//  2. create a fresh schema with the migrations and COPY the final rows into it, so that
//     PostgreSQL writes each key once, whatever number of events it has;
//  3. catch the fresh schema up with the events appended meanwhile, through the ordinary
//     Apply path;
//  4. in one transaction: lock the live checkpoint table (ACCESS EXCLUSIVE), apply the last
//     events, rename the live schema away and the fresh one into its place.
//
// Why no event is lost or applied twice across the swap: every projector transaction
// starts by locking the checkpoint row of the live schema, so it either committed before
// the swap took its lock (and the catch-up under the lock reads the stream past it), or it
// waits on the table lock. PostgreSQL resolves a table name again after waiting for its
// lock, and discards cached plans when a schema is renamed, so the waiting projector then
// finds the rebuilt checkpoint, which is at least as far as anything it could have applied;
// events at or below it are skipped, and a projector that had read beyond it applies the
// rest in order. A projector behind the rebuilt checkpoint simply skips ahead.

// RebuildConfig configures Rebuild.
type RebuildConfig struct {
	// AsOf builds the read model as of stream sequence Until (0: before any event) into a
	// separate schema, leaving the live read model alone. Without it Rebuild rebuilds the
	// live read model: up to the end of the stream, following it while the rebuild runs,
	// then swapped in.
	AsOf  bool
	Until uint64
	// Schema is where the read model ends up: the live schema (default DefaultSchema), or
	// with AsOf a separate schema (default AsOfSchema), replaced if it exists, which must
	// not be the live one.
	Schema string
	// KeepOld keeps the replaced live schema, renamed to <schema>_old_<Unix time in nanoseconds>, instead of
	// dropping it after the swap.
	KeepOld bool
	// SwapLag is how many events may be left for the catch-up under the swap's lock; more
	// are applied beforehand, without the lock. Default 1000.
	SwapLag uint64
	// Progress, when set, is called after each batch and at each phase.
	Progress func(RebuildProgress)
	// Refused, when set, is called for each message of the stream no read model applies
	// (see Refusal), in stream order.
	Refused func(Refusal)
	// Fold bounds the memory of the fold (step 1).
	Fold FoldConfig
}

// AsOfSchema is the default schema of a read model built as of a past point.
const AsOfSchema = "keyledger_asof"

func (c *RebuildConfig) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultSchema
		if c.AsOf {
			c.Schema = AsOfSchema
		}
	}
	if c.SwapLag == 0 {
		c.SwapLag = 1000
	}
}

// Validate reports every problem with the configuration at once.
func (c RebuildConfig) Validate() error {
	var errs []error
	if err := (PostgresConfig{Schema: c.Schema}).Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.AsOf && c.Schema == DefaultSchema {
		errs = append(errs, fmt.Errorf("a read model as of sequence %d must not replace the live schema %s", c.Until, DefaultSchema))
	}
	if !c.AsOf && c.Until > 0 {
		errs = append(errs, errors.New("a sequence to stop at needs AsOf"))
	}
	if c.AsOf && c.KeepOld {
		errs = append(errs, errors.New("keeping the old schema applies to live rebuilds only"))
	}
	return errors.Join(errs...)
}

// Rebuild phases, as RebuildProgress reports them.
const (
	PhaseRead    = "read"    // reading and folding the stream
	PhaseCopy    = "copy"    // copying the rows into the fresh schema
	PhaseCatchUp = "catchup" // applying the events appended meanwhile
	PhaseSwap    = "swap"    // swapping the schemas under the lock
	PhaseDone    = "done"
)

// RebuildProgress is how far a rebuild is.
type RebuildProgress struct {
	Phase string
	// Events is how many stream messages were read so far, of Total (the stream's last
	// sequence when the rebuild started, or Until).
	Events, Total uint64
	Elapsed       time.Duration
}

// RebuildResult is what a rebuild did.
type RebuildResult struct {
	// Schema holds the rebuilt read model; OldSchema the replaced live one when kept.
	Schema, OldSchema string
	// UntilSeq is the rebuilt read model's checkpoint.
	UntilSeq uint64
	// Events is how many stream messages were read; Keys and Projects how many rows the
	// read model has.
	Events, Keys, Projects uint64
	// Read, Copy and Swap time the phases (the catch-up is part of Swap); Total the whole.
	Read, Copy, Swap, Total time.Duration
}

// Rebuild builds the read model from store's stream into PostgreSQL at databaseURL: the
// live one, swapped in while keysd keeps serving, or (cfg.AsOf) a read model as of a
// stream sequence in a separate schema. The fresh schema is dropped if anything fails.
func Rebuild(ctx context.Context, databaseURL string, store *eventstore.Store, cfg RebuildConfig) (RebuildResult, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return RebuildResult{}, err
	}
	start := time.Now()
	pool, err := pgxpool.New(ctx, databaseURL)
	if err != nil {
		return RebuildResult{}, fmt.Errorf("read model database: %w", err)
	}
	defer pool.Close()
	b := &rebuild{cfg: cfg, store: store, pool: pool, start: start}
	res, err := b.run(ctx)
	if err != nil && b.fresh != nil {
		// Whatever was built is of no use; a fresh context, since ctx may be why it failed.
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, _ = pool.Exec(dctx, "DROP SCHEMA IF EXISTS "+b.fresh.sql.schema+" CASCADE")
		cancel()
	}
	return res, err
}

// rebuild is one run of Rebuild.
type rebuild struct {
	cfg   RebuildConfig
	store *eventstore.Store
	pool  *pgxpool.Pool
	start time.Time
	fresh *Postgres // the schema being built
	read  uint64    // messages read
	total uint64
	// fold is the stream folded in memory (step 1); it stays until the swap, as the catch-up
	// finds its refusals by the versions the fold holds.
	fold *shardedMemory
}

// report passes refusals on to the caller.
func (b *rebuild) report(refused []Refusal) {
	if b.cfg.Refused != nil {
		for _, r := range refused {
			b.cfg.Refused(r)
		}
	}
}

// catchUp applies a batch of the catch-up to the fresh schema with apply, and to the fold
// for the refusals among it.
func (b *rebuild) catchUp(apply func(context.Context, []eventstore.RecordedEvent) (uint64, error)) func(context.Context, []eventstore.RecordedEvent) (uint64, error) {
	return func(ctx context.Context, batch []eventstore.RecordedEvent) (uint64, error) {
		b.report(b.fold.applyNow(batch))
		return apply(ctx, batch)
	}
}

func (b *rebuild) progress(phase string) {
	if b.cfg.Progress != nil {
		b.cfg.Progress(RebuildProgress{Phase: phase, Events: b.read, Total: b.total, Elapsed: time.Since(b.start)})
	}
}

func (b *rebuild) run(ctx context.Context) (RebuildResult, error) {
	until := b.cfg.Until
	last, err := b.store.LastSeq(ctx)
	if err != nil {
		return RebuildResult{}, err
	}
	if !b.cfg.AsOf || until > last {
		until = last
	}
	b.total = until
	res := RebuildResult{Schema: b.cfg.Schema}

	// 1. Fold the stream into memory, on every core, while PostgreSQL creates the fresh
	// schema; 2. COPY the rows into it.
	name := fmt.Sprintf("%s_rebuild_%d", DefaultSchema, time.Now().UnixNano())
	created := make(chan error, 1)
	go func() { created <- b.createFresh(ctx, name) }()
	fold := newShardedMemory(0, b.cfg.Fold)
	b.fold = fold
	b.progress(PhaseRead)
	err = b.readInto(ctx, 1, until, fold.Apply)
	fold.wait()
	if err == nil {
		err = fold.overLimit()
	}
	if cerr := <-created; err == nil {
		err = cerr
	}
	if err != nil {
		return res, err
	}
	b.report(fold.takeRefusals())
	res.Read = time.Since(b.start)

	copyStart := time.Now()
	b.progress(PhaseCopy)
	if err := copyRows(ctx, b.pool, b.fresh.sql.schema, name, fold, until); err != nil {
		return res, err
	}
	keys, projects := fold.counts()
	res.Keys, res.Projects = uint64(keys), uint64(projects)
	res.Copy = time.Since(copyStart)

	// 3 and 4. Swap it in.
	swapStart := time.Now()
	if b.cfg.AsOf {
		res.UntilSeq = until
		err = b.replace(ctx)
	} else {
		err = b.swapLive(ctx, &res)
	}
	if err != nil {
		return res, err
	}
	res.Swap = time.Since(swapStart)
	res.Events = b.read
	res.Total = time.Since(b.start)
	b.progress(PhaseDone)
	return res, nil
}

// readInto reads messages from..until and hands them to apply in batches.
func (b *rebuild) readInto(ctx context.Context, from, until uint64, apply func(context.Context, []eventstore.RecordedEvent) (uint64, error)) error {
	return foldStream(ctx, b.store, from, until, apply, func(n int) {
		b.read += uint64(n)
		b.progress(PhaseRead)
	})
}

// foldStream reads the stream's messages from..until and hands them to apply in the
// batches the bulk reader decodes (eventstore.ReadBatches), calling applied with each batch's
// size after apply took it. apply may keep a batch. It fails when the stream ends before
// until. Rebuild and Verify fold the stream with it.
func foldStream(ctx context.Context, store *eventstore.Store, from, until uint64,
	apply func(context.Context, []eventstore.RecordedEvent) (uint64, error), applied func(n int)) error {
	if from > until {
		return nil
	}
	last, err := store.ReadBatches(ctx, from, until, func(batch []eventstore.RecordedEvent) error {
		if _, err := apply(ctx, batch); err != nil {
			return err
		}
		applied(len(batch))
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the stream from %d: %w", from, err)
	}
	if last < until {
		return fmt.Errorf("read the stream from %d: it ended at %d, before %d", from, last, until)
	}
	return nil
}

// createFresh creates the schema to build into, with the migrations of a live one.
func (b *rebuild) createFresh(ctx context.Context, name string) error {
	b.fresh = &Postgres{pool: b.pool, schema: name, sql: newStatements(name)}
	if err := b.fresh.migrate(ctx); err != nil {
		return fmt.Errorf("create schema %s: %w", name, explain(err))
	}
	return nil
}

// copyRows writes every key and project of the fold into the fresh schema with COPY, and
// sets its checkpoint. Each shard's keys go in a COPY of their own, side by side on
// connections of their own (the schema is nobody's until the swap, so they need not share a
// transaction). The secondary index is built after the rows, which is faster than
// maintaining it row by row.
func copyRows(ctx context.Context, pool *pgxpool.Pool, quoted, name string, fold *shardedMemory, checkpoint uint64) error {
	for _, idx := range secondaryIndexes {
		if _, err := pool.Exec(ctx, "DROP INDEX "+quoted+"."+idx.name); err != nil {
			return fmt.Errorf("drop index %s: %w", idx.name, err)
		}
	}
	var projects [][]any
	g, gctx := errgroup.WithContext(ctx)
	for i, shard := range fold.shards {
		g.Go(func() error { return copyKeys(gctx, pool, name, shard) })
		if i == 0 { // projects are folded by the first shard
			_ = shard.eachState(nil, func(p domain.ProjectSnapshot, seq uint64) error {
				projects = append(projects, []any{p.ID, p.Name, p.ServerKeyID, p.ServerKeyHash, p.CreatedAt, int64(seq)})
				return nil
			}, false)
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{name, "projects"}, projectColumnNames, pgx.CopyFromRows(projects)); err != nil {
			return fmt.Errorf("copy projects: %w", err)
		}
		for _, idx := range secondaryIndexes {
			if _, err := tx.Exec(ctx, strings.ReplaceAll(idx.create, "{schema}", quoted)); err != nil {
				return fmt.Errorf("create index %s: %w", idx.name, err)
			}
		}
		if _, err := tx.Exec(ctx, "UPDATE "+quoted+".checkpoint SET position = $1", int64(checkpoint)); err != nil {
			return fmt.Errorf("set checkpoint: %w", err)
		}
		return nil
	})
}

// copyKeys COPYs the keys of one shard in the order of the primary key, expanding its
// compact records on one goroutine while COPY encodes them on another.
func copyKeys(ctx context.Context, pool *pgxpool.Pool, name string, shard *Memory) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	states := make(chan keyState, 4096)
	expanded := make(chan error, 1)
	go func() {
		defer close(states)
		expanded <- shard.eachKeyInOrder(func(s keyState) error {
			select {
			case states <- s:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	row := make([]any, len(keyColumns))
	_, err := pool.CopyFrom(ctx, pgx.Identifier{name, "api_keys"}, keyColumnNames, pgx.CopyFromFunc(func() ([]any, error) {
		s, ok := <-states
		if !ok {
			return nil, nil
		}
		return rowValues(s, row), nil
	}))
	cancel()
	for range states { // let the producer finish
	}
	if eerr := <-expanded; err == nil && eerr != nil && !errors.Is(eerr, context.Canceled) {
		err = eerr
	}
	if err != nil {
		return fmt.Errorf("copy keys: %w", err)
	}
	return nil
}

// replace puts a read model as of a past point in place of the schema of that name.
func (b *rebuild) replace(ctx context.Context) error {
	b.progress(PhaseSwap)
	target := pgx.Identifier{b.cfg.Schema}.Sanitize()
	return pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS "+target+" CASCADE"); err != nil {
			return fmt.Errorf("drop schema %s: %w", b.cfg.Schema, err)
		}
		if _, err := tx.Exec(ctx, "ALTER SCHEMA "+b.fresh.sql.schema+" RENAME TO "+target); err != nil {
			return fmt.Errorf("rename schema %s to %s: %w", b.fresh.schema, b.cfg.Schema, err)
		}
		return nil
	})
}

// swapLive catches the fresh schema up with the stream and swaps it in for the live one.
func (b *rebuild) swapLive(ctx context.Context, res *RebuildResult) error {
	// Catch up without the lock until little is left.
	b.progress(PhaseCatchUp)
	for {
		cp, err := b.fresh.Checkpoint(ctx)
		if err != nil {
			return err
		}
		last, err := b.store.LastSeq(ctx)
		if err != nil {
			return err
		}
		if last <= cp+b.cfg.SwapLag {
			break
		}
		b.total = last
		if err := b.readInto(ctx, cp+1, last, b.catchUp(b.fresh.Apply)); err != nil {
			return err
		}
	}

	b.progress(PhaseSwap)
	live := newStatements(b.cfg.Schema)
	old := fmt.Sprintf("%s_old_%d", b.cfg.Schema, time.Now().UnixNano())
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_tables WHERE schemaname = $1 AND tablename = 'checkpoint')", b.cfg.Schema).Scan(&exists); err != nil {
			return err
		}
		var livePos int64
		if exists {
			// Every projector's transaction starts by locking this table's row: from here on
			// none can apply anything to the live schema.
			if _, err := tx.Exec(ctx, "LOCK TABLE "+live.schema+".checkpoint IN ACCESS EXCLUSIVE MODE"); err != nil {
				return fmt.Errorf("lock the live checkpoint: %w", err)
			}
			if err := tx.QueryRow(ctx, live.selectCheckpoint).Scan(&livePos); err != nil {
				return fmt.Errorf("read the live checkpoint: %w", err)
			}
		}
		last, err := b.store.LastSeq(ctx)
		if err != nil {
			return err
		}
		if uint64(livePos) > last {
			return fmt.Errorf("the live read model is at sequence %d, beyond the stream's last %d: is it the read model of another stream?", livePos, last)
		}
		// The last events, under the lock, into the fresh schema.
		cp, err := b.fresh.applyInTx(ctx, tx, nil)
		if err != nil {
			return err
		}
		b.total = last
		if err := b.readInto(ctx, cp+1, last, b.catchUp(func(ctx context.Context, batch []eventstore.RecordedEvent) (uint64, error) {
			return b.fresh.applyInTx(ctx, tx, batch)
		})); err != nil {
			return err
		}
		res.UntilSeq = last
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+b.fresh.sql.schema+".api_keys").Scan(&res.Keys); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+b.fresh.sql.schema+".projects").Scan(&res.Projects); err != nil {
			return err
		}
		if exists {
			if _, err := tx.Exec(ctx, "ALTER SCHEMA "+live.schema+" RENAME TO "+pgx.Identifier{old}.Sanitize()); err != nil {
				return fmt.Errorf("rename schema %s away: %w", b.cfg.Schema, err)
			}
		}
		if _, err := tx.Exec(ctx, "ALTER SCHEMA "+b.fresh.sql.schema+" RENAME TO "+live.schema); err != nil {
			return fmt.Errorf("rename schema %s to %s: %w", b.fresh.schema, b.cfg.Schema, err)
		}
		if !exists {
			old = ""
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.fresh = nil // swapped in: nothing to clean up any more
	switch {
	case old == "":
	case b.cfg.KeepOld:
		res.OldSchema = old
	default:
		if _, err := b.pool.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{old}.Sanitize()+" CASCADE"); err != nil {
			return fmt.Errorf("the rebuilt read model is live; dropping the old schema %s failed: %w", old, err)
		}
	}
	return nil
}
