package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/textproto"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"
)

// requestInfo is what the middleware learns about a request while it is handled, for the
// request log and the metrics.
type requestInfo struct {
	id        string
	route     string // the route template; "unmatched" when no route matched
	projectID string // once authenticated
	err       *apiError
}

type infoKey struct{}

func infoOf(ctx context.Context) *requestInfo {
	i, _ := ctx.Value(infoKey{}).(*requestInfo)
	return i
}

// requestID is the x-stack-request-id of the request ctx belongs to.
func requestID(ctx context.Context) string {
	if i := infoOf(ctx); i != nil {
		return i.id
	}
	return ""
}

func newRequestID() string {
	if id, err := uuid.NewV7(); err == nil {
		return id.String()
	}
	return uuid.NewString()
}

// statusWriter records the status and size of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (deadlines, flushing).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// instrument is the outermost middleware: it gives the request its id and the headers every
// response carries, turns a panic into a 500, and logs and counts the request.
func (s *server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &requestInfo{id: newRequestID(), route: "unmatched"}
		r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
		sw := &statusWriter{ResponseWriter: w}
		h := w.Header()
		h[canonicalRequestID] = []string{info.id}
		h["Cache-Control"] = noStore // shared, never changed: Set and Add replace or copy
		h["X-Content-Type-Options"] = noSniff

		s.metrics.inFlight.Inc()
		defer func() {
			s.metrics.inFlight.Dec()
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.metrics.panics.Inc()
				s.log.ErrorContext(r.Context(), "panic while handling a request",
					"request_id", info.id, "method", r.Method, "route", info.route,
					"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if sw.status == 0 {
					writeError(sw, r, internalError(r, fmt.Errorf("panic: %v", p)))
				}
			}
			s.finish(r, sw, info, time.Since(start))
		}()
		next.ServeHTTP(sw, r)
	})
}

// The headers instrument sets on every response, under the names net/http stores them by.
var (
	canonicalRequestID = textproto.CanonicalMIMEHeaderKey(headerRequestID)
	noStore, noSniff   = []string{"no-store"}, []string{"nosniff"}
)

// finish logs a handled request and records its metrics. A 5xx is logged with its cause.
func (s *server) finish(r *http.Request, sw *statusWriter, info *requestInfo, d time.Duration) {
	status := sw.status
	if status == 0 {
		status = http.StatusOK
	}
	code := strconv.Itoa(status)
	s.metrics.requests.WithLabelValues(r.Method, info.route, code).Inc()
	s.metrics.duration.WithLabelValues(r.Method, info.route, code).Observe(d.Seconds())
	if e := info.err; e != nil {
		s.metrics.errors.WithLabelValues(e.Code).Inc()
	}

	// One line per request at debug: at info a busy instance wrote tens of megabytes an hour.
	// A server failure (500) is an error; a 503 (an outage, a lost race) is counted in the
	// metrics, and the outage itself is logged once by whoever noticed it (the NATS
	// connection, the projector), not once per request.
	level := slog.LevelDebug
	if e := info.err; e != nil && status >= 500 && status != http.StatusServiceUnavailable && !isClientGone(r, e.cause) {
		level = slog.LevelError
	}
	if !s.log.Enabled(r.Context(), level) {
		return // no line: build none (a check's attributes cost an allocation per request)
	}
	attrs := []slog.Attr{
		slog.String("request_id", info.id),
		slog.String("method", r.Method),
		slog.String("route", info.route),
		slog.Int("status", status),
		slog.Duration("duration", d),
		slog.Int("bytes", sw.bytes),
	}
	if info.projectID != "" {
		attrs = append(attrs, slog.String("project_id", info.projectID))
	}
	if e := info.err; e != nil {
		attrs = append(attrs, slog.String("code", e.Code))
		if e.cause != nil {
			attrs = append(attrs, slog.String("err", e.cause.Error()))
		}
		if status >= 500 && isClientGone(r, e.cause) {
			attrs = append(attrs, slog.Bool("client_gone", true))
		}
	}
	s.log.LogAttrs(r.Context(), level, "request", attrs...)
}

// recordRoute notes the template of the route that matched, for logs and metric labels
// (a template, never a path, so that labels stay few and carry no ids).
func recordRoute(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if route := mux.CurrentRoute(r); route != nil {
			if tpl, err := route.GetPathTemplate(); err == nil {
				if info := infoOf(r.Context()); info != nil {
					info.route = tpl
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}
