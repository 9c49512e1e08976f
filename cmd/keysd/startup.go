package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// startup bounds how long keysd waits at start for what it depends on (NATS, JetStream,
// PostgreSQL) to answer: in a deployment they start at the same time as keysd, or are
// failing over, and an exit would only make the orchestrator restart keysd in a loop.
type startup struct {
	deadline time.Time
	log      *slog.Logger
}

func newStartup(timeout time.Duration, log *slog.Logger) startup {
	return startup{deadline: time.Now().Add(timeout), log: log}
}

// errStartupTimeout: something keysd depends on did not answer within --startup-timeout.
var errStartupTimeout = errors.New("gave up waiting (--startup-timeout)")

// wait runs op until it succeeds, fails for good (retryable false), or the start-up
// deadline passes, backing off exponentially (250ms doubling to 5s, jittered) with a log line
// per wait.
func wait[T any](ctx context.Context, s startup, what string, retryable func(error) bool, op func(context.Context) (T, error)) (T, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.Multiplier = 250*time.Millisecond, 5*time.Second, 2
	waitCtx, cancel := context.WithDeadline(ctx, s.deadline)
	defer cancel()
	attempts := 0
	var last error
	v, err := backoff.Retry(waitCtx, func() (T, error) {
		attempts++
		v, err := op(waitCtx)
		if err != nil {
			last = err
			if !retryable(err) {
				return v, backoff.Permanent(err)
			}
		}
		return v, err
	},
		backoff.WithBackOff(b),
		backoff.WithMaxElapsedTime(0), // the deadline is waitCtx's
		backoff.WithNotify(func(err error, next time.Duration) {
			s.log.Warn("waiting for "+what, "error", err, "retry_in", next.Round(time.Millisecond),
				"gives_up_in", time.Until(s.deadline).Round(time.Second))
		}))
	switch {
	case err == nil:
		if attempts > 1 {
			s.log.Info(what+" answered", "attempts", attempts)
		}
		return v, nil
	case ctx.Err() != nil: // SIGTERM while waiting
		return v, ctx.Err()
	case waitCtx.Err() != nil && last != nil && retryable(last):
		return v, fmt.Errorf("%s: %w after %d attempts: %w", what, errStartupTimeout, attempts, last)
	}
	return v, err
}
