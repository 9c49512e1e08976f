package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	flag "github.com/spf13/pflag"

	"github.com/keyledger/keyledger/eventstore"
)

// revokeCheckSummary is what revoke-check reports.
type revokeCheckSummary struct {
	Instances int `json:"instances"`
	Tries     int `json:"tries"`
	// Stale counts checks answered 200 (the key accepted) right after another instance
	// answered 200 to its revocation: each one is a revoked key that still worked.
	Stale int `json:"stale_accepts"`
	// Revoked counts checks answered 401 API_KEY_REVOKED after the revocation: as it should.
	Revoked int `json:"revoked"`
	// NeverAccepted counts keys the checking instance did not accept before the revocation
	// within --accept-timeout; such a try proves nothing and is not counted in Revoked.
	NeverAccepted int            `json:"never_accepted"`
	Errors        map[string]int `json:"errors,omitempty"`
	CheckP50Ms    float64        `json:"check_after_revoke_p50_ms"`
	CheckP99Ms    float64        `json:"check_after_revoke_p99_ms"`
	Seconds       float64        `json:"seconds"`
}

// runRevokeCheck revokes each of --tries keys on one instance and checks it on another right
// after the revocation's 200, counting the checks that still accept it. Before each revoke
// the checking instance must have accepted the key, so that every try could go wrong.
func runRevokeCheck(fs *flag.FlagSet, conn *eventstore.ConnectConfig) func(ctx context.Context, stdout, stderr io.Writer) int {
	var tc setupConfig
	tc.Kind = kindKeysd
	fs.StringVar(&tc.URL, "url", "http://127.0.0.1:8080,http://127.0.0.1:8081", "comma-separated base URLs of the keysd instances: try i revokes on instance i and checks on instance i+1 (modulo their number)")
	fs.StringVar(&tc.SecretFile, "secret-file", "data/secret", "the deployment's server-side secret")
	tries := fs.Int("tries", 2000, "keys to revoke and check, each once")
	clients := fs.Int("clients", 4, "tries in flight at once")
	acceptTimeout := fs.Duration("accept-timeout", 10*time.Second, "how long the checking instance may take to accept a new key before its revocation")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		if *tries < 1 || *clients < 1 || *acceptTimeout <= 0 {
			fmt.Fprintln(stderr, "keysbench revoke-check: --tries, --clients and --accept-timeout must be positive")
			return 2
		}
		tc.Keys, tc.NATS = *tries, *conn
		t, err := prepare(ctx, kindKeysd, tc)
		if err != nil {
			fmt.Fprintf(stderr, "keysbench revoke-check: %v\n", err)
			return 1
		}
		sum := revokeThenCheck(ctx, t, *clients, *acceptTimeout)
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "keysbench revoke-check: %v\n", ctx.Err())
			return 1
		}
		if *asJSON {
			if code := printJSON(stdout, sum); code != 0 {
				return code
			}
		} else {
			fmt.Fprintf(stdout, "%d tries over %d instances in %.1f s: %d stale accepts, %d revoked, %d never accepted before the revoke, errors %v; check after revoke p50 %.2f ms, p99 %.2f ms\n",
				sum.Tries, sum.Instances, sum.Seconds, sum.Stale, sum.Revoked, sum.NeverAccepted, sum.Errors, sum.CheckP50Ms, sum.CheckP99Ms)
		}
		if sum.Stale > 0 || sum.NeverAccepted > 0 || len(sum.Errors) > 0 {
			return 1
		}
		return 0
	}
}

// revokeThenCheck runs the tries on t's keys, clients at a time.
func revokeThenCheck(ctx context.Context, t *target, clients int, acceptTimeout time.Duration) revokeCheckSummary {
	urls := t.URLs
	if len(urls) == 0 {
		urls = []string{t.BaseURL}
	}
	client := newHTTPClient(clients)
	defer client.CloseIdleConnections()
	sum := revokeCheckSummary{Instances: len(urls), Tries: len(t.Keys), Errors: map[string]int{}}
	var (
		mu   sync.Mutex
		hist histogram
		wg   sync.WaitGroup
	)
	next := make(chan int)
	began := time.Now()
	for range clients {
		wg.Go(func() {
			for i := range next {
				k := t.Keys[i]
				revoker, checker := urls[i%len(urls)], urls[(i+1)%len(urls)]
				check := request{method: http.MethodPost, path: keysPath + "/check", body: []byte(`{"api_key":"` + k.Secret + `"}`), base: checker}
				revoke := request{method: http.MethodPatch, path: keysPath + "/" + k.ID, body: []byte(`{"revoked":true}`), base: revoker}
				accepted := false
				for deadline := time.Now().Add(acceptTimeout); ctx.Err() == nil && time.Now().Before(deadline); {
					if t.do(ctx, client, check) == "" {
						accepted = true
						break
					}
					sleepCtx(ctx, 10*time.Millisecond)
				}
				if !accepted {
					mu.Lock()
					sum.NeverAccepted++
					mu.Unlock()
					continue
				}
				outcome := t.do(ctx, client, revoke)
				if outcome != "" {
					mu.Lock()
					sum.Errors["revoke: "+outcome]++
					mu.Unlock()
					continue
				}
				start := time.Now()
				outcome = t.do(ctx, client, check)
				took := time.Since(start)
				mu.Lock()
				hist.record(took)
				switch outcome {
				case "":
					sum.Stale++
				case "401 API_KEY_REVOKED":
					sum.Revoked++
				default:
					sum.Errors["check: "+outcome]++
				}
				mu.Unlock()
			}
		})
	}
	for i := range t.Keys {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	sum.Seconds = time.Since(began).Seconds()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	sum.CheckP50Ms, sum.CheckP99Ms = ms(hist.quantile(0.5)), ms(hist.quantile(0.99))
	if len(sum.Errors) == 0 {
		sum.Errors = nil
	}
	return sum
}
