// Command keysd is keyledger's service: the HTTP API of Stack Auth's user API keys, the
// command handlers that append events to NATS JetStream, and the projector that keeps the
// read model. With no flags it runs everything in one process: an embedded NATS server and
// an in-process read model rebuilt from the stream at start.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	flag "github.com/spf13/pflag"

	"github.com/keyledger/keyledger/api"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/memlimit"
	"github.com/keyledger/keyledger/internal/secretfile"
	"github.com/keyledger/keyledger/internal/service"
	"github.com/keyledger/keyledger/projections"
)

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		usage(os.Stdout)
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "keysd: %v (see keysd -h)\n", oneLine(err))
		os.Exit(2)
	}
	cfg.UnknownVariables = unknownVariables(os.Environ())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go boundShutdown(ctx, cfg.ShutdownTimeout)
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "keysd: %v\n", oneLine(err))
		os.Exit(1)
	}
}

// boundShutdown ends the process if the shutdown that follows SIGTERM (the drain, then the
// projector, the stream's guard, the last-use flush, NATS) has not finished within timeout,
// whatever the stream's state: a read stuck in nats.go (an ordered consumer being recreated
// for a stream that was deleted, say) must never keep keysd alive.
func boundShutdown(ctx context.Context, timeout time.Duration) {
	<-ctx.Done()
	time.Sleep(timeout)
	fmt.Fprintf(os.Stderr, "keysd: shutdown did not finish within --shutdown-timeout %s; exiting\n", timeout)
	os.Exit(1)
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// run starts keysd and blocks until ctx is cancelled (SIGTERM), then drains in-flight
// requests and stops.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	log := newLogger(stderr, cfg.LogLevel)
	for _, name := range cfg.UnknownVariables {
		log.Warn("ignoring an environment variable that names no keysd flag (see keysd -h)", "variable", name)
	}
	if cfg.PprofAddr != "" {
		defer servePprof(cfg.PprofAddr, log).Close()
	}

	secret, created, err := secretfile.LoadOrCreate(cfg.SecretFile)
	if err != nil {
		return err
	}
	if created {
		log.Info("created the server-side secret", "file", cfg.SecretFile)
	}
	hasher, err := domain.NewHasher(secret)
	if err != nil {
		return fmt.Errorf("secret file %s: %w", cfg.SecretFile, err)
	}

	start := newStartup(cfg.StartupTimeout, log)
	nc, embedded, err := connectNATS(ctx, start, cfg, hasher, log)
	if err != nil {
		return err
	}
	defer func() {
		nc.Close()
		if embedded != nil {
			embedded.Shutdown()
			embedded.WaitForShutdown()
		}
	}()

	// Group commit pays off only when the server flushes every write (see eventstore.Config).
	// JetStream answers "not enabled" for a moment while a cluster elects its meta leader.
	store, err := wait(ctx, start, "JetStream", func(err error) bool {
		return eventstore.IsUnavailable(err) || errors.Is(err, jetstream.ErrJetStreamNotEnabled)
	}, func(ctx context.Context) (*eventstore.Store, error) {
		return eventstore.Open(ctx, nc, eventstore.Config{GroupCommit: cfg.SyncAlways, Replicas: cfg.StreamReplicas, EventKey: hasher.EventKey(), Logger: log})
	})
	if err != nil {
		return err
	}
	reportReplicas(store, log)

	rm, rmDesc, err := openReadModel(ctx, start, cfg)
	if n := cfg.keyIndexSize(); n > 0 {
		rmDesc += fmt.Sprintf("; keys indexed in memory, up to %d", n)
	}
	if err != nil {
		return err
	}
	tuneGC(cfg, os.Getenv, memlimit.Limit, log)
	defer rm.Close()

	lastUse, stopLastUse, err := startLastUse(ctx, store, cfg, log)
	if err != nil {
		return err
	}
	defer stopLastUse()

	idempotency, err := store.OpenIdempotency(ctx)
	if err != nil {
		return err
	}

	registry := prometheus.NewRegistry()
	svc, err := service.Start(service.Config{
		Store: store, ReadModel: rm, Hasher: hasher,
		API: api.Deps{
			LastUse: lastUse, Idempotency: idempotency,
			Logger: log, Clock: time.Now, ReadBarrier: cfg.readBarrier(), Registry: registry,
			RateLimit: cfg.RateLimit, RateBurst: cfg.RateBurst,
			AuthFailureRate: cfg.AuthFailureRate, AuthFailureBurst: cfg.AuthFailureBurst,
		},
		KeyIndexSize: cfg.keyIndexSize(),
	})
	if err != nil {
		return err
	}
	defer svc.Stop()

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on --http-addr %s: %w", cfg.HTTPAddr, err)
	}
	printBanner(stdout, cfg, store, ln.Addr().String(), embedded != nil, rmDesc)
	srv := api.NewServer(cfg.HTTPAddr, svc.Handler)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(api.Listener(ln)) }()
	log.Info("keysd started", "http", ln.Addr().String(), "read_model", rmDesc, "read_barrier", cfg.readBarrier(), "key_index_size", max(cfg.keyIndexSize(), 0))

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("HTTP server: %w", err)
	}
	// The drain takes the shutdown's time but a reserve for the stops after it (boundShutdown
	// ends the process at --shutdown-timeout).
	drain := cfg.ShutdownTimeout - min(2*time.Second, cfg.ShutdownTimeout/4)
	log.Info("shutting down: draining in-flight requests", "timeout", drain)
	shutCtx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		log.Warn("drain incomplete", "err", err)
	}
	log.Info("keysd stopped")
	return nil
}

// reportReplicas logs the event stream's replica count, with a warning for a single replica
// on a cluster: every node but one can then fail without a write being lost, except that one.
func reportReplicas(store *eventstore.Store, log *slog.Logger) {
	if store.Clustered() && store.Replicas() == 1 {
		log.Warn("the event stream has one replica on a NATS cluster: the node holding it is a single point of failure; raise it to 3 (docs/reliability.md)",
			"stream", store.StreamName(), "replicas", 1)
		return
	}
	log.Info("event stream", "stream", store.StreamName(), "replicas", store.Replicas(), "clustered", store.Clustered())
}

// connectNATS connects to the configured servers, or starts the embedded one and connects
// to it in-process.
func connectNATS(ctx context.Context, start startup, cfg config, hasher *domain.Hasher, log *slog.Logger) (*nats.Conn, *server.Server, error) {
	handlers := []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// No buffering while reconnecting: an append then fails at once (503, safe to retry)
		// instead of waiting out its timeout and perhaps landing after the client gave up.
		nats.ReconnectBufSize(-1),
		// A server that stops answering (frozen, partitioned) is given up within about three
		// seconds and another one of the cluster is used, instead of after nats.go's default
		// two minutes and more (docs/reliability.md).
		nats.PingInterval(eventstore.PingInterval),
		nats.MaxPingsOutstanding(eventstore.MaxPingsOutstanding),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("NATS disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("NATS reconnected", "url", eventstore.RedactURLs(c.ConnectedUrl()))
		}),
	}
	if cfg.NATSURL == "" {
		// The embedded server admits only keyledger's users, whose passwords the secret
		// derives: keysd itself, keysctl, and the read-only audit user (keysctl audit-url).
		password := hasher.NATSPassword(eventstore.EmbeddedUser)
		ns, err := eventstore.StartEmbedded(eventstore.EmbeddedConfig{
			Addr: cfg.EmbeddedNATSAddr, DataDir: cfg.DataDir, SyncAlways: cfg.SyncAlways,
			Password: password, AuditPassword: hasher.NATSPassword(eventstore.AuditUser),
		})
		if err != nil {
			return nil, nil, err
		}
		conn := cfg.natsConfig()
		conn.User, conn.Password = eventstore.EmbeddedUser, password
		nc, err := eventstore.Connect(conn, append(handlers, nats.InProcessServer(ns))...)
		if err != nil {
			ns.Shutdown()
			return nil, nil, fmt.Errorf("connect to the embedded NATS server: %w", err)
		}
		return nc, ns, nil
	}
	nc, err := wait(ctx, start, "NATS", isNATSUnreachable, func(context.Context) (*nats.Conn, error) {
		return eventstore.Connect(cfg.natsConfig(), handlers...)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach NATS: %w", err)
	}
	return nc, nil, nil
}

func openReadModel(ctx context.Context, start startup, cfg config) (projections.ReadModel, string, error) {
	if cfg.DatabaseURL == "" {
		return projections.NewMemory(), "in-process (rebuilt from the stream at start)", nil
	}
	pg, err := wait(ctx, start, "PostgreSQL", projections.IsUnavailable, func(ctx context.Context) (*projections.Postgres, error) {
		return projections.OpenPostgres(ctx, cfg.DatabaseURL, projections.PostgresConfig{})
	})
	if err != nil {
		return nil, "", fmt.Errorf("PostgreSQL read model: %w", err)
	}
	return pg, "PostgreSQL", nil
}

// startLastUse opens the last-use bucket and runs its recorder; stop flushes what is left.
// With --last-use-interval 0 there is none.
func startLastUse(ctx context.Context, store *eventstore.Store, cfg config, log *slog.Logger) (*projections.LastUse, func(), error) {
	if cfg.LastUseInterval == 0 {
		return nil, func() {}, nil
	}
	bucket, err := store.OpenLastUse(ctx)
	if err != nil {
		return nil, nil, err
	}
	lu := projections.NewLastUse(bucket, projections.LastUseConfig{FlushInterval: cfg.LastUseInterval, Logger: log})
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		lu.Run(runCtx)
	}()
	return lu, func() { cancel(); <-done }, nil
}

// isNATSUnreachable: a connection refused or timed out may work later; a refusal of our
// credentials will not.
func isNATSUnreachable(err error) bool {
	return !errors.Is(err, nats.ErrAuthorization) && !errors.Is(err, nats.ErrAuthExpired) &&
		!errors.Is(err, nats.ErrAuthRevoked) && !errors.Is(err, nats.ErrAccountAuthExpired) &&
		!errors.Is(err, nats.ErrNkeysNotSupported) && !strings.Contains(err.Error(), "tls:")
}

func printBanner(w io.Writer, cfg config, store *eventstore.Store, httpAddr string, embedded bool, rmDesc string) {
	fmt.Fprintf(w, "keysd: HTTP API on http://%s/api/v1 (health: /healthz /readyz, metrics: /metrics)\n", httpAddr)
	if embedded {
		fmt.Fprintf(w, "keysd: embedded NATS (JetStream) on nats://%s, storage in %s\n", cfg.EmbeddedNATSAddr, cfg.DataDir)
	} else {
		fmt.Fprintf(w, "keysd: NATS at %s\n", eventstore.RedactURLs(cfg.NATSURL))
	}
	where := ""
	if store.Clustered() {
		where = " on a NATS cluster"
	}
	fmt.Fprintf(w, "keysd: event stream %s: %d replica(s)%s\n", store.StreamName(), store.Replicas(), where)
	fmt.Fprintf(w, "keysd: read model: %s\n", rmDesc)
	fmt.Fprintf(w, "keysd: server-side secret: %s\n", cfg.SecretFile)
	ctl := "go run ./cmd/keysctl"
	if !embedded {
		ctl += " --nats-url " + eventstore.RedactURLs(cfg.NATSURL)
		for _, f := range cfg.natsFiles() {
			if f.path != "" {
				ctl += " --" + f.flag + " " + f.path
			}
		}
	} else if cfg.EmbeddedNATSAddr != "127.0.0.1:4223" {
		ctl += " --nats-url nats://" + cfg.EmbeddedNATSAddr
	}
	if cfg.SecretFile != "data/secret" && cfg.SecretFile != "./data/secret" {
		ctl += " --secret-file " + cfg.SecretFile
	}
	fmt.Fprintf(w, "keysd: create a project with: %s projects create --name my-project\n", ctl)
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// tuneGC sets how much garbage the Go runtime lets accumulate, for the read model in use,
// unless the operator set GOGC or GOMEMLIMIT:
//   - PostgreSQL read model: the live heap is a few caches, so letting it grow to five times
//     that before collecting (GOGC=400) costs little memory and takes collection off the
//     request path (docs/performance.md, check at 64 clients).
//   - in-process read model: the live heap is the read model itself (about 570 MB with the
//     embedded server's subject index at a million keys), and memory is this mode's
//     constraint, so collect at half again the live heap (GOGC=50) instead of twice it.
//
// In a container with a memory limit (a cgroup's memory.max or memory.limit_in_bytes), keysd
// also sets a soft memory limit at 90% of it: the runtime then collects harder as the process
// nears the limit instead of being killed at it. A million keys in process under a write-heavy
// load stay under 1 GiB this way, at some throughput (docs/performance.md, Memory).
func tuneGC(cfg config, getenv func(string) string, cgroupLimit func() (int64, bool), log *slog.Logger) {
	if getenv("GOGC") != "" || getenv("GOMEMLIMIT") != "" {
		return
	}
	percent := 50
	if cfg.DatabaseURL != "" {
		percent = 400
	}
	debug.SetGCPercent(percent)
	if limit, ok := cgroupLimit(); ok {
		soft := limit / 10 * 9
		debug.SetMemoryLimit(soft)
		log.Info("soft memory limit at 90% of the container's; set GOMEMLIMIT to override",
			"container_bytes", limit, "soft_limit_bytes", soft)
	}
	log.Debug("garbage collection tuned for the read model; set GOGC or GOMEMLIMIT to override", "gogc", percent)
}
