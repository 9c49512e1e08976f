package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// scenarios are the request mixes keysbench can drive.
var scenarios = []string{"patch", "patch-hot", "revoke", "get", "check", "create", "create-replay", "mixed"}

// loadConfig is one measurement: a scenario against one target.
type loadConfig struct {
	Scenario string
	// Clients is the number of closed-loop clients, or in open loop the most requests in
	// flight at once.
	Clients int
	// Rate, when positive, makes the load open-loop: requests start at this many per second
	// whatever the answers take, and latency counts from when a request was due.
	Rate     float64
	Duration time.Duration
	Warmup   time.Duration
	// CPU, when set, names processes whose CPU time per request the result reports.
	CPU cpuWatch
}

// benchKey is a pre-created key and its secret.
type benchKey struct {
	ID, Secret string
}

// target is a service under load with its credentials and pre-created keys.
type target struct {
	Name string
	// BaseURL is where keys are created; URLs are the instances the load is spread over
	// (client i sends to URLs[i % len(URLs)]), BaseURL alone when empty.
	BaseURL   string
	URLs      []string
	ProjectID string
	ServerKey string
	Keys      []benchKey
	// revokeNext hands out keys to the revoke scenario, each one once.
	revokeNext atomic.Int64
}

// result is what one measurement reports.
type result struct {
	Target      string         `json:"target"`
	Scenario    string         `json:"scenario"`
	Clients     int            `json:"clients"`
	Rate        float64        `json:"rate,omitempty"`
	DurationS   float64        `json:"duration_s"`
	Requests    uint64         `json:"requests"`
	OK          uint64         `json:"ok"`
	RPS         float64        `json:"rps"`
	OKRPS       float64        `json:"ok_rps"`
	P50Ms       float64        `json:"p50_ms"`
	P90Ms       float64        `json:"p90_ms"`
	P99Ms       float64        `json:"p99_ms"`
	P999Ms      float64        `json:"p99_9_ms"`
	MaxMs       float64        `json:"max_ms"`
	Errors      map[string]int `json:"errors,omitempty"`
	Unsent      uint64         `json:"unsent,omitempty"`
	KeysRevoked int64          `json:"keys_revoked,omitempty"`
	// CPUPerRequestUs is, for each process named by --cpu-pids, its CPU microseconds (user
	// and system) per request of the measured window.
	CPUPerRequestUs map[string]float64 `json:"cpu_us_per_request,omitempty"`
}

// newHTTPClient keeps one connection per client alive for the whole run.
func newHTTPClient(clients int) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        2*clients + 16,
		MaxIdleConnsPerHost: 2*clients + 16,
		IdleConnTimeout:     120 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// request is one HTTP request of a scenario.
type request struct {
	method, path string
	body         []byte
	// idempotencyKey, when set, is sent as the Idempotency-Key header.
	idempotencyKey string
	// base is the instance to send it to; the target's BaseURL when empty.
	base string
}

// worker is one client's state: its random source, counters and latencies.
type worker struct {
	rnd    *rand.Rand
	hist   histogram
	ok     uint64
	total  uint64
	errors map[string]int
	seq    uint64
	// base is the instance this client sends to.
	base string
}

func (t *target) next(w *worker, scenario string) request {
	r := t.request(w, scenario)
	r.base = w.base
	return r
}

// instance is the base URL client i sends to: the load is spread evenly over t.URLs.
func (t *target) instance(i int) string {
	if len(t.URLs) == 0 {
		return t.BaseURL
	}
	return t.URLs[i%len(t.URLs)]
}

const keysPath = "/api/v1/user-api-keys"

func (t *target) request(w *worker, scenario string) request {
	w.seq++
	pick := func() benchKey { return t.Keys[w.rnd.IntN(len(t.Keys))] }
	switch scenario {
	case "mixed":
		// A service's day: mostly checks and reads, some renames, a few creations and revocations.
		switch n := w.rnd.IntN(100); {
		case n < 50:
			scenario = "check"
		case n < 75:
			scenario = "get"
		case n < 93:
			scenario = "patch"
		case n < 98:
			scenario = "create"
		default:
			scenario = "revoke"
		}
	}
	switch scenario {
	case "patch":
		return request{method: http.MethodPatch, path: keysPath + "/" + pick().ID, body: fmt.Appendf(nil, `{"description":"bench %d-%d"}`, w.rnd.Uint32(), w.seq)}
	case "patch-hot":
		return request{method: http.MethodPatch, path: keysPath + "/" + t.Keys[0].ID, body: fmt.Appendf(nil, `{"description":"hot %d-%d"}`, w.rnd.Uint32(), w.seq)}
	case "revoke":
		i := t.revokeNext.Add(1) - 1
		k := t.Keys[int(i)%len(t.Keys)] // past the end the revokes are no-ops; the report says so
		return request{method: http.MethodPatch, path: keysPath + "/" + k.ID, body: []byte(`{"revoked":true}`)}
	case "get":
		return request{method: http.MethodGet, path: keysPath + "/" + pick().ID}
	case "check":
		return request{method: http.MethodPost, path: keysPath + "/check", body: []byte(`{"api_key":"` + pick().Secret + `"}`)}
	case "create":
		return request{method: http.MethodPost, path: keysPath, body: fmt.Appendf(nil, `{"user_id":"bench-user-%d","description":"bench create"}`, w.rnd.IntN(1000))}
	case "create-replay":
		// A retried create: one of 16 Idempotency-Keys, each always with its own body, so
		// that all but the first request of each key are answered from its record.
		n := w.rnd.IntN(16)
		return request{method: http.MethodPost, path: keysPath, body: fmt.Appendf(nil, `{"user_id":"bench-replay","description":"replay %d"}`, n),
			idempotencyKey: fmt.Sprintf("keysbench-replay-%s-%d", t.ProjectID, n)}
	}
	panic("unknown scenario " + scenario)
}

// do sends one request and classifies the answer: "" for a 2xx, else "status CODE".
func (t *target) do(ctx context.Context, c *http.Client, r request) string {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	base := r.base
	if base == "" {
		base = t.BaseURL
	}
	req, err := http.NewRequestWithContext(ctx, r.method, base+r.path, body)
	if err != nil {
		return "request: " + err.Error()
	}
	req.Header.Set("x-stack-project-id", t.ProjectID)
	req.Header.Set("x-stack-secret-server-key", t.ServerKey)
	if r.body != nil {
		req.Header.Set("content-type", "application/json")
	}
	if r.idempotencyKey != "" {
		req.Header.Set("Idempotency-Key", r.idempotencyKey)
	}
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "cancelled"
		}
		return "transport: " + shortError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		_, _ = io.Copy(io.Discard, resp.Body)
		return ""
	}
	code := resp.Header.Get("x-stack-known-error")
	if code == "" {
		var e struct{ Code string }
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		_ = json.Unmarshal(b, &e)
		code = e.Code
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return strings.TrimSpace(strconv.Itoa(resp.StatusCode) + " " + code)
}

func shortError(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// runLoad drives one scenario against one target and measures it.
func runLoad(ctx context.Context, t *target, cfg loadConfig) (result, error) {
	if len(t.Keys) == 0 && cfg.Scenario != "create" {
		return result{}, fmt.Errorf("scenario %s needs pre-created keys", cfg.Scenario)
	}
	client := newHTTPClient(cfg.Clients)
	defer client.CloseIdleConnections()
	t.revokeNext.Store(0)

	var recording atomic.Bool
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := make([]*worker, cfg.Clients)
	for i := range workers {
		workers[i] = &worker{rnd: rand.New(rand.NewPCG(uint64(i)+1, uint64(time.Now().UnixNano()))), errors: map[string]int{},
			base: t.instance(i)}
	}
	record := func(w *worker, due time.Time, outcome string) {
		if !recording.Load() || outcome == "cancelled" {
			return
		}
		w.hist.record(time.Since(due))
		w.total++
		if outcome == "" {
			w.ok++
		} else {
			w.errors[outcome]++
		}
	}

	var wg sync.WaitGroup
	var unsent atomic.Uint64
	if cfg.Rate <= 0 {
		for _, w := range workers {
			wg.Go(func() {
				for runCtx.Err() == nil {
					r := t.next(w, cfg.Scenario)
					start := time.Now()
					record(w, start, t.do(runCtx, client, r))
				}
			})
		}
	} else {
		due := make(chan time.Time, cfg.Clients)
		for _, w := range workers {
			wg.Go(func() {
				for d := range due {
					r := t.next(w, cfg.Scenario)
					record(w, d, t.do(runCtx, client, r))
				}
			})
		}
		wg.Go(func() {
			defer close(due)
			interval := time.Duration(float64(time.Second) / cfg.Rate)
			start := time.Now()
			for i := int64(0); ; i++ {
				at := start.Add(time.Duration(i) * interval)
				if d := time.Until(at); d > 0 {
					select {
					case <-time.After(d):
					case <-runCtx.Done():
						return
					}
				}
				select {
				case due <- at:
				case <-runCtx.Done():
					return
				default:
					// Every client is busy: the request is counted as unsent rather than
					// queued without bound; its lateness shows in the next ones.
					if recording.Load() {
						unsent.Add(1)
					}
				}
			}
		})
	}

	sleepCtx(ctx, cfg.Warmup)
	cpuBefore := cfg.CPU.sample()
	recording.Store(true)
	began := time.Now()
	sleepCtx(ctx, cfg.Duration)
	recording.Store(false)
	elapsed := time.Since(began)
	cpuAfter := cfg.CPU.sample()
	cancel()
	wg.Wait()

	var h histogram
	res := result{Target: t.Name, Scenario: cfg.Scenario, Clients: cfg.Clients, Rate: cfg.Rate,
		DurationS: elapsed.Seconds(), Errors: map[string]int{}, Unsent: unsent.Load()}
	for _, w := range workers {
		h.merge(&w.hist)
		res.Requests += w.total
		res.OK += w.ok
		for k, v := range w.errors {
			res.Errors[k] += v
		}
	}
	if cfg.Scenario == "revoke" || cfg.Scenario == "mixed" {
		res.KeysRevoked = min(t.revokeNext.Load(), int64(len(t.Keys)))
	}
	res.CPUPerRequestUs = perRequest(cpuBefore, cpuAfter, res.Requests)
	res.RPS = float64(res.Requests) / elapsed.Seconds()
	res.OKRPS = float64(res.OK) / elapsed.Seconds()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	res.P50Ms, res.P90Ms, res.P99Ms, res.P999Ms = ms(h.quantile(0.5)), ms(h.quantile(0.9)), ms(h.quantile(0.99)), ms(h.quantile(0.999))
	res.MaxMs = ms(h.max)
	if len(res.Errors) == 0 {
		res.Errors = nil
	}
	return res, ctx.Err()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
