package httpapi

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the service's Prometheus metrics. Its Consumed…SettleFailed and Owned methods
// match the stream consumer's observer (with Acquired and Lost, in the wiring: this package does
// not know the stream's types), and Decided/Stored are fed by the batch processor. Safe for
// concurrent use.
type Metrics struct {
	Registry *prometheus.Registry

	consumed     prometheus.Counter
	decided      *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	acked        prometheus.Counter
	naked        prometheus.Counter
	termed       prometheus.Counter
	settleFailed *prometheus.CounterVec
	batchSeconds *prometheus.HistogramVec
	evalSeconds  prometheus.Histogram
	storeSeconds prometheus.Histogram
	reloads      *prometheus.CounterVec
	owned        prometheus.Gauge
	acquired     prometheus.Counter
	lost         prometheus.Counter
	// streamLost and streamPending are the last reconciliation with the stream.
	streamLost, streamPending prometheus.Gauge
	// The shadow versions' outcomes (metrics_shadow.go), by program and shadow version.
	shadowDecided, shadowDiverged, shadowFailed *prometheus.CounterVec
	shadowDelta                                 *prometheus.GaugeVec
}

// NewMetrics registers the metrics (and the Go runtime and process collectors) in a new registry.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{Registry: r}
	m.consumed = prometheus.NewCounter(prometheus.CounterOpts{Name: "commissioner_events_consumed_total", Help: "Order events received from the stream."})
	m.decided = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "commissioner_decisions_total", Help: "Decisions newly stored, by program and qualification."}, []string{"program", "qualified"})
	m.deadLettered = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "commissioner_dead_letters_total", Help: "Events that could not be decided, by kind."}, []string{"kind"})
	m.acked = prometheus.NewCounter(prometheus.CounterOpts{Name: "commissioner_events_acked_total", Help: "Events acknowledged after their batch was stored."})
	m.naked = prometheus.NewCounter(prometheus.CounterOpts{Name: "commissioner_events_naked_total", Help: "Events handed back for redelivery (store unavailable, shutdown)."})
	m.termed = prometheus.NewCounter(prometheus.CounterOpts{Name: "commissioner_events_termed_total", Help: "Events dead-lettered and terminated."})
	m.settleFailed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "commissioner_settle_failures_total", Help: "Acks, naks, terms or dead-letter publishes that failed (the server redelivers)."}, []string{"op"})
	m.batchSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "commissioner_batch_seconds", Help: "Time to process one batch: decide and store.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"result"})
	m.evalSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "commissioner_batch_evaluation_seconds", Help: "Time to decode and evaluate one batch.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14)})
	m.storeSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "commissioner_batch_store_seconds", Help: "Time to store one batch in one transaction.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "commissioner_policy_reloads_total", Help: "Policy reloads, by result (applied or refused)."}, []string{"result"})
	m.owned = prometheus.NewGauge(prometheus.GaugeOpts{Name: "commissioner_partitions_owned", Help: "Stream partitions this process owns now."})
	m.acquired = prometheus.NewCounter(prometheus.CounterOpts{Name: "commissioner_partition_acquisitions_total", Help: "Partitions this process became the owner of."})
	m.lost = prometheus.NewCounter(prometheus.CounterOpts{Name: "commissioner_partition_losses_total", Help: "Partitions lost: a lease renewal failed or came too late, or the store fenced this owner out."})
	m.streamLost = prometheus.NewGauge(prometheus.GaugeOpts{Name: "commissioner_stream_lost_events", Help: "Order events gone from the stream (purged, deleted, expired) with no decision or dead letter stored, at the last reconciliation."})
	m.streamPending = prometheus.NewGauge(prometheus.GaugeOpts{Name: "commissioner_stream_pending_events", Help: "Order events in the stream not decided yet, at the last reconciliation."})
	for _, c := range []prometheus.Collector{m.consumed, m.decided, m.deadLettered, m.acked, m.naked, m.termed, m.settleFailed, m.batchSeconds, m.evalSeconds, m.storeSeconds, m.reloads, m.owned, m.acquired, m.lost, m.streamLost, m.streamPending} {
		f(c)
	}
	m.registerShadowMetrics()
	return m
}

// Reconciled records a reconciliation with the stream: events lost, and pending.
func (m *Metrics) Reconciled(lost, pending uint64) {
	m.streamLost.Set(float64(lost))
	m.streamPending.Set(float64(pending))
}

// Consumed counts events received.
func (m *Metrics) Consumed(n int) { m.consumed.Add(float64(n)) }

// Processed observes one batch's processing time.
func (m *Metrics) Processed(_ int, took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.batchSeconds.WithLabelValues(result).Observe(took.Seconds())
}

// Acked counts acknowledged events.
func (m *Metrics) Acked(n int) { m.acked.Add(float64(n)) }

// Naked counts events handed back for redelivery.
func (m *Metrics) Naked(n int) { m.naked.Add(float64(n)) }

// Termed counts dead-lettered events.
func (m *Metrics) Termed(n int) { m.termed.Add(float64(n)) }

// SettleFailed counts failed acks, naks, terms and dead-letter publishes.
func (m *Metrics) SettleFailed(n int, op string, _ error) {
	m.settleFailed.WithLabelValues(op).Add(float64(n))
}

// Owned sets how many partitions this process owns.
func (m *Metrics) Owned(n int) { m.owned.Set(float64(n)) }

// PartitionAcquired counts a partition this process became the owner of.
func (m *Metrics) PartitionAcquired() { m.acquired.Inc() }

// PartitionLost counts a partition lost.
func (m *Metrics) PartitionLost() { m.lost.Inc() }

// Decided counts newly stored decisions.
func (m *Metrics) Decided(program string, qualified bool, n int) {
	q := "false"
	if qualified {
		q = "true"
	}
	m.decided.WithLabelValues(program, q).Add(float64(n))
}

// DeadLettered counts newly stored dead letters by kind.
func (m *Metrics) DeadLettered(kind string, n int) {
	m.deadLettered.WithLabelValues(kind).Add(float64(n))
}

// Evaluated observes a batch's decode-and-evaluate time; Stored its store time.
func (m *Metrics) Evaluated(took time.Duration) { m.evalSeconds.Observe(took.Seconds()) }

// Stored observes a batch's store transaction time.
func (m *Metrics) Stored(took time.Duration) { m.storeSeconds.Observe(took.Seconds()) }

// Reloaded counts a policy reload.
func (m *Metrics) Reloaded(applied bool) {
	if applied {
		m.reloads.WithLabelValues("applied").Inc()
	} else {
		m.reloads.WithLabelValues("refused").Inc()
	}
}
