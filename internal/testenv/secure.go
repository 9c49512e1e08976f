package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// SecureNATSOptions say what a SecureNATS server demands of its clients.
type SecureNATSOptions struct {
	// MutualTLS: TLS with a certificate from the test's CA, and a client certificate from it.
	MutualTLS bool
	// Creds: operator mode (decentralised JWT auth); a client needs a user's credentials file.
	Creds bool
}

// SecureNATS is an in-process JetStream server that demands TLS and/or credentials, with the
// files a client needs to reach it, all made by the test.
type SecureNATS struct {
	URL string
	// CAFile is the PEM of the CA that signed the server's and the client's certificates.
	CAFile string
	// CertFile and KeyFile are a client certificate the server accepts, and its key.
	CertFile, KeyFile string
	// CredsFile holds a user JWT and nkey seed the server accepts.
	CredsFile string
	// ForeignCredsFile is a well-formed credentials file of an account the server does not
	// trust.
	ForeignCredsFile string
}

// NewSecureNATS starts a SecureNATS server for the test.
func NewSecureNATS(t testing.TB, o SecureNATSOptions) *SecureNATS {
	t.Helper()
	dir := t.TempDir()
	port := FreePort(t)
	s := &SecureNATS{URL: fmt.Sprintf("nats://127.0.0.1:%d", port)}
	opts := &server.Options{
		ServerName: "keyledger-secure-test", Host: "127.0.0.1", Port: port,
		JetStream: true, StoreDir: filepath.Join(dir, "jetstream"), NoLog: true, NoSigs: true,
	}
	if o.MutualTLS {
		ca, caKey := newCA(t)
		s.CAFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", ca.Raw)
		serverCert := issue(t, ca, caKey, "127.0.0.1", x509.ExtKeyUsageServerAuth)
		clientCert := issue(t, ca, caKey, "keyledger-test-client", x509.ExtKeyUsageClientAuth)
		s.CertFile = writePEM(t, dir, "client.pem", "CERTIFICATE", clientCert.Certificate[0])
		keyDER, err := x509.MarshalPKCS8PrivateKey(clientCert.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		s.KeyFile = writePEM(t, dir, "client-key.pem", "PRIVATE KEY", keyDER)
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		opts.TLS, opts.TLSVerify, opts.TLSTimeout = true, true, 5
		opts.TLSConfig = &tls.Config{
			Certificates: []tls.Certificate{serverCert}, ClientCAs: pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
		}
	}
	if o.Creds {
		operator, operatorClaims := newOperator(t)
		system, systemJWT := newAccount(t, operator, "SYS", false)
		account, accountJWT := newAccount(t, operator, "KEYLEDGER", true)
		resolver := &server.MemAccResolver{}
		for pub, claims := range map[string]string{publicKey(t, system): systemJWT, publicKey(t, account): accountJWT} {
			if err := resolver.Store(pub, claims); err != nil {
				t.Fatal(err)
			}
		}
		opts.TrustedOperators = []*jwt.OperatorClaims{operatorClaims}
		opts.AccountResolver = resolver
		opts.SystemAccount = publicKey(t, system)
		s.CredsFile = writeCreds(t, dir, "user.creds", account)
		foreignOperator, _ := newOperator(t)
		foreign, _ := newAccount(t, foreignOperator, "FOREIGN", true)
		s.ForeignCredsFile = writeCreds(t, dir, "foreign.creds", foreign)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("secure NATS: %v", err)
	}
	go ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("secure NATS server not ready after 10s")
	}
	return s
}

func newCA(t testing.TB) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "keyledger test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// issue makes a certificate signed by the CA, for an IP address or a client name.
func issue(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePEM(t testing.TB, dir, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newOperator(t testing.TB) (nkeys.KeyPair, *jwt.OperatorClaims) {
	t.Helper()
	kp, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.NewOperatorClaims(publicKey(t, kp))
	claims.Name = "keyledger-test"
	encoded, err := claims.Encode(kp)
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := jwt.DecodeOperatorClaims(encoded)
	if err != nil {
		t.Fatal(err)
	}
	return kp, decoded
}

// newAccount makes an account signed by the operator, with JetStream when asked.
func newAccount(t testing.TB, operator nkeys.KeyPair, name string, jetStream bool) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.NewAccountClaims(publicKey(t, kp))
	claims.Name = name
	if jetStream {
		claims.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	}
	encoded, err := claims.Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	return kp, encoded
}

// writeCreds writes a credentials file of a new user of the account.
func writeCreds(t testing.TB, dir, name string, account nkeys.KeyPair) string {
	t.Helper()
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.NewUserClaims(publicKey(t, user))
	encoded, err := claims.Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := user.Seed()
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(encoded, seed)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func publicKey(t testing.TB, kp nkeys.KeyPair) string {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
