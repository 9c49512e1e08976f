package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/user"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	flag "github.com/spf13/pflag"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

// createdProject is the output of projects create (CONTRACT section 1).
type createdProject struct {
	ProjectID       string `json:"project_id"`
	SecretServerKey string `json:"secret_server_key"`
}

// projectsCreate appends a ProjectCreated event, recorded as the operator's doing, and
// prints the project id with its secret server key, which exists nowhere else.
func projectsCreate(fs *flag.FlagSet) func(*invocation) error {
	name := fs.String("name", "", "the project's `NAME` (required)")
	return func(inv *invocation) error {
		if *name == "" {
			return usagef("projects create: --name is required")
		}
		if err := checkNATSURLs(inv.settings); err != nil {
			return err
		}
		hasher, err := loadHasher(inv.secretFile)
		if err != nil {
			return err
		}
		nc, err := connectNATS(inv.settings)
		if err != nil {
			return err
		}
		defer nc.Close()
		store, err := eventstore.Open(inv.ctx, nc, eventstore.Config{EventKey: hasher.EventKey()})
		if err != nil {
			return fmt.Errorf("open event store on NATS at %s: %w", eventstore.RedactURLs(inv.natsURL), err)
		}
		handler, err := commands.New(store, nil, hasher, commands.Config{})
		if err != nil {
			return err
		}
		p, err := handler.CreateProject(inv.ctx, operator(), *name)
		var verr *domain.ValidationError
		if errors.As(err, &verr) {
			return usagef("projects create: --name: %v", verr)
		}
		if err != nil {
			return err
		}
		out, err := json.Marshal(createdProject{ProjectID: p.Project.ID, SecretServerKey: p.ServerKey})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(inv.stdout, "%s\n", out)
		return err
	}
}

// operator is the actor recorded on events keysctl appends: the OS user running it.
func operator() domain.Actor {
	id := "keysctl"
	if u, err := user.Current(); err == nil && u.Username != "" {
		id = u.Username
	}
	return domain.Actor{Type: domain.ActorOperator, ID: id}
}

// projectsAdminToken signs an admin access token with the deployment's secret. It needs no
// connection: the token is checked by keysd against the same secret.
func projectsAdminToken(fs *flag.FlagSet) func(*invocation) error {
	project := fs.String("project", "", "the project `ID` the token is for (required)")
	subject := fs.String("subject", "", "`WHO` the token names: the admin recorded as actor on the events (required)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid, as a Go `DURATION` such as 30m or 8h")
	return func(inv *invocation) error {
		switch {
		case *project == "":
			return usagef("projects admin-token: --project is required")
		case *subject == "":
			return usagef("projects admin-token: --subject is required")
		case *ttl <= 0:
			return usagef("projects admin-token: --ttl must be positive, got %s", *ttl)
		}
		id, err := uuid.Parse(*project)
		if err != nil {
			return usagef("projects admin-token: --project %q is not a project id (a UUID)", *project)
		}
		if err := checkSubject(*subject); err != nil {
			return usagef("projects admin-token: --subject %v", err)
		}
		hasher, err := loadHasher(inv.secretFile)
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		token, err := hasher.IssueAdminToken(domain.AdminClaims{
			ProjectID: id.String(), Subject: *subject, IssuedAt: now, ExpiresAt: now.Add(*ttl),
		})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(inv.stdout, token)
		return err
	}
}

// checkSubject keeps what lands on the audit trail as an actor id printable.
func checkSubject(s string) error {
	switch {
	case !utf8.ValidString(s):
		return errors.New("must be valid UTF-8")
	case strings.TrimSpace(s) != s:
		return errors.New("must not start or end with spaces")
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return errors.New("must not contain control characters")
	}
	return nil
}
