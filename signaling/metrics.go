package signaling

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	registry     *prometheus.Registry
	requests     *prometheus.CounterVec
	setup        prometheus.Histogram
	originErrors *prometheus.CounterVec
	rehomed      prometheus.Counter
	reaped       prometheus.Counter
	setupsReaped prometheus.Counter
	pinsReleased prometheus.Counter
	orphaned     prometheus.Gauge
	unheldReaped prometheus.Counter
	unheld       prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtcedge_signaling_requests_total", Help: "HTTP requests by endpoint and status.",
		}, []string{"endpoint", "code"}),
		setup: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rtcedge_signaling_setup_seconds", Help: "WHIP/WHEP setup time, request to 201.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		originErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtcedge_signaling_origin_errors_total", Help: "Failed origin calls by kind.",
		}, []string{"kind"}),
		reaped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rtcedge_signaling_sessions_reaped_total", Help: "Orphaned sessions (relay dead past the grace period) removed by the reaper.",
		}),
		setupsReaped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rtcedge_signaling_setups_reaped_total", Help: "Setups whose signaling instance died mid-way, undone by the reaper (origin and relay sessions, records).",
		}),
		pinsReleased: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rtcedge_signaling_pins_released_total", Help: "Stream pins released by the reaper because their stream had no session and no setup.",
		}),
		orphaned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rtcedge_signaling_orphaned_sessions", Help: "Sessions assigned to a relay with no registration, at the reaper's last pass.",
		}),
		unheldReaped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rtcedge_signaling_unheld_sessions_reaped_total",
			Help: "Session records removed by the reaper because their live relay did not hold the session past the grace period (released while etcd was unreachable).",
		}),
		unheld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rtcedge_signaling_unheld_sessions", Help: "Session records whose live relay does not hold the session (no pending setup), at the reaper's last pass.",
		}),
		rehomed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rtcedge_signaling_sessions_rehomed_total", Help: "Sessions moved to another relay by an ICE restart because theirs was gone.",
		}),
	}
	// Export every kind from the start, so that rates work from zero.
	for _, kind := range []string{"transport", "rejected", "status", "no_location", "bad_answer",
		"no_media_address", "config", "delete", "answer"} {
		m.originErrors.WithLabelValues(kind)
	}
	m.registry.MustRegister(m.requests, m.setup, m.originErrors, m.rehomed, m.reaped, m.setupsReaped, m.pinsReleased, m.orphaned,
		m.unheldReaped, m.unheld,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// statusRecorder captures a response's status for metrics and logs.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// instrument counts and logs requests of one endpoint.
func (srv *Server) instrument(endpoint string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		srv.metrics.requests.WithLabelValues(endpoint, strconv.Itoa(rec.status)).Inc()
		srv.logger(r.Context()).Info("http", "method", r.Method, "path", r.URL.Path, "endpoint", endpoint, "status", rec.status,
			"duration", time.Since(start), "remote", r.RemoteAddr)
	}
}
