package main

import (
	"bytes"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"

	flag "github.com/spf13/pflag"

	"github.com/keyledger/keyledger/internal/testenv"
)

func TestConfigFlagsEnvAndDefaults(t *testing.T) {
	env := map[string]string{"KEYS_HTTP_ADDR": "127.0.0.1:9000", "KEYS_DATA_DIR": "/var/lib/kl", "KEYS_NATS_URL": "nats://n:4222"}
	getenv := func(k string) string { return env[k] }

	c, err := parseConfig(nil, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:9000" || c.NATSURL != "nats://n:4222" || c.SecretFile != filepath.Join("/var/lib/kl", "secret") {
		t.Fatalf("environment not applied: %+v", c)
	}
	if !c.readBarrier() {
		t.Fatal("external NATS with a per-process read model needs the read barrier")
	}

	c, err = parseConfig([]string{"--http-addr", "127.0.0.1:7000", "--nats-url", "", "--secret-file", "/s"}, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:7000" || c.NATSURL != "" || c.SecretFile != "/s" || c.readBarrier() {
		t.Fatalf("flags must win over the environment: %+v", c)
	}

	c, err = parseConfig(nil, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:8080" || c.EmbeddedNATSAddr != "127.0.0.1:4223" || c.DataDir != "./data" || c.DatabaseURL != "" {
		t.Fatalf("defaults differ from CONTRACT section 1: %+v", c)
	}

}

// TestConfigRejectsBadValues: a flag or variable keysd cannot use is one error naming it and
// its value; nothing is ignored (CONTRACT section 1).
func TestConfigRejectsBadValues(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.creds")
	for _, tc := range []struct {
		args     []string
		env      map[string]string
		mentions []string
	}{
		{env: map[string]string{"KEYS_SYNC_ALWAYS": "yes"}, mentions: []string{"KEYS_SYNC_ALWAYS", `"yes"`, "true or false"}},
		{args: []string{"--sync-always=yes"}, mentions: []string{"--sync-always", `"yes"`}},
		{args: []string{"--stream-replicas", "0"}, mentions: []string{"--stream-replicas", "KEYS_STREAM_REPLICAS", " 0:", "1 to 5"}},
		{args: []string{"--stream-replicas", "6", "--nats-url", "nats://n:4222"}, mentions: []string{"--stream-replicas", " 6:"}},
		{env: map[string]string{"KEYS_STREAM_REPLICAS": "three"}, mentions: []string{"KEYS_STREAM_REPLICAS", `"three"`, "whole number"}},
		{args: []string{"--stream-replicas", "3"}, mentions: []string{"--stream-replicas", "needs a NATS cluster"}},
		{args: []string{"--shutdown-timeout", "5"}, mentions: []string{"--shutdown-timeout", `"5"`, "duration"}},
		{env: map[string]string{"KEYS_SHUTDOWN_TIMEOUT": "forever"}, mentions: []string{"KEYS_SHUTDOWN_TIMEOUT", `"forever"`}},
		{args: []string{"--shutdown-timeout", "0s"}, mentions: []string{"--shutdown-timeout", "must be positive"}},
		{args: []string{"--read-barrier", "sometimes"}, mentions: []string{"--read-barrier", `"sometimes"`, "auto, on or off"}},
		{env: map[string]string{"KEYS_KEY_CACHE": "maybe"}, mentions: []string{"KEYS_KEY_CACHE", `"maybe"`}},
		{env: map[string]string{"KEYS_KEY_CACHE_SIZE": "0"}, mentions: []string{"KEYS_KEY_CACHE_SIZE", "must be positive"}},
		{env: map[string]string{"KEYS_RATE_LIMIT": "fast"}, mentions: []string{"KEYS_RATE_LIMIT", `"fast"`, "number"}},
		{args: []string{"--rate-burst", "-1"}, mentions: []string{"--rate-burst", "-1", "negative"}},
		{args: []string{"--log-level", "loud"}, mentions: []string{"--log-level", `"loud"`}},
		{args: []string{"--http-addr", "nope"}, mentions: []string{"--http-addr", `"nope"`}},
		{args: []string{"--nats-url", "http://ops:hunter2@n:4222"}, mentions: []string{"--nats-url", "scheme must be nats", "ops:xxxxx@"}},
		{args: []string{"--nats-url", "nats://n:4222", "--nats-tls-cert", missing}, mentions: []string{"--nats-tls-cert", "--nats-tls-key", "go together"}},
		{args: []string{"--nats-url", "nats://n:4222", "--nats-creds", missing}, mentions: []string{"--nats-creds", missing, "cannot read"}},
		{env: map[string]string{"KEYS_NATS_CREDS": "/etc/keyledger/nats.creds"}, mentions: []string{"--nats-creds", "only with --nats-url"}},
		{args: []string{"--bogus"}, mentions: []string{"unknown flag: --bogus"}},
		{args: []string{"extra"}, mentions: []string{`unexpected argument "extra"`}},
	} {
		_, err := parseConfig(tc.args, func(k string) string { return tc.env[k] })
		if err == nil {
			t.Errorf("flags %q, environment %v: accepted", tc.args, tc.env)
			continue
		}
		line := oneLine(err)
		for _, m := range tc.mentions {
			if !strings.Contains(line, m) {
				t.Errorf("flags %q, environment %v: %q does not mention %q", tc.args, tc.env, line, m)
			}
		}
		if strings.Contains(line, "hunter2") {
			t.Errorf("the error shows a password: %q", line)
		}
	}

	t.Run("every problem at once", func(t *testing.T) {
		_, err := parseConfig([]string{"--read-barrier", "x", "--log-level", "y"}, func(string) string { return "" })
		if line := oneLine(err); !strings.Contains(line, "--read-barrier") || !strings.Contains(line, "--log-level") || strings.Contains(line, "\n") {
			t.Errorf("%q, want both problems on one line", line)
		}
	})
}

// TestEveryFlagHasItsVariable: each flag reads KEYS_<NAME>, -h shows it, and the README lists
// it. A new flag without a sample value here fails the test.
func TestEveryFlagHasItsVariable(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f.pem")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	nats := map[string]string{"KEYS_NATS_URL": "nats://n:4222"}
	samples := map[string]struct {
		value     string
		alongside map[string]string
	}{
		"http-addr":          {"127.0.0.1:9999", nil},
		"nats-url":           {"nats://a:4222,nats://b:4222", nil},
		"nats-creds":         {file, nats},
		"nats-tls-ca":        {file, nats},
		"nats-tls-cert":      {file, map[string]string{"KEYS_NATS_URL": "nats://n:4222", "KEYS_NATS_TLS_KEY": file}},
		"nats-tls-key":       {file, map[string]string{"KEYS_NATS_URL": "nats://n:4222", "KEYS_NATS_TLS_CERT": file}},
		"embedded-nats-addr": {"127.0.0.1:4299", nil},
		"data-dir":           {dir, nil},
		"database-url":       {"postgres://db/x", nil},
		"secret-file":        {file, nil},
		"stream-replicas":    {"3", nats},
		"sync-always":        {"true", nil},
		"read-barrier":       {"off", nil},
		"shutdown-timeout":   {"1m30s", nil},
		"startup-timeout":    {"2m0s", nil},
		"rate-limit":         {"12.5", nil},
		"rate-burst":         {"7", nil},
		"auth-failure-rate":  {"3.5", nil},
		"auth-failure-burst": {"9", nil},
		"key-cache":          {"off", nil},
		"key-cache-size":     {"42", nil},
		"last-use-interval":  {"10s", nil},
		"pprof-addr":         {"127.0.0.1:6060", nil},
		"log-level":          {"debug", nil},
	}
	var help bytes.Buffer
	usage(&help)
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defaults := defaultConfig()
	defaults.flagSet().VisitAll(func(f *flag.Flag) {
		name := envOf(f.Name)
		sample, ok := samples[f.Name]
		if !ok {
			t.Errorf("--%s: no sample value in this test", f.Name)
			return
		}
		env := map[string]string{name: sample.value}
		for k, v := range sample.alongside {
			env[k] = v
		}
		c, err := parseConfig(nil, func(k string) string { return env[k] })
		if err != nil {
			t.Errorf("%s=%s: %v", name, sample.value, err)
			return
		}
		if got := c.flagSet().Lookup(f.Name).Value.String(); got != sample.value {
			t.Errorf("%s=%s: --%s is %q", name, sample.value, f.Name, got)
		}
		if !strings.Contains(help.String(), "--"+f.Name) || !strings.Contains(help.String(), "(env "+name+")") {
			t.Errorf("keysd -h does not list --%s with %s", f.Name, name)
		}
		if !bytes.Contains(readme, []byte("`--"+f.Name+"`")) || !bytes.Contains(readme, []byte("`"+name+"`")) {
			t.Errorf("README.md does not list --%s and %s", f.Name, name)
		}
	})
	// And the README lists no variable keysd does not read.
	for _, v := range regexp.MustCompile(`KEYS_[A-Z_]+`).FindAllString(string(readme), -1) {
		if v == "KEYS_TEST_DATABASE_URL" { // the tests' PostgreSQL, not keysd's
			continue
		}
		if defaults.flagSet().Lookup(strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(v, envPrefix), "_", "-"))) == nil {
			t.Errorf("README.md names %s, which keysd does not read", v)
		}
	}
}

func TestUnknownVariablesAreNamed(t *testing.T) {
	got := unknownVariables([]string{"KEYS_SYNC_ALWAY=true", "KEYS_SYNC_ALWAYS=true", "KEYS_TEST_DATABASE_URL=postgres://x", "HOME=/root", "KEYS_=x", "KEYS_STREAM_REPLICAS=3"})
	if strings.Join(got, ",") != "KEYS_SYNC_ALWAY,KEYS_" {
		t.Errorf("unknown variables %q, want KEYS_SYNC_ALWAY and KEYS_", got)
	}
}

// TestReadBarrierAndKeyIndexPolicy: the key index is on in every topology unless turned off,
// and auto turns the read barrier on wherever another keysd may acknowledge a change that
// this one would otherwise serve from its own memory (docs/architecture.md).
func TestReadBarrierAndKeyIndexPolicy(t *testing.T) {
	const db, external = "postgres://db/x", "nats://n:4222"
	for _, tc := range []struct {
		keyCache, databaseURL, natsURL, readBarrier string
		index                                       int
		barrier                                     bool
	}{
		{"auto", "", "", "auto", 200_000, false},      // embedded NATS: the only writer
		{"auto", db, "", "auto", 200_000, false},      // the same, with PostgreSQL
		{"auto", db, external, "auto", 200_000, true}, // another keysd may write
		{"on", "", external, "auto", 200_000, true},   // in-process read model, shared stream
		{"off", "", external, "auto", -1, true},       // the in-process read model is per process too
		{"off", db, external, "auto", -1, false},      // reads go to the shared PostgreSQL
		{"auto", db, external, "off", 200_000, false}, // the operator's choice
		{"off", db, "", "on", -1, true},               // the operator's choice
	} {
		c := defaultConfig()
		c.KeyCache, c.DatabaseURL, c.NATSURL, c.ReadBarrier = tc.keyCache, tc.databaseURL, tc.natsURL, tc.readBarrier
		if err := c.Validate(); err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		if got, barrier := c.keyIndexSize(), c.readBarrier(); got != tc.index || barrier != tc.barrier {
			t.Errorf("--key-cache %s, --database-url %q, --nats-url %q, --read-barrier %s: index %d, barrier %v; want %d, %v",
				tc.keyCache, tc.databaseURL, tc.natsURL, tc.readBarrier, got, barrier, tc.index, tc.barrier)
		}
	}
}

// TestBadValueExitsTwo runs keysd as an operator would: a bad value is exit status 2 and one
// line on stderr naming it, before anything starts.
func TestBadValueExitsTwo(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "./cmd/keysd")
	for _, tc := range []struct {
		args    []string
		env     string
		mention string
	}{
		{nil, "KEYS_SYNC_ALWAYS=yes", "KEYS_SYNC_ALWAYS"},
		{[]string{"--stream-replicas", "0"}, "", "--stream-replicas"},
		{[]string{"--shutdown-timeout", "soon"}, "", "--shutdown-timeout"},
		{[]string{"--bogus"}, "", "--bogus"},
	} {
		cmd := exec.Command(bin, append(tc.args, "--data-dir", t.TempDir())...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", tc.env}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		_ = cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != 2 || stdout.Len() != 0 {
			t.Errorf("%v %s: exit %d, stdout %q, want 2 and nothing", tc.args, tc.env, code, stdout.String())
		}
		if e := stderr.String(); strings.Count(e, "\n") != 1 || !strings.HasPrefix(e, "keysd: ") || !strings.Contains(e, tc.mention) {
			t.Errorf("%v %s: stderr %q, want one line naming %s", tc.args, tc.env, e, tc.mention)
		}
	}
	cmd := exec.Command(bin, "-h")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), "KEYS_STREAM_REPLICAS") {
		t.Errorf("keysd -h: %v, stdout %q", err, out)
	}
}

func TestTuneGCFollowsTheReadModelAndLeavesOperatorSettingsAlone(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	log := slog.New(slog.DiscardHandler)
	none := func(string) string { return "" }
	for _, c := range []struct {
		name   string
		cfg    config
		getenv func(string) string
		want   int
	}{
		{"in-process read model", config{}, none, 50},
		{"PostgreSQL read model", config{DatabaseURL: "postgres://x"}, none, 400},
		{"GOGC set by the operator", config{DatabaseURL: "postgres://x"}, func(k string) string {
			if k == "GOGC" {
				return "100"
			}
			return ""
		}, 100},
		{"GOMEMLIMIT set by the operator", config{}, func(k string) string {
			if k == "GOMEMLIMIT" {
				return "800MiB"
			}
			return ""
		}, 100},
	} {
		debug.SetGCPercent(100)
		tuneGC(c.cfg, c.getenv, noCgroupLimit, log)
		if got := debug.SetGCPercent(100); got != c.want {
			t.Errorf("%s: GOGC %d, want %d", c.name, got, c.want)
		}
	}
}

func noCgroupLimit() (int64, bool) { return 0, false }

// TestSoftMemoryLimitFollowsTheContainer: in a cgroup with a memory limit keysd sets the
// runtime's soft limit to 90% of it, unless the operator set GOMEMLIMIT or GOGC.
func TestSoftMemoryLimitFollowsTheContainer(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	container := func() (int64, bool) { return 1 << 30, true }
	none := func(string) string { return "" }
	for _, c := range []struct {
		name        string
		getenv      func(string) string
		cgroupLimit func() (int64, bool)
		want        int64
	}{
		{"1 GiB container", none, container, (1 << 30) / 10 * 9},
		{"no container limit", none, noCgroupLimit, math.MaxInt64},
		{"GOMEMLIMIT set by the operator", func(k string) string {
			if k == "GOMEMLIMIT" {
				return "800MiB"
			}
			return ""
		}, container, math.MaxInt64},
	} {
		debug.SetMemoryLimit(math.MaxInt64)
		tuneGC(config{}, c.getenv, c.cgroupLimit, log)
		if got := debug.SetMemoryLimit(-1); got != c.want {
			t.Errorf("%s: soft memory limit %d, want %d", c.name, got, c.want)
		}
	}
}
