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
// client address for the unauthenticated credential-scanning endpoint and for failed
// authentications (a token taken per failure, checked before each request: see exhausted). Buckets are bounded:
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
	b := l.bucket(caller, now)
	res := b.ReserveN(now, 1)
	wait := res.DelayFrom(now)
	if res.OK() && wait == 0 {
		return nil
	}
	res.CancelAt(now)
	return l.refusal(wait)
}

// exhausted tells, without taking a token, whether the caller's bucket is empty: the check
// before a request whose failure alone takes a token (spend). A caller with no bucket yet
// has a full one and gets none made.
func (l *limiter) exhausted(caller string, now time.Time) *apiError {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	b, ok := l.buckets[caller]
	l.mu.Unlock()
	if !ok {
		return nil
	}
	tokens := b.TokensAt(now)
	if tokens >= 1 {
		return nil
	}
	return l.refusal(time.Duration((1 - tokens) / float64(l.limit) * float64(time.Second)))
}

// spend takes a token from the caller's bucket, if it has one.
func (l *limiter) spend(caller string, now time.Time) {
	if l == nil {
		return
	}
	l.bucket(caller, now).AllowN(now, 1)
}

// bucket is the caller's bucket, made full when it has none.
func (l *limiter) bucket(caller string, now time.Time) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[caller]
	if !ok {
		if len(l.buckets) >= l.maxBuckets {
			l.evict(now)
		}
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[caller] = b
	}
	return b
}

// refusal is the 429 of a caller who must wait before the next token.
func (l *limiter) refusal(wait time.Duration) *apiError {
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

// authFailureBurst is Deps.AuthFailureBurst, by default ten times the rate.
func authFailureBurst(d Deps) int {
	if d.AuthFailureBurst > 0 {
		return d.AuthFailureBurst
	}
	return max(1, int(math.Ceil(10*d.AuthFailureRate)))
}
