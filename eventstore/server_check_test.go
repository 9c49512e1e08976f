package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/internal/testenv"
)

func TestParseVersion(t *testing.T) {
	for _, c := range []struct {
		in           string
		major, minor int
		ok           bool
	}{
		{"2.15.2", 2, 15, true}, {"v2.12.0-beta.1", 2, 12, true}, {"2.9.10", 2, 9, true}, {"", 0, 0, false}, {"two.x", 0, 0, false},
	} {
		major, minor, ok := parseVersion(c.in)
		if major != c.major || minor != c.minor || ok != c.ok {
			t.Errorf("parseVersion(%q) = %d, %d, %v", c.in, major, minor, ok)
		}
	}
}

// A server without JetStream is refused with one line saying what to do.
func TestOpenRefusesAServerWithoutJetStream(t *testing.T) {
	port := testenv.FreePort(t)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, err = Open(context.Background(), nc, Config{Timeout: 2 * time.Second})
	if !errors.Is(err, ErrServerUnsupported) || !strings.Contains(err.Error(), "JetStream is not enabled") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Open on a server without JetStream: %v", err)
	}
}

func TestCheckVersion(t *testing.T) {
	for v, wantOK := range map[string]bool{"2.9.10": false, "2.11.4": false, "2.12.0": true, "2.15.2": true, "3.0.0": true, "": false} {
		err := checkVersion(v, "nats://n:4222")
		if (err == nil) != wantOK {
			t.Errorf("checkVersion(%q) = %v", v, err)
		}
		if err != nil && (!errors.Is(err, ErrServerUnsupported) || !strings.Contains(err.Error(), "2.12 or later")) {
			t.Errorf("checkVersion(%q): %v, want one line naming 2.12", v, err)
		}
	}
}
