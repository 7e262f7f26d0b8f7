package agent

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the agent's Prometheus metrics, all prefixed podid_agent_.
// A nil *Metrics records nothing, so every component works without one.
type Metrics struct {
	requests        *prometheus.CounterVec
	requestDuration prometheus.Histogram
	cacheHits       prometheus.Counter
	cacheMisses     prometheus.Counter
	cacheEntries    prometheus.Gauge
	serverCalls     *prometheus.CounterVec
	serverErrors    *prometheus.CounterVec
	endpointCalls   *prometheus.CounterVec
	endpointUps     *prometheus.GaugeVec
	staleServed     prometheus.Counter
	refreshes       *prometheus.CounterVec
}

// NewMetrics creates the agent's metrics and registers them on reg. A nil reg
// leaves them unregistered. Registering twice on one registry panics, as
// prometheus.MustRegister does: that is a wiring bug, not bad input.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "podid_agent"
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "requests_total",
			Help: "Credential requests served, by HTTP status code.",
		}, []string{"code"}),
		requestDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "request_duration_seconds",
			Help:    "Time to answer a credential request.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "cache_hits_total",
			Help: "Requests answered from the cache without a server call.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "cache_misses_total",
			Help: "Requests that needed a server call (absent or stale entry).",
		}),
		cacheEntries: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "cache_entries",
			Help: "Tokens with cached credentials.",
		}),
		serverCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "server_calls_total",
			Help: "Calls to podid server's AssumeRoleForPodIdentity, each attempt counted, by result (ok or error).",
		}, []string{"result"}),
		serverErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "server_errors_total",
			Help: "Failed calls to podid server, by AWS error name (or network, timeout).",
		}, []string{"code"}),
		endpointCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "endpoint_calls_total",
			Help: "Calls to podid server, each attempt counted, by server endpoint and result (ok or error).",
		}, []string{"endpoint", "result"}),
		endpointUps: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "endpoint_up",
			Help: "1 while a podid server endpoint is in use, 0 while the agent skips it after failures.",
		}, []string{"endpoint"}),
		staleServed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "stale_served_total",
			Help: "Requests answered with cached, still valid credentials because a renewal failed.",
		}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "refreshes_total",
			Help: "Background renewals, by result (ok, error, evicted).",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.requestDuration, m.cacheHits, m.cacheMisses, m.cacheEntries,
			m.serverCalls, m.serverErrors, m.endpointCalls, m.endpointUps, m.staleServed, m.refreshes)
	}
	return m
}

func (m *Metrics) request(status int, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(strconv.Itoa(status)).Inc()
	m.requestDuration.Observe(d.Seconds())
}

func (m *Metrics) hit() {
	if m != nil {
		m.cacheHits.Inc()
	}
}

func (m *Metrics) miss() {
	if m != nil {
		m.cacheMisses.Inc()
	}
}

func (m *Metrics) entries(n int) {
	if m != nil {
		m.cacheEntries.Set(float64(n))
	}
}

// serverCall counts one attempt on endpoint; errCode is empty on success.
func (m *Metrics) serverCall(endpoint, errCode string) {
	if m == nil {
		return
	}
	result := "ok"
	if errCode != "" {
		result = "error"
		m.serverErrors.WithLabelValues(errCode).Inc()
	}
	m.serverCalls.WithLabelValues(result).Inc()
	m.endpointCalls.WithLabelValues(endpoint, result).Inc()
}

func (m *Metrics) endpointUp(endpoint string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.endpointUps.WithLabelValues(endpoint).Set(v)
}

func (m *Metrics) stale() {
	if m != nil {
		m.staleServed.Inc()
	}
}

func (m *Metrics) refresh(result string) {
	if m != nil {
		m.refreshes.WithLabelValues(result).Inc()
	}
}
