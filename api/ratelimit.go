package api

import (
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter is a token bucket per caller: per project for the API (one tenant sending more than
// its rate gets 429 RATE_LIMITED with Retry-After, and the others are not slowed by it), per
// client address for the unauthenticated credential-scanning endpoint. Buckets are bounded:
// past maxBuckets, the full (idle) ones are dropped, and if none is, all are.
type limiter struct {
	limit      rate.Limit
	burst      int
	message    string
	maxBuckets int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

// maxLimiterBuckets bounds the callers a limiter remembers at once.
const maxLimiterBuckets = 100_000

// newLimiter returns a limiter of perSecond requests per caller with bursts of burst (default
// twice perSecond), answering message when it refuses; nil (no limit) when perSecond is 0.
func newLimiter(perSecond float64, burst int, message string) *limiter {
	if perSecond <= 0 {
		return nil
	}
	if burst <= 0 {
		burst = max(1, int(math.Ceil(2*perSecond)))
	}
	return &limiter{limit: rate.Limit(perSecond), burst: burst, message: message,
		maxBuckets: maxLimiterBuckets, buckets: map[string]*rate.Limiter{}}
}

// allow takes a token from the caller's bucket. When there is none it returns the error
// response, with the whole seconds until one will be there as Retry-After.
func (l *limiter) allow(caller string, now time.Time) *apiError {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	b, ok := l.buckets[caller]
	if !ok {
		if len(l.buckets) >= l.maxBuckets {
			l.evict(now)
		}
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[caller] = b
	}
	l.mu.Unlock()
	res := b.ReserveN(now, 1)
	wait := res.DelayFrom(now)
	if res.OK() && wait == 0 {
		return nil
	}
	res.CancelAt(now)
	return &apiError{
		Status: http.StatusTooManyRequests, Code: CodeRateLimited,
		Message:    l.message,
		RetryAfter: max(1, int(math.Ceil(wait.Seconds()))),
	}
}

// evict drops the buckets that are full again (their callers idle), or all when none is.
// l.mu is held.
func (l *limiter) evict(now time.Time) {
	for k, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= l.maxBuckets {
		clear(l.buckets)
	}
}

// clientAddress is the address a request came from, without its port: what per-address
// limits count. Forwarding headers are not believed (any client can send them).
func clientAddress(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
