package eventstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
)

// TestExternalNATSConfigOfTheDocs loads the nats-server configuration that docs/events.md
// gives operators of an external NATS ("On an external NATS: accounts and permissions") with
// nats-server's own parser, starts a server from it, and checks that keysd's user can create
// the streams and append, and that the auditor's permissions are eventstore.AuditPermissions:
// it may read and follow the stream, and may neither publish onto keyledger.> nor delete,
// purge or change any stream.
func TestExternalNATSConfigOfTheDocs(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(), "docs", "events.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "## On an external NATS: accounts and permissions")
	if !ok {
		t.Fatal("docs/events.md has no section \"On an external NATS: accounts and permissions\"")
	}
	_, block, ok := strings.Cut(section, "\n```\n")
	block, _, closed := strings.Cut(block, "\n```\n")
	if !ok || !closed {
		t.Fatal("the section has no configuration block")
	}
	dir := t.TempDir()
	if !strings.Contains(block, `"/var/lib/nats"`) {
		t.Fatal(`the configuration block stores JetStream elsewhere than "/var/lib/nats"`)
	}
	port := testenv.FreePort(t)
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\n", port) + strings.Replace(block, `"/var/lib/nats"`, `"`+filepath.Join(dir, "js")+`"`, 1)
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KEYSD_PASSWORD", "keysd-pw")
	t.Setenv("AUDITOR_PASSWORD", "audit-pw")
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server refuses the configuration of docs/events.md: %v\n%s", err, conf)
	}
	var auditor *server.User
	for _, u := range opts.Users {
		if u.Username == "auditor" {
			auditor = u
		}
	}
	want := eventstore.AuditPermissions("KEYLEDGER")
	if auditor == nil || auditor.Permissions == nil || auditor.Permissions.Publish == nil || auditor.Permissions.Subscribe == nil ||
		!slices.Equal(auditor.Permissions.Publish.Allow, want.Publish.Allow) ||
		!slices.Equal(auditor.Permissions.Subscribe.Allow, want.Subscribe.Allow) ||
		auditor.Permissions.Publish.Deny != nil || auditor.Permissions.Subscribe.Deny != nil {
		t.Fatalf("the docs' auditor permissions differ from eventstore.AuditPermissions:\n docs: %+v\n want: publish %v subscribe %v", auditor, want.Publish.Allow, want.Subscribe.Allow)
	}
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("the server of the docs' configuration is not ready")
	}
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("the docs' server admits a client without credentials")
	}
	keysd, err := nats.Connect(url, nats.UserInfo("keysd", "keysd-pw"))
	if err != nil {
		t.Fatalf("keysd's user: %v", err)
	}
	defer keysd.Close()
	ctx := context.Background()
	s, err := eventstore.Open(ctx, keysd, eventstore.Config{EventKey: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatalf("keysd's user cannot open the event store: %v", err)
	}
	project := uuid.NewString()
	if _, err := s.AppendKeyEvents(ctx, 0, []domain.Event{newKeyEvent(t, project)}); err != nil {
		t.Fatalf("keysd's user cannot append: %v", err)
	}
	checkAuditorOnlyReads(t, s, fmt.Sprintf("nats://auditor:audit-pw@127.0.0.1:%d", port), project)
}
