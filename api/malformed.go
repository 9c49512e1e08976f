package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// Malformed HTTP: Go's HTTP server answers some requests itself, before any handler runs (a
// request line or header it cannot parse, an unsupported HTTP version or transfer coding,
// headers over MaxHeaderBytes, an Expect other than 100-continue), with a plain-text answer
// and no request id, and with 501 and 505 among them. net/http has no hook for those
// answers; it writes them straight to the connection, each in one write, in a fixed shape.
// Listener wraps keysd's listener so that such a write is replaced, on its way out, by the
// contract's JSON error (a 4xx, with x-stack-known-error and x-stack-request-id), and
// docs/reliability.md lists each case ("Malformed HTTP").

// Codes of the errors only the server itself answers (beyond the contract's table, like
// ROUTE_NOT_FOUND): malformed requests are SCHEMA_ERROR.
const (
	CodeRequestHeadersTooLarge = "REQUEST_HEADERS_TOO_LARGE"
	CodeExpectationFailed      = "EXPECTATION_FAILED"
)

// Listener returns ln whose connections replace net/http's own plain-text error answers
// with the contract's JSON errors.
func Listener(ln net.Listener) net.Listener { return &jsonErrorListener{Listener: ln} }

type jsonErrorListener struct{ net.Listener }

func (l *jsonErrorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &jsonErrorConn{Conn: c}, nil
}

// jsonErrorConn rewrites net/http's own error answers. A write is one only if it is the
// whole of such an answer: the status line, then exactly net/http's error headers (no Date,
// which every handler's answer has) or, for the 417 of an unknown Expect, the headers of an
// empty response with Connection: close. Handlers never answer with either shape.
type jsonErrorConn struct{ net.Conn }

// serverError is net/http's own error answer: "HTTP/1.1 400 Bad Request: reason\r\n" with
// Content-Type text/plain and Connection: close, and a body of the status and reason.
var serverError = regexp.MustCompile(`^HTTP/1\.1 (\d{3}) [^\r\n]*\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n(?s:(.*))$`)

// expectationFailed is the 417 net/http answers to an Expect header other than
// 100-continue, written through its response writer with no handler involved.
var expectationFailed = regexp.MustCompile(`^HTTP/1\.1 417 Expectation Failed\r\nConnection: close\r\nDate: [^\r\n]*\r\nContent-Length: 0\r\n\r\n$`)

func (c *jsonErrorConn) Write(p []byte) (int, error) {
	if out, ok := rewriteServerError(p); ok {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// rewriteServerError turns one of net/http's own error answers into the contract's JSON
// error; ok is false for anything else.
func rewriteServerError(p []byte) ([]byte, bool) {
	if !bytes.HasPrefix(p, []byte("HTTP/1.1 4")) && !bytes.HasPrefix(p, []byte("HTTP/1.1 5")) {
		return nil, false
	}
	var e apiError
	if m := serverError.FindSubmatch(p); m != nil {
		status, _ := strconv.Atoi(string(m[1]))
		e = serverAnswer(status, string(m[2]))
	} else if expectationFailed.Match(p) {
		e = apiError{Status: http.StatusExpectationFailed, Code: CodeExpectationFailed,
			Message: "The Expect header may only be 100-continue."}
	} else {
		return nil, false
	}
	body, err := json.Marshal(errorBody{Code: e.Code, Error: e.Message})
	if err != nil {
		return nil, false
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", e.Status, http.StatusText(e.Status))
	fmt.Fprintf(&b, "Content-Type: application/json; charset=utf-8\r\n")
	fmt.Fprintf(&b, "%s: %s\r\n%s: %s\r\n", headerKnownError, e.Code, headerRequestID, newRequestID())
	fmt.Fprintf(&b, "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n")
	fmt.Fprintf(&b, "Content-Length: %d\r\nConnection: close\r\n\r\n", len(body))
	b.Write(body)
	return b.Bytes(), true
}

// serverAnswer is the JSON error for net/http's own answer of status with body text, which
// is "400 Bad Request: reason" or just the status. None is a 5xx: a request net/http cannot
// serve is the client's fault (505 for an HTTP version other than 1.x, 501 for a transfer
// coding other than chunked) and becomes a 400.
func serverAnswer(status int, text string) apiError {
	reason := text
	if _, after, ok := strings.Cut(text, ": "); ok {
		reason = after
	}
	switch status {
	case http.StatusRequestHeaderFieldsTooLarge:
		return apiError{Status: status, Code: CodeRequestHeadersTooLarge,
			Message: "The request's headers are too large."}
	case http.StatusHTTPVersionNotSupported:
		return apiError{Status: http.StatusBadRequest, Code: CodeSchemaError,
			Message: "The request's HTTP version is not supported: use HTTP/1.0 or HTTP/1.1."}
	case http.StatusNotImplemented:
		return apiError{Status: http.StatusBadRequest, Code: CodeSchemaError,
			Message: "The request's Transfer-Encoding is not supported: only chunked is."}
	}
	msg := "The request is not valid HTTP."
	if reason != "" && reason != text {
		msg = "The request is not valid HTTP: " + reason + "."
	}
	return apiError{Status: http.StatusBadRequest, Code: CodeSchemaError, Message: msg}
}
