package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
	flag "github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/secretfile"
)

// seedSummary is the JSON line seed prints when done.
type seedSummary struct {
	Events   int     `json:"events"`
	Keys     int     `json:"keys"`
	Projects int     `json:"projects"`
	LastSeq  uint64  `json:"last_seq"`
	Seconds  float64 `json:"seconds"`
}

// runSeed appends a large, valid history to the stream: projects, then keys created and
// renamed in rounds (round r carries version r+1 of every key that has one), one key in ten
// revoked by its last event. Each round is published in parallel chunks of distinct keys,
// so versions stay contiguous per key while the keys interleave as under real load.
func runSeed(fs *flag.FlagSet, conn *eventstore.ConnectConfig) func(ctx context.Context, stdout, stderr io.Writer) int {
	secretFile := fs.String("secret-file", "data/secret", "`PATH` of the server-side secret of the keysd that will read the stream (created when missing): events are authenticated with it")
	events := fs.Int("events", 1_000_000, "how many events to append in all, projects included")
	keys := fs.Int("keys", 0, "how many keys (default events/4)")
	projects := fs.Int("projects", 10, "how many projects")
	users := fs.Int("users", 1000, "how many user ids per project")
	chunk := fs.Int("chunk", 1000, "events per pipelined publish")
	parallel := fs.Int("parallel", 4, "chunks published at once (chunk*parallel at most 4000, the client's limit of pending publishes)")
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		if *keys == 0 {
			*keys = *events / 4
		}
		if *projects < 1 || *keys < 1 || *events < *projects+*keys || *chunk < 1 || *parallel < 1 || *chunk**parallel > 4000 || *users < 1 {
			fmt.Fprintln(stderr, "keysbench seed: need projects >= 1, keys >= 1, events >= projects+keys, chunk >= 1, parallel >= 1, chunk*parallel <= 4000")
			return 2
		}
		start := time.Now()
		secret, _, err := secretfile.LoadOrCreate(*secretFile)
		if err != nil {
			fmt.Fprintf(stderr, "keysbench seed: %v\n", err)
			return 1
		}
		hasher, err := domain.NewHasher(secret)
		if err != nil {
			fmt.Fprintf(stderr, "keysbench seed: %v\n", err)
			return 1
		}
		c := *conn
		c.User, c.Password = eventstore.EmbeddedUser, hasher.NATSPassword(eventstore.EmbeddedUser)
		c.Name = "keysbench seed"
		nc, err := eventstore.Connect(c)
		if err != nil {
			fmt.Fprintf(stderr, "keysbench seed: %v\n", err)
			return 1
		}
		defer nc.Close()
		store, err := eventstore.Open(ctx, nc, eventstore.Config{Timeout: 30 * time.Second, EventKey: hasher.EventKey()})
		if err != nil {
			fmt.Fprintf(stderr, "keysbench seed: %v\n", err)
			return 1
		}
		s := &seeder{store: store, parallel: *parallel, chunk: *chunk, stderr: stderr, total: *events, start: start}
		if err := s.run(ctx, *projects, *keys, *users, *events-*projects); err != nil {
			fmt.Fprintf(stderr, "keysbench seed: %v\n", err)
			return 1
		}
		last, err := store.LastSeq(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "keysbench seed: %v\n", err)
			return 1
		}
		out, _ := json.Marshal(seedSummary{Events: s.done, Keys: *keys, Projects: *projects, LastSeq: last, Seconds: time.Since(start).Seconds()})
		fmt.Fprintf(stdout, "%s\n", out)
		return 0
	}
}

type seeder struct {
	store           *eventstore.Store
	parallel, chunk int
	stderr          io.Writer
	done, total     int
	start           time.Time
	lastReport      time.Time
}

func meta(now time.Time) domain.Meta {
	return domain.Meta{Time: now, Actor: domain.Actor{Type: domain.ActorOperator, ID: "keysbench"}, RequestID: uuid.NewString(), NewID: uuid.NewString}
}

func (s *seeder) run(ctx context.Context, nProjects, nKeys, nUsers, keyEvents int) error {
	projectIDs := make([]string, nProjects)
	var evs []domain.Event
	for i := range projectIDs {
		projectIDs[i] = uuid.NewString()
		e, err := domain.DecideCreateProject(domain.CreateProject{
			ProjectID: projectIDs[i], Name: fmt.Sprintf("seed project %d", i), ServerKeyID: uuid.NewString(), ServerKeyHash: randomHex(32),
		}, meta(time.Now()))
		if err != nil {
			return err
		}
		evs = append(evs, e)
	}
	if err := s.publish(ctx, evs); err != nil {
		return err
	}
	// perKey[k] is how many events key k gets; the first keys take the remainder.
	base, extra := keyEvents/nKeys, keyEvents%nKeys
	count := func(k int) int {
		if k < extra {
			return base + 1
		}
		return base
	}
	state := make([]*domain.Key, nKeys)
	for round := 0; ; round++ {
		evs = evs[:0]
		now := time.Now()
		for k := range state {
			n := count(k)
			if round >= n {
				break // keys are in decreasing order of count
			}
			var next []domain.Event
			var err error
			switch {
			case round == 0:
				var e domain.Event
				e, err = domain.DecideCreateKey(domain.CreateKey{
					ProjectID: projectIDs[k%nProjects], KeyID: uuid.NewString(), UserID: fmt.Sprintf("user-%d", k%nUsers),
					Description: fmt.Sprintf("seeded key %d", k), SecretHash: randomHex(32), LastFour: randomHex(2),
				}, meta(now))
				next = []domain.Event{e}
			case round == n-1 && k%10 == 0:
				next, err = state[k].DecideUpdate(domain.UpdateKey{Revoked: ptr(true)}, meta(now))
			default:
				next, err = state[k].DecideUpdate(domain.UpdateKey{Description: ptr(fmt.Sprintf("seeded key %d, rename %d", k, round))}, meta(now))
			}
			if err != nil {
				return err
			}
			for _, e := range next {
				if state[k], err = domain.EvolveKey(state[k], e); err != nil {
					return err
				}
			}
			evs = append(evs, next...)
		}
		if len(evs) == 0 {
			return nil
		}
		if err := s.publish(ctx, evs); err != nil {
			return err
		}
	}
}

// publish appends events of distinct keys in parallel chunks.
func (s *seeder) publish(ctx context.Context, evs []domain.Event) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.parallel)
	for i := 0; i < len(evs); i += s.chunk {
		part := evs[i:min(i+s.chunk, len(evs))]
		g.Go(func() error { return s.store.Import(gctx, part) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	s.done += len(evs)
	if time.Since(s.lastReport) > 2*time.Second || s.done == s.total {
		s.lastReport = time.Now()
		el := time.Since(s.start).Seconds()
		fmt.Fprintf(s.stderr, "keysbench seed: %d/%d events, %.0f events/s\n", s.done, s.total, float64(s.done)/el)
	}
	if ctx.Err() != nil {
		return errors.Join(ctx.Err(), errors.New("interrupted"))
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func ptr[T any](v T) *T { return &v }
