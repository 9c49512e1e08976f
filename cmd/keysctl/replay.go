package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"sync"
	"time"

	flag "github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/keyledger/keyledger/api"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/projections"
)

// replaySummary is the JSON object replay prints as its last line on stdout.
type replaySummary struct {
	Events          uint64  `json:"events"`
	Keys            uint64  `json:"keys"`
	Projects        uint64  `json:"projects"`
	Seconds         float64 `json:"seconds"`
	EventsPerSecond float64 `json:"events_per_second"`
	Schema          string  `json:"schema"`
	UntilSeq        uint64  `json:"until_seq"`
	OldSchema       string  `json:"old_schema,omitempty"`
	ReadSeconds     float64 `json:"read_seconds"`
	CopySeconds     float64 `json:"copy_seconds"`
	SwapSeconds     float64 `json:"swap_seconds"`
	// CopyBaselineSeconds is a plain COPY of Events rows (--compare-copy).
	CopyBaselineSeconds *float64 `json:"copy_baseline_seconds,omitempty"`
}

// replay rebuilds the live read model and swaps it in, or builds one as of a past point.
func replay(fs *flag.FlagSet) func(*invocation) error {
	until := fs.String("until", "", "build the read model as of this `RFC3339` time, into --schema, leaving the live one alone")
	untilSeq := fs.Uint64("until-seq", 0, "build the read model as of this stream sequence `N`, into --schema, leaving the live one alone")
	schema := fs.String("schema", "", "the `NAME` of the schema an --until or --until-seq read model is built into, replacing one of that name (default "+projections.AsOfSchema+")")
	keepOld := fs.Bool("keep-old", false, "keep the replaced live schema (renamed keyledger_old_<timestamp>) instead of dropping it")
	compare := fs.Bool("compare-copy", false, "also time a plain COPY of as many rows as events were replayed, and report it (copy_baseline_seconds)")
	memory := memoryFlag(fs)
	return func(inv *invocation) error {
		seen := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { seen[f.Name] = true })
		asOf := seen["until"] || seen["until-seq"]
		var at time.Time
		switch {
		case inv.databaseURL == "":
			return usagef("replay: --%s is required (or env %s)", flagDatabaseURL, envDatabaseURL)
		case seen["until"] && seen["until-seq"]:
			return usagef("replay: give --until or --until-seq, not both")
		case seen["schema"] && !asOf:
			return usagef("replay: --schema needs --until or --until-seq (the live read model is always %s)", projections.DefaultSchema)
		case *keepOld && asOf:
			return usagef("replay: --keep-old applies to live rebuilds only")
		case seen["until"]:
			t, err := time.Parse(time.RFC3339Nano, *until)
			if err != nil {
				return usagef("replay: --until %q is not an RFC3339 time such as 2025-12-31T23:59:59Z", *until)
			}
			at = t
		}
		if asOf && *schema == projections.DefaultSchema {
			return usagef("replay: --schema %s is the live read model; pick another name", projections.DefaultSchema)
		}
		if err := (projections.PostgresConfig{Schema: *schema}).Validate(); *schema != "" && err != nil {
			return usagef("replay: --schema: %v", err)
		}
		mem, err := resolveFoldMemory("replay", *memory, defaultMemorySources(inv.getenv))
		if err != nil {
			return err
		}
		store, closeStore, err := openStore(inv)
		if err != nil {
			return err
		}
		defer closeStore()
		cfg := projections.RebuildConfig{AsOf: asOf, Until: *untilSeq, Schema: *schema, KeepOld: *keepOld, Fold: mem.config()}
		if seen["until"] {
			if cfg.Until, err = store.SeqAtTime(inv.ctx, at); err != nil {
				return err
			}
		}
		bar := newProgress(inv.stderr)
		cfg.Progress = bar.update
		cfg.Refused = func(r projections.Refusal) { bar.refused("replay", r) }
		res, err := projections.Rebuild(inv.ctx, inv.databaseURL, store, cfg)
		bar.finish()
		if err != nil {
			return mem.explain("replay", err)
		}
		sum := replaySummary{
			Events: res.Events, Keys: res.Keys, Projects: res.Projects, Seconds: res.Total.Seconds(),
			Schema: res.Schema, UntilSeq: res.UntilSeq, OldSchema: res.OldSchema,
			ReadSeconds: res.Read.Seconds(), CopySeconds: res.Copy.Seconds(), SwapSeconds: res.Swap.Seconds(),
		}
		if res.Total > 0 {
			sum.EventsPerSecond = math.Round(float64(res.Events) / res.Total.Seconds())
		}
		if *compare {
			d, err := projections.MeasureCopy(inv.ctx, inv.databaseURL, int(res.Events))
			if err != nil {
				return fmt.Errorf("replay: --compare-copy: %w", err)
			}
			s := d.Seconds()
			sum.CopyBaselineSeconds = &s
		}
		return printJSON(inv.stdout, sum)
	}
}

// openStore connects to NATS and opens the event store, for the commands that read it.
func openStore(inv *invocation) (*eventstore.Store, func(), error) {
	if err := checkNATSURLs(inv.settings); err != nil {
		return nil, nil, err
	}
	nc, err := connectNATS(inv.settings)
	if err != nil {
		return nil, nil, err
	}
	// Only events keysd wrote are events: the secret's event key checks each one.
	hasher, err := loadHasher(inv.secretFile)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	store, err := eventstore.Open(inv.ctx, nc, eventstore.Config{Timeout: 30 * time.Second, EventKey: hasher.EventKey()})
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("open event store on NATS at %s: %w", eventstore.RedactURLs(inv.natsURL), err)
	}
	return store, nc.Close, nil
}

func printJSON(w io.Writer, v any) error {
	out, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", out)
	return err
}

// progress reports a rebuild on stderr: a bar redrawn in place on a terminal, a plain line
// every few seconds otherwise (logs, CI).
type progress struct {
	w        io.Writer
	terminal bool
	every    time.Duration

	mu    sync.Mutex
	last  time.Time
	phase string
	drawn bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, every: 5 * time.Second}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.terminal, p.every = true, 200*time.Millisecond
	}
	return p
}

func (p *progress) update(r projections.RebuildProgress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := r.Phase != p.phase
	p.phase = r.Phase
	if !changed && time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	rate := 0.0
	if s := r.Elapsed.Seconds(); s > 0 {
		rate = float64(r.Events) / s
	}
	eta := "?"
	if rate > 0 && r.Total >= r.Events {
		eta = (time.Duration(float64(r.Total-r.Events) / rate * float64(time.Second))).Round(time.Second).String()
	}
	if !p.terminal {
		fmt.Fprintf(p.w, "keysctl replay: %s: %d/%d events, %.0f events/s, ETA %s\n", r.Phase, r.Events, r.Total, rate, eta)
		return
	}
	const width = 30
	frac := 1.0
	if r.Total > 0 {
		frac = min(1, float64(r.Events)/float64(r.Total))
	}
	full := int(frac * width)
	fmt.Fprintf(p.w, "\r\x1b[K%-7s [%s%s] %3.0f%% %d/%d events  %.0f/s  ETA %s",
		r.Phase, strings.Repeat("=", full), strings.Repeat(" ", width-full), frac*100, r.Events, r.Total, rate, eta)
	p.drawn = true
}

// refused reports a message the read model does not apply, on a line of its own.
func (p *progress) refused(command string, r projections.Refusal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
	fmt.Fprintln(p.w, refusalLine(command, r))
}

// refusalLine is the stderr line of a message no read model applies.
func refusalLine(command string, r projections.Refusal) string {
	return fmt.Sprintf("keysctl %s: refused stream sequence %d on %s: %s", command, r.Seq, r.Subject, oneLine(r.Reason))
}

// finish ends the bar's line so that what follows starts on its own.
func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

// verify compares the PostgreSQL read model with a replay of the stream.
func verify(fs *flag.FlagSet) func(*invocation) error {
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for the read model to reach the stream's last sequence before comparing; past it, report the lag and exit 1")
	memory := memoryFlag(fs)
	return func(inv *invocation) error {
		if *wait < 0 {
			return usagef("verify: --wait must not be negative, got %s", *wait)
		}
		if inv.databaseURL == "" {
			return usagef("verify: --%s is required (or env %s)", flagDatabaseURL, envDatabaseURL)
		}
		mem, err := resolveFoldMemory("verify", *memory, defaultMemorySources(inv.getenv))
		if err != nil {
			return err
		}
		store, closeStore, err := openStore(inv)
		if err != nil {
			return err
		}
		defer closeStore()
		pg, err := projections.OpenPostgres(inv.ctx, inv.databaseURL, projections.PostgresConfig{MaxConns: 2})
		if err != nil {
			return err
		}
		defer pg.Close()
		// Compare up to the stream's end, not only up to where the read model happens to be:
		// a read model that stopped behind the stream is itself a difference.
		end, err := store.LastSeq(inv.ctx)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		if cp, err := waitForCheckpoint(inv.ctx, pg, end, *wait); err != nil {
			return fmt.Errorf("verify: %w", err)
		} else if cp < end {
			fmt.Fprintf(inv.stdout, "read model at sequence %d, %d events behind the stream's last sequence %d\n", cp, end-cp, end)
			return errCheckFailed{fmt.Sprintf("verify: the read model did not reach the stream's last sequence %d within --wait %s: it is at %d, %d events behind", end, *wait, cp, end-cp)}
		}
		res, err := pg.Verify(inv.ctx, store, mem.config())
		if err != nil {
			return mem.explain("verify", err)
		}
		for _, r := range res.Refused {
			fmt.Fprintln(inv.stderr, refusalLine("verify", r))
		}
		if len(res.Differences) == 0 {
			fmt.Fprintf(inv.stderr, "keysctl verify: the read model equals the stream: %d keys at sequence %d\n", res.Keys, res.Checkpoint)
			return nil
		}
		for _, d := range res.Differences {
			fmt.Fprintf(inv.stdout, "%s project %s: %s\n", d.KeyID, d.ProjectID, d.What)
		}
		return errCheckFailed{fmt.Sprintf("verify: %d keys differ between the read model and the stream at sequence %d", len(res.Differences), res.Checkpoint)}
	}
}

// waitForCheckpoint polls the read model's checkpoint until it reaches seq or wait passes,
// and returns the last checkpoint seen.
func waitForCheckpoint(ctx context.Context, pg *projections.Postgres, seq uint64, wait time.Duration) (uint64, error) {
	deadline := time.Now().Add(wait)
	for {
		cp, err := pg.Checkpoint(ctx)
		if err != nil {
			return 0, err
		}
		if cp >= seq || !time.Now().Before(deadline) {
			return cp, nil
		}
		select {
		case <-time.After(min(100*time.Millisecond, time.Until(deadline))):
		case <-ctx.Done():
			return cp, ctx.Err()
		}
	}
}

// errCheckFailed is a failed check (exit 1) whose details are already on stdout.
type errCheckFailed struct{ msg string }

func (e errCheckFailed) Error() string { return e.msg }

// keysState prints a key as it was at a time, folded from its events.
func keysState(fs *flag.FlagSet) func(*invocation) error {
	project := fs.String("project", "", "the project `ID` (required)")
	key := fs.String("key", "", "the key `ID` (required)")
	at := fs.String("at", "", "the `RFC3339` time to show the key at (default now): events stored by then count")
	return func(inv *invocation) error {
		switch {
		case *project == "":
			return usagef("keys state: --project is required")
		case *key == "":
			return usagef("keys state: --key is required")
		}
		when := time.Now()
		if *at != "" {
			t, err := time.Parse(time.RFC3339Nano, *at)
			if err != nil {
				return usagef("keys state: --at %q is not an RFC3339 time such as 2025-12-31T23:59:59Z", *at)
			}
			when = t
		}
		store, closeStore, err := openStore(inv)
		if err != nil {
			return err
		}
		defer closeStore()
		// Only the events stored by then: the read ends at the last sequence stored at or
		// before when, and the key's history is folded batch by batch as the bulk reader
		// decodes it, however long it is.
		until, err := store.SeqAtTime(inv.ctx, when)
		if err != nil {
			return err
		}
		var k *domain.Key
		if until > 0 {
			err = store.ReadKeyBatches(inv.ctx, *project, *key, until, func(batch []eventstore.RecordedEvent) error {
				k = stateAt(k, batch, when)
				return nil
			})
		} else { // nothing was stored by then: does the key exist at all?
			var first []eventstore.RecordedEvent
			if first, _, err = store.LoadKeyPage(inv.ctx, *project, *key, 0, 1); err == nil && len(first) == 0 {
				err = domain.ErrKeyNotFound
			}
		}
		if errors.Is(err, domain.ErrKeyNotFound) {
			return fmt.Errorf("key %s not found in project %s", *key, *project)
		}
		if err != nil {
			return err
		}
		if k == nil {
			return fmt.Errorf("key %s of project %s did not exist yet at %s", *key, *project, when.UTC().Format(time.RFC3339Nano))
		}
		return printJSON(inv.stdout, api.KeyObject(k.Snapshot()))
	}
}

// stateAt folds onto k the events the stream had stored by at, as the read model would:
// messages that are not valid events, and events out of order, leave the key as it was.
func stateAt(k *domain.Key, events []eventstore.RecordedEvent, at time.Time) *domain.Key {
	for _, r := range events {
		if r.Time.After(at) {
			break
		}
		if r.Err != nil {
			continue
		}
		if next, err := domain.EvolveKey(k, r.Event); err == nil {
			k = next
		}
	}
	return k
}
