package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/internal/secretfile"
)

// connectTimeout bounds the dial to each NATS server: an operator waiting on a CLI should
// learn quickly that nothing listens.
const connectTimeout = 2 * time.Second

// connectNATS connects to the NATS server(s) keysd uses, failing fast with one line that
// says what to check. urls has passed checkNATSURLs.
func connectNATS(urls string) (*nats.Conn, error) {
	nc, err := nats.Connect(urls, nats.Name("keysctl"), nats.Timeout(connectTimeout))
	if errors.Is(err, nats.ErrNoServers) {
		return nil, fmt.Errorf("cannot reach NATS at %s: is keysd running? (%v)", redactURLs(urls), err)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot connect to NATS at %s: %v", redactURLs(urls), err)
	}
	return nc, nil
}

// checkNATSURLs rejects a --nats-url that is not a list of NATS URLs: bad usage, not a
// connection failure.
func checkNATSURLs(urls string) error {
	for _, raw := range strings.Split(urls, ",") {
		raw = strings.TrimSpace(raw)
		u, err := parseNATSURL(raw)
		if err != nil || u.Host == "" {
			return usagef("--%s %q is not a NATS URL such as %s", flagNATSURL, raw, defaultNATSURL)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return usagef("--%s %q: scheme must be nats, tls, ws or wss", flagNATSURL, raw)
		}
	}
	return nil
}

// parseNATSURL parses one server URL as nats.go does, which allows host:port alone.
func parseNATSURL(raw string) (*url.URL, error) {
	if !strings.Contains(raw, "://") {
		raw = "nats://" + raw
	}
	return url.Parse(raw)
}

// redactURLs hides passwords and tokens in NATS URLs before they are printed.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, raw := range parts {
		raw = strings.TrimSpace(raw)
		u, err := parseNATSURL(raw)
		switch {
		case err != nil:
			parts[i] = "<unparsable URL>"
		case u.User == nil:
			parts[i] = raw
		default:
			if _, hasPassword := u.User.Password(); !hasPassword {
				u.User = url.User("xxxxx") // a user name alone is a token
			}
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
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
