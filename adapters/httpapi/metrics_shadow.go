package httpapi

import (
	"strconv"

	"github.com/cockroachdb/apd/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// The shadow versions' metrics. Their labels are the program and the shadow version's number
// only (plus the currency for the commission delta): a handful of series per shadow, never one
// per rule, affiliate or digest.
func (m *Metrics) registerShadowMetrics() {
	labels := []string{"program", "version"}
	m.shadowDecided = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "commissioner_shadow_decisions_total",
		Help: "Events a shadow version decided beside the live one (its sample), by program and shadow version."}, labels)
	m.shadowDiverged = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "commissioner_shadow_divergences_total",
		Help: "Events a shadow version decided otherwise than the live decision, by program and shadow version."}, labels)
	m.shadowFailed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "commissioner_shadow_failures_total",
		Help: "Shadow outcomes that failed, by program, shadow version and stage: decide (the shadow could not decide the event; its error is stored as its outcome). A failure never touches the live decision or its ack."},
		append(labels, "stage"))
	m.shadowDelta = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "commissioner_shadow_commission_delta",
		Help: "The shadow's commission less the live one, summed over the events it decided since the process started, by program, shadow version and currency (for watching; commissioner shadow report has the exact figures)."},
		append(labels, "currency"))
	m.Registry.MustRegister(m.shadowDecided, m.shadowDiverged, m.shadowFailed, m.shadowDelta)
}

// ShadowFailedDecide is the stage of a shadow that could not decide an event (the only stage:
// the outcomes are stored with their batch).
const ShadowFailedDecide = "decide"

// ShadowDecided counts a shadow version's outcomes of one batch: decided, diverged from the
// live decision, and failed to decide.
func (m *Metrics) ShadowDecided(program string, version int, decided, diverged, failed int) {
	v := strconv.Itoa(version)
	m.shadowDecided.WithLabelValues(program, v).Add(float64(decided))
	if diverged > 0 {
		m.shadowDiverged.WithLabelValues(program, v).Add(float64(diverged))
	}
	if failed > 0 {
		m.shadowFailed.WithLabelValues(program, v, ShadowFailedDecide).Add(float64(failed))
	}
}

// ShadowCommissionDelta adds a batch's shadow-less-live commission in one currency. The sum is
// exact until here; the metric is a float, for watching only.
func (m *Metrics) ShadowCommissionDelta(program string, version int, currency string, delta *apd.Decimal) {
	if delta.IsZero() {
		return
	}
	f, err := delta.Float64()
	if err != nil {
		return
	}
	m.shadowDelta.WithLabelValues(program, strconv.Itoa(version), currency).Add(f)
}
