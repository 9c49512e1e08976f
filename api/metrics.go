package api

import (
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyledger/keyledger/eventstore"
	"github.com/keyledger/keyledger/projections"
)

// metrics are the API's Prometheus metrics. Labels are route templates, methods, statuses
// and error codes: few values each, and never an id or a secret.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
	shed     prometheus.Counter
	panics   prometheus.Counter
	errors   *prometheus.CounterVec
	ready    *prometheus.GaugeVec
	// idempotency counts requests with an Idempotency-Key by outcome (idempotencyOutcomes).
	idempotency *prometheus.CounterVec
}

// The outcomes of a request with an Idempotency-Key, the label of
// keyledger_idempotency_requests_total.
const (
	idemClaimed        = "claimed"         // first seen: the request ran
	idemReplayedMemory = "replayed_memory" // answered again from this keysd's copy of the record
	idemReplayedBucket = "replayed_bucket" // answered again from the bucket's record
	idemReused         = "reused"          // another body: 422 IDEMPOTENCY_KEY_REUSED
	idemInUse          = "in_use"          // first still in flight: 409 IDEMPOTENCY_KEY_IN_USE
	idemTakenOver      = "taken_over"      // a stale claim of a crashed keysd: the request ran
	idemStored         = "stored"          // the response was stored in the bucket, sealed
	idemNotStored      = "store_failed"    // the response could not be stored
	idemReleased       = "released"        // not replayable (4xx of its shape, 5xx): the claim was dropped
)

var idempotencyOutcomes = []string{idemClaimed, idemReplayedMemory, idemReplayedBucket, idemReused, idemInUse,
	idemTakenOver, idemStored, idemNotStored, idemReleased}

// setReadiness records the outcome of each readiness check of the latest /readyz.
func (m *metrics) setReadiness(results []checkResult) {
	for _, r := range results {
		v := 0.0
		if r.Status == "ok" {
			v = 1
		}
		m.ready.WithLabelValues(r.Name).Set(v)
	}
}

func newMetrics(reg *prometheus.Registry, projector Waiter, store *eventstore.Store, rm projections.ReadModel, barrier *streamPosition,
	lastUse *projections.LastUse, replays *replayCache) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyledger_http_requests_total",
			Help: "HTTP requests handled, by method, route template and status.",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keyledger_http_request_duration_seconds",
			Help:    "Time to handle an HTTP request, by method, route template and status.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"method", "route", "status"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyledger_http_requests_in_flight",
			Help: "HTTP requests being handled now.",
		}),
		shed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyledger_http_requests_shed_total",
			Help: "API requests refused with 503 because too many were in flight.",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyledger_http_panics_total",
			Help: "Panics recovered while handling HTTP requests.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyledger_http_errors_total",
			Help: "Error responses, by error code.",
		}, []string{"code"}),
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keyledger_readiness_check",
			Help: "1 when the readiness check passed at the latest GET /readyz, 0 when it failed, by check name.",
		}, []string{"check"}),
		idempotency: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyledger_idempotency_requests_total",
			Help: "Requests with an Idempotency-Key, by outcome: claimed, replayed_memory, replayed_bucket, reused (422), in_use (409), taken_over, stored, store_failed, released.",
		}, []string{"outcome"}),
	}
	for _, o := range idempotencyOutcomes {
		m.idempotency.WithLabelValues(o) // every outcome shows from the start, at 0
	}
	position := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyledger_projector_position",
		Help: "Stream sequence of the last event the read model applied.",
	}, func() float64 { return float64(projector.Position()) })
	var errs []error
	collectorsToRegister := append([]prometheus.Collector{m.requests, m.duration, m.inFlight, m.shed, m.panics, m.errors, m.ready, position,
		m.idempotency, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyledger_idempotency_cached_records",
			Help: "Completed idempotency records this keysd keeps a copy of, to replay without reading the bucket.",
		}, func() float64 { return float64(replays.len()) })},
		projectorCollectors(projector)...)
	collectorsToRegister = append(collectorsToRegister, lastUseCollectors(lastUse)...)
	collectorsToRegister = append(collectorsToRegister, storeCollectors(store)...)
	collectorsToRegister = append(collectorsToRegister, keyIndexCollectors(rm)...)
	collectorsToRegister = append(collectorsToRegister,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keyledger_read_barrier_reads_total",
			Help: "Reads that waited for the stream's last sequence (the read barrier).",
		}, func() float64 { return float64(barrier.reads.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keyledger_read_barrier_requests_total",
			Help: "Requests for the stream's last sequence the read barrier sent, each shared by the reads that arrived before it.",
		}, func() float64 { return float64(barrier.requests.Load()) }))
	for _, c := range append(collectorsToRegister, groupCommitCollectors(store)...) {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	// The runtime's metrics, unless whoever made the registry registered them already.
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			if _, dup := errors.AsType[prometheus.AlreadyRegisteredError](err); !dup {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// lastUseCollectors exposes the last-use recorder's counts (CONTRACT section 7).
func lastUseCollectors(l *projections.LastUse) []prometheus.Collector {
	if l == nil {
		return nil
	}
	return []prometheus.Collector{
		statsCounter(l.Stats, "keyledger_last_use_touches_total", "Successful checks recorded in memory as a key's last use.",
			func(s projections.LastUseStats) uint64 { return s.Touches }),
		statsCounter(l.Stats, "keyledger_last_use_flushes_total", "Flushes of the recorded last uses that had something to write.",
			func(s projections.LastUseStats) uint64 { return s.Flushes }),
		statsCounter(l.Stats, "keyledger_last_use_records_written_total", "Last-use records written to the KEYLEDGER_LAST_USED bucket (at most one per key per flush).",
			func(s projections.LastUseStats) uint64 { return s.Written }),
		statsCounter(l.Stats, "keyledger_last_use_flush_errors_total", "Last-use records whose write to the bucket failed; each is retried at the next flush.",
			func(s projections.LastUseStats) uint64 { return s.WriteErrors }),
		statsCounter(l.Stats, "keyledger_last_use_records_read_total", "Last-use records read from the bucket's watch (this and other instances').",
			func(s projections.LastUseStats) uint64 { return s.Learned }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyledger_last_use_keys",
			Help: "Keys this keysd knows a last use of.",
		}, func() float64 { return float64(l.Stats().Keys) }),
	}
}

// storeCollectors exposes the event store's connection and the stream's leader elections.
func storeCollectors(store *eventstore.Store) []prometheus.Collector {
	if store == nil {
		return nil
	}
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keyledger_stream_leader_changes_total",
			Help: "Leader elections of the event stream seen since start (JetStream advisories).",
		}, func() float64 { return float64(store.LeaderChanges()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keyledger_nats_reconnects_total",
			Help: "Times the NATS connection was lost and made again (each follows a disconnect).",
		}, func() float64 { return float64(store.Conn().Stats().Reconnects) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keyledger_nats_disconnects_total",
			Help: "Times the NATS connection was lost.",
		}, func() float64 { return float64(store.Disconnects()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyledger_event_stream_unsafe",
			Help: "1 while writes are suspended because the event stream's configuration does not keep events (deleted, sealed, limits, deletes or purges allowed...).",
		}, func() float64 {
			if len(store.GuardState().Unsafe) > 0 {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keyledger_event_stream_unsafe_total",
			Help: "Times the event stream's configuration was found no longer keeping events (writes suspended) since start.",
		}, func() float64 { return float64(store.GuardState().Trips) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyledger_event_stream_missing_events",
			Help: "Events the stream held once and holds no more (its first sequence moved, or messages were deleted), as far as its state tells.",
		}, func() float64 { return float64(store.GuardState().Lost) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyledger_nats_connected",
			Help: "1 while keysd is connected to a NATS server.",
		}, func() float64 {
			if store.Conn().IsConnected() {
				return 1
			}
			return 0
		}),
	}
}

// keyIndexCollectors exposes the key index's counters when the read model is one
// (projections.KeyIndex, as internal/service wires it).
func keyIndexCollectors(rm projections.ReadModel) []prometheus.Collector {
	ix, ok := rm.(interface {
		Stats() projections.KeyIndexStats
	})
	if !ok {
		return nil
	}
	return []prometheus.Collector{
		statsCounter(ix.Stats, "keyledger_key_index_hits_total", "Key lookups (check, get, a command's load) answered from the key index in memory.",
			func(s projections.KeyIndexStats) uint64 { return s.Hits }),
		statsCounter(ix.Stats, "keyledger_key_index_misses_total", "Key lookups the key index did not hold, read from the read model.",
			func(s projections.KeyIndexStats) uint64 { return s.Misses }),
		statsCounter(ix.Stats, "keyledger_key_index_evictions_total", "Keys dropped from the key index to make room for others.",
			func(s projections.KeyIndexStats) uint64 { return s.Evictions }),
		statsCounter(ix.Stats, "keyledger_key_index_fills_refused_total", "Key states read from the read model (or written by a command) not kept because an event on the key, or on a key of the same slot, was applied meanwhile.",
			func(s projections.KeyIndexStats) uint64 { return s.FillsRefused }),
		statsGauge(ix.Stats, "keyledger_key_index_keys", "Keys the key index holds.",
			func(s projections.KeyIndexStats) int { return s.Keys }),
		statsGauge(ix.Stats, "keyledger_key_index_capacity_keys", "Most keys the key index holds (--key-cache-size).",
			func(s projections.KeyIndexStats) int { return s.Capacity }),
	}
}

// groupCommitCollectors exposes the event store's group commits (keysd --sync-always).
func groupCommitCollectors(store *eventstore.Store) []prometheus.Collector {
	if store == nil || !store.GroupCommitStats().Enabled {
		return nil
	}
	return []prometheus.Collector{
		statsCounter(store.GroupCommitStats, "keyledger_group_commit_batches_total", "Atomic batches that carried the appends of several commands at once.",
			func(s eventstore.GroupCommitStats) uint64 { return s.Batches }),
		statsCounter(store.GroupCommitStats, "keyledger_group_commit_commands_total", "Commands appended within those batches.",
			func(s eventstore.GroupCommitStats) uint64 { return s.Commands }),
		statsCounter(store.GroupCommitStats, "keyledger_group_commit_retried_total", "Commands sent again alone because the server refused their batch for another command in it.",
			func(s eventstore.GroupCommitStats) uint64 { return s.Retried }),
	}
}

// projectorCollectors exposes the projector's counters when it offers them (the projector of
// package projections does).
func projectorCollectors(projector Waiter) []prometheus.Collector {
	p, ok := projector.(interface {
		Stats() projections.ProjectorStats
	})
	if !ok {
		return nil
	}
	return []prometheus.Collector{
		statsGauge(p.Stats, "keyledger_projector_ready", "1 once the projector has caught up with the stream.",
			func(s projections.ProjectorStats) float64 {
				if s.Ready {
					return 1
				}
				return 0
			}),
		statsGauge(p.Stats, "keyledger_projector_lag_events", "Events in the stream the read model has not applied yet.",
			func(s projections.ProjectorStats) float64 { return float64(s.Lag) }),
		statsGauge(p.Stats, "keyledger_projector_lag_seconds", "How long ago the oldest event the read model has not applied was stored (0 when caught up).",
			func(s projections.ProjectorStats) float64 { return s.LagTime.Seconds() }),
		statsCounter(p.Stats, "keyledger_projector_consumer_resets_total", "Times the projector recreated its consumer from the checkpoint after losing it or stalling behind the stream.",
			func(s projections.ProjectorStats) float64 { return float64(s.ConsumerResets) }),
		statsCounter(p.Stats, "keyledger_projector_events_applied_total", "Events applied to the read model.",
			func(s projections.ProjectorStats) float64 { return float64(s.EventsApplied) }),
		statsCounter(p.Stats, "keyledger_projector_batches_total", "Batches applied to the read model.",
			func(s projections.ProjectorStats) float64 { return float64(s.Batches) }),
		statsCounter(p.Stats, "keyledger_projector_poison_total", "Messages on the stream that are not valid events, set aside.",
			func(s projections.ProjectorStats) float64 { return float64(s.Poison) }),
		statsCounter(p.Stats, "keyledger_projector_refused_total", "Authenticated events the read model did not apply because they do not follow their key's version (a genuine event published again, a version gap), set aside.",
			func(s projections.ProjectorStats) float64 { return float64(s.Refused) }),
		statsCounter(p.Stats, "keyledger_projector_dead_lettered_total", "Poison messages copied to the dead-letter stream.",
			func(s projections.ProjectorStats) float64 { return float64(s.DeadLettered) }),
		statsCounter(p.Stats, "keyledger_projector_dead_letter_failures_total", "Poison messages that could not be copied to the dead-letter stream (skipped all the same).",
			func(s projections.ProjectorStats) float64 { return float64(s.DeadLetterFailures) }),
		statsCounter(p.Stats, "keyledger_projector_failures_total", "Failed attempts to read or apply events (retried).",
			func(s projections.ProjectorStats) float64 { return float64(s.Failures) }),
	}
}

func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// statsCounter and statsGauge are a metric read, at each scrape, from one number of a
// component's Stats: the one way this package exposes a component's own counters.
func statsCounter[S any, N uint64 | int | float64](stats func() S, name, help string, f func(S) N) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f(stats())) })
}

func statsGauge[S any, N uint64 | int | float64](stats func() S, name, help string, f func(S) N) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(f(stats())) })
}
