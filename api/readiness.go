package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/keyledger/keyledger/eventstore"
)

// ReadinessCheck is one condition keysd must meet to serve writes, checked by GET /readyz.
// /readyz is 200 only when every check passes; its body names each check and what it found,
// so that an operator sees at once which one fails.
type ReadinessCheck struct {
	// Name is the check's name in the /readyz body ("event_store", "projector", ...).
	Name string
	// Check returns nil when the condition holds, else an error saying what is wrong; it
	// must return within ctx's deadline.
	Check func(ctx context.Context) error
}

// readinessTimeout bounds one /readyz: its checks run at once, each within it.
const readinessTimeout = time.Second

// readinessChecks are the built-in checks followed by Deps.ReadinessChecks:
//   - event_store: the stream has a leader with a quorum of current replicas, so a write
//     can be stored now;
//   - projector: it has caught up with the stream since start and is not stalled behind it;
//   - read_model: its database answers.
func (s *server) readinessChecks() []ReadinessCheck {
	checks := []ReadinessCheck{
		{Name: "event_store", Check: func(ctx context.Context) error {
			_, err := s.d.Store.StreamHealth(ctx)
			return err
		}},
		{Name: "projector", Check: s.projectorReady},
		{Name: "read_model", Check: s.d.ReadModel.Ping},
	}
	return append(checks, s.d.ReadinessChecks...)
}

// Staller is a projector that can tell how long it has made no progress while behind.
type Staller interface {
	// Stalled returns how long the projector has neither advanced nor been caught up with the
	// stream, given the stream's last sequence (0 when it is caught up or advancing).
	Stalled(streamLastSeq uint64) time.Duration
}

// stallLimit is how long a projector may stand still behind the stream before the instance
// stops being ready: writes through it would wait for the projector and time out.
const stallLimit = 3 * time.Second

func (s *server) projectorReady(ctx context.Context) error {
	if !s.d.Projector.Ready() {
		return fmt.Errorf("catching up with the event stream since start (at %d)", s.d.Projector.Position())
	}
	st, ok := s.d.Projector.(Staller)
	if !ok {
		return nil
	}
	last, err := s.d.Store.LastSeq(ctx)
	if err != nil {
		return fmt.Errorf("cannot learn the stream's last sequence: %w", err)
	}
	if d := st.Stalled(last); d > stallLimit {
		pos := s.d.Projector.Position()
		return fmt.Errorf("stalled at %d, %d events behind the stream, for %s", pos, last-min(last, pos), d.Round(time.Second))
	}
	return nil
}

// checkResult is one check's line in the /readyz body.
type checkResult struct {
	Name   string `json:"-"`
	Status string `json:"status"` // "ok" or "failing"
	Error  string `json:"error,omitempty"`
}

// readyz runs every readiness check at once and answers 200 when all pass, else 503 naming
// the failing ones. /healthz, by contrast, only says the process is up.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readinessTimeout)
	defer cancel()
	checks := s.readinessChecks()
	results := make([]checkResult, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			results[i] = checkResult{Name: c.Name, Status: "ok"}
			if err := c.Check(ctx); err != nil {
				results[i] = checkResult{Name: c.Name, Status: "failing", Error: err.Error()}
			}
		})
	}
	wg.Wait()
	byName := make(map[string]checkResult, len(results))
	var failing []string
	for _, res := range results {
		byName[res.Name] = res
		if res.Status != "ok" {
			failing = append(failing, res.Name)
		}
	}
	s.metrics.setReadiness(results)
	if len(failing) == 0 {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "checks": byName})
		return
	}
	writeError(w, r, &apiError{
		Status: http.StatusServiceUnavailable, Code: CodeServiceUnavailable,
		Message:    fmt.Sprintf("Not ready: %s failing.", strings.Join(failing, ", ")),
		Details:    map[string]any{"checks": byName, "failing": failing},
		RetryAfter: retryAfterUnavailable, cause: eventstore.ErrUnavailable,
	})
}
