package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// shadowStore is what the shadow writer needs of the store.
type shadowStore interface {
	WriteShadows(ctx context.Context, rows []engine.ShadowRow) (int, error)
}

// shadowWriter stores the shadow versions' outcomes after their batches were stored and acked:
// best-effort, on a goroutine of its own, so that a shadow never delays or fails a live decision
// or its ack. Batches' outcomes queue (up to shadowQueue batches; beyond, they are dropped and
// counted) and the writer stores what has queued in one transaction (up to shadowMaxRows rows):
// under load several batches share one write. A failed write is logged and counted, never
// retried: the outcomes are a sample for a report, not a record. Make one with newShadowWriter;
// Close it (after the consumer stopped) to store what is queued. Safe for concurrent use.
type shadowWriter struct {
	st      shadowStore
	metrics *httpapi.Metrics
	log     *slog.Logger

	mu     sync.Mutex // guards closed and sending on queue
	closed bool
	queue  chan []engine.ShadowRow
	done   chan struct{}

	// pending counts the rows queued or being written (Flush waits for 0); the rest, rows by
	// what became of them since the start.
	pending                          atomic.Int64
	decided, stored, failed, dropped atomic.Int64
	decideFailed                     atomic.Int64

	logMu   sync.Mutex
	lastLog map[string]time.Time // rate-limits the warnings, by what they are about
}

const (
	shadowQueue        = 256              // batches' outcomes waiting for the writer
	shadowMaxRows      = 16384            // rows stored in one transaction
	shadowWriteTimeout = 10 * time.Second // one write
	shadowLogEvery     = 10 * time.Second // at most one warning of a kind this often
)

// newShadowWriter starts the writer's goroutine; Close ends it.
func newShadowWriter(st shadowStore, m *httpapi.Metrics, log *slog.Logger) *shadowWriter {
	w := &shadowWriter{st: st, metrics: m, log: log, queue: make(chan []engine.ShadowRow, shadowQueue), done: make(chan struct{}),
		lastLog: map[string]time.Time{}}
	go w.run()
	return w
}

// Add takes a stored batch's shadow outcomes: it counts them (metrics), warns about the shadows
// that could not decide, and queues them for writing. It never blocks: when the queue is full
// the outcomes are dropped (counted, warned about).
func (w *shadowWriter) Add(rows []engine.ShadowRow) {
	if w == nil || len(rows) == 0 {
		return
	}
	w.count(rows)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		w.drop(rows, "the writer is closed")
		return
	}
	w.pending.Add(int64(len(rows)))
	select {
	case w.queue <- rows:
	default:
		w.pending.Add(-int64(len(rows)))
		w.drop(rows, "the queue is full: the store is slower than the stream")
	}
}

// shadowKey is a shadow version within a program.
type shadowKey struct {
	program string
	version int
}

// count feeds a batch's outcomes to the metrics (per shadow version: decided, diverged, failed,
// and the commission delta per currency, summed exactly) and warns about failed decisions.
func (w *shadowWriter) count(rows []engine.ShadowRow) {
	type tally struct {
		decided, diverged, failed int
		firstErr                  string
		delta                     map[string]*apd.Decimal
	}
	by := map[shadowKey]*tally{}
	var keys []shadowKey
	for i := range rows {
		r := &rows[i]
		k := shadowKey{r.Program, r.Version}
		t := by[k]
		if t == nil {
			t = &tally{delta: map[string]*apd.Decimal{}}
			by[k] = t
			keys = append(keys, k)
		}
		t.decided++
		if r.ErrorKind != "" {
			t.failed++
			if t.firstErr == "" {
				t.firstErr = r.Error
			}
			continue
		}
		if r.Diverged {
			t.diverged++
			d := t.delta[r.Currency]
			if d == nil {
				d = new(apd.Decimal)
				t.delta[r.Currency] = d
			}
			var x apd.Decimal
			_, _ = engine.SumContext.Sub(&x, &r.Commission, &r.LiveCommission)
			_, _ = engine.SumContext.Add(d, d, &x)
		}
	}
	w.decided.Add(int64(len(rows)))
	for _, k := range keys {
		t := by[k]
		w.metrics.ShadowDecided(k.program, k.version, t.decided, t.diverged, t.failed)
		for cur, d := range t.delta {
			w.metrics.ShadowCommissionDelta(k.program, k.version, cur, d)
		}
		if t.failed > 0 {
			w.decideFailed.Add(int64(t.failed))
			w.warn(fmt.Sprintf("decide %s v%d", k.program, k.version), "a shadow version could not decide events; the live decisions are not affected",
				"program", k.program, "shadow_version", k.version, "events", t.failed, "of", t.decided, "first_reason", t.firstErr)
		}
	}
}

// drop counts outcomes lost before they were written, and warns (under w.mu).
func (w *shadowWriter) drop(rows []engine.ShadowRow, why string) {
	w.dropped.Add(int64(len(rows)))
	w.countLost(rows, httpapi.ShadowFailedDropped)
	w.warn("dropped", "shadow outcomes dropped; the live decisions are not affected", "rows", len(rows), "why", why)
}

// countLost counts rows lost at a stage, per shadow version.
func (w *shadowWriter) countLost(rows []engine.ShadowRow, stage string) {
	n := map[shadowKey]int{}
	for i := range rows {
		n[shadowKey{rows[i].Program, rows[i].Version}]++
	}
	for k, c := range n {
		w.metrics.ShadowFailed(k.program, k.version, stage, c)
	}
}

// warn logs a warning at most once per shadowLogEvery for each kind of thing.
func (w *shadowWriter) warn(kind, msg string, args ...any) {
	w.logMu.Lock()
	now := time.Now()
	if last, ok := w.lastLog[kind]; ok && now.Sub(last) < shadowLogEvery {
		w.logMu.Unlock()
		return
	}
	w.lastLog[kind] = now
	w.logMu.Unlock()
	w.log.Warn(msg, args...)
}

// run writes what queues until the queue is closed and drained.
func (w *shadowWriter) run() {
	defer close(w.done)
	for rows := range w.queue {
		batch := rows
	more:
		for len(batch) < shadowMaxRows {
			select {
			case next, ok := <-w.queue:
				if !ok {
					break more
				}
				batch = append(batch[:len(batch):len(batch)], next...)
			default:
				break more
			}
		}
		w.write(batch)
	}
}

// write stores one set of outcomes, counting what became of them.
func (w *shadowWriter) write(rows []engine.ShadowRow) {
	defer w.pending.Add(-int64(len(rows)))
	ctx, cancel := context.WithTimeout(context.Background(), shadowWriteTimeout)
	defer cancel()
	n, err := w.st.WriteShadows(ctx, rows)
	if err != nil {
		w.failed.Add(int64(len(rows)))
		w.countLost(rows, httpapi.ShadowFailedStore)
		w.warn("store", "storing shadow outcomes failed; they are lost, the live decisions are not affected", "rows", len(rows), "err", err)
		return
	}
	w.stored.Add(int64(n))
}

// Flush waits until every outcome queued so far was written (or failed), or ctx ends.
func (w *shadowWriter) Flush(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for w.pending.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Close stores what is queued and ends the writer; outcomes added later are dropped. Calling it
// again does nothing.
func (w *shadowWriter) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	close(w.queue)
	w.mu.Unlock()
	<-w.done
}

// shadowCounts is what became of the outcomes since the start: decided (of which failed to
// decide), stored (new rows), failed to store, dropped.
type shadowCounts struct{ decided, decideFailed, stored, failed, dropped int64 }

func (w *shadowWriter) counts() shadowCounts {
	return shadowCounts{decided: w.decided.Load(), decideFailed: w.decideFailed.Load(), stored: w.stored.Load(),
		failed: w.failed.Load(), dropped: w.dropped.Load()}
}

// shadowSetup names the shadow versions of a set for load's set-up line ("" when none):
// "alibaba v2 (sample 0.1)".
func shadowSetup(set *rules.Set) string {
	var parts []string
	for _, p := range set.AllShadows() {
		s := fmt.Sprintf("%s v%d", p.Program, p.Version)
		if p.Sample != nil {
			s += " (sample " + p.Sample.Text('f') + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}
