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
	// Password is the password of EmbeddedUser, who may do anything; AuditPassword that of
	// AuditUser, who may only read the streams (AuditPermissions). The server admits nobody
	// else. keysd derives both from the server-side secret (domain.Hasher.NATSPassword).
	Password, AuditPassword string
	// Stream is the event stream's name, for the audit user's permissions. Default
	// "KEYLEDGER".
	Stream string
}

// Users of the embedded server.
const (
	EmbeddedUser = "keyledger"
	AuditUser    = "keyledger-audit"
)

// AuditPermissions are what an audit consumer may do on the server holding the event
// stream: read the event stream and its dead-letter stream (stream info, direct and leader
// gets, consumers created, fetched from and acknowledged) and receive on its own inboxes. It
// may publish nothing else: no event subject, no stream or consumer deletion, purge or update,
// no reply to another client's request. docs/events.md shows the same rules for an external
// NATS server.
func AuditPermissions(stream string) *server.Permissions {
	var pub []string
	pub = append(pub, "$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST")
	for _, s := range []string{stream, stream + "_DLQ"} {
		pub = append(pub,
			"$JS.API.STREAM.INFO."+s,
			"$JS.API.STREAM.MSG.GET."+s,
			"$JS.API.DIRECT.GET."+s, "$JS.API.DIRECT.GET."+s+".>",
			"$JS.API.CONSUMER.CREATE."+s, "$JS.API.CONSUMER.CREATE."+s+".>",
			"$JS.API.CONSUMER.DURABLE.CREATE."+s+".*",
			"$JS.API.CONSUMER.INFO."+s+".*", "$JS.API.CONSUMER.NAMES."+s, "$JS.API.CONSUMER.LIST."+s,
			"$JS.API.CONSUMER.MSG.NEXT."+s+".*",
			"$JS.ACK."+s+".>", "$JS.FC."+s+".>",
		)
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
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
	if c.Password == "" || c.AuditPassword == "" || c.Password == c.AuditPassword {
		errs = append(errs, errors.New("the embedded NATS server needs two distinct passwords, keysd's and the audit user's"))
	}
	return errors.Join(errs...)
}

// StartEmbedded starts a JetStream-enabled NATS server inside this process, which admits
// only EmbeddedUser and AuditUser, and waits until it accepts connections.
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
	stream := c.Stream
	if stream == "" {
		stream = "KEYLEDGER"
	}
	ns, err := server.NewServer(&server.Options{
		// Only keyledger's users: a client without their credentials is refused.
		Users: []*server.User{
			{Username: EmbeddedUser, Password: c.Password},
			{Username: AuditUser, Password: c.AuditPassword, Permissions: AuditPermissions(stream)},
		},
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
