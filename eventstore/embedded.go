package eventstore

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures the NATS server keysd runs inside itself when no --nats-url is
// given.
type EmbeddedConfig struct {
	// Addr is host:port for client connections (audit consumers, keysctl).
	Addr string
	// DataDir holds JetStream's storage, under DataDir/jetstream.
	DataDir string
	// SyncAlways fsyncs every append before acknowledging it (survives a machine crash);
	// otherwise the server syncs every two minutes (survives a process crash).
	SyncAlways bool
}

// Validate reports every problem with the configuration at once.
func (c EmbeddedConfig) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("embedded NATS address %q: %v", c.Addr, err))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir must be set for the embedded NATS server"))
	}
	return errors.Join(errs...)
}

// StartEmbedded starts a JetStream-enabled NATS server inside this process and waits until
// it accepts connections.
func StartEmbedded(c EmbeddedConfig) (*server.Server, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	// The server only logs a failed listen and never becomes ready: check first, so that a
	// busy address is one clear error at once instead of a timeout.
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS cannot listen on --embedded-nats-addr %s: %v (another keysd or NATS server there?)", c.Addr, err)
	}
	ln.Close()
	host, portStr, _ := net.SplitHostPort(c.Addr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS port %q: %v", portStr, err)
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "keysd-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(c.DataDir, "jetstream"),
		SyncAlways: c.SyncAlways,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 1 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS on %s not ready after 30s (is the address in use?)", c.Addr)
	}
	return ns, nil
}
