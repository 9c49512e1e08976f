package api

import (
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
}

func newMetrics(reg *prometheus.Registry, projector Waiter) (*metrics, error) {
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
	}
	position := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyledger_projector_position",
		Help: "Stream sequence of the last event the read model applied.",
	}, func() float64 { return float64(projector.Position()) })
	var errs []error
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.inFlight, m.shed, m.panics, m.errors, position} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

func newDefaultRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}
