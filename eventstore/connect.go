package eventstore

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// ConnectConfig says how a client reaches NATS: which servers, as whom, over what TLS. keysd,
// keysctl and keysbench all connect through it, so they accept the same settings and never
// print a credential.
type ConnectConfig struct {
	// URLs are the servers, comma-separated, as nats.go takes them (host:port alone means
	// nats://host:port). A user and password (nats://user:pass@host) or a token
	// (nats://token@host) in a URL are used as nats.go reads them. Empty: connect in-process
	// (with the nats.InProcessServer option given to Connect).
	URLs string
	// Name is the client's name as the server lists it (keysd, keysctl).
	Name string
	// CredsFile is a NATS credentials file: a user JWT and its nkey seed.
	CredsFile string
	// TLSCA is a PEM file of the certificate authorities to trust for the server's
	// certificate; empty: the system's.
	TLSCA string
	// TLSCert and TLSKey are PEM files of a client certificate and its key, for mutual TLS.
	TLSCert, TLSKey string
	// Timeout bounds the dial to each server; 0: nats.go's default (2 s).
	Timeout time.Duration
	// User and Password authenticate to keysd's embedded server (EmbeddedUser and the
	// password derived from the secret file). They are used only when neither a URL nor
	// CredsFile carries credentials of their own.
	User, Password string
}

// Validate reports every problem with the configuration at once. It reads no file: a file
// that is missing or malformed fails Connect.
func (c ConnectConfig) Validate() error {
	var errs []error
	if c.URLs != "" {
		errs = append(errs, CheckURLs(c.URLs))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("a TLS client certificate and its key go together: give both or neither"))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("connect timeout must not be negative, got %s", c.Timeout))
	}
	return errors.Join(errs...)
}

// Options are the nats.go options of the configuration: name, credentials, TLS, timeout,
// and pings that notice a dead server in seconds.
func (c ConnectConfig) Options() []nats.Option {
	var opts []nats.Option
	if c.Name != "" {
		opts = append(opts, nats.Name(c.Name))
	}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.User != "" && c.CredsFile == "" && !urlsHaveCredentials(c.URLs) {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	if c.Timeout > 0 {
		opts = append(opts, nats.Timeout(c.Timeout))
	}
	return append(opts, nats.PingInterval(PingInterval), nats.MaxPingsOutstanding(MaxPingsOutstanding))
}

// A connection to a server that stops answering (frozen, partitioned, its host gone) is given
// up after MaxPingsOutstanding unanswered pings, PingInterval apart: within about three
// seconds, instead of nats.go's default of two minutes a ping and two outstanding (keysd took
// 289 s to fail over from a frozen node with them). A ping is a few bytes a second per
// connection; a server busy for more than two seconds would be taken for dead, and the
// client reconnects to another node, which costs nothing that matters.
const (
	PingInterval        = time.Second
	MaxPingsOutstanding = 2
)

// Connect validates the configuration and connects, with extra options (handlers, reconnect
// policy, an in-process server) after the configuration's. Its errors name the servers with
// their credentials redacted; nats.ErrNoServers stays detectable with errors.Is.
func Connect(c ConnectConfig, extra ...nats.Option) (*nats.Conn, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	nc, err := nats.Connect(c.URLs, append(c.Options(), extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", RedactURLs(c.URLs), err)
	}
	return nc, nil
}

// urlsHaveCredentials reports whether any server URL carries a user, password or token.
func urlsHaveCredentials(urls string) bool {
	for _, raw := range strings.Split(urls, ",") {
		if u, err := parseURL(strings.TrimSpace(raw)); err == nil && u.User != nil {
			return true
		}
	}
	return false
}

// CheckURLs rejects a server list that nats.go would not take as NATS URLs. Its errors show
// each URL redacted.
func CheckURLs(urls string) error {
	for _, raw := range strings.Split(urls, ",") {
		raw = strings.TrimSpace(raw)
		u, err := parseURL(raw)
		if err != nil || u.Host == "" {
			return fmt.Errorf("%q is not a NATS URL such as nats://127.0.0.1:4222", redactURL(raw))
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("%q: scheme must be nats, tls, ws or wss", redactURL(raw))
		}
	}
	return nil
}

// RedactURLs is a comma-separated server list fit to print: passwords and tokens replaced.
// Use it rather than nats.go's ConnectedUrlRedacted, which shows a token.
func RedactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, raw := range parts {
		parts[i] = redactURL(strings.TrimSpace(raw))
	}
	return strings.Join(parts, ",")
}

// redactURL hides the password or token of one server URL. A URL that does not parse loses
// everything before its last '@'.
func redactURL(raw string) string {
	u, err := parseURL(raw)
	if err != nil {
		if at := strings.LastIndex(raw, "@"); at >= 0 {
			scheme, _, _ := strings.Cut(raw, "://")
			if scheme == raw[:at] || strings.Contains(scheme, "@") {
				scheme = ""
			} else {
				scheme += "://"
			}
			return scheme + "xxxxx@" + raw[at+1:]
		}
		return raw
	}
	if u.User == nil {
		return raw
	}
	if _, hasPassword := u.User.Password(); !hasPassword {
		u.User = url.User("xxxxx") // a user name alone is a token
	}
	return u.Redacted()
}

// parseURL parses one server URL as nats.go does, which allows host:port alone.
func parseURL(raw string) (*url.URL, error) {
	if !strings.Contains(raw, "://") {
		raw = "nats://" + raw
	}
	return url.Parse(raw)
}
