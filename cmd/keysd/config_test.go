package main

import (
	"log/slog"
	"math"
	"path/filepath"
	"runtime/debug"
	"testing"
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

	for _, bad := range [][]string{{"--http-addr", "nope"}, {"--read-barrier", "sometimes"}, {"--log-level", "loud"}, {"extra"}} {
		if _, err := parseConfig(bad, func(string) string { return "" }); err == nil {
			t.Errorf("%v accepted", bad)
		}
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
