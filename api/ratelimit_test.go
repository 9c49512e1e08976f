package api

import (
	"testing"
	"time"
)

// TestAuthFailureLimiter: failures alone spend the address's tokens; once they are spent every
// request of the address is refused with the wait until the next token, other addresses are
// not, and a token comes back at the rate.
func TestAuthFailureLimiter(t *testing.T) {
	l := newLimiter(2, 3, "too many failures")
	now := time.Unix(1_000_000, 0)
	if l.exhausted("a", now) != nil {
		t.Fatal("an address with no failures is refused")
	}
	for range 3 {
		l.spend("a", now)
	}
	e := l.exhausted("a", now)
	if e == nil || e.Status != 429 || e.Code != CodeRateLimited || e.RetryAfter != 1 {
		t.Fatalf("after the burst of failures: %+v", e)
	}
	if l.exhausted("b", now) != nil {
		t.Fatal("another address is refused")
	}
	if l.exhausted("a", now.Add(600*time.Millisecond)) != nil {
		t.Fatal("no token back after 600ms at 2/s")
	}
	l.spend("a", now.Add(600*time.Millisecond))
	if l.exhausted("a", now.Add(700*time.Millisecond)) == nil {
		t.Fatal("the token that came back was not spent")
	}
	var none *limiter
	none.spend("a", now)
	if none.exhausted("a", now) != nil {
		t.Fatal("no limit refuses")
	}
}
