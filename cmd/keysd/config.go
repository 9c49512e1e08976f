package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// config is keysd's configuration: every flag also reads an environment variable, and the
// flag wins (CONTRACT section 1).
type config struct {
	HTTPAddr         string
	NATSURL          string
	EmbeddedNATSAddr string
	DataDir          string
	DatabaseURL      string
	SecretFile       string
	SyncAlways       bool
	ReadBarrier      string
	ShutdownTimeout  time.Duration
	RateLimit        float64
	RateBurst        int
	LogLevel         string
	PprofAddr        string
	KeyCache         string
	KeyCacheSize     int
}

// parseConfig reads flags and environment. A bad flag is a usage error (exit 2).
func parseConfig(args []string, getenv func(string) string) (config, error) {
	var c config
	fs := flag.NewFlagSet("keysd", flag.ContinueOnError)
	// Parse errors are reported once, by main, as one line; -h prints the full usage.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fs.SetOutput(os.Stderr)
		fmt.Fprintln(os.Stderr, "Usage: keysd [flags]   (every flag also reads the environment variable shown; the flag wins)")
		fs.PrintDefaults()
	}
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	envBool := func(name string, def bool) bool {
		if v := getenv(name); v != "" {
			if b, err := strconv.ParseBool(v); err == nil {
				return b
			}
		}
		return def
	}
	envFloat := func(name string, def float64) float64 {
		if v := getenv(name); v != "" {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				return f
			}
		}
		return def
	}
	fs.StringVar(&c.HTTPAddr, "http-addr", env("KEYS_HTTP_ADDR", "127.0.0.1:8080"), "HTTP listen address (env KEYS_HTTP_ADDR)")
	fs.StringVar(&c.NATSURL, "nats-url", env("KEYS_NATS_URL", ""), "NATS server(s), comma-separated; empty: run an embedded NATS server (env KEYS_NATS_URL)")
	fs.StringVar(&c.EmbeddedNATSAddr, "embedded-nats-addr", env("KEYS_EMBEDDED_NATS_ADDR", "127.0.0.1:4223"), "listen address of the embedded NATS server (env KEYS_EMBEDDED_NATS_ADDR)")
	fs.StringVar(&c.DataDir, "data-dir", env("KEYS_DATA_DIR", "./data"), "the embedded server's JetStream storage and the default secret file (env KEYS_DATA_DIR)")
	fs.StringVar(&c.DatabaseURL, "database-url", env("KEYS_DATABASE_URL", ""), "PostgreSQL read model (pgx connection string); empty: in-process read model rebuilt from the stream (env KEYS_DATABASE_URL)")
	fs.StringVar(&c.SecretFile, "secret-file", env("KEYS_SECRET_FILE", ""), "server-side secret shared by the deployment; created when missing (default <data-dir>/secret; env KEYS_SECRET_FILE)")
	fs.BoolVar(&c.SyncAlways, "sync-always", envBool("KEYS_SYNC_ALWAYS", false), "every append on disk before its acknowledgement (survives machine crashes): the embedded NATS server syncs every write, and concurrent appends on different keys are group-committed to share one flush; with --nats-url, set it when that server runs with sync_interval: always (env KEYS_SYNC_ALWAYS)")
	fs.StringVar(&c.ReadBarrier, "read-barrier", env("KEYS_READ_BARRIER", "auto"), "reads wait for the projector to reach the stream's end: auto (when several instances may share the stream with per-process read models), on, off (env KEYS_READ_BARRIER)")
	fs.Float64Var(&c.RateLimit, "rate-limit", envFloat("KEYS_RATE_LIMIT", 1000), "API requests per second allowed to each project; more get 429 RATE_LIMITED; 0: no limit (env KEYS_RATE_LIMIT)")
	fs.IntVar(&c.RateBurst, "rate-burst", int(envFloat("KEYS_RATE_BURST", 0)), "requests a project may send at once above --rate-limit; 0: twice --rate-limit (env KEYS_RATE_BURST)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 20*time.Second, "how long SIGTERM waits for in-flight requests")
	fs.StringVar(&c.KeyCache, "key-cache", env("KEYS_KEY_CACHE", "auto"), "keep keys read from the PostgreSQL read model in memory, dropped by the projector when they change: auto (when this keysd sees every change before answering: embedded NATS, or the read barrier on), on, off (env KEYS_KEY_CACHE)")
	fs.IntVar(&c.KeyCacheSize, "key-cache-size", 200_000, "most keys the key cache holds")
	fs.StringVar(&c.PprofAddr, "pprof-addr", env("KEYS_PPROF_ADDR", ""), "serve Go's profiler (net/http/pprof) on this address, for performance work; empty: off (env KEYS_PPROF_ADDR)")
	fs.StringVar(&c.LogLevel, "log-level", env("KEYS_LOG_LEVEL", "info"), "debug, info, warn or error (env KEYS_LOG_LEVEL)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.SecretFile == "" {
		c.SecretFile = filepath.Join(c.DataDir, "secret")
	}
	return c, c.Validate()
}

// Validate reports every problem with the configuration at once.
func (c config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("--http-addr %q: %v", c.HTTPAddr, err))
	}
	if c.NATSURL == "" {
		if _, _, err := net.SplitHostPort(c.EmbeddedNATSAddr); err != nil {
			errs = append(errs, fmt.Errorf("--embedded-nats-addr %q: %v", c.EmbeddedNATSAddr, err))
		}
		if c.DataDir == "" {
			errs = append(errs, errors.New("--data-dir must not be empty with the embedded NATS server"))
		}
	}
	if c.RateLimit < 0 || c.RateBurst < 0 {
		errs = append(errs, fmt.Errorf("--rate-limit %g and --rate-burst %d must not be negative", c.RateLimit, c.RateBurst))
	}
	switch c.ReadBarrier {
	case "auto", "on", "off":
	default:
		errs = append(errs, fmt.Errorf("--read-barrier %q: want auto, on or off", c.ReadBarrier))
	}
	switch c.KeyCache {
	case "auto", "on", "off":
	default:
		errs = append(errs, fmt.Errorf("--key-cache %q: want auto, on or off", c.KeyCache))
	}
	if c.KeyCacheSize < 1 {
		errs = append(errs, fmt.Errorf("--key-cache-size must be positive, got %d", c.KeyCacheSize))
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}

// readBarrier: with an external NATS and a per-process read model, another keysd may have
// written a change this one has not projected yet, so reads first catch up with the stream.
func (c config) readBarrier() bool {
	switch c.ReadBarrier {
	case "on":
		return true
	case "off":
		return false
	}
	return c.NATSURL != "" && c.DatabaseURL == ""
}

// keyCache: the cache of PostgreSQL rows is dropped by this keysd's projector, so a change
// made through another keysd sharing the database would be served stale until this projector
// applies it. auto turns it on only when that cannot happen: an embedded NATS server (this
// keysd is the only writer) or the read barrier (reads wait for the projector to reach the
// stream's end).
func (c config) keyCache() bool {
	switch c.KeyCache {
	case "on":
		return c.DatabaseURL != ""
	case "off":
		return false
	}
	return c.DatabaseURL != "" && (c.NATSURL == "" || c.readBarrier())
}
