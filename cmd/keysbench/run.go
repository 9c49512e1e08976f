package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	flag "github.com/spf13/pflag"

	"github.com/keyledger/keyledger/eventstore"
)

// loadFlags are the flags every measuring command shares.
type loadFlags struct {
	scenarios string
	clients   int
	rate      float64
	duration  time.Duration
	warmup    time.Duration
	runs      int
	keys      int
	json      bool
	cpuPids   string
	cpu       cpuWatch
}

func (l *loadFlags) register(fs *flag.FlagSet, defaultRuns int) {
	fs.StringVar(&l.scenarios, "scenario", "patch", "comma-separated scenarios: "+strings.Join(scenarios, ", "))
	fs.IntVar(&l.clients, "clients", 64, "closed loop: concurrent clients; open loop (--rate): most requests in flight")
	fs.Float64Var(&l.rate, "rate", 0, "open loop: start this many requests per second whatever the answers take (0: closed loop)")
	fs.DurationVar(&l.duration, "duration", 10*time.Second, "measured time of each run")
	fs.DurationVar(&l.warmup, "warmup", 2*time.Second, "unmeasured load before each run")
	fs.IntVar(&l.runs, "runs", defaultRuns, "runs of each scenario; the report shows each run and the median")
	fs.IntVar(&l.keys, "keys", 10000, "keys to pre-create through the API (revoke uses each once)")
	fs.BoolVar(&l.json, "json", false, "print JSON instead of a table")
	fs.StringVar(&l.cpuPids, "cpu-pids", "", "report the CPU time per request of these processes, `name=pid,...` (one name on several pids sums them; Linux /proc); compare: of keysd's runs only")
}

func (l *loadFlags) validate() error {
	for _, s := range strings.Split(l.scenarios, ",") {
		if !slices.Contains(scenarios, s) {
			return fmt.Errorf("--scenario %q: want one of %s", s, strings.Join(scenarios, ", "))
		}
	}
	if l.clients < 1 || l.runs < 1 || l.duration <= 0 || l.keys < 1 {
		return fmt.Errorf("--clients, --runs, --keys and --duration must be positive")
	}
	var err error
	l.cpu, err = parseCPUWatch(l.cpuPids)
	return err
}

func (l *loadFlags) config(scenario string) loadConfig {
	return loadConfig{Scenario: scenario, Clients: l.clients, Rate: l.rate, Duration: l.duration, Warmup: l.warmup, CPU: l.cpu}
}

// targetFlags say where a target is and how to get credentials on it.
func registerTarget(fs *flag.FlagSet, prefix string, c *setupConfig, defaultKind, defaultURL string) {
	fs.StringVar(&c.Kind, prefix+"kind", defaultKind, "target kind: keysd, baseline or floor")
	fs.StringVar(&c.URL, prefix+"url", defaultURL, "target base URL")
	fs.StringVar(&c.ProjectID, prefix+"project-id", "", "use this project instead of creating one")
	fs.StringVar(&c.ServerKey, prefix+"server-key", "", "the project's secret server key (with --"+prefix+"project-id)")
}

func runRun(fs *flag.FlagSet, conn *eventstore.ConnectConfig) func(ctx context.Context, stdout, stderr io.Writer) int {
	var lf loadFlags
	lf.register(fs, 1)
	var tc setupConfig
	registerTarget(fs, "", &tc, kindKeysd, "http://127.0.0.1:8080")
	fs.Lookup("url").Usage = "target base URL, or several comma-separated instances of one keysd deployment: keys are created through the first, client i sends to the i-th modulo their number"
	fs.StringVar(&tc.SecretFile, "secret-file", "data/secret", "keysd: the deployment's server-side secret")
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		if err := lf.validate(); err != nil {
			fmt.Fprintf(stderr, "keysbench run: %v\n", err)
			return 2
		}
		tc.Keys, tc.NATS = lf.keys, *conn
		t, err := prepare(ctx, tc.Kind, tc)
		if err != nil {
			fmt.Fprintf(stderr, "keysbench run: %v\n", err)
			return 1
		}
		var all []result
		for _, sc := range strings.Split(lf.scenarios, ",") {
			for range lf.runs {
				r, err := runLoad(ctx, t, lf.config(sc))
				if err != nil {
					fmt.Fprintf(stderr, "keysbench run: %v\n", err)
					return 1
				}
				all = append(all, r)
				if !lf.json {
					fmt.Fprintf(stderr, "%s %s: %.0f req/s p99 %.2f ms\n", r.Target, r.Scenario, r.RPS, r.P99Ms)
				}
			}
		}
		if lf.json {
			return printJSON(stdout, map[string]any{"runs": all, "medians": medians(all)})
		}
		printTable(stdout, all)
		if lf.runs > 1 {
			fmt.Fprintln(stdout, "\nmedians:")
			printTable(stdout, medians(all))
		}
		return 0
	}
}

// comparison is one scenario's medians on keysd and on the other target, and their ratios.
// With several other targets (a baseline at several pool sizes), Other is the best of them
// (the highest median req/s) and Others has every one's medians.
type comparison struct {
	Scenario  string   `json:"scenario"`
	Keysd     result   `json:"keysd"`
	Other     result   `json:"other"`
	Others    []result `json:"others,omitempty"`
	RPSRatio  float64  `json:"rps_ratio"`
	OKRatio   float64  `json:"ok_rps_ratio"`
	P99Ratio  float64  `json:"p99_ratio"`
	P50Ratio  float64  `json:"p50_ratio"`
	P999Ratio float64  `json:"p99_9_ratio"`
}

func compareWith(sc string, km result, om result, others []result) comparison {
	return comparison{Scenario: sc, Keysd: km, Other: om, Others: others,
		RPSRatio: ratio(km.RPS, om.RPS), OKRatio: ratio(km.OKRPS, om.OKRPS),
		P50Ratio: ratio(km.P50Ms, om.P50Ms), P99Ratio: ratio(km.P99Ms, om.P99Ms), P999Ratio: ratio(km.P999Ms, om.P999Ms)}
}

func runCompare(fs *flag.FlagSet, conn *eventstore.ConnectConfig) func(ctx context.Context, stdout, stderr io.Writer) int {
	var lf loadFlags
	lf.register(fs, 3)
	var kc, oc setupConfig
	kc.Kind = kindKeysd
	fs.StringVar(&kc.URL, "keysd-url", "http://127.0.0.1:8080", "keysd's base URL, or several comma-separated instances of one deployment: the load is spread over them")
	fs.StringVar(&kc.SecretFile, "secret-file", "data/secret", "keysd's server-side secret")
	registerTarget(fs, "other-", &oc, kindBaseline, "http://127.0.0.1:8091")
	fs.Lookup("other-url").Usage = "the other target's base URL; several comma-separated are several targets (a baseline at several pool sizes), each measured, keysd compared with the best"
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		if err := lf.validate(); err != nil {
			fmt.Fprintf(stderr, "keysbench compare: %v\n", err)
			return 2
		}
		otherURLs := splitURLs(oc.URL)
		if len(otherURLs) == 0 {
			fmt.Fprintln(stderr, "keysbench compare: --other-url: no URL")
			return 2
		}
		kc.Keys, kc.NATS = lf.keys, *conn
		kt, err := prepare(ctx, "keysd", kc)
		if err != nil {
			fmt.Fprintf(stderr, "keysbench compare: %v\n", err)
			return 1
		}
		var ots []*target
		for _, u := range otherURLs {
			c := oc
			c.URL, c.Keys = u, lf.keys
			ot, err := prepare(ctx, oc.Kind, c)
			if err != nil {
				fmt.Fprintf(stderr, "keysbench compare: %v\n", err)
				return 1
			}
			for _, prev := range ots {
				if prev.Name == ot.Name {
					ot.Name += " " + u
				}
			}
			ots = append(ots, ot)
		}
		all, comps, err := compareInterleaved(ctx, lf, kt, ots, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "keysbench compare: %v\n", err)
			return 1
		}
		if lf.json {
			return printJSON(stdout, map[string]any{"runs": all, "comparisons": comps})
		}
		printTable(stdout, all)
		for _, c := range comps {
			if len(c.Others) > 1 {
				fmt.Fprintf(stdout, "\n%s, medians of %d runs of each other target (keysd / it):\n", c.Scenario, lf.runs)
				tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
				fmt.Fprintln(tw, "other\treq/s\tp99\tkeysd req/s ratio\tkeysd p99 ratio\t")
				for _, o := range c.Others {
					fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%.2fx\t%.2fx\t\n", o.Target, o.RPS, o.P99Ms, ratio(c.Keysd.RPS, o.RPS), ratio(c.Keysd.P99Ms, o.P99Ms))
				}
				_ = tw.Flush()
			}
		}
		fmt.Fprintf(stdout, "\nmedians of %d runs, keysd / the best other:\n", lf.runs)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "scenario\tother\tkeysd req/s\tother req/s\treq/s ratio\tkeysd p50\tother p50\tkeysd p99\tother p99\tp99 ratio\t")
		for _, c := range comps {
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.2fx\t%.2f\t%.2f\t%.2f\t%.2f\t%.2fx\t\n", c.Scenario, c.Other.Target, c.Keysd.RPS, c.Other.RPS, c.RPSRatio,
				c.Keysd.P50Ms, c.Other.P50Ms, c.Keysd.P99Ms, c.Other.P99Ms, c.P99Ratio)
		}
		_ = tw.Flush()
		return 0
	}
}

// compareInterleaved runs each scenario lf.runs times on keysd and on every other target,
// rotating the order from run to run so that a change in the machine's load hits all alike,
// and compares keysd's medians with the best other's (the highest median req/s).
func compareInterleaved(ctx context.Context, lf loadFlags, kt *target, ots []*target, stderr io.Writer) ([]result, []comparison, error) {
	var all []result
	var comps []comparison
	order := append([]*target{kt}, ots...)
	for _, sc := range strings.Split(lf.scenarios, ",") {
		byTarget := map[*target][]result{}
		for i := range lf.runs {
			for j := range order {
				t := order[(i+j)%len(order)]
				cfg := lf.config(sc)
				if t != kt {
					cfg.CPU = nil // --cpu-pids name keysd's processes
				}
				r, err := runLoad(ctx, t, cfg)
				if err != nil {
					return nil, nil, err
				}
				if !lf.json {
					fmt.Fprintf(stderr, "run %d %s %s: %.0f req/s p99 %.2f ms\n", i+1, r.Target, r.Scenario, r.RPS, r.P99Ms)
				}
				all = append(all, r)
				byTarget[t] = append(byTarget[t], r)
			}
		}
		km := medians(byTarget[kt])[0]
		var others []result
		best := -1
		for _, ot := range ots {
			m := medians(byTarget[ot])[0]
			if best < 0 || m.RPS > others[best].RPS {
				best = len(others)
			}
			others = append(others, m)
		}
		if len(others) == 1 {
			others = nil
			comps = append(comps, compareWith(sc, km, medians(byTarget[ots[0]])[0], nil))
			continue
		}
		comps = append(comps, compareWith(sc, km, others[best], others))
	}
	return all, comps, nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// medians groups results by target and scenario and takes the median of each figure
// separately; errors are summed.
func medians(rs []result) []result {
	type group struct{ target, scenario string }
	var order []group
	by := map[group][]result{}
	for _, r := range rs {
		g := group{r.Target, r.Scenario}
		if _, ok := by[g]; !ok {
			order = append(order, g)
		}
		by[g] = append(by[g], r)
	}
	var out []result
	for _, g := range order {
		runs := by[g]
		m := runs[0]
		med := func(f func(result) float64) float64 {
			v := make([]float64, len(runs))
			for i, r := range runs {
				v[i] = f(r)
			}
			sort.Float64s(v)
			if len(v)%2 == 1 {
				return v[len(v)/2]
			}
			return (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		m.RPS = med(func(r result) float64 { return r.RPS })
		m.OKRPS = med(func(r result) float64 { return r.OKRPS })
		m.P50Ms = med(func(r result) float64 { return r.P50Ms })
		m.P90Ms = med(func(r result) float64 { return r.P90Ms })
		m.P99Ms = med(func(r result) float64 { return r.P99Ms })
		m.P999Ms = med(func(r result) float64 { return r.P999Ms })
		m.MaxMs = med(func(r result) float64 { return r.MaxMs })
		if len(m.CPUPerRequestUs) > 0 {
			cpu := map[string]float64{}
			for name := range m.CPUPerRequestUs {
				cpu[name] = med(func(r result) float64 { return r.CPUPerRequestUs[name] })
			}
			m.CPUPerRequestUs = cpu
		}
		m.Requests, m.OK, m.Unsent, m.Errors = 0, 0, 0, nil
		for _, r := range runs {
			m.Requests += r.Requests
			m.OK += r.OK
			m.Unsent += r.Unsent
			for k, v := range r.Errors {
				if m.Errors == nil {
					m.Errors = map[string]int{}
				}
				m.Errors[k] += v
			}
		}
		out = append(out, m)
	}
	return out
}

func printTable(w io.Writer, rs []result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tscenario\tload\trequests\treq/s\tok/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\terrors")
	for _, r := range rs {
		load := fmt.Sprintf("%d clients", r.Clients)
		if r.Rate > 0 {
			load = fmt.Sprintf("%.0f/s open (max %d)", r.Rate, r.Clients)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.0f\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%s%s\n", r.Target, r.Scenario, load, r.Requests,
			r.RPS, r.OKRPS, r.P50Ms, r.P90Ms, r.P99Ms, r.P999Ms, r.MaxMs, formatErrors(r), formatCPU(r))
	}
	_ = tw.Flush()
}

// formatCPU is the CPU per request of the watched processes, "" when none is watched.
func formatCPU(r result) string {
	if len(r.CPUPerRequestUs) == 0 {
		return ""
	}
	names := make([]string, 0, len(r.CPUPerRequestUs))
	for n := range r.CPUPerRequestUs {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %.0f", n, r.CPUPerRequestUs[n])
	}
	return "\tCPU µs/request: " + strings.Join(parts, ", ")
}

func formatErrors(r result) string {
	var parts []string
	for k, v := range r.Errors {
		parts = append(parts, fmt.Sprintf("%s: %d", k, v))
	}
	sort.Strings(parts)
	if r.Unsent > 0 {
		parts = append(parts, fmt.Sprintf("unsent (all clients busy): %d", r.Unsent))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

func printJSON(w io.Writer, v any) int {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return 1
	}
	return 0
}
