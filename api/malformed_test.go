package api_test

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/api"
	"github.com/keyledger/keyledger/internal/service"
	"github.com/keyledger/keyledger/internal/testenv"
	"github.com/keyledger/keyledger/projections"
)

// malformedRequests are the rows of docs/reliability.md's table "Malformed HTTP": requests
// that Go's HTTP server answers by itself, before any handler runs (goStatus), and what
// keysd answers instead (status and code, JSON with a request id). name is the row's first
// column.
var malformedRequests = []struct {
	name     string
	raw      string
	goStatus int
	status   int
	code     string
}{
	{"HTTP/3.0 request line", "GET /healthz HTTP/3.0\r\nHost: x\r\n\r\n", 505, 400, "SCHEMA_ERROR"},
	{"HTTP/2.0 request line (not the h2c preface)", "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505, 400, "SCHEMA_ERROR"},
	{"HTTP/0.9 request line (no version)", "GET /healthz\r\n\r\n", 400, 400, "SCHEMA_ERROR"},
	{"not a request line", "HELLO\r\n\r\n", 400, 400, "SCHEMA_ERROR"},
	{"invalid method", "G(T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, 400, "SCHEMA_ERROR"},
	{"two spaces after the method", "GET  /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, 400, "SCHEMA_ERROR"},
	{"unparsable request target", "GET %zz HTTP/1.1\r\nHost: x\r\n\r\n", 400, 400, "SCHEMA_ERROR"},
	{"Transfer-Encoding: gzip", "POST /api/v1/user-api-keys HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, 400, "SCHEMA_ERROR"},
	{"Transfer-Encoding: gzip, chunked", "POST /api/v1/user-api-keys HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, 400, "SCHEMA_ERROR"},
	{"Transfer-Encoding twice", "POST /api/v1/user-api-keys HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501, 400, "SCHEMA_ERROR"},
	{"bare CR in a header value", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400, 400, "SCHEMA_ERROR"},
	{"NUL in a header value", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, 400, "SCHEMA_ERROR"},
	{"space in a header name", "GET /healthz HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n", 400, 400, "SCHEMA_ERROR"},
	{"header line without a colon", "GET /healthz HTTP/1.1\r\nHost: x\r\nfoo\r\n\r\n", 400, 400, "SCHEMA_ERROR"},
	{"folded header line (obs-fold)", "GET /healthz HTTP/1.1\r\nHost: x\r\n X-A: b\r\n\r\n", 400, 400, "SCHEMA_ERROR"},
	{"two different Content-Lengths", "POST /api/v1/user-api-keys HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, 400, "SCHEMA_ERROR"},
	{"negative Content-Length", "POST /api/v1/user-api-keys HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, 400, "SCHEMA_ERROR"},
	{"HTTP/1.1 without Host", "GET /healthz HTTP/1.1\r\n\r\n", 400, 400, "SCHEMA_ERROR"},
	{"two Host headers", "GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, 400, "SCHEMA_ERROR"},
	{"malformed Host", "GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n", 400, 400, "SCHEMA_ERROR"},
	{"headers over 16 KiB", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + strings.Repeat("a", 20<<10) + "\r\n\r\n", 431, 431, "REQUEST_HEADERS_TOO_LARGE"},
	{"request line over 16 KiB", "GET /" + strings.Repeat("a", 20<<10) + " HTTP/1.1\r\nHost: x\r\n\r\n", 431, 431, "REQUEST_HEADERS_TOO_LARGE"},
	{"Expect other than 100-continue", "POST /api/v1/user-api-keys HTTP/1.1\r\nHost: x\r\nExpect: nothing\r\nContent-Length: 0\r\n\r\n", 417, 417, "EXPECTATION_FAILED"},
	{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 200, 404, "ROUTE_NOT_FOUND"},
}

// rawExchange sends raw bytes on a new connection and reads the answer.
func rawExchange(t *testing.T, addr, raw string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: no HTTP answer: %v", raw[:min(len(raw), 60)], err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res, body
}

// TestMalformedHTTP sends each row of the table over TCP, to a plain net/http server (whose
// own answer the table documents) and to keysd's (api.NewServer on api.Listener), which must
// answer the contract's JSON 4xx with x-stack-known-error and x-stack-request-id; and checks
// that docs/reliability.md documents every row with those answers.
func TestMalformedHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("a handler was reached by %s %s", r.Method, r.RequestURI)
		w.WriteHeader(299)
	})
	plain := &http.Server{Handler: handler, MaxHeaderBytes: 16 << 10}
	plainLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = plain.Serve(plainLn) }()
	t.Cleanup(func() { plain.Close() })

	svc, err := service.Start(service.Config{Store: e.store, ReadModel: projections.NewMemory(), Hasher: e.hasher,
		API: api.Deps{Logger: slog.New(slog.NewJSONHandler(e.logs, nil))}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	keysd := api.NewServer("", svc.Handler)
	keysdLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = keysd.Serve(api.Listener(keysdLn)) }()
	t.Cleanup(func() { keysd.Close() })

	doc, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(), "docs", "reliability.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range malformedRequests {
		if c.name != "OPTIONS *" { // the plain server's handler would be reached by nothing else
			if res, _ := rawExchange(t, plainLn.Addr().String(), c.raw); res.StatusCode != c.goStatus {
				t.Errorf("%s: Go's server answers %d, the table says %d", c.name, res.StatusCode, c.goStatus)
			}
		}
		res, body := rawExchange(t, keysdLn.Addr().String(), c.raw)
		var got struct{ Code, Error string }
		if err := json.Unmarshal(body, &got); err != nil || res.StatusCode != c.status || got.Code != c.code || got.Error == "" ||
			res.Header.Get("x-stack-known-error") != c.code || res.Header.Get("x-stack-request-id") == "" ||
			!strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") || res.StatusCode >= 500 {
			t.Errorf("%s: keysd answers %d %v %s, want %d %s as JSON with a request id", c.name, res.StatusCode, res.Header, body, c.status, c.code)
		}
		row := "| " + c.name + " |"
		line := ""
		for l := range strings.SplitSeq(string(doc), "\n") {
			if strings.HasPrefix(l, row) {
				line = l
			}
		}
		if !strings.Contains(line, "| "+strconv.Itoa(c.goStatus)+" ") || !strings.Contains(line, "`"+strconv.Itoa(c.status)+" "+c.code+"`") {
			t.Errorf("docs/reliability.md, table \"Malformed HTTP\": no row %q with Go's %d and keysd's `%d %s`", c.name, c.goStatus, c.status, c.code)
		}
	}
}
