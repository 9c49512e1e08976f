package main

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/secretfile"
)

// connectTimeout bounds the dial to each NATS server: an operator waiting on a CLI should
// learn quickly that nothing listens.
const connectTimeout = 2 * time.Second

// natsConfig is how keysctl reaches the NATS server(s) keysd uses, from the global flags.
// Without credentials of its own (in the URL or --nats-creds), keysctl authenticates as
// keysd's embedded server expects, with the password derived from the secret file; a server
// without authentication ignores them.
func (s settings) natsConfig() eventstore.ConnectConfig {
	c := eventstore.ConnectConfig{
		URLs: s.natsURL, Name: "keysctl", Timeout: connectTimeout,
		CredsFile: s.natsCreds, TLSCA: s.natsTLSCA, TLSCert: s.natsTLSCert, TLSKey: s.natsTLSKey,
	}
	if secret, err := secretfile.Load(s.secretFile); err == nil {
		if h, err := domain.NewHasher(secret); err == nil {
			c.User, c.Password = eventstore.EmbeddedUser, h.NATSPassword(eventstore.EmbeddedUser)
		}
	}
	return c
}

// connectNATS connects to the NATS server(s) keysd uses, failing fast with one line that
// says what to check. s.natsURL has passed checkNATSURLs.
func connectNATS(s settings) (*nats.Conn, error) {
	nc, err := eventstore.Connect(s.natsConfig())
	if errors.Is(err, nats.ErrNoServers) {
		return nil, fmt.Errorf("cannot reach NATS at %s: is keysd running? (%v)", eventstore.RedactURLs(s.natsURL), errors.Unwrap(err))
	}
	if err != nil {
		return nil, fmt.Errorf("cannot %v", err)
	}
	return nc, nil
}

// checkNATSURLs rejects a --nats-url that is not a list of NATS URLs, and TLS flags that do
// not go together: bad usage, not a connection failure.
func checkNATSURLs(s settings) error {
	if err := eventstore.CheckURLs(s.natsURL); err != nil {
		return usagef("--%s %v", flagNATSURL, err)
	}
	if (s.natsTLSCert == "") != (s.natsTLSKey == "") {
		return usagef("--%s and --%s go together: give both or neither", flagNATSTLSCert, flagNATSTLSKey)
	}
	return nil
}

// loadHasher reads the deployment's server-side secret. keysctl never creates it: a secret
// keysd does not share would issue credentials keysd rejects.
func loadHasher(path string) (*domain.Hasher, error) {
	secret, err := secretfile.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no server-side secret at %s: start keysd first (it creates the secret on first start), or pass --%s (env %s) with the secret file keysd uses",
			path, flagSecretFile, envSecretFile)
	}
	if err != nil {
		return nil, err
	}
	return domain.NewHasher(secret)
}
