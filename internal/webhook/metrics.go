package webhook

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Admission results, the values of the result label of
// podid_webhook_admissions_total.
const (
	ResultMutated              = "mutated"                // a patch was returned
	ResultUnchanged            = "unchanged"              // association, but nothing to inject (already injected, all containers skipped)
	ResultSkippedNoAssociation = "skipped_no_association" // the service account has no association
	ResultSkippedColdCache     = "skipped_cold_cache"     // the association index has not loaded yet
	ResultSkippedOptOut        = "skipped_opt_out"        // the pod carries podid.io/inject: "false"
	ResultSkippedConflict      = "skipped_conflict"       // ErrVolumeConflict
	ResultIgnored              = "ignored"                // not a pod CREATE
	ResultMalformed            = "malformed"              // the review or the pod could not be decoded
	ResultError                = "error"                  // the webhook's own configuration is invalid
)

// Metrics are the webhook's Prometheus metrics, all prefixed podid_webhook_.
// One Metrics is shared by the handler and the association index. A nil
// *Metrics records nothing.
type Metrics struct {
	admissions        *prometheus.CounterVec
	admissionDuration prometheus.Histogram
	refreshes         *prometheus.CounterVec
	associations      prometheus.Gauge
	ready             prometheus.Gauge
	lastSuccess       prometheus.Gauge
}

// NewMetrics creates the webhook's metrics and registers them on reg; a nil
// reg leaves them unregistered. Registering twice on one registry panics, as
// prometheus.MustRegister does: that is a wiring bug, not bad input.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "podid_webhook"
	m := &Metrics{
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "admissions_total",
			Help: "Admission reviews answered, by result (mutated, unchanged, skipped_*, ignored, malformed, error).",
		}, []string{"result"}),
		admissionDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "admission_duration_seconds",
			Help:    "Time to answer an admission review, from the start of decoding to the end of encoding.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "index_refreshes_total",
			Help: "Loads of the association index from podid server, by result (ok or error).",
		}, []string{"result"}),
		associations: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "index_service_accounts",
			Help: "Service accounts with an association in the last loaded index.",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "index_ready",
			Help: "1 once the association index has loaded at least once, else 0.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "index_last_success_timestamp_seconds",
			Help: "Unix time of the last successful load of the association index.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.admissions, m.admissionDuration, m.refreshes, m.associations, m.ready, m.lastSuccess)
	}
	return m
}

func (m *Metrics) admission(result string, d time.Duration) {
	if m == nil {
		return
	}
	m.admissions.WithLabelValues(result).Inc()
	m.admissionDuration.Observe(d.Seconds())
}

func (m *Metrics) refreshed(n int, at time.Time) {
	if m == nil {
		return
	}
	m.refreshes.WithLabelValues("ok").Inc()
	m.associations.Set(float64(n))
	m.ready.Set(1)
	m.lastSuccess.Set(float64(at.UnixNano()) / 1e9)
}

func (m *Metrics) refreshFailed() {
	if m != nil {
		m.refreshes.WithLabelValues("error").Inc()
	}
}
