package api

import (
	"math"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// projectLimiter is a token bucket per project: one tenant sending more than its rate gets
// 429 RATE_LIMITED with Retry-After, and the others are not slowed by it. Buckets exist only
// for authenticated projects, so their number is bounded by the projects there are.
type projectLimiter struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

// newProjectLimiter returns a limiter of perSecond requests per project with bursts of
// burst, or nil (no limit) when perSecond is 0.
func newProjectLimiter(perSecond float64, burst int) *projectLimiter {
	if perSecond <= 0 {
		return nil
	}
	if burst <= 0 {
		burst = max(1, int(math.Ceil(2*perSecond)))
	}
	return &projectLimiter{limit: rate.Limit(perSecond), burst: burst, buckets: map[string]*rate.Limiter{}}
}

// allow takes a token from the project's bucket. When there is none it returns the error
// response, with the whole seconds until one will be there as Retry-After.
func (l *projectLimiter) allow(projectID string, now time.Time) *apiError {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	b, ok := l.buckets[projectID]
	if !ok {
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[projectID] = b
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
		Message:    "Too many requests for this project; retry the request later.",
		RetryAfter: max(1, int(math.Ceil(wait.Seconds()))),
	}
}
