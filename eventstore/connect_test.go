package eventstore_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/internal/testenv"
)

// openThrough connects with c and opens the event store: JetStream works through it.
func openThrough(t *testing.T, c eventstore.ConnectConfig) error {
	t.Helper()
	nc, err := eventstore.Connect(c)
	if err != nil {
		return err
	}
	defer nc.Close()
	_, err = eventstore.Open(t.Context(), nc, eventstore.Config{})
	return err
}

func TestConnectMutualTLS(t *testing.T) {
	t.Parallel()
	ns := testenv.NewSecureNATS(t, testenv.SecureNATSOptions{MutualTLS: true})
	good := eventstore.ConnectConfig{URLs: ns.URL, Name: "test", TLSCA: ns.CAFile, TLSCert: ns.CertFile, TLSKey: ns.KeyFile, Timeout: 5 * time.Second}
	if err := openThrough(t, good); err != nil {
		t.Fatalf("with the CA and a client certificate: %v", err)
	}
	tlsScheme := good
	tlsScheme.URLs = strings.Replace(ns.URL, "nats://", "tls://", 1)
	if err := openThrough(t, tlsScheme); err != nil {
		t.Errorf("tls:// URL: %v", err)
	}
	noClientCert := good
	noClientCert.TLSCert, noClientCert.TLSKey = "", ""
	if err := openThrough(t, noClientCert); err == nil {
		t.Error("connected without a client certificate")
	}
	noCA := good
	noCA.TLSCA = ""
	if err := openThrough(t, noCA); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA: %v, want a certificate error", err)
	}
	if err := openThrough(t, eventstore.ConnectConfig{URLs: ns.URL, TLSCert: ns.CertFile}); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Errorf("a certificate without its key: %v", err)
	}
}

func TestConnectCredentialsFile(t *testing.T) {
	t.Parallel()
	ns := testenv.NewSecureNATS(t, testenv.SecureNATSOptions{Creds: true})
	if err := openThrough(t, eventstore.ConnectConfig{URLs: ns.URL, CredsFile: ns.CredsFile}); err != nil {
		t.Fatalf("with the user's credentials: %v", err)
	}
	if err := openThrough(t, eventstore.ConnectConfig{URLs: ns.URL, CredsFile: ns.ForeignCredsFile}); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("an untrusted account's credentials: %v, want an authorization error", err)
	}
	if err := openThrough(t, eventstore.ConnectConfig{URLs: ns.URL}); err == nil {
		t.Error("connected without credentials")
	}
	if err := openThrough(t, eventstore.ConnectConfig{URLs: ns.URL, CredsFile: ns.CredsFile + ".missing"}); err == nil {
		t.Error("connected with a missing credentials file")
	}
}

func TestConnectWithMutualTLSAndCredentials(t *testing.T) {
	t.Parallel()
	ns := testenv.NewSecureNATS(t, testenv.SecureNATSOptions{MutualTLS: true, Creds: true})
	c := eventstore.ConnectConfig{URLs: ns.URL, CredsFile: ns.CredsFile, TLSCA: ns.CAFile, TLSCert: ns.CertFile, TLSKey: ns.KeyFile}
	if err := openThrough(t, c); err != nil {
		t.Fatal(err)
	}
}

// TestConnectUserAndTokenInURL: a user and password or a token in the URL are used as nats.go
// reads them, and never appear in an error.
func TestConnectUserAndTokenInURL(t *testing.T) {
	t.Parallel()
	start := func(o *server.Options) string {
		port := testenv.FreePort(t)
		o.Host, o.Port, o.NoLog, o.NoSigs, o.JetStream, o.StoreDir = "127.0.0.1", port, true, true, true, t.TempDir()
		ns, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		t.Cleanup(ns.Shutdown)
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("server not ready")
		}
		return fmt.Sprintf("127.0.0.1:%d", port)
	}
	userAddr := start(&server.Options{Username: "ops", Password: "hunter2"})
	tokenAddr := start(&server.Options{Authorization: "s3cr3tt0ken"})

	for _, tc := range []struct {
		url    string
		ok     bool
		secret string
	}{
		{"nats://ops:hunter2@" + userAddr, true, "hunter2"},
		{"nats://ops:wrong-hunter2@" + userAddr, false, "wrong-hunter2"},
		{"nats://s3cr3tt0ken@" + tokenAddr, true, "s3cr3tt0ken"},
		{"nats://wr0ngt0ken@" + tokenAddr, false, "wr0ngt0ken"},
		{"nats://" + tokenAddr, false, ""},
	} {
		err := openThrough(t, eventstore.ConnectConfig{URLs: tc.url})
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", eventstore.RedactURLs(tc.url), err, tc.ok)
		}
		if err != nil && tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
			t.Errorf("the error shows the credential: %v", err)
		}
	}
}

func TestRedactURLs(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                         "nats://127.0.0.1:4222",
		"nats://ops:hunter2@n1:4222, tls://tok@n2:4222": "nats://ops:xxxxx@n1:4222,tls://xxxxx@n2:4222",
		"ops:hunter2@n1:4222":                           "nats://ops:xxxxx@n1:4222",
		"nats://ops:hunter2@n1:port":                    "nats://xxxxx@n1:port",
		"nats://ops:hunter2@n1:4222/%zz":                "nats://xxxxx@n1:4222/%zz",
		"":                                              "",
	} {
		if got := eventstore.RedactURLs(in); got != want {
			t.Errorf("RedactURLs(%q) = %q, want %q", in, got, want)
		}
	}
	if err := eventstore.CheckURLs("nats://ops:hunter2@n1:port"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("CheckURLs of a bad URL with a password: %v", err)
	}
}
