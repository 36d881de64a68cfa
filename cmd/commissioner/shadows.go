package main

import (
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

// shadowCounter counts the shadow versions' outcomes of each stored batch (metrics, and load's
// summary) and warns, at most every shadowLogEvery, about shadows that could not decide. The
// outcomes themselves are stored with their batch, in its transaction (store.WriteBatch): a
// shadow's evaluation never fails the live decision (an error is its outcome), and its rows are
// insert-or-ignore of values the engine made, which cannot fail a write that would succeed
// without them. Safe for concurrent use.
type shadowCounter struct {
	metrics *httpapi.Metrics
	log     *slog.Logger

	decided, decideFailed atomic.Int64

	logMu   sync.Mutex
	lastLog map[string]time.Time // rate-limits the warnings, by what they are about
}

// shadowLogEvery: at most one warning of a kind this often.
const shadowLogEvery = 10 * time.Second

func newShadowCounter(m *httpapi.Metrics, log *slog.Logger) *shadowCounter {
	return &shadowCounter{metrics: m, log: log, lastLog: map[string]time.Time{}}
}

// shadowKey is a shadow version within a program.
type shadowKey struct {
	program string
	version int
}

// count feeds a batch's outcomes to the metrics (per shadow version: decided, diverged, failed,
// and the commission delta per currency, summed exactly) and warns about failed decisions.
func (w *shadowCounter) count(rows []engine.ShadowRow) {
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

// warn logs a warning at most once per shadowLogEvery for each kind of thing.
func (w *shadowCounter) warn(kind, msg string, args ...any) {
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

// shadowCounts is what the shadows decided since the start, and how many of those could not be
// decided (stored as their errors).
type shadowCounts struct{ decided, decideFailed int64 }

func (w *shadowCounter) counts() shadowCounts {
	return shadowCounts{decided: w.decided.Load(), decideFailed: w.decideFailed.Load()}
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
