// Package service wires one keysd's worth of keyledger together: the projector that feeds
// the read model, the command handler on the event store, and the HTTP API over both. keysd
// and the tests that stand in for a keysd use this one wiring, so that what they test is
// what keysd runs.
package service

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/keyledger/keyledger/api"
	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/projections"
)

// Config is what Start wires together.
type Config struct {
	// Store is the event store; ReadModel the read model the projector keeps and the API
	// reads. Both are the caller's to close, after Stop.
	Store     *eventstore.Store
	ReadModel projections.ReadModel
	// Hasher checks and makes the keyed hashes of secrets.
	Hasher *domain.Hasher
	// API holds the HTTP API's settings (logger, clock, read barrier, metrics registry, rate
	// limit...); its Commands, ReadModel, Projector, Store and Hasher are Start's to fill.
	API api.Deps
	// Commands and Projector configure the command handler and the projector; the
	// projector's Logger defaults to API.Logger.
	Commands  commands.Config
	Projector projections.ProjectorConfig
	// KeyIndexSize is the most keys the key index holds (projections.KeyIndex, in front of
	// ReadModel for the projector, the commands and the API). 0: DefaultKeyIndexSize;
	// negative: none, every read goes to the read model.
	KeyIndexSize int
	// GuardInterval is how often the stream's configuration is checked
	// (eventstore.Store.GuardStream); 0: eventstore.DefaultGuardInterval.
	GuardInterval time.Duration
}

// Service is a running keysd without its listeners: serve Handler over HTTP.
type Service struct {
	Commands  *commands.Handler
	Projector *projections.Projector
	Index     *projections.KeyIndex
	Handler   http.Handler
	stop      context.CancelFunc
	done      chan struct{}
}

// Start wires the parts and starts the projector, which runs until Stop.
func Start(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.ReadModel == nil || cfg.Hasher == nil {
		return nil, fmt.Errorf("service: a store, a read model and a hasher are required")
	}
	if cfg.Projector.Logger == nil {
		cfg.Projector.Logger = cfg.API.Logger
	}
	size := cfg.KeyIndexSize
	if size == 0 {
		size = projections.DefaultKeyIndexSize
	}
	index := projections.NewKeyIndex(cfg.ReadModel, max(size, 0))
	projector := projections.NewProjector(cfg.Store, index, cfg.Projector)
	cmds, err := commands.New(cfg.Store, index, cfg.Hasher, cfg.Commands)
	if err != nil {
		return nil, err
	}
	deps := cfg.API
	deps.Commands, deps.ReadModel, deps.Projector, deps.Store, deps.Hasher = cmds, index, projector, cfg.Store, cfg.Hasher
	// Writes stop while the stream's configuration does not keep events; /readyz says so.
	deps.ReadinessChecks = append(slices.Clone(deps.ReadinessChecks), api.ReadinessCheck{Name: "event_stream_config", Check: cfg.Store.StreamSafe})
	handler, err := api.NewHandler(deps)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Service{Commands: cmds, Projector: projector, Index: index, Handler: handler, stop: stop, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Go(func() { _ = projector.Run(ctx) })
	wg.Go(func() {
		if err := cfg.Store.GuardStream(ctx, cfg.GuardInterval); err != nil && cfg.API.Logger != nil {
			cfg.API.Logger.Error("service: the event stream's configuration is not guarded", "error", err)
		}
	})
	go func() {
		defer close(s.done)
		wg.Wait()
	}()
	return s, nil
}

// Stop stops the projector and the stream's guard and waits for them.
func (s *Service) Stop() {
	s.stop()
	<-s.done
}
