package eventstore_test

import (
	"context"
	"testing"

	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/eventstore/storetest"
	"github.com/keyledger/keyledger/internal/testenv"
)

// The event-store suite (eventstore/storetest) runs once per kind of server: in-process, and
// nats-server as a separate process, as an operator runs it.
func TestStoreInProcessServer(t *testing.T) {
	storetest.TestStore(t, opener(func(t *testing.T) *testenv.NATSServer { return testenv.NATS(t) }, eventstore.Config{}))
}

func TestStoreExternalServer(t *testing.T) {
	if testing.Short() {
		t.Skip("heavy: builds and starts a nats-server process; skipped in -short mode")
	}
	storetest.TestStore(t, opener(func(t *testing.T) *testenv.NATSServer { return testenv.ExternalNATS(t) }, eventstore.Config{}))
}

// With group commit every append goes through the committer, which sends concurrent appends
// as one atomic batch: the suite's guarantees hold all the same.
func TestStoreGroupCommit(t *testing.T) {
	storetest.TestStore(t, opener(func(t *testing.T) *testenv.NATSServer { return testenv.NATS(t) }, eventstore.Config{GroupCommit: true}))
}

// opener starts a server with newServer and opens stores on it with cfg.
func opener(newServer func(t *testing.T) *testenv.NATSServer, cfg eventstore.Config) func(t *testing.T) storetest.Opener {
	return func(t *testing.T) storetest.Opener {
		srv := newServer(t)
		return func(t *testing.T) *eventstore.Store {
			t.Helper()
			s, err := eventstore.Open(context.Background(), srv.Connect(t), cfg)
			if err != nil {
				t.Fatalf("open store: %v", err)
			}
			return s
		}
	}
}
