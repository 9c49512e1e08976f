package eventstore_test

import (
	"net"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/eventstore"
)

// A busy address is one clear error at once, not a 30-second wait for a server that never
// becomes ready.
func TestEmbeddedServerOnABusyAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = eventstore.StartEmbedded(eventstore.EmbeddedConfig{Addr: ln.Addr().String(), DataDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "cannot listen") {
		t.Fatalf("StartEmbedded on a busy address: %v", err)
	}
}
