// Package testenv gives integration tests the real servers they need: a current NATS
// JetStream server (in-process, or as a separate process built from the nats-server module)
// and a fresh PostgreSQL database of their own. Nothing here is a mock; a test that asks for
// a server and cannot get one fails with the reason rather than skipping.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// DefaultPostgresURL is the administrative connection tests use to create their databases;
// KEYS_TEST_DATABASE_URL overrides it.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// NATSServer is a running JetStream server for one test.
type NATSServer struct {
	URL     string
	Dir     string
	Name    string         // the server name, in a cluster
	Server  *server.Server // nil when it runs as a separate process
	cmd     *exec.Cmd
	restart func() error
	// syncAlways: the in-process server syncs every write (NATSSyncAlways)
	syncAlways bool
}

// NATS starts an in-process JetStream server on a free loopback port with its own storage,
// stopped when the test ends.
func NATS(t testing.TB) *NATSServer { return natsWith(t, false) }

// NATSSyncAlways is NATS with every write synced to disk before it is acknowledged
// (sync_interval: always): an append's acknowledgement then waits for an fsync, for tests
// that need the server's answer to come late.
func NATSSyncAlways(t testing.TB) *NATSServer { return natsWith(t, true) }

func natsWith(t testing.TB, syncAlways bool) *NATSServer {
	t.Helper()
	dir := t.TempDir()
	port := FreePort(t)
	ns, err := startInProcess(dir, port, syncAlways)
	if err != nil {
		t.Fatalf("start NATS: %v", err)
	}
	s := &NATSServer{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Dir: dir, Server: ns, syncAlways: syncAlways}
	t.Cleanup(func() {
		if s.Server != nil {
			s.Server.Shutdown()
			s.Server.WaitForShutdown()
		}
	})
	return s
}

func startInProcess(dir string, port int, syncAlways bool) (*server.Server, error) {
	ns, err := server.NewServer(&server.Options{
		ServerName: "keyledger-test", Host: "127.0.0.1", Port: port,
		JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true, SyncAlways: syncAlways,
	})
	if err != nil {
		return nil, err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		return nil, fmt.Errorf("NATS server not ready after 10s")
	}
	return ns, nil
}

// Restart stops an in-process server and starts it again on the same port and storage.
func (s *NATSServer) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.Start(t)
}

// Stop stops the server (in-process or separate process) without removing its storage.
func (s *NATSServer) Stop() {
	if s.Server != nil {
		s.Server.Shutdown()
		s.Server.WaitForShutdown()
	}
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGCONT) // a frozen process dies of SIGKILL too, but let it
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// Start starts a stopped server again on the same port and storage.
func (s *NATSServer) Start(t testing.TB) {
	t.Helper()
	u, _ := url.Parse(s.URL)
	var port int
	fmt.Sscanf(u.Port(), "%d", &port)
	if s.restart != nil {
		if err := s.restart(); err != nil {
			t.Fatalf("restart NATS: %v", err)
		}
		return
	}
	ns, err := startInProcess(s.Dir, port, s.syncAlways)
	if err != nil {
		t.Fatalf("restart NATS: %v", err)
	}
	s.Server = ns
}

// Connect opens a client connection to the server, closed when the test ends.
func (s *NATSServer) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect NATS %s: %v", s.URL, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

var (
	buildOnce sync.Map // binary name -> *buildResult
)

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// BinariesEnv names a directory of executables built before the tests (the Makefile's test
// targets build keysd, keysctl, keysbench and nats-server there once for every package):
// Binary returns the one named like the package from it instead of building it again in
// each package's test process.
const BinariesEnv = "KEYLEDGER_TEST_BINARIES"

// Binary builds a main package (a module path such as "github.com/nats-io/nats-server/v2"
// or "./cmd/keysd" relative to the module root) once per test process and returns the
// executable's path, or the one already built in $KEYLEDGER_TEST_BINARIES.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	name := filepath.Base(strings.TrimSuffix(pkg, "/v2"))
	if dir := os.Getenv(BinariesEnv); dir != "" {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("%s=%s: %v (the Makefile builds it there before the tests)", BinariesEnv, dir, err)
		}
		return path
	}
	v, _ := buildOnce.LoadOrStore(pkg, &buildResult{})
	b := v.(*buildResult)
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "keyledger-bin-")
		if err != nil {
			b.err = err
			return
		}
		out := filepath.Join(dir, name)
		if strings.HasPrefix(pkg, "./") {
			pkg = filepath.Join(ModuleRoot(), pkg)
		}
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = ModuleRoot()
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
			return
		}
		b.path = out
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// ModuleRoot is the directory holding go.mod.
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// ExternalNATS runs nats-server (built from the module this repository pins) as a separate
// process with JetStream, as an operator would, stopped when the test ends.
func ExternalNATS(t testing.TB) *NATSServer {
	t.Helper()
	bin := Binary(t, "github.com/nats-io/nats-server/v2")
	dir := t.TempDir()
	port := FreePort(t)
	s := &NATSServer{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Dir: dir}
	s.restart = func() error {
		cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", dir)
		cmd.Stdout, cmd.Stderr = nil, nil
		if err := cmd.Start(); err != nil {
			return err
		}
		s.cmd = cmd
		return waitTCP(fmt.Sprintf("127.0.0.1:%d", port), 15*time.Second)
	}
	if err := s.restart(); err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// NATSCluster is a NATS cluster of nats-server processes (built from the pinned module) on
// loopback, with JetStream and routes between every node, as an operator would run one.
type NATSCluster struct {
	// Nodes are the servers, named n1, n2, ... (their JetStream server names).
	Nodes []*NATSServer
	// Name is the cluster's name.
	Name string
}

// ExternalNATSCluster starts a cluster of n nats-server processes on free loopback ports,
// each with its own storage, stopped when the test ends. It returns once every node accepts
// clients; JetStream may still be electing its meta leader.
func ExternalNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	bin := Binary(t, "github.com/nats-io/nats-server/v2")
	clientPorts, routePorts := make([]int, n), make([]int, n)
	for i := range n {
		clientPorts[i], routePorts[i] = FreePort(t), FreePort(t)
	}
	// A name of its own: two clusters of concurrent tests share the node names n1, n2, ...,
	// and a route port reused by the other cluster (FreePort's ports are free only a moment)
	// would otherwise join them into one, whose JetStream never elects a meta leader.
	c := &NATSCluster{Name: fmt.Sprintf("keyledger-test-%d", clientPorts[0])}
	routes := make([]string, n)
	for i, p := range routePorts {
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", p)
	}
	for i := range n {
		dir := t.TempDir()
		name := fmt.Sprintf("n%d", i+1)
		s := &NATSServer{URL: fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]), Dir: dir, Name: name}
		args := []string{"-a", "127.0.0.1", "-p", fmt.Sprint(clientPorts[i]), "-n", name, "-js", "-sd", dir,
			"--cluster_name", c.Name, "--cluster", routes[i], "--routes", strings.Join(routes, ",")}
		s.restart = func() error {
			cmd := exec.Command(bin, args...)
			if err := cmd.Start(); err != nil {
				return err
			}
			s.cmd = cmd
			return waitTCP(fmt.Sprintf("127.0.0.1:%d", clientPorts[i]), 15*time.Second)
		}
		c.Nodes = append(c.Nodes, s)
	}
	for _, s := range c.Nodes {
		if err := s.restart(); err != nil {
			t.Fatalf("start nats-server %s: %v", s.Name, err)
		}
		t.Cleanup(s.Stop)
	}
	return c
}

// URLs is every node's client URL, comma-separated, as keysd's --nats-url takes them.
func (c *NATSCluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		urls[i] = s.URL
	}
	return strings.Join(urls, ",")
}

// Node returns the node of that server name, or nil.
func (c *NATSCluster) Node(name string) *NATSServer {
	for _, s := range c.Nodes {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Freeze stops a server process with SIGSTOP, as a hung or partitioned node: its connections
// stay open and nothing answers on them. Thaw resumes it.
func (s *NATSServer) Freeze() error {
	if s.cmd == nil || s.cmd.Process == nil {
		return fmt.Errorf("nats-server %s is not a running process", s.Name)
	}
	return s.cmd.Process.Signal(syscall.SIGSTOP)
}

// Thaw resumes a server stopped by Freeze.
func (s *NATSServer) Thaw() error {
	if s.cmd == nil || s.cmd.Process == nil {
		return fmt.Errorf("nats-server %s is not a running process", s.Name)
	}
	return s.cmd.Process.Signal(syscall.SIGCONT)
}

// Running tells whether the server's process is running (possibly frozen).
func (s *NATSServer) Running() bool { return s.cmd != nil || s.Server != nil }

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections after %s: %v", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitTCP waits until addr accepts TCP connections.
func WaitTCP(addr string, timeout time.Duration) error { return waitTCP(addr, timeout) }

// PostgresAdminURL is the connection string tests use to create and drop their databases.
func PostgresAdminURL() string {
	if u := os.Getenv("KEYS_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultPostgresURL
}

// Postgres creates a fresh database for the test and returns its connection string; the
// database is dropped when the test ends.
func Postgres(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := PostgresAdminURL()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("PostgreSQL at %s is needed by this test (run `make test`, which starts it): %v", admin, err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "keyledger_test_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("parse %s: %v", admin, err)
	}
	u.Path = "/" + name
	return u.String()
}

// Heavy marks a test as one of the long or heavy ones (separate processes, crash loops,
// benchmarks' end-to-end runs): `go test -short` (make test-short) skips it, saying why;
// `make test` runs it.
func Heavy(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("heavy (%s): skipped in -short mode; make test runs it", why)
	}
}
