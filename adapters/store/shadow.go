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

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
	"github.com/uptrace/bun/migrate"

	"github.com/commissioner/commissioner/engine"
)

// schemaShadow (migration 20261203000006) made the two tables shadow outcomes were first stored
// in; migration 20261203000008 (shadowOutcomesMigration) moved the second into the first, and
// shadow_batches is now where they are. It says which events a shadow version decided: one row per
// batch of live decisions and shadow version (program, version, digest), with the shadow's sample
// bound ("" when it decides every order; else an order is in the sample when engine.SampleHash is
// below it), how many events it decided and their order times. The events are the batch's
// decisions of the program whose orders are in the sample (a shadow decides every live decision of
// its program in the pass). Its outcomes column holds, as a JSON array, the outcomes that differ
// from the live decision or failed, each in engine.ShadowRow.AppendOutcome's form ({"event":…,
// verdict, cause} or {"event":…, "error_kind", "error"}); every other outcome agreed with its live
// decision, to the cent (engine.ShadowRow.Diverged), and is read from it. So a batch's outcomes
// are one row and one index entry however many differ (a row per outcome cost PostgreSQL about 18
// µs each, see docs/speed.md), and the row's primary key stores them once however often the batch
// is written (INSERT … ON CONFLICT DO NOTHING). SQL reads them with json_each (SQLite) or
// json_array_elements (PostgreSQL).
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

// shadowOutcomesMigration (20261203000008) adds shadow_batches.outcomes, moves each
// shadow_decisions row into its batch's outcomes (the batch that stored its event's live
// decision) in AppendOutcome's form, and drops shadow_decisions. Run again, or by a second process
// after the first, it finds the column and no table, and does nothing.
func shadowOutcomesMigration() migrate.Migration {
	return migrate.Migration{
		Name:    "20261203000008",
		Comment: "shadow_outcomes",
		Up: func(ctx context.Context, m *migrate.Migrator, _ *migrate.Migration) error {
			db := m.DB()
			pg := db.Dialect().Name() == dialect.PG
			dialectSQL := func(sqlite, postgres string) string {
				if pg {
					return postgres
				}
				return sqlite
			}
			return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				if err := addColumn(ctx, tx, pg, "shadow_batches", "outcomes", "TEXT NOT NULL DEFAULT '[]'"); err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, dialectSQL(shadowOutcomesViewSQLite, shadowOutcomesViewPostgres)); err != nil {
					return fmt.Errorf("creating the view shadow_outcomes: %w", err)
				}
				var n int
				q := dialectSQL("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'shadow_decisions'",
					"SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'shadow_decisions'")
				if err := tx.NewRaw(q).Scan(ctx, &n); err != nil || n == 0 {
					return err
				}
				move := dialectSQL(shadowMoveSQLite, shadowMovePostgres)
				if _, err := tx.ExecContext(ctx, move); err != nil {
					return fmt.Errorf("moving shadow_decisions into shadow_batches.outcomes: %w", err)
				}
				_, err := tx.ExecContext(ctx, "DROP TABLE shadow_decisions")
				return err
			})
		},
		Down: func(ctx context.Context, m *migrate.Migrator, _ *migrate.Migration) error {
			return execScript(ctx, m.DB(), "DROP VIEW IF EXISTS shadow_outcomes; ALTER TABLE shadow_batches DROP COLUMN outcomes")
		},
	}
}

// The view shadow_outcomes has one row per outcome stored with a verdict of its own: its shadow
// version and batch, the batch's order times, its event's id, its error_kind ("" when it
// decided) and the outcome as stored (AppendOutcome's JSON). It is for SQL (SELECT … FROM
// shadow_outcomes WHERE version = 2 AND error_kind = 'rule_error'); the shadow report reads each
// batch's array beside its events instead. On SQLite, event_id is CAST to TEXT, the type of
// decisions.event_id (json_extract's result has none), so that it joins with decisions as SQL
// users expect.
const (
	shadowOutcomesViewSQLite = `CREATE VIEW IF NOT EXISTS shadow_outcomes AS
	SELECT sb.program, sb.version, sb.digest, sb.part, sb.batch_seq, sb.first_placed, sb.last_placed,
		CAST(json_extract(o.value, '$.event') AS TEXT) AS event_id, coalesce(json_extract(o.value, '$.error_kind'), '') AS error_kind,
		o.value AS outcome
	FROM shadow_batches sb, json_each(sb.outcomes) o`
	shadowOutcomesViewPostgres = `CREATE OR REPLACE VIEW shadow_outcomes AS
	SELECT sb.program, sb.version, sb.digest, sb.part, sb.batch_seq, sb.first_placed, sb.last_placed,
		(o.value->>'event') COLLATE "C" AS event_id, coalesce(o.value->>'error_kind', '') AS error_kind,
		o.value::text AS outcome
	FROM shadow_batches sb, json_array_elements(sb.outcomes::json) AS o(value)`
)

// shadowMoveSQLite and shadowMovePostgres write each batch's shadow_decisions rows into its
// outcomes, as AppendOutcome writes them (a failed outcome keeps its empty verdict beside its
// error; ParseShadowOutcome reads only the error then).
const (
	shadowMoveSQLite = `UPDATE shadow_batches SET outcomes = coalesce((
	SELECT json_group_array(json_object('event', s.event_id,
		'qualified', json(CASE WHEN s.qualified THEN 'true' ELSE 'false' END), 'failed_rules', json(s.failed_rules),
		'rate_rule', s.rate_rule, 'rate', s.rate, 'flat', s.flat, 'commission', s.commission,
		'cause', CASE WHEN s.cause_kind <> '' THEN json_object('kind', s.cause_kind, 'stage', s.cause_stage,
			'rule', s.cause_rule, 'old', s.cause_old, 'new', s.cause_new) END,
		'error_kind', s.error_kind, 'error', s.error))
	FROM shadow_decisions s JOIN decisions d ON d.event_id = s.event_id
	WHERE s.program = shadow_batches.program AND s.version = shadow_batches.version AND s.digest = shadow_batches.digest
		AND d.part = shadow_batches.part AND d.batch_seq = shadow_batches.batch_seq), '[]')`
	shadowMovePostgres = `UPDATE shadow_batches b SET outcomes = coalesce((
	SELECT json_agg(json_build_object('event', s.event_id,
		'qualified', s.qualified, 'failed_rules', s.failed_rules::json,
		'rate_rule', s.rate_rule, 'rate', s.rate::text, 'flat', s.flat::text, 'commission', s.commission::text,
		'cause', CASE WHEN s.cause_kind <> '' THEN json_build_object('kind', s.cause_kind, 'stage', s.cause_stage,
			'rule', s.cause_rule, 'old', s.cause_old, 'new', s.cause_new) END,
		'error_kind', s.error_kind, 'error', s.error))::text
	FROM shadow_decisions s JOIN decisions d ON d.event_id = s.event_id
	WHERE s.program = b.program AND s.version = b.version AND s.digest = b.digest
		AND d.part = b.part AND d.batch_seq = b.batch_seq), '[]')`
)

// shadowBatchTable is the columns writeShadowRows writes, in the order of a row's values.
var shadowBatchTable = bulkTable{name: "shadow_batches",
	cols:    []string{"program", "version", "digest", "part", "batch_seq", "sample_below", "events", "first_placed", "last_placed", "outcomes"},
	pgTypes: []string{"text", "bigint", "text", "bigint", "bigint", "text", "bigint", "timestamptz", "timestamptz", "text"}}

// shadowBatch is a shadow_batches row: the events one shadow version decided in one batch.
type shadowBatch struct {
	program, digest         string
	version                 int
	part                    int
	seq                     uint64
	sampleBelow             string
	events                  int64
	firstPlaced, lastPlaced time.Time
	outcomes                []byte // a JSON array of the outcomes with a verdict of their own
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
// new: one shadow_batches row per batch and shadow version, holding the outcomes with a verdict
// of their own. A batch's outcomes are new when its row is.
func (s *Store) writeShadowRows(ctx context.Context, w *wtx, rows []engine.ShadowRow) (int, error) {
	var batches []shadowBatch
	at := map[shadowBatchKey]int{}
	for i := range rows {
		r := &rows[i]
		k := shadowBatchKey{r.Program, r.Version, r.Digest, r.Partition, r.BatchSeq}
		j, ok := at[k]
		if !ok {
			j = len(batches)
			at[k] = j
			b := shadowBatch{program: safeText(r.Program), version: r.Version, digest: r.Digest, part: r.Partition, seq: r.BatchSeq,
				firstPlaced: r.PlacedAt.UTC(), lastPlaced: r.PlacedAt.UTC(), outcomes: []byte{'['}}
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
		if r.Diverged || r.ErrorKind != "" {
			if len(b.outcomes) > 1 {
				b.outcomes = append(b.outcomes, ',')
			}
			b.outcomes = r.AppendOutcome(b.outcomes)
		}
	}
	for i := range batches {
		batches[i].outcomes = append(batches[i].outcomes, ']')
	}
	stored := 0
	for i := range batches {
		b := &batches[i]
		n, err := s.insertIgnoreRows(ctx, w, shadowBatchTable, "program, version, digest, part, batch_seq", 1,
			func(_ int, args []any) []any {
				return append(args, b.program, int64(b.version), b.digest, int64(b.part), int64(b.seq), b.sampleBelow, b.events,
					b.firstPlaced, b.lastPlaced, safeText(string(b.outcomes)))
			})
		if err != nil {
			return 0, err
		}
		stored += n * int(b.events)
	}
	return stored, nil
}

// shadowBatchKey names a shadow_batches row: a shadow version and a batch.
type shadowBatchKey struct {
	program string
	version int
	digest  string
	part    int
	seq     uint64
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
	sel, params, err := pgUnnest(t, n, row)
	if err != nil {
		return 0, fmt.Errorf("storing %d rows of %s: %w", n, t.name, err)
	}
	q := "INSERT INTO " + t.name + " (" + strings.Join(t.cols, ", ") + ")" + sel + " ON CONFLICT (" + conflict + ") DO NOTHING"
	res, err := w.Tx.Tx.ExecContext(ctx, q, params...)
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

// Walk reads the events the shadow versions decided with their live decisions, batch by batch
// (each shadow batch's outcomes beside its events), and marks each order's latest event the
// shadow version decided (the highest stream sequence, then the latest stored; notLatest). See
// engine.ShadowHistory for the contract.
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
	// On SQLite a unary + keeps a term on d from choosing an index over the id range (below).
	placed := "d.placed_at"
	if s.backend == SQLite {
		placed = "+d.placed_at"
	}
	if !f.From.IsZero() {
		where, args = append(where, placed+" >= ?"), append(args, f.From.UTC())
	}
	if !f.To.IsZero() {
		where, args = append(where, placed+" < ?"), append(args, f.To.UTC())
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	// The events each shadow decided: its batches' decisions of the program (the sample is drawn
	// below, by order). Each shadow batch's decisions are found by the batch's id range
	// (concurrent batches' ids may interleave on PostgreSQL: part and batch_seq pick the batch's
	// own). SQLite, without statistics, would rather walk an index of every decision of the
	// program for each batch (decisions_recent: O(batches × decisions)) or index all decisions
	// anew: its joins are CROSS JOINs, which fix the order, and the unary + leaves the id range the
	// only way to d.
	from := " FROM shadow_batches b JOIN batches bt ON bt.part = b.part AND bt.seq = b.batch_seq" +
		" JOIN decisions d ON d.id BETWEEN bt.first_decision_id AND bt.last_decision_id AND d.part = b.part AND d.batch_seq = b.batch_seq" +
		" AND d.program = b.program"
	if s.backend == SQLite {
		from = " FROM shadow_batches b CROSS JOIN batches bt ON bt.part = b.part AND bt.seq = b.batch_seq" +
			" CROSS JOIN decisions d ON d.id BETWEEN bt.first_decision_id AND bt.last_decision_id AND +d.part = b.part AND +d.batch_seq = b.batch_seq" +
			" AND +d.program = b.program"
	}
	notLatest, err := h.notLatest(ctx, from+cond, args)
	if err != nil {
		return err
	}
	// The events in shadow batch order; the first row of each shadow batch carries its outcomes
	// (the ones that differ or failed, AppendOutcome's JSON array), so that only one batch's are
	// in memory at a time. (Joined in SQL with each event, the outcomes' JSON made both databases
	// read a batch's whole array again for each of its events when their tables had no
	// statistics yet: minutes for 200 000 orders.)
	// (The window numbers a batch's rows without its outcomes: SQLite buffers a window's rows with
	// every column they name, and the array on each of them cost seconds.)
	query := "SELECT e.event_id, e.order_id, e.sample_below, e.stream_seq, e.raw, e.record, e.program, e.version, e.digest, e.part, e.batch_seq" +
		", CASE WHEN e.first = 1 THEN (SELECT sb.outcomes FROM shadow_batches sb WHERE sb.program = e.program AND sb.version = e.version" +
		" AND sb.digest = e.digest AND sb.part = e.part AND sb.batch_seq = e.batch_seq) ELSE '' END" +
		" FROM (SELECT d.id, d.event_id, d.order_id, b.sample_below, d.stream_seq, d.raw, " + s.recordColumns(inputs) + " AS record" +
		", b.program, b.version, b.digest, b.part, b.batch_seq" +
		", ROW_NUMBER() OVER (PARTITION BY b.program, b.version, b.digest, b.part, b.batch_seq ORDER BY d.id) AS first" +
		from + inputsJoin(inputs) + cond + ") e ORDER BY e.program, e.version, e.digest, e.part, e.batch_seq, e.id"
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("reading shadow outcomes: %w", err)
	}
	defer rows.Close()
	sc := newRecordScanner()
	var (
		eventID, orderID, below string
		seq, part, batchSeq     int64
		raw, outcomes           []byte
		o                       engine.ShadowOutcome
	)
	dest := append([]any{&eventID, &orderID, &below, &seq, &raw}, sc.dest()...)
	dest = append(dest, &o.Program, &o.Version, &o.Digest, &part, &batchSeq, &outcomes)
	own := map[string]engine.ShadowOutcome{} // the current shadow batch's, by event
	batch := make([]engine.ShadowEvent, 0, h.batchSize)
	for rows.Next() {
		o = engine.ShadowOutcome{}
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("reading shadow outcomes: %w", err)
		}
		if len(outcomes) > 0 { // the first event of a shadow batch
			if own, err = batchOutcomes(outcomes); err != nil {
				return fmt.Errorf("reading shadow outcomes of %s v%d, batch %d of partition %d: %w", o.Program, o.Version, batchSeq, part, err)
			}
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
		ev := engine.ShadowEvent{Event: engine.Event{ID: eventID, StreamSeq: uint64(seq), Raw: append([]byte(nil), raw...)},
			Latest: !notLatest[shadowEventKey{o.Program, o.Version, eventID}]}
		if ev.Live, err = sc.record(eventID); err != nil {
			return fmt.Errorf("reading shadow outcomes: %w", err)
		}
		if stored, ok := own[eventID]; ok {
			stored.Program, stored.Version, stored.Digest = o.Program, o.Version, o.Digest
			o = stored
		} else {
			agreed(&o, ev.Live) // no verdict of its own: the live decision's is the shadow's
		}
		o.Currency = ev.Live.Currency // the order's
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

// shadowEventKey is an event a shadow version decided.
type shadowEventKey struct {
	program string
	version int
	event   string
}

// notLatest returns the events (from and its conditions: the events Walk reads) that are not
// their order's latest one their shadow version decided — a narrow window over the events,
// without their bytes; only orders with more than one event have any.
func (h *shadowHistory) notLatest(ctx context.Context, fromWhere string, args []any) (map[shadowEventKey]bool, error) {
	rows, err := h.s.db.QueryContext(ctx, "SELECT program, version, event_id FROM (SELECT b.program, b.version, d.event_id"+
		", ROW_NUMBER() OVER (PARTITION BY b.program, d.order_id, b.version ORDER BY d.stream_seq DESC, d.id DESC) AS rn"+
		fromWhere+") e WHERE rn > 1", args...)
	if err != nil {
		return nil, fmt.Errorf("reading shadow outcomes: the orders' latest events: %w", err)
	}
	defer rows.Close()
	out := map[shadowEventKey]bool{}
	for rows.Next() {
		var k shadowEventKey
		if err := rows.Scan(&k.program, &k.version, &k.event); err != nil {
			return nil, fmt.Errorf("reading shadow outcomes: the orders' latest events: %w", err)
		}
		out[k] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading shadow outcomes: the orders' latest events: %w", err)
	}
	return out, nil
}

// batchOutcomes reads a shadow batch's outcomes (AppendOutcome's objects, as a JSON array), by
// event.
func batchOutcomes(data []byte) (map[string]engine.ShadowOutcome, error) {
	var elems []json.RawMessage
	if err := json.Unmarshal(data, &elems); err != nil {
		return nil, fmt.Errorf("its outcomes: %w", err)
	}
	out := make(map[string]engine.ShadowOutcome, len(elems))
	for _, e := range elems {
		var o engine.ShadowOutcome
		id, err := engine.ParseShadowOutcome(e, &o)
		if err != nil {
			return nil, err
		}
		out[id] = o
	}
	return out, nil
}

// agreed gives an outcome stored as agreeing with its live decision (no verdict of its own) the
// live decision's verdict: a shadow that did not diverge decided the same qualification, failed
// rules, rate rule, terms and commission (engine.ShadowRow.Diverged).
func agreed(o *engine.ShadowOutcome, live *engine.RecordedDecision) {
	o.Qualified, o.RateRule, o.HasFlat = live.Qualified, live.RateRule, live.HasFlat
	o.FailedRules = slices.Clone(live.FailedRules)
	o.Rate.Set(&live.Rate)
	o.Flat.Set(&live.Flat)
	o.Commission.Set(&live.Commission)
}
