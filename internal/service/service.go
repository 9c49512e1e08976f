// Package service wires one keysd's worth of keyledger together: the projector that feeds
// the read model, the command handler on the event store, and the HTTP API over both. keysd
// and the tests that stand in for a keysd use this one wiring, so that what they test is
// what keysd runs.
package service

import (
	"context"
	"fmt"
	"net/http"

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
	handler, err := api.NewHandler(deps)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Service{Commands: cmds, Projector: projector, Index: index, Handler: handler, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		_ = projector.Run(ctx)
	}()
	return s, nil
}

// Stop stops the projector and waits for it.
func (s *Service) Stop() {
	s.stop()
	<-s.done
}
