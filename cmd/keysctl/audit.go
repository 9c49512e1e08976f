package main

import (
	"fmt"
	"net/url"
	"strings"

	flag "github.com/spf13/pflag"

	"github.com/keyledger/keyledger/eventstore"
)

// auditURL prints the URL an audit consumer connects to keysd's embedded server with: the
// server of --nats-url (keysd's embedded address by default) with the audit user and its
// password, derived from the secret file. That user may read the event stream and create
// consumers on it, and nothing else (eventstore.AuditPermissions).
func auditURL(*flag.FlagSet) func(*invocation) error {
	return func(inv *invocation) error {
		hasher, err := loadHasher(inv.secretFile)
		if err != nil {
			return err
		}
		var out []string
		for _, raw := range strings.Split(inv.natsURL, ",") {
			raw = strings.TrimSpace(raw)
			if !strings.Contains(raw, "://") {
				raw = "nats://" + raw
			}
			u, err := url.Parse(raw)
			if err != nil || u.Host == "" {
				return usagef("audit-url: --%s %q is not a NATS URL such as %s", flagNATSURL, eventstore.RedactURLs(raw), defaultNATSURL)
			}
			u.User = url.UserPassword(eventstore.AuditUser, hasher.NATSPassword(eventstore.AuditUser))
			u.Path, u.RawQuery, u.Fragment = "", "", ""
			out = append(out, u.String())
		}
		_, err = fmt.Fprintln(inv.stdout, strings.Join(out, ","))
		return err
	}
}
