package main

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
)

// TestSyncAlwaysConfiguresTheEmbeddedServer: --sync-always (or KEYS_SYNC_ALWAYS) reaches the
// embedded NATS server keysd starts, so that it fsyncs each append before acknowledging it;
// without it the server keeps its default of a background fsync. Either way keysd's stream
// is on file storage with the replicas asked for.
func TestSyncAlwaysConfiguresTheEmbeddedServer(t *testing.T) {
	testenv.Heavy(t, "a keysd process")
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want bool
	}{
		{"default", nil, nil, false},
		{"flag", []string{"--sync-always"}, nil, true},
		{"environment", nil, map[string]string{"KEYS_SYNC_ALWAYS": "true"}, true},
		{"flag wins over environment", []string{"--sync-always=false"}, map[string]string{"KEYS_SYNC_ALWAYS": "true"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			l.Close()
			args := append([]string{"--data-dir", t.TempDir(), "--embedded-nats-addr", addr}, c.args...)
			cfg, err := parseConfig(args, func(name string) string { return c.env[name] })
			if err != nil {
				t.Fatal(err)
			}
			hasher, err := domain.NewHasher(make([]byte, 32))
			if err != nil {
				t.Fatal(err)
			}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			nc, ns, err := connectNATS(t.Context(), newStartup(time.Minute, log), cfg, hasher, log)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { nc.Close(); ns.Shutdown(); ns.WaitForShutdown() }()
			js := ns.JetStreamConfig()
			if js == nil {
				t.Fatal("the embedded server has no JetStream")
			}
			if js.SyncAlways != c.want {
				t.Fatalf("embedded JetStream sync_always = %v, want %v (config %+v)", js.SyncAlways, c.want, js)
			}
			if !c.want && js.SyncInterval > 2*time.Minute {
				t.Fatalf("background fsync every %s, more than the documented 2 minutes", js.SyncInterval)
			}

			if _, err := eventstore.Open(t.Context(), nc, eventstore.Config{}); err != nil {
				t.Fatal(err)
			}
			jsc, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			str, err := jsc.Stream(t.Context(), "KEYLEDGER")
			if err != nil {
				t.Fatal(err)
			}
			sc := str.CachedInfo().Config
			if sc.Storage != jetstream.FileStorage || sc.Replicas != 1 || !sc.DenyDelete || !sc.DenyPurge {
				t.Fatalf("stream config: storage %v replicas %d deny delete %v deny purge %v",
					sc.Storage, sc.Replicas, sc.DenyDelete, sc.DenyPurge)
			}
		})
	}
}
