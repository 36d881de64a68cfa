package store

// Shadow outcomes: what shadow versions (stage: shadow) decided for the live events, stored apart
// from the decisions — no part of the chain or the ledger, never read by payouts or audit
// verify. WriteBatch writes a batch's outcomes in its transaction (writeShadowRows: insert-or-
// ignore, so they cannot fail a batch that would be stored without them); WriteShadows writes
// some on their own. `commissioner shadow report` and GET /v1/shadow/report read them beside the
// live decisions of the same events (ShadowHistory).

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
)

// schemaShadow stores what shadow versions decided (migrations 20261203000006) in two tables.
// shadow_batches says which events a shadow version decided: one row per batch of live decisions
// and shadow version (program, version, digest), with the shadow's sample bound ("" when it
// decides every order; else an order is in the sample when engine.SampleHash is below it), how
// many events it decided and their order times. The events are the batch's decisions of the
// program whose orders are in the sample (a shadow decides every live decision of its program in
// the pass). shadow_decisions holds the outcomes that differ from the live decision: the shadow's
// verdict in short and the first rule whose outcome differed (cause_*), or, for a shadow that
// failed, error_kind and error. Every other outcome agreed with its live decision, to the cent
// (engine.ShadowRow.Diverged), and is read from it: most outcomes cost no row of their own. Each
// table's primary key is its one index (on SQLite the table itself, WITHOUT ROWID), so an outcome
// is stored once however often its batch's shadows are written (INSERT … ON CONFLICT DO
// NOTHING), led by (program, version) for the report.
const schemaShadow = `
CREATE TABLE IF NOT EXISTS shadow_batches (
	program      {{Key}} NOT NULL,
	version      BIGINT NOT NULL,
	digest       TEXT NOT NULL,
	part         BIGINT NOT NULL,
	batch_seq    BIGINT NOT NULL,
	sample_below TEXT NOT NULL,
	events       BIGINT NOT NULL,
	first_placed {{Time}} NOT NULL,
	last_placed  {{Time}} NOT NULL,
	PRIMARY KEY (program, version, digest, part, batch_seq)
){{WithoutRowID}};
CREATE TABLE IF NOT EXISTS shadow_decisions (
	program      {{Key}} NOT NULL,
	version      BIGINT NOT NULL,
	digest       TEXT NOT NULL,
	event_id     {{Key}} NOT NULL,
	order_id     {{Key}} NOT NULL,
	placed_at    {{Time}} NOT NULL,
	diverged     BOOLEAN NOT NULL,
	qualified    BOOLEAN NOT NULL,
	failed_rules TEXT NOT NULL,
	rate_rule    TEXT NOT NULL,
	rate         {{Decimal}} NOT NULL,
	flat         {{Decimal}},
	commission   {{Decimal}} NOT NULL,
	currency     TEXT NOT NULL,
	cause_kind   TEXT NOT NULL,
	cause_stage  TEXT NOT NULL,
	cause_rule   TEXT NOT NULL,
	cause_old    TEXT NOT NULL,
	cause_new    TEXT NOT NULL,
	error_kind   TEXT NOT NULL,
	error        TEXT NOT NULL,
	PRIMARY KEY (program, version, digest, event_id)
){{WithoutRowID}};
`

// shadowBatchTable and shadowTable are the columns WriteShadows writes, in the order of a row's
// values.
var shadowBatchTable = bulkTable{name: "shadow_batches",
	cols:    []string{"program", "version", "digest", "part", "batch_seq", "sample_below", "events", "first_placed", "last_placed"},
	pgTypes: []string{"text", "bigint", "text", "bigint", "bigint", "text", "bigint", "timestamptz", "timestamptz"}}

var shadowTable = bulkTable{name: "shadow_decisions",
	cols: []string{"program", "version", "digest", "event_id", "order_id", "placed_at", "diverged", "qualified", "failed_rules",
		"rate_rule", "rate", "flat", "commission", "currency", "cause_kind", "cause_stage", "cause_rule", "cause_old", "cause_new",
		"error_kind", "error"},
	pgTypes: []string{"text", "bigint", "text", "text", "text", "timestamptz", "boolean", "boolean", "text",
		"text", "numeric", "numeric", "numeric", "text", "text", "text", "text", "text", "text",
		"text", "text"}}

// shadowBatch is a shadow_batches row: the events one shadow version decided in one batch.
type shadowBatch struct {
	program, digest         string
	version                 int
	part                    int
	seq                     uint64
	sampleBelow             string
	events                  int64
	firstPlaced, lastPlaced time.Time
}

// WriteShadows stores shadow outcomes in one transaction, each once: an outcome stored already
// (its event, version and digest) is left as it is, so writing a batch's outcomes again stores
// nothing twice. It returns how many rows were new. Nothing it does touches the decisions, the
// chain or the ledger; a failure leaves no row of the call.
func (s *Store) WriteShadows(ctx context.Context, rows []engine.ShadowRow) (int, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	stored := 0
	err := s.writeTx(ctx, func(ctx context.Context, w *wtx) error {
		var err error
		stored, err = s.writeShadowRows(ctx, w, rows)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("storing %d shadow outcomes: %w", len(rows), err)
	}
	return stored, nil
}

// writeShadowRows writes shadow outcomes in the write transaction w and returns how many were
// new. A batch's outcomes are new when its shadow_batches row is: they are written together.
func (s *Store) writeShadowRows(ctx context.Context, w *wtx, rows []engine.ShadowRow) (int, error) {
	// The batches the shadows decided in, and the outcomes with a verdict of their own.
	var batches []shadowBatch
	at := map[[2]string]int{} // by the shadow version and the batch
	var own []int
	for i := range rows {
		r := &rows[i]
		if r.Diverged || r.ErrorKind != "" {
			own = append(own, i)
		}
		k := [2]string{r.Program + "\x00" + strconv.Itoa(r.Version) + "\x00" + r.Digest, strconv.Itoa(r.Partition) + ":" + strconv.FormatUint(r.BatchSeq, 10)}
		j, ok := at[k]
		if !ok {
			j = len(batches)
			at[k] = j
			b := shadowBatch{program: safeText(r.Program), version: r.Version, digest: r.Digest, part: r.Partition, seq: r.BatchSeq,
				firstPlaced: r.PlacedAt.UTC(), lastPlaced: r.PlacedAt.UTC()}
			if r.Sampled {
				b.sampleBelow = strconv.FormatUint(r.SampleBelow, 10)
			}
			batches = append(batches, b)
		}
		b := &batches[j]
		b.events++
		if r.PlacedAt.Before(b.firstPlaced) {
			b.firstPlaced = r.PlacedAt.UTC()
		}
		if r.PlacedAt.After(b.lastPlaced) {
			b.lastPlaced = r.PlacedAt.UTC()
		}
	}
	batchValues := func(i int, args []any) []any {
		b := &batches[i]
		return append(args, b.program, int64(b.version), b.digest, int64(b.part), int64(b.seq), b.sampleBelow, b.events, b.firstPlaced, b.lastPlaced)
	}
	verdict := func(i int, args []any) []any {
		r := &rows[own[i]]
		var flat any
		if r.Flat != "" {
			flat = r.Flat
		}
		rate, commission := r.Rate, r.Commission.Text('f')
		if rate == "" {
			rate = "0" // a shadow that failed: no verdict (error_kind says so)
		}
		stage := ""
		if r.Cause.Kind == engine.CauseOutcome || r.Cause.Kind == engine.CauseTerms {
			stage = r.Cause.Stage.String()
		}
		failed := r.FailedRules
		if failed == "" {
			failed = "[]"
		}
		return append(args, safeText(r.Program), int64(r.Version), r.Digest, safeText(r.EventID), safeText(r.OrderID), r.PlacedAt.UTC(),
			r.Diverged, r.Qualified, failed, r.RateRule, rate, flat, commission, r.Currency,
			r.Cause.Kind, stage, r.Cause.Rule, r.Cause.Old, r.Cause.New, r.ErrorKind, safeText(r.Error))
	}
	stored := 0
	for i := range batches {
		n, err := s.insertIgnoreRows(ctx, w, shadowBatchTable, "program, version, digest, part, batch_seq", 1,
			func(_ int, args []any) []any { return batchValues(i, args) })
		if err != nil {
			return 0, err
		}
		stored += n * int(batches[i].events)
	}
	if _, err := s.insertIgnoreRows(ctx, w, shadowTable, "program, version, digest, event_id", len(own), verdict); err != nil {
		return 0, err
	}
	return stored, nil
}

// insertIgnoreRows inserts n rows, leaving out (without an error) those whose conflict key is
// stored, and returns how many were inserted: on SQLite through prepared multi-row INSERT OR
// IGNOREs, on PostgreSQL as one INSERT … SELECT from unnested arrays, ON CONFLICT DO NOTHING.
func (s *Store) insertIgnoreRows(ctx context.Context, w *wtx, t bulkTable, conflict string, n int, row rowValues) (int, error) {
	if s.backend == SQLite {
		ins := sqliteInsert{name: "insert-ignore " + t.name + " (" + strconv.Itoa(len(t.cols)) + " columns)", head: "INSERT OR IGNORE INTO " + t.name + " (" + strings.Join(t.cols, ", ") + ") VALUES ",
			cols: len(t.cols)}
		stored, err := s.sqliteRows(ctx, w, ins, n, row, func(int64, int64) error { return nil }) // a row stored already is left out
		return int(stored), err
	}
	arrays := make([][]byte, len(t.cols))
	for j := range arrays {
		arrays[j] = append(make([]byte, 0, 16*n), '{')
	}
	args := make([]any, 0, len(t.cols))
	for i := 0; i < n; i++ {
		args = row(i, args[:0])
		if len(args) != len(t.cols) {
			return 0, fmt.Errorf("row %d has %d values for %d columns", i, len(args), len(t.cols))
		}
		for j, v := range args {
			if i > 0 {
				arrays[j] = append(arrays[j], ',')
			}
			var err error
			if arrays[j], err = appendArrayElem(arrays[j], v); err != nil {
				return 0, fmt.Errorf("column %s: %w", t.cols[j], err)
			}
		}
	}
	var q strings.Builder
	q.WriteString("INSERT INTO " + t.name + " (" + strings.Join(t.cols, ", ") + ") SELECT * FROM unnest(")
	params := make([]any, len(arrays))
	for j := range arrays {
		if j > 0 {
			q.WriteString(", ")
		}
		q.WriteString("$" + strconv.Itoa(j+1) + "::" + t.pgTypes[j] + "[]")
		params[j] = string(append(arrays[j], '}'))
	}
	q.WriteString(") AS u ON CONFLICT (" + conflict + ") DO NOTHING")
	res, err := w.Tx.Tx.ExecContext(ctx, q.String(), params...)
	if err != nil {
		return 0, err
	}
	k, err := res.RowsAffected()
	return int(k), err
}

// ShadowVersions lists the shadow versions with outcomes stored for program ("": every program),
// by program, version and digest.
func (s *Store) ShadowVersions(ctx context.Context, program string) ([]engine.StoredShadowVersion, error) {
	q := "SELECT program, version, digest, sum(events), " + s.timeCol("min(first_placed)") + ", " + s.timeCol("max(last_placed)") +
		" FROM shadow_batches"
	var args []any
	if program != "" {
		q, args = q+" WHERE program = ?", append(args, program)
	}
	q += " GROUP BY program, version, digest ORDER BY program, version, digest"
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading the shadow versions: %w", err)
	}
	defer rows.Close()
	var out []engine.StoredShadowVersion
	for rows.Next() {
		var v engine.StoredShadowVersion
		if err := rows.Scan(&v.Program, &v.Version, &v.Digest, &v.Events, timeScanner{&v.First}, timeScanner{&v.Last}); err != nil {
			return nil, fmt.Errorf("reading the shadow versions: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the shadow versions: %w", err)
	}
	return out, nil
}

// LatestOrder is the stored decision of a program with the latest order time (placed_at): a
// version taking effect at or before it would have been in force for orders decided already.
type LatestOrder struct {
	OrderID  string
	EventID  string
	PlacedAt time.Time
}

// LatestDecided returns the program's stored decision with the latest placed_at; false when the
// program has none.
func (s *Store) LatestDecided(ctx context.Context, program string) (LatestOrder, bool, error) {
	var out LatestOrder
	err := s.db.QueryRowContext(ctx, "SELECT order_id, event_id, "+s.timeCol("placed_at")+" FROM decisions WHERE program = ? ORDER BY placed_at DESC, id DESC LIMIT 1",
		program).Scan(&out.OrderID, &out.EventID, timeScanner{&out.PlacedAt})
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return LatestOrder{}, false, nil
	case err != nil:
		return LatestOrder{}, false, fmt.Errorf("reading the latest decision of program %s: %w", program, err)
	}
	return out, true, nil
}

// ShadowHistory returns the stored shadow outcomes the filter selects, each with the live
// decision of its event: what engine.ShadowReportOf reads.
func (s *Store) ShadowHistory(f engine.ShadowFilter) engine.ShadowHistory {
	return &shadowHistory{s: s, f: f, batchSize: 512}
}

type shadowHistory struct {
	s         *Store
	f         engine.ShadowFilter
	batchSize int
}

var _ engine.ShadowHistory = (*shadowHistory)(nil)

// shadowColumns are a shadow outcome's columns as the walk reads them (decimals as text).
const shadowColumns = "b.program, b.version, b.digest, coalesce(s.qualified, false), coalesce(s.failed_rules, '[]'), " +
	"coalesce(s.rate_rule, ''), coalesce(CAST(s.rate AS TEXT), ''), coalesce(CAST(s.flat AS TEXT), ''), " +
	"coalesce(CAST(s.commission AS TEXT), ''), coalesce(s.currency, ''), coalesce(s.diverged, false), coalesce(s.cause_kind, ''), " +
	"coalesce(s.cause_stage, ''), coalesce(s.cause_rule, ''), coalesce(s.cause_old, ''), coalesce(s.cause_new, ''), " +
	"coalesce(s.error_kind, ''), coalesce(s.error, '')"

// Walk reads the outcomes in one query, joined with their events' live decisions, and marks
// each order's latest event the shadow version decided (the highest stream sequence, then the
// latest stored). See engine.ShadowHistory for the contract.
func (h *shadowHistory) Walk(ctx context.Context, fn func([]engine.ShadowEvent) error) error {
	s, f := h.s, h.f
	var inputs bool
	var one int
	switch err := s.db.QueryRowContext(ctx, "SELECT 1 FROM decision_inputs LIMIT 1").Scan(&one); {
	case err == nil:
		inputs = true
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("reading decision inputs: %w", err)
	}
	var where []string
	var args []any
	if f.Program != "" {
		where, args = append(where, "b.program = ?"), append(args, f.Program)
	}
	if f.Version != 0 {
		where, args = append(where, "b.version = ?"), append(args, f.Version)
	}
	if !f.From.IsZero() {
		where, args = append(where, "d.placed_at >= ?"), append(args, f.From.UTC())
	}
	if !f.To.IsZero() {
		where, args = append(where, "d.placed_at < ?"), append(args, f.To.UTC())
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	// The events each shadow decided: its batches' decisions of the program (the sample is drawn
	// below, by order), with the outcome stored when it differed from the live one.
	query := "SELECT d.event_id, d.order_id, b.sample_below, d.stream_seq, d.raw, " + s.recordColumns(inputs) + ", " + shadowColumns +
		", ROW_NUMBER() OVER (PARTITION BY b.program, d.order_id, b.version ORDER BY d.stream_seq DESC, d.id DESC) AS rn" +
		" FROM shadow_batches b JOIN batches bt ON bt.part = b.part AND bt.seq = b.batch_seq" +
		" JOIN decisions d ON d.id BETWEEN bt.first_decision_id AND bt.last_decision_id AND d.part = b.part AND d.batch_seq = b.batch_seq" +
		" AND d.program = b.program" + // the id range finds the rows (concurrent batches' ids may interleave on PostgreSQL)
		" LEFT JOIN shadow_decisions s ON s.program = b.program AND s.version = b.version AND s.digest = b.digest AND s.event_id = d.event_id" +
		inputsJoin(inputs) + cond
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("reading shadow outcomes: %w", err)
	}
	defer rows.Close()
	sc := newRecordScanner()
	var (
		eventID, orderID, below     string
		seq, rn                     int64
		raw                         []byte
		o                           engine.ShadowOutcome
		failed, rate, flat, comm    string
		stage, causeKind            string
		causeRule, causeOld, causeN string
	)
	dest := append([]any{&eventID, &orderID, &below, &seq, &raw}, sc.dest()...)
	dest = append(dest, &o.Program, &o.Version, &o.Digest, &o.Qualified, &failed, &o.RateRule, &rate, &flat, &comm, &o.Currency,
		&o.Diverged, &causeKind, &stage, &causeRule, &causeOld, &causeN, &o.ErrorKind, &o.Error, &rn)
	batch := make([]engine.ShadowEvent, 0, h.batchSize)
	for rows.Next() {
		o = engine.ShadowOutcome{}
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("reading shadow outcomes: %w", err)
		}
		if below != "" { // a sampled shadow: did it decide this order?
			b, err := strconv.ParseUint(below, 10, 64)
			if err != nil {
				return fmt.Errorf("reading shadow outcomes: the sample bound %q of %s v%d: %w", below, o.Program, o.Version, err)
			}
			if engine.SampleHash(o.Program, orderID) >= b {
				continue
			}
		}
		if err := sc.split(); err != nil {
			return fmt.Errorf("reading shadow outcomes: event %s: %w", eventID, err)
		}
		ev := engine.ShadowEvent{Event: engine.Event{ID: eventID, StreamSeq: uint64(seq), Raw: append([]byte(nil), raw...)}, Latest: rn == 1}
		if ev.Live, err = sc.record(eventID); err != nil {
			return fmt.Errorf("reading shadow outcomes: %w", err)
		}
		if err := json.Unmarshal([]byte(failed), &o.FailedRules); err != nil {
			return fmt.Errorf("reading shadow outcomes: event %s: failed_rules %q: %w", eventID, failed, err)
		}
		for _, x := range []struct {
			text string
			d    *apd.Decimal
		}{{rate, &o.Rate}, {comm, &o.Commission}, {flat, &o.Flat}} {
			if x.text == "" {
				continue
			}
			if _, _, err := x.d.SetString(x.text); err != nil {
				return fmt.Errorf("reading shadow outcomes: event %s: %q is not a decimal: %w", eventID, x.text, err)
			}
		}
		o.HasFlat = flat != ""
		o.Cause = engine.Cause{Kind: causeKind, Rule: causeRule, Old: causeOld, New: causeN}
		if stage == engine.StageRate.String() {
			o.Cause.Stage = engine.StageRate
		}
		if !o.Diverged && o.ErrorKind == "" {
			agreed(&o, ev.Live) // stored without a verdict: the live decision's is the shadow's
		}
		ev.Shadow = o
		if len(batch) == h.batchSize {
			if err := fn(batch); err != nil {
				return err
			}
			batch = make([]engine.ShadowEvent, 0, h.batchSize)
		}
		batch = append(batch, ev)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading shadow outcomes: %w", err)
	}
	if len(batch) > 0 {
		return fn(batch)
	}
	return ctx.Err()
}

// agreed gives an outcome stored as agreeing with its live decision (no verdict of its own) the
// live decision's verdict: a shadow that did not diverge decided the same qualification, failed
// rules, rate rule, terms and commission (engine.ShadowRow.Diverged).
func agreed(o *engine.ShadowOutcome, live *engine.RecordedDecision) {
	o.Qualified, o.RateRule, o.HasFlat, o.Currency = live.Qualified, live.RateRule, live.HasFlat, live.Currency
	o.FailedRules = slices.Clone(live.FailedRules)
	o.Rate.Set(&live.Rate)
	o.Flat.Set(&live.Flat)
	o.Commission.Set(&live.Commission)
}
