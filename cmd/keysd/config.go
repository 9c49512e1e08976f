package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	flag "github.com/spf13/pflag"

	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/projections"
)

// config is keysd's configuration (CONTRACT section 1). Every flag also reads an environment
// variable, KEYS_ and its name in capitals with underscores (--http-addr: KEYS_HTTP_ADDR); the
// flag wins. A value keysd cannot use stops it at start: nothing is ignored.
type config struct {
	HTTPAddr         string
	NATSURL          string
	NATSCreds        string
	NATSTLSCA        string
	NATSTLSCert      string
	NATSTLSKey       string
	EmbeddedNATSAddr string
	DataDir          string
	DatabaseURL      string
	SecretFile       string
	StreamReplicas   int
	SyncAlways       bool
	ReadBarrier      string
	ShutdownTimeout  time.Duration
	StartupTimeout   time.Duration
	RateLimit        float64
	RateBurst        int
	AuthFailureRate  float64
	AuthFailureBurst int
	LogLevel         string
	PprofAddr        string
	KeyCache         string
	KeyCacheSize     int

	// UnknownVariables are KEYS_ variables of the environment that name no flag (a typo such
	// as KEYS_SYNC_ALWAY): keysd logs each at start rather than ignore it silently.
	UnknownVariables []string
	LastUseInterval  time.Duration
}

// defaultConfig is keysd with no flags and no variables: everything in one process.
func defaultConfig() config {
	return config{
		HTTPAddr:         "127.0.0.1:8080",
		EmbeddedNATSAddr: "127.0.0.1:4223",
		DataDir:          "./data",
		StreamReplicas:   1,
		ReadBarrier:      "auto",
		ShutdownTimeout:  20 * time.Second,
		StartupTimeout:   60 * time.Second,
		RateLimit:        1000,
		AuthFailureRate:  20,
		AuthFailureBurst: 200,
		LogLevel:         "info",
		KeyCache:         "auto",
		KeyCacheSize:     projections.DefaultKeyIndexSize,
		LastUseInterval:  5 * time.Second,
	}
}

// envPrefix starts the name of every variable keysd reads.
const envPrefix = "KEYS_"

// envOf is the variable a flag reads: --key-cache-size reads KEYS_KEY_CACHE_SIZE.
func envOf(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// flagSet declares keysd's flags on c, each defaulting to c's value. Its usage lines name
// each flag's variable.
func (c *config) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("keysd", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by main, as one line
	fs.SortFlags = false
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "HTTP listen `address`")
	fs.StringVar(&c.NATSURL, "nats-url", c.NATSURL, "NATS server(s), comma-separated `URLs`; a user and password or a token in a URL are used; empty: run an embedded NATS server")
	fs.StringVar(&c.NATSCreds, "nats-creds", c.NATSCreds, "NATS credentials `file` (user JWT and nkey seed) to connect with (with --nats-url)")
	fs.StringVar(&c.NATSTLSCA, "nats-tls-ca", c.NATSTLSCA, "PEM `file` of the CA(s) to trust for TLS to NATS (with --nats-url)")
	fs.StringVar(&c.NATSTLSCert, "nats-tls-cert", c.NATSTLSCert, "PEM `file` of a client certificate for mutual TLS to NATS, with --nats-tls-key")
	fs.StringVar(&c.NATSTLSKey, "nats-tls-key", c.NATSTLSKey, "PEM `file` of the client certificate's key")
	fs.StringVar(&c.EmbeddedNATSAddr, "embedded-nats-addr", c.EmbeddedNATSAddr, "listen `address` of the embedded NATS server, for keysctl and audit consumers")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "the embedded server's JetStream storage and the default secret file's `directory`")
	fs.StringVar(&c.DatabaseURL, "database-url", c.DatabaseURL, "PostgreSQL read model (pgx connection string `URL`); empty: in-process read model rebuilt from the stream")
	fs.StringVar(&c.SecretFile, "secret-file", c.SecretFile, "server-side secret `file` shared by the deployment; created when missing (default <data-dir>/secret)")
	fs.IntVar(&c.StreamReplicas, "stream-replicas", c.StreamReplicas, "replicas (`1 to 5`) of every stream keysd creates: 3 on a NATS cluster; an existing stream is used as it is")
	fs.BoolVar(&c.SyncAlways, "sync-always", c.SyncAlways, "every append on disk before its acknowledgement (survives machine crashes): the embedded NATS server syncs every write, and concurrent appends on different keys are group-committed to share one flush; with --nats-url, set it when that server runs with sync_interval: always")
	fs.StringVar(&c.ReadBarrier, "read-barrier", c.ReadBarrier, "reads wait for the projector to reach the stream's end as of their arrival (one request to NATS shared by the reads arriving together), so that a change acknowledged by any keysd is seen: `auto` (with --nats-url, where other keysd may write, unless reads go to a shared PostgreSQL with --key-cache off), on, off")
	fs.Float64Var(&c.RateLimit, "rate-limit", c.RateLimit, "API `requests per second` allowed to each project; more get 429 RATE_LIMITED; 0: no limit")
	fs.IntVar(&c.RateBurst, "rate-burst", c.RateBurst, "`requests` a project may send at once above --rate-limit; 0: twice --rate-limit")
	fs.Float64Var(&c.AuthFailureRate, "auth-failure-rate", c.AuthFailureRate, "failed authentications (unknown project, wrong secret server key, refused admin token) per `second` allowed to each client address; past its burst every API request from it gets 429 RATE_LIMITED; 0: no limit")
	fs.IntVar(&c.AuthFailureBurst, "auth-failure-burst", c.AuthFailureBurst, "failed authentications (`count`) an address may have at once above --auth-failure-rate; 0: ten times --auth-failure-rate")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long SIGTERM may take: the drain of in-flight requests and the stops after it (a `duration` such as 20s)")
	fs.DurationVar(&c.StartupTimeout, "startup-timeout", c.StartupTimeout, "how long keysd waits at start for NATS, JetStream and PostgreSQL to answer, retrying with backoff, before it exits (a `duration`)")
	fs.StringVar(&c.KeyCache, "key-cache", c.KeyCache, "the key index: keys checked, read and written kept in memory and updated by the projector from the stream: `auto` or on (any topology), off (every read goes to the read model)")
	fs.IntVar(&c.KeyCacheSize, "key-cache-size", c.KeyCacheSize, "most `keys` the key index holds (about 300 bytes each)")
	fs.DurationVar(&c.LastUseInterval, "last-use-interval", c.LastUseInterval, "how often the successful checks recorded in memory are flushed to the KEYLEDGER_LAST_USED bucket (a `duration`, at most 30s); a key checked without pause is rewritten once per four intervals (at most 45s), so last_used_at is under 60s behind everywhere; 0: no recording and last_used_at stays null (for benchmarks only)")
	fs.StringVar(&c.PprofAddr, "pprof-addr", c.PprofAddr, "serve Go's profiler (net/http/pprof) on this `address`, for performance work; empty: off")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "`level`: debug, info, warn or error")
	fs.VisitAll(func(f *flag.Flag) { f.Usage += " (env " + envOf(f.Name) + ")" })
	return fs
}

// parseConfig reads the environment, then the flags over it, and validates the result. A
// value that does not parse, an unknown flag and a value keysd cannot use are errors naming
// the flag or variable and the value (exit status 2). -h returns flag.ErrHelp.
func parseConfig(args []string, getenv func(string) string) (config, error) {
	c := defaultConfig()
	fs := c.flagSet()
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := envOf(f.Name)
		v := getenv(name)
		if v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %s", name, v, want(f)))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, badFlag(fs, err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q: keysd takes flags only", fs.Arg(0))
	}
	if c.SecretFile == "" {
		c.SecretFile = filepath.Join(c.DataDir, "secret")
	}
	return c, c.Validate()
}

// unknownVariables lists the KEYS_ variables of environ (os.Environ's form) that no flag
// reads. KEYS_TEST_ variables belong to the tests.
func unknownVariables(environ []string) []string {
	c := defaultConfig()
	fs := c.flagSet()
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { known[envOf(f.Name)] = true })
	var unknown []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix) && !strings.HasPrefix(name, envPrefix+"TEST_") && !known[name] {
			unknown = append(unknown, name)
		}
	}
	return unknown
}

// badFlag rewords pflag's parse error of a value as want does for variables.
func badFlag(fs *flag.FlagSet, err error) error {
	var name string
	if _, after, ok := strings.Cut(err.Error(), ` for "--`); ok {
		name, _, _ = strings.Cut(after, `"`)
	}
	if f := fs.Lookup(name); f != nil {
		value := err.Error()
		if _, after, ok := strings.Cut(value, `invalid argument "`); ok {
			value, _, _ = strings.Cut(after, `" for`)
		}
		return fmt.Errorf("--%s %q: %s", name, value, want(f))
	}
	return err
}

// want says what a flag takes, by its type.
func want(f *flag.Flag) string {
	switch f.Value.Type() {
	case "bool":
		return "want true or false"
	case "duration":
		return "want a duration such as 20s or 1m30s"
	case "int":
		return "want a whole number"
	case "float64":
		return "want a number"
	}
	return "not a valid value"
}

// usage prints every flag with its variable and default.
func usage(w io.Writer) {
	c := defaultConfig()
	fs := c.flagSet()
	fmt.Fprintln(w, "Usage: keysd [flags]")
	fmt.Fprintln(w, "Every flag also reads the environment variable shown; the flag wins. A value keysd cannot use stops it with exit status 2.")
	fmt.Fprint(w, fs.FlagUsages())
}

// named is how a problem names a setting: both spellings, since it may come from either.
func named(flagName string) string { return "--" + flagName + " (" + envOf(flagName) + ")" }

// Validate reports every problem with the configuration at once.
func (c config) Validate() error {
	var errs []error
	bad := func(flagName string, value any, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s %s: %s", named(flagName), quoted(value), fmt.Sprintf(format, a...)))
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("http-addr", c.HTTPAddr, "want host:port (%v)", err)
	}
	if c.NATSURL == "" {
		if _, _, err := net.SplitHostPort(c.EmbeddedNATSAddr); err != nil {
			bad("embedded-nats-addr", c.EmbeddedNATSAddr, "want host:port (%v)", err)
		}
		if c.DataDir == "" {
			errs = append(errs, fmt.Errorf("%s must not be empty with the embedded NATS server", named("data-dir")))
		}
		for _, f := range c.natsFiles() {
			if f.path != "" {
				bad(f.flag, f.path, "applies only with --nats-url (keysd connects to its embedded server in process)")
			}
		}
		if c.StreamReplicas > 1 {
			bad("stream-replicas", c.StreamReplicas, "more than 1 needs a NATS cluster (--nats-url): the embedded server is one node")
		}
	} else if err := eventstore.CheckURLs(c.NATSURL); err != nil {
		errs = append(errs, fmt.Errorf("%s %v", named("nats-url"), err))
	}
	for _, f := range c.natsFiles() {
		if _, err := os.Stat(f.path); f.path != "" && c.NATSURL != "" && err != nil {
			bad(f.flag, f.path, "cannot read it (%v)", errors.Unwrap(err))
		}
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		errs = append(errs, fmt.Errorf("%s and %s go together: give both or neither", named("nats-tls-cert"), named("nats-tls-key")))
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		bad("stream-replicas", c.StreamReplicas, "want 1 to 5")
	}
	if c.RateLimit < 0 {
		bad("rate-limit", c.RateLimit, "must not be negative")
	}
	if c.RateBurst < 0 {
		bad("rate-burst", c.RateBurst, "must not be negative")
	}
	if c.AuthFailureRate < 0 {
		bad("auth-failure-rate", c.AuthFailureRate, "must not be negative")
	}
	if c.AuthFailureBurst < 0 {
		bad("auth-failure-burst", c.AuthFailureBurst, "must not be negative")
	}
	if c.StartupTimeout <= 0 {
		bad("startup-timeout", c.StartupTimeout, "must be positive")
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown-timeout", c.ShutdownTimeout, "must be positive")
	}
	switch c.ReadBarrier {
	case "auto", "on", "off":
	default:
		bad("read-barrier", c.ReadBarrier, "want auto, on or off")
	}
	switch c.KeyCache {
	case "auto", "on", "off":
	default:
		bad("key-cache", c.KeyCache, "want auto, on or off")
	}
	if c.KeyCacheSize < 1 {
		bad("key-cache-size", c.KeyCacheSize, "must be positive")
	}
	if c.LastUseInterval < 0 || c.LastUseInterval > 30*time.Second {
		bad("last-use-interval", c.LastUseInterval, "want 0 (off) to 30s")
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", c.LogLevel, "want debug, info, warn or error")
	}
	return errors.Join(errs...)
}

// natsFile is a file keysd reads to connect to NATS, with the flag that names it.
type natsFile struct{ flag, path string }

func (c config) natsFiles() []natsFile {
	return []natsFile{{"nats-creds", c.NATSCreds}, {"nats-tls-ca", c.NATSTLSCA}, {"nats-tls-cert", c.NATSTLSCert}, {"nats-tls-key", c.NATSTLSKey}}
}

// quoted shows a value in a problem: strings quoted (an empty one visible), others as they are.
func quoted(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v)
}

// natsConfig is how keysd connects to --nats-url; with the embedded server, URLs is empty and
// keysd connects in process.
func (c config) natsConfig() eventstore.ConnectConfig {
	return eventstore.ConnectConfig{
		URLs: c.NATSURL, Name: "keysd", Timeout: 5 * time.Second,
		CredsFile: c.NATSCreds, TLSCA: c.NATSTLSCA, TLSCert: c.NATSTLSCert, TLSKey: c.NATSTLSKey,
	}
}

// readBarrier: with an external NATS another keysd may have acknowledged a change that this
// one has not projected yet, and this one serves keys from its own memory (the key index) or
// its own in-process read model, so reads first catch up with the stream. Only reads that go
// to a shared PostgreSQL, updated before any keysd acknowledges a change, need no barrier.
func (c config) readBarrier() bool {
	switch c.ReadBarrier {
	case "on":
		return true
	case "off":
		return false
	}
	return c.NATSURL != "" && (c.DatabaseURL == "" || c.keyIndexSize() > 0)
}

// keyIndexSize is the most keys the key index holds: --key-cache-size, or none with
// --key-cache off (service.Config.KeyIndexSize's negative).
func (c config) keyIndexSize() int {
	if c.KeyCache == "off" {
		return -1
	}
	return c.KeyCacheSize
}
