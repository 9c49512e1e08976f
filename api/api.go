package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyledger/keyledger/commands"
	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/projections"
)

// Waiter is the projector as the API sees it: how far it has applied the stream, and a way to
// wait until it has applied a given sequence (read-your-writes).
type Waiter interface {
	// WaitFor returns once the read model has applied every event up to seq, or ctx's error.
	WaitFor(ctx context.Context, seq uint64) error
	// Position is the stream sequence of the last event the read model applied.
	Position() uint64
	// Ready tells whether the projector has caught up enough to serve reads.
	Ready() bool
}

// Deps is what the HTTP API needs from the rest of keysd.
type Deps struct {
	// Commands executes create and update.
	Commands *commands.Handler
	// ReadModel answers get, list and check, and project lookups.
	ReadModel projections.ReadModel
	// Projector keeps ReadModel up to date; requests wait on it for read-your-writes.
	Projector Waiter
	// LastUse records successful checks and tells each key's last one. Nil: keys show no
	// last use (last_used_at null) and checks record none.
	LastUse *projections.LastUse
	// Idempotency keeps the records of Idempotency-Key requests (eventstore's bucket). Nil:
	// the header is checked but requests run as if it were absent.
	Idempotency IdempotencyRecords
	// Store is the event store: project lookups the read model cannot answer yet, the stream's
	// last sequence for the read barrier, and the readiness probe.
	Store *eventstore.Store
	// Hasher checks secret server keys, secret API keys and admin tokens.
	Hasher *domain.Hasher
	// Logger receives one line per request (at debug level) and the causes of server
	// failures. Default slog.Default().
	Logger *slog.Logger
	// Clock is the time that expiry and admin tokens are checked against. Default time.Now.
	Clock func() time.Time
	// ReadBarrier makes every read (check, get, list) first wait until the projector has
	// reached the stream's last sequence as of the read's arrival, so that a change
	// acknowledged by another keysd is seen at once although this keysd serves keys from its
	// own memory (readBarrier). The stream is asked once for all the reads arriving together.
	ReadBarrier bool
	// Registry is the Prometheus registry served at /metrics and where the API's metrics are
	// registered, with the Go and process collectors unless it has them. Default: a new one.
	Registry *prometheus.Registry
	// WaitTimeout bounds how long a request waits for the projector. Default 5 seconds.
	WaitTimeout time.Duration
	// MaxInFlight is how many API requests are handled at once; more are shed with 503
	// SERVICE_UNAVAILABLE and Retry-After. Default 512.
	MaxInFlight int
	// RateLimit is how many API requests per second each project may make, checked after
	// authentication; more get 429 RATE_LIMITED with Retry-After. 0: no limit.
	RateLimit float64
	// RateBurst is how many requests a project may make at once above RateLimit. Default
	// twice RateLimit.
	RateBurst int
	// AuthFailureRate is how many failed authentications per second each client address may
	// have (an unknown project, a wrong secret server key, an admin token refused); once its
	// bucket of AuthFailureBurst is spent, every API request from that address gets 429
	// RATE_LIMITED with Retry-After, before its credentials are looked at. 0: no limit.
	AuthFailureRate float64
	// AuthFailureBurst is how many failures an address may have at once above
	// AuthFailureRate. Default ten times AuthFailureRate.
	AuthFailureBurst int
	// CredentialScanningRate is how many credential-scanning reports per second each client
	// address may send (CONTRACT section 6); more get 429 RATE_LIMITED. Default 1.
	CredentialScanningRate float64
	// CredentialScanningBurst is how many reports an address may send at once above
	// CredentialScanningRate. Default 20.
	CredentialScanningBurst int
	// CredentialScanningMinDuration is the least time a credential-scanning report takes to
	// answer, whatever the key, so that its timing does not tell a live key from another.
	// Default 250 ms.
	CredentialScanningMinDuration time.Duration
	// ReadinessChecks are checked by GET /readyz after the built-in ones (event store,
	// projector, read model); each needs a name of its own.
	ReadinessChecks []ReadinessCheck
}

func (d *Deps) setDefaults() {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Clock == nil {
		d.Clock = time.Now
	}
	if d.WaitTimeout == 0 {
		d.WaitTimeout = 5 * time.Second
	}
	if d.MaxInFlight == 0 {
		d.MaxInFlight = 512
	}
	if d.CredentialScanningRate == 0 {
		d.CredentialScanningRate = 1
	}
	if d.CredentialScanningBurst == 0 {
		d.CredentialScanningBurst = 20
	}
	if d.CredentialScanningMinDuration == 0 {
		d.CredentialScanningMinDuration = 250 * time.Millisecond
	}
}

// Validate reports every missing dependency and bad setting at once.
func (d Deps) Validate() error {
	var errs []error
	if d.Commands == nil {
		errs = append(errs, errors.New("api: Commands is required"))
	}
	if d.ReadModel == nil {
		errs = append(errs, errors.New("api: ReadModel is required"))
	}
	if d.Projector == nil {
		errs = append(errs, errors.New("api: Projector is required"))
	}
	if d.Store == nil {
		errs = append(errs, errors.New("api: Store is required"))
	}
	if d.Hasher == nil {
		errs = append(errs, errors.New("api: Hasher is required"))
	}
	if d.WaitTimeout < 0 {
		errs = append(errs, fmt.Errorf("api: WaitTimeout must not be negative, got %s", d.WaitTimeout))
	}
	if d.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("api: MaxInFlight must not be negative, got %d", d.MaxInFlight))
	}
	if d.CredentialScanningRate < 0 || d.CredentialScanningBurst < 0 || d.CredentialScanningMinDuration < 0 {
		errs = append(errs, fmt.Errorf("api: CredentialScanningRate, CredentialScanningBurst and CredentialScanningMinDuration must not be negative"))
	}
	names := map[string]bool{"event_store": true, "projector": true, "read_model": true}
	for _, c := range d.ReadinessChecks {
		if c.Name == "" || c.Check == nil || names[c.Name] {
			errs = append(errs, fmt.Errorf("api: readiness check %q needs a name of its own and a Check", c.Name))
		}
		names[c.Name] = true
	}
	if d.RateLimit < 0 || d.RateBurst < 0 {
		errs = append(errs, fmt.Errorf("api: RateLimit and RateBurst must not be negative, got %g and %d", d.RateLimit, d.RateBurst))
	}
	if d.AuthFailureRate < 0 || d.AuthFailureBurst < 0 {
		errs = append(errs, fmt.Errorf("api: AuthFailureRate and AuthFailureBurst must not be negative, got %g and %d", d.AuthFailureRate, d.AuthFailureBurst))
	}
	return errors.Join(errs...)
}

// server holds the API's state; its methods are the handlers.
type server struct {
	d        Deps
	log      *slog.Logger
	projects projectCache
	metrics  *metrics
	router   *mux.Router
	inFlight chan struct{}
	limiter  *limiter // per project
	// authLimiter limits failed authentications per client address.
	authLimiter *limiter
	// scanLimiter limits credential-scanning reports per client address.
	scanLimiter *limiter
	replays     replayCache // completed idempotency records, for repeats
	position    *streamPosition
}

// Route names; routeMethodNotAllowed marks a route that only answers 405.
const routeMethodNotAllowed = "method-not-allowed"

// NewHandler returns keysd's whole HTTP handler: the user- and team-API-key endpoints and Stack Auth's
// user lookup under /api/v1, GET /healthz, GET /readyz and GET /metrics.
func NewHandler(d Deps) (http.Handler, error) {
	d.setDefaults()
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	s := &server{d: d, log: d.Logger, inFlight: make(chan struct{}, d.MaxInFlight),
		limiter: newLimiter(d.RateLimit, d.RateBurst, "Too many requests for this project; retry the request later."),
		authLimiter: newLimiter(d.AuthFailureRate, authFailureBurst(d),
			"Too many failed authentications from this address; retry the request later."),
		scanLimiter: newLimiter(d.CredentialScanningRate, d.CredentialScanningBurst,
			"Too many credential-scanning reports from this address; retry the request later.")}
	s.position = &streamPosition{ask: d.Store.Position, timeout: d.WaitTimeout}
	m, err := newMetrics(d.Registry, d.Projector, d.Store, d.ReadModel, s.position, d.LastUse, &s.replays)
	if err != nil {
		return nil, err
	}
	s.metrics = m

	r := mux.NewRouter()
	// Unclean paths (//x, /a/../b) are not redirected: they match no route and get a JSON 404.
	r.SkipClean(true)
	r.UseEncodedPath()
	r.NotFoundHandler = http.HandlerFunc(s.routeNotFound)
	r.MethodNotAllowedHandler = http.HandlerFunc(s.methodNotAllowed)
	r.Use(recordRoute)

	r.HandleFunc("/healthz", s.healthz).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/readyz", s.readyz).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/metrics", metricsHandler(d.Registry)).Methods(http.MethodGet)
	r.HandleFunc("/api/v1/openapi.yaml", s.openAPI).Methods(http.MethodGet)

	for _, kind := range keyKinds {
		keys := kind.path
		// The static /check comes before {api_key_id}, for every method: POST is the check,
		// any other method is 405 rather than a lookup of a key called "check".
		r.Handle(keys+"/check", s.api(s.checkKey(kind))).Methods(http.MethodPost)
		r.HandleFunc(keys+"/check", s.methodNotAllowed).Name(routeMethodNotAllowed)
		r.Handle(keys, s.api(s.listKeys(kind))).Methods(http.MethodGet)
		r.Handle(keys, s.api(s.idempotent(s.createKey(kind)))).Methods(http.MethodPost)
		r.Handle(keys+"/{api_key_id}", s.api(s.getKey(kind))).Methods(http.MethodGet)
		r.Handle(keys+"/{api_key_id}", s.api(s.idempotent(s.updateKey(kind)))).Methods(http.MethodPatch)
		r.Handle(keys+"/{api_key_id}/events", s.api(s.keyEvents(kind))).Methods(http.MethodGet)
		r.Handle(keys+"/{api_key_id}/rotate", s.api(s.idempotent(s.rotateKey(kind)))).Methods(http.MethodPost)
	}
	r.Handle("/api/v1/users/{user_id}", s.api(s.getUser)).Methods(http.MethodGet)
	r.Handle("/api/v1/integrations/credential-scanning/revoke", s.unauthenticated(s.credentialScanningRevoke)).Methods(http.MethodPost)
	s.router = r

	return s.instrument(r), nil
}

// NewServer returns an http.Server for h with timeouts and a header limit, so that slow or
// greedy clients cannot hold its connections or memory. Serve it on Listener(ln), so that
// what net/http answers by itself is answered with JSON too.
func NewServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		// "OPTIONS *" reaches the router (a JSON 404 with a request id) instead of net/http's
		// own bodiless 200.
		DisableGeneralOptionsHandler: true,
	}
}

// apiHandler is an endpoint of /api/v1, called with the authenticated caller.
type apiHandler func(w http.ResponseWriter, r *http.Request, caller commands.Caller)

// api wraps an endpoint: load shedding, the client address's failed authentications,
// authentication, and the project's rate limit. The request's work is bounded by
// the event store's timeout on each call and Deps.WaitTimeout on the projector (a deadline
// on the whole request would replace the store's own, shorter, timeouts).
func (s *server) api(h apiHandler) http.Handler {
	return s.unauthenticated(func(w http.ResponseWriter, r *http.Request) {
		addr := clientAddress(r)
		if err := s.authLimiter.exhausted(addr, time.Now()); err != nil {
			writeError(w, r, err)
			return
		}
		caller, err := s.authenticate(r)
		if err != nil {
			if isGuess(err) {
				s.authLimiter.spend(addr, time.Now())
			}
			writeError(w, r, err)
			return
		}
		if info := infoOf(r.Context()); info != nil {
			info.projectID = caller.ProjectID
		}
		if err := s.limiter.allow(caller.ProjectID, time.Now()); err != nil {
			writeError(w, r, err)
			return
		}
		h(w, r, caller)
	})
}

// unauthenticated wraps an endpoint that takes no credentials: load shedding only.
func (s *server) unauthenticated(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case s.inFlight <- struct{}{}:
			defer func() { <-s.inFlight }()
		default:
			s.metrics.shed.Inc()
			writeError(w, r, &apiError{
				Status: http.StatusServiceUnavailable, Code: CodeServiceUnavailable,
				Message: "The service is overloaded; retry the request.", RetryAfter: retryAfterContention,
			})
			return
		}
		h(w, r)
	})
}

func (s *server) routeNotFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, r, &apiError{
		Status: http.StatusNotFound, Code: CodeRouteNotFound,
		Message: fmt.Sprintf("No route for %s %s.", r.Method, echo(r.URL.Path)),
	})
}

func (s *server) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	allowed := s.allowedMethods(r)
	if allowed != "" {
		w.Header().Set("Allow", allowed)
	}
	writeError(w, r, &apiError{
		Status: http.StatusMethodNotAllowed, Code: CodeMethodNotAllowed,
		Message: fmt.Sprintf("%s is not allowed on %s.", r.Method, echo(r.URL.Path)),
	})
}

// allowedMethods lists the methods a route of this path answers, for the Allow header.
func (s *server) allowedMethods(r *http.Request) string {
	var out string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPatch} {
		probe := r.Clone(r.Context())
		probe.Method = m
		var match mux.RouteMatch
		if s.router.Match(probe, &match) && match.MatchErr == nil && match.Route != nil &&
			match.Route.GetName() != routeMethodNotAllowed {
			if out != "" {
				out += ", "
			}
			out += m
		}
	}
	return out
}

func (s *server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
