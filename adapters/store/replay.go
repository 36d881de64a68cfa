package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/apd/v3"
	"github.com/uptrace/bun"

	"github.com/commissioner/commissioner/engine"
)

// The replay side of the store: the order events with the decision recorded for each, read
// for engine.Replay, and the replay runs recorded for audit (`commissioner replay --record`).

// schemaReplayRuns is one row per recorded replay run. parameters and summary are JSON
// documents (see ReplayRun).
const schemaReplayRuns = `
CREATE TABLE IF NOT EXISTS replay_runs (
	id                {{PK}},
	created_at        {{Time}} NOT NULL,
	candidate_program {{Key}} NOT NULL,
	candidate_version BIGINT NOT NULL,
	candidate_digest  TEXT NOT NULL,
	candidate_source  TEXT NOT NULL,
	parameters        TEXT NOT NULL,
	summary           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS replay_runs_created ON replay_runs (created_at);
`

// ReplayRun is a recorded replay: which candidate policy was replayed, with which parameters,
// and what it found. It records the run only; a replay never writes decisions.
type ReplayRun struct {
	ID        int64
	CreatedAt time.Time
	// The candidate version (when the candidate had several, the one that decided the most
	// events; the parameters list them all): program, version, digest and its source text.
	CandidateProgram string
	CandidateVersion int
	CandidateDigest  string
	CandidateSource  string
	// Parameters and Summary are JSON documents chosen by the caller (the CLI: the flags and
	// every candidate version; the report's counts and totals).
	Parameters json.RawMessage
	Summary    json.RawMessage
}

type replayRunRow struct {
	bun.BaseModel `bun:"table:replay_runs"`

	ID               int64     `bun:"id,pk,autoincrement"`
	CreatedAt        time.Time `bun:"created_at"`
	CandidateProgram string    `bun:"candidate_program"`
	CandidateVersion int       `bun:"candidate_version"`
	CandidateDigest  string    `bun:"candidate_digest"`
	CandidateSource  string    `bun:"candidate_source"`
	Parameters       string    `bun:"parameters"`
	Summary          string    `bun:"summary"`
}

// SaveReplayRun stores a replay run and returns its id. CreatedAt defaults to now. Parameters
// and Summary must be valid JSON (an empty one is stored as {}).
func (s *Store) SaveReplayRun(ctx context.Context, run ReplayRun) (int64, error) {
	if run.CreatedAt.IsZero() {
		run.CreatedAt = time.Now()
	}
	for _, doc := range []*json.RawMessage{&run.Parameters, &run.Summary} {
		if len(*doc) == 0 {
			*doc = json.RawMessage("{}")
		}
		if !json.Valid(*doc) {
			return 0, fmt.Errorf("saving replay run: parameters and summary must be JSON")
		}
	}
	row := replayRunRow{
		CreatedAt: run.CreatedAt.UTC(), CandidateProgram: safeText(run.CandidateProgram), CandidateVersion: run.CandidateVersion,
		CandidateDigest: run.CandidateDigest, CandidateSource: safeText(run.CandidateSource),
		Parameters: string(run.Parameters), Summary: string(run.Summary),
	}
	err := s.writeTx(ctx, func(ctx context.Context, w *wtx) error {
		_, err := w.NewInsert().Model(&row).Returning("id").Exec(ctx, &row.ID)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("saving replay run of %s v%d: %w", run.CandidateProgram, run.CandidateVersion, err)
	}
	return row.ID, nil
}

// ReplayRuns returns the recorded replay runs, newest first.
func (s *Store) ReplayRuns(ctx context.Context) ([]ReplayRun, error) {
	var rows []replayRunRow
	if err := s.db.NewSelect().Model(&rows).Order("id DESC").Scan(ctx); err != nil {
		return nil, fmt.Errorf("reading replay runs: %w", err)
	}
	out := make([]ReplayRun, len(rows))
	for i, r := range rows {
		out[i] = ReplayRun{ID: r.ID, CreatedAt: r.CreatedAt.UTC(), CandidateProgram: r.CandidateProgram,
			CandidateVersion: r.CandidateVersion, CandidateDigest: r.CandidateDigest, CandidateSource: r.CandidateSource,
			Parameters: json.RawMessage(r.Parameters), Summary: json.RawMessage(r.Summary)}
	}
	return out, nil
}

// --- reading the history ---

// History is the stored order events a filter selects, each with the latest decision recorded
// for it: what engine.Replay reads. Make one with Store.History. It can split itself into
// parts over disjoint ranges of storage order, walked at once (engine.PartitionedHistory).
type History struct {
	s *Store
	f EventFilter
	// BatchSize is how many events each batch passed to Walk's fn holds.
	BatchSize int

	// src is what the history walks: the decided events (decisions), the dead letters that
	// decoded (dead_letters: a later policy may decide them), or both (whole).
	src    historySource
	lo, hi int64 // the rows' id in (lo, hi]; hi 0: no upper bound
	// minPart is the fewest stored events worth a part of its own.
	minPart int64
	// prep is what the parts of one history share, found once.
	prep *historyPrep
}

var (
	_ engine.History            = (*History)(nil)
	_ engine.PartitionedHistory = (*History)(nil)
)

// ReplayHistory is History as the engine's port (the HTTP API's replay reads through it).
func (s *Store) ReplayHistory(f EventFilter) engine.History { return s.History(f) }

// History returns the events f selects (with f.LatestPerOrder, only the latest event of each
// order: the highest stream sequence, then the latest stored, among all the order's stored
// events) with their recorded decisions, in no particular order.
func (s *Store) History(f EventFilter) *History {
	return &History{s: s, f: f, BatchSize: 512, minPart: 2000, prep: &historyPrep{}}
}

type historySource int

const (
	whole historySource = iota
	decided
	deadLettered
)

// historyPrep is what a history finds once, before any part is walked.
type historyPrep struct {
	done bool
	// superseded holds the events that are not their order's latest (LatestPerOrder).
	superseded map[string]bool
	// inputs: some decision has recorded inputs (decision_inputs), so the walk joins them.
	inputs bool
}

// prepare finds, once, whether decisions have recorded inputs, and the events a later event of
// the same order supersedes: orders with several decided events are few, and found from the
// decisions' (program, order_id) index alone. (An event that was dead-lettered, stored but not
// decided, neither supersedes nor is superseded.)
func (h *History) prepare(ctx context.Context) error {
	if h.prep.done {
		return nil
	}
	var one int
	switch err := h.s.db.QueryRowContext(ctx, "SELECT 1 FROM decision_inputs LIMIT 1").Scan(&one); {
	case err == nil:
		h.prep.inputs = true
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("reading decision inputs: %w", err)
	}
	if !h.f.LatestPerOrder {
		h.prep.done = true
		return nil
	}
	rows, err := h.s.db.QueryContext(ctx, `SELECT d.event_id, d.program, d.order_id, d.stream_seq, d.id FROM decisions d
		WHERE (d.program, d.order_id) IN (SELECT program, order_id FROM decisions GROUP BY program, order_id HAVING count(*) > 1)`)
	if err != nil {
		return fmt.Errorf("reading orders with several events: %w", err)
	}
	defer rows.Close()
	type ev struct {
		id       string
		seq, row int64
	}
	latest := map[[2]string]ev{}
	superseded := map[string]bool{}
	for rows.Next() {
		var e ev
		var program, order string
		if err := rows.Scan(&e.id, &program, &order, &e.seq, &e.row); err != nil {
			return fmt.Errorf("reading orders with several events: %w", err)
		}
		k := [2]string{program, order}
		old, ok := latest[k]
		switch {
		case !ok:
			latest[k] = e
		case e.seq > old.seq || e.seq == old.seq && e.row > old.row:
			superseded[old.id] = true
			latest[k] = e
		default:
			superseded[e.id] = true
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading orders with several events: %w", err)
	}
	h.prep.superseded, h.prep.done = superseded, true
	return nil
}

// Partitions splits the history for n walkers into parts: the decided events by storage order,
// eight parts per walker when there are enough (at least minPart a part: a filter's events can
// crowd into a few ranges, a month of a year's history, and walkers taking small parts in turn
// share them out), and the dead letters as one more. Walking every part gives exactly the events
// Walk gives.
func (h *History) Partitions(ctx context.Context, n int) ([]engine.History, error) {
	if err := h.prepare(ctx); err != nil {
		return nil, err
	}
	var lo, hi sql.NullInt64
	if err := h.s.db.QueryRowContext(ctx, "SELECT min(id), max(id) FROM decisions").Scan(&lo, &hi); err != nil {
		return nil, fmt.Errorf("reading events to replay: %w", err)
	}
	if h.src != whole || !lo.Valid || n <= 1 {
		return []engine.History{h}, nil
	}
	span := hi.Int64 - lo.Int64 + 1
	k := max(int64(n)*8, 1)
	if span < k*h.minPart {
		k = max(span/h.minPart, 1)
	}
	parts := make([]engine.History, 0, k+1)
	start := lo.Int64 - 1
	for i := range k {
		end := lo.Int64 - 1 + span*(i+1)/k
		if i == k-1 {
			end = 0 // unbounded: events stored meanwhile are in no part, or the last
		}
		part := *h
		part.src, part.lo, part.hi = decided, start, end
		parts = append(parts, &part)
		start = end
	}
	dead := *h
	dead.src = deadLettered
	return append(parts, &dead), nil
}

// historyQuery builds the query of one source (decided or deadLettered) for the history's range
// and filter.
func (h *History) historyQuery(src historySource) (string, []any) {
	s, f := h.s, h.f
	var where []string
	var args []any
	alias := "d."
	if src == deadLettered {
		alias = "e."
		where = append(where, "e.placed_at IS NOT NULL") // it decoded
	}
	// SQLite: the + keeps the planner from walking an index and fetching rows in its order (a
	// random read per event); a straight scan of the table is several times faster when the
	// filter selects much of it.
	col := func(c string) string {
		if s.backend == SQLite {
			return "+" + alias + c
		}
		return alias + c
	}
	if h.lo > 0 {
		where, args = append(where, alias+"id > ?"), append(args, h.lo)
	}
	if h.hi > 0 {
		where, args = append(where, alias+"id <= ?"), append(args, h.hi)
	}
	if f.Program != "" {
		where, args = append(where, col("program")+" = ?"), append(args, f.Program)
	}
	if !f.From.IsZero() {
		where, args = append(where, col("placed_at")+" >= ?"), append(args, f.From.UTC())
	}
	if !f.To.IsZero() {
		where, args = append(where, col("placed_at")+" < ?"), append(args, f.To.UTC())
	}
	if f.Affiliate != "" {
		where, args = append(where, col("affiliate_id")+" = ?"), append(args, f.Affiliate)
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	if src == deadLettered {
		return "SELECT e.id, e.event_id, e.stream_seq, e.raw, NULL FROM dead_letters e" + cond + " ORDER BY e.id", args
	}
	inputs := h.prep.inputs
	// The scan is in id order (SQLite: the table's; PostgreSQL leaves the order to the plan).
	order := " ORDER BY d.id"
	if s.backend == Postgres {
		order = ""
	}
	return "SELECT d.id, d.event_id, d.stream_seq, d.raw, " + s.recordColumns(inputs) + " FROM decisions d" + inputsJoin(inputs) + cond + order, args
}

// recordColumns is a decision and its recorded inputs as one text column, fields joined by
// U+001F, as recordScanner reads it (NULL when there is no decision). One column rather than
// nineteen: the SQLite driver's cost is per column (a lock, a Go string), and there are a
// million rows. No field can hold the separator: ids match [a-z0-9_], the rest are numbers, hex,
// months and JSON of ids. Without inputs (no decision has any) their fields are empty, and the
// query needs no join to decision_inputs.
func (s *Store) recordColumns(inputs bool) string {
	fields := []string{"d.id", "d.policy_version", "d.policy_digest", "d.qualified", "d.failed_rules", "d.rate_rule", "d.rate",
		"coalesce(d.flat, '')", "d.base", "d.commission", "d.currency", "d.rounding", "d.trace",
		"coalesce(i.pinned, '')", "coalesce(i.pin_version, '')", "coalesce(i.pin_digest, '')", "coalesce(i.month, '')",
		"coalesce(i.month_qualified_orders, '')", "coalesce(i.month_qualified_sales, '')"}
	if s.backend == Postgres {
		for k, f := range fields {
			if c, ok := strings.CutPrefix(f, "coalesce("); ok {
				fields[k] = "coalesce(" + strings.TrimSuffix(c, ", '')") + "::text, '')"
			}
		}
	}
	if !inputs {
		for k := 13; k < len(fields); k++ {
			fields[k] = "''"
		}
	}
	if s.backend == Postgres {
		return "CASE WHEN d.id IS NULL THEN NULL ELSE concat_ws(chr(31), " + strings.Join(fields, ", ") + ") END"
	}
	return strings.Join(fields, " || char(31) || ")
}

// inputsJoin joins a decision's recorded inputs, when any decision has some.
func inputsJoin(inputs bool) string {
	if !inputs {
		return ""
	}
	return " LEFT JOIN decision_inputs i ON i.decision_id = d.id"
}

// Walk reads the events and their decisions in one streaming query (one snapshot on SQLite,
// one statement's view on PostgreSQL) and calls fn with batches of BatchSize. See
// engine.History for the contract.
func (h *History) Walk(ctx context.Context, fn func([]engine.ReplayEvent) error) error {
	if err := h.prepare(ctx); err != nil {
		return err
	}
	if h.src == whole {
		for _, src := range []historySource{decided, deadLettered} {
			part := *h
			part.src = src
			if err := part.Walk(ctx, fn); err != nil {
				return err
			}
		}
		return nil
	}
	query, args := h.historyQuery(h.src)
	var db interface {
		QueryContext(context.Context, string, ...any) (*sql.Rows, error)
	} = h.s.db
	if h.s.backend == SQLite {
		conn, err := h.s.db.Conn(ctx)
		if err != nil {
			return fmt.Errorf("reading events to replay: %w", err)
		}
		defer conn.Close()
		// Pages read through a memory map cost no system call and no copy each: about a sixth
		// less CPU for a whole replay (measured). The mapped pages are the OS's file cache, not
		// the heap (they show in RSS, and the OS reclaims them). The setting is the
		// connection's: it goes back to the default before the pool has it again.
		if _, err := conn.ExecContext(ctx, "PRAGMA mmap_size = 8589934592"); err == nil {
			defer conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA mmap_size = 0")
		}
		db = conn
	}
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("reading events to replay: %w", err)
	}
	defer rows.Close()
	return h.walkRows(rows, fn)
}

// walkRows reads the history query's rows (an event, and its decision as recordColumns gives
// it) into batches of BatchSize and calls fn with each, keeping each event once (with its
// latest decision) unless it is superseded. The caller closes rows.
func (h *History) walkRows(rows *sql.Rows, fn func([]engine.ReplayEvent) error) error {
	superseded := h.prep.superseded
	var err error
	size := max(h.BatchSize, 1)
	sc := newRecordScanner()
	batch := make([]engine.ReplayEvent, 0, size)
	var (
		rowID, lastRowID, lastDecisionID int64
		seq                              int64
		eventID, raw                     sql.RawBytes
		kept                             bool
	)
	dest := append([]any{&rowID, &eventID, &seq, &raw}, sc.dest()...)
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("reading events to replay: %w", err)
		}
		if err := sc.split(); err != nil {
			return fmt.Errorf("reading events to replay: event %s: %w", eventID, err)
		}
		if rowID == lastRowID {
			// Another decision of the event just read (SQLite): keep the latest.
			if kept && sc.id() > lastDecisionID {
				last := &batch[len(batch)-1]
				if last.Recorded, err = sc.record(last.Event.ID); err != nil {
					return fmt.Errorf("reading events to replay: %w", err)
				}
				lastDecisionID = sc.id()
			}
			continue
		}
		lastRowID, lastDecisionID = rowID, sc.id()
		if kept = !superseded[string(eventID)]; !kept {
			continue
		}
		// The batch is passed on only when the next event comes: until then a later decision
		// of its last event may still replace the one read.
		if len(batch) == size {
			if err := fn(batch); err != nil {
				return err
			}
			batch = make([]engine.ReplayEvent, 0, size)
		}
		ev := engine.ReplayEvent{Event: engine.Event{ID: string(eventID), StreamSeq: uint64(seq), Raw: append([]byte(nil), raw...)}}
		if ev.Recorded, err = sc.record(ev.Event.ID); err != nil {
			return fmt.Errorf("reading events to replay: %w", err)
		}
		batch = append(batch, ev)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading events to replay: %w", err)
	}
	if len(batch) > 0 {
		return fn(batch)
	}
	return nil
}

// RecordedDecisions returns the decision recorded for each of the events (by event id) that has
// one: the stream replay's lookup. Events with no decision are absent from the map.
func (s *Store) RecordedDecisions(ctx context.Context, eventIDs []string) (map[string]*engine.RecordedDecision, error) {
	out := make(map[string]*engine.RecordedDecision, len(eventIDs))
	const chunk = 500
	sc := newRecordScanner()
	var eventID string
	dest := append([]any{&eventID}, sc.dest()...)
	for start := 0; start < len(eventIDs); start += chunk {
		ids := eventIDs[start:min(start+chunk, len(eventIDs))]
		query := "SELECT d.event_id, " + s.recordColumns(true) + " FROM decisions d" + inputsJoin(true) + " WHERE d.event_id IN (?)"
		rows, err := s.db.QueryContext(ctx, query, bun.In(ids))
		if err != nil {
			return nil, fmt.Errorf("reading the decisions of %d events: %w", len(ids), err)
		}
		for rows.Next() {
			err := rows.Scan(dest...)
			if err == nil {
				err = sc.split()
			}
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("reading the decisions of %d events: %w", len(ids), err)
			}
			r, err := sc.record(eventID)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("reading the decisions of %d events: %w", len(ids), err)
			}
			out[eventID] = r
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, fmt.Errorf("reading the decisions of %d events: %w", len(ids), err)
		}
	}
	return out, nil
}

// recordScanner turns decision columns into recorded decisions. It interns what repeats
// (digests, rule ids, currencies, and whole traces and failed-rule lists: a policy version gives
// only a few dozen distinct ones), so a million decisions neither parse nor hold a million
// copies of each; interned slices are shared, read-only. Not safe for concurrent use.
type recordScanner struct {
	strs  map[string]string
	last  [recordFields]string // the value each field interned last: most rows repeat it
	lists map[string][]string
	// traces are found by what determines them (the version's digest, the failed rules, the
	// rate rule), then compared byte for byte: hashing a 400-byte trace per row costs more.
	traces map[traceKey]internedTrace
	rec    sql.RawBytes // the column of recordColumns, reused from row to row
	fields [recordFields][]byte
	did    int64 // the decision id of the last row split; 0 when none
}

const recordFields = 19

type traceKey struct{ digest, failed, rateRule string }

type internedTrace struct {
	text  string
	trace []engine.RuleOutcome
}

func newRecordScanner() *recordScanner {
	return &recordScanner{strs: map[string]string{}, traces: map[traceKey]internedTrace{}, lists: map[string][]string{}}
}

// maxInterned bounds each intern table: past it, values are parsed and kept one by one.
const maxInterned = 100_000

// dest returns the Scan destination of recordColumns.
func (sc *recordScanner) dest() []any { return []any{&sc.rec} }

// split cuts the last scanned record into its fields and reads the decision id.
func (sc *recordScanner) split() error {
	sc.did = 0
	if len(sc.rec) == 0 {
		return nil
	}
	rest := []byte(sc.rec)
	for i := range recordFields {
		k := bytes.IndexByte(rest, 0x1f)
		if i == recordFields-1 {
			if k >= 0 {
				return fmt.Errorf("a decision record with more than %d fields", recordFields)
			}
			sc.fields[i] = rest
			break
		}
		if k < 0 {
			return fmt.Errorf("a decision record with %d fields, want %d", i+1, recordFields)
		}
		sc.fields[i], rest = rest[:k], rest[k+1:]
	}
	id, err := strconv.ParseInt(string(sc.fields[0]), 10, 64)
	if err != nil || id <= 0 {
		return fmt.Errorf("a decision record with id %q", sc.fields[0])
	}
	sc.did = id
	return nil
}

// internField interns field i of the record, trying the value that field had last.
func (sc *recordScanner) internField(i int) string {
	if b := sc.fields[i]; sc.last[i] == string(b) {
		return sc.last[i]
	}
	sc.last[i] = sc.intern(sc.fields[i])
	return sc.last[i]
}

func (sc *recordScanner) intern(b []byte) string {
	if s, ok := sc.strs[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(sc.strs) < maxInterned {
		sc.strs[s] = s
	}
	return s
}

// id is the decision id of the last split row; 0 when it has none.
func (sc *recordScanner) id() int64 { return sc.did }

// record builds the recorded decision of the last split row; nil when the row has none.
func (sc *recordScanner) record(eventID string) (*engine.RecordedDecision, error) {
	if sc.did == 0 {
		return nil, nil
	}
	f := &sc.fields
	version, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return nil, fmt.Errorf("decision of event %s: policy_version %q", eventID, f[1])
	}
	var qualified bool
	switch string(f[3]) {
	case "1", "true", "t":
		qualified = true
	case "0", "false", "f":
	default:
		return nil, fmt.Errorf("decision of event %s: qualified %q", eventID, f[3])
	}
	r := &engine.RecordedDecision{Verdict: engine.Verdict{
		PolicyVersion: version, PolicyDigest: sc.internField(2), Qualified: qualified,
		RateRule: sc.internField(5), Currency: sc.internField(10), Rounding: sc.internField(11),
		HasFlat: len(f[7]) > 0,
	}}
	if err = setDecimal(&r.Rate, f[6], "rate"); err == nil {
		if err = setDecimal(&r.Base, f[8], "base"); err == nil {
			err = setDecimal(&r.Commission, f[9], "commission")
		}
	}
	if err == nil && r.HasFlat {
		err = setDecimal(&r.Flat, f[7], "flat")
	}
	if err == nil {
		var ok bool
		if r.FailedRules, ok = sc.lists[string(f[4])]; !ok {
			if r.FailedRules, err = sc.stringList(f[4]); err == nil && len(sc.lists) < maxInterned {
				sc.lists[string(f[4])] = r.FailedRules
			}
		}
	}
	if err == nil {
		k := traceKey{digest: r.PolicyDigest, failed: sc.internField(4), rateRule: r.RateRule}
		it, ok := sc.traces[k]
		if ok && it.text == string(f[12]) {
			r.Trace = it.trace
		} else if r.Trace, err = sc.parseTrace(f[12]); err == nil && !ok && len(sc.traces) < maxInterned {
			sc.traces[k] = internedTrace{text: string(f[12]), trace: r.Trace}
		}
	}
	if err == nil {
		err = sc.inputs(r)
	}
	if err != nil {
		return nil, fmt.Errorf("decision of event %s: %w", eventID, err)
	}
	return r, nil
}

// inputs reads the recorded inputs of the last split row into r: the pin, and the affiliate's
// month.
func (sc *recordScanner) inputs(r *engine.RecordedDecision) error {
	f := &sc.fields
	switch string(f[13]) {
	case "", "0", "false", "f":
	case "1", "true", "t":
		r.Pinned = true
	default:
		return fmt.Errorf("pinned %q", f[13])
	}
	if len(f[14]) > 0 {
		v, err := strconv.Atoi(string(f[14]))
		if err != nil {
			return fmt.Errorf("pin_version %q", f[14])
		}
		r.Pin = &engine.Pin{Version: v, Digest: sc.internField(15)}
	}
	if len(f[16]) > 0 {
		orders, err := strconv.ParseInt(string(f[17]), 10, 64)
		if err != nil {
			return fmt.Errorf("month_qualified_orders %q", f[17])
		}
		a := &engine.AffiliateMonth{Month: sc.internField(16), QualifiedOrders: orders}
		if err := setDecimal(&a.QualifiedSales, f[18], "month_qualified_sales"); err != nil {
			return err
		}
		r.Affiliate = a
	}
	return nil
}

// setDecimal parses an exact decimal column: plain digits with an optional sign and point
// directly, anything else through apd.
func setDecimal(d *apd.Decimal, b []byte, what string) error {
	if len(b) > 0 && len(b) <= 18 {
		neg, i := false, 0
		if b[0] == '-' {
			neg, i = true, 1
		}
		var coeff int64
		exp, digits, point, ok := int32(0), 0, false, i < len(b)
		for ; i < len(b) && ok; i++ {
			switch c := b[i]; {
			case c >= '0' && c <= '9':
				coeff = coeff*10 + int64(c-'0')
				digits++
				if point {
					exp--
				}
			case c == '.' && !point:
				point = true
			default:
				ok = false
			}
		}
		if ok && digits > 0 {
			d.SetFinite(coeff, exp)
			d.Negative = neg
			return nil
		}
	}
	if _, _, err := d.SetString(string(b)); err != nil {
		return fmt.Errorf("reading %s %q: %w", what, b, err)
	}
	return nil
}

// stringList parses a JSON array of strings as WriteBatch writes it: ["a","b"].
func (sc *recordScanner) stringList(b []byte) ([]string, error) {
	if string(b) == "[]" {
		return nil, nil
	}
	var out []string
	p := jsonLite{b: b}
	if !p.eat('[') {
		return sc.slowStrings(b)
	}
	for {
		s, ok := p.str()
		if !ok {
			return sc.slowStrings(b)
		}
		out = append(out, sc.intern(s))
		if p.eat(']') {
			return out, nil
		}
		if !p.eat(',') {
			return sc.slowStrings(b)
		}
	}
}

func (sc *recordScanner) slowStrings(b []byte) ([]string, error) {
	var out []string
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("reading failed_rules %q: %w", b, err)
	}
	for i := range out {
		out[i] = sc.intern([]byte(out[i]))
	}
	return out, nil
}

// parseTrace parses the compact trace column: [["qualify","completed","pass"],…].
func (sc *recordScanner) parseTrace(b []byte) ([]engine.RuleOutcome, error) {
	out := make([]engine.RuleOutcome, 0, 12)
	p := jsonLite{b: b}
	if !p.eat('[') {
		return sc.slowTrace(b)
	}
	if p.eat(']') {
		return out, nil
	}
	for {
		var f [3][]byte
		ok := p.eat('[')
		for i := 0; i < 3 && ok; i++ {
			if i > 0 {
				ok = p.eat(',')
			}
			if ok {
				f[i], ok = p.str()
			}
		}
		if !ok || !p.eat(']') {
			return sc.slowTrace(b)
		}
		stage := engine.StageQualify
		if string(f[0]) == "rate" {
			stage = engine.StageRate
		}
		out = append(out, engine.RuleOutcome{Stage: stage, Rule: sc.intern(f[1]), Outcome: sc.intern(f[2])})
		if p.eat(']') {
			return out, nil
		}
		if !p.eat(',') {
			return sc.slowTrace(b)
		}
	}
}

func (sc *recordScanner) slowTrace(b []byte) ([]engine.RuleOutcome, error) {
	var raw [][3]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("reading trace: %w", err)
	}
	out := make([]engine.RuleOutcome, len(raw))
	for i, t := range raw {
		stage := engine.StageQualify
		if t[0] == "rate" {
			stage = engine.StageRate
		}
		out[i] = engine.RuleOutcome{Stage: stage, Rule: sc.intern([]byte(t[1])), Outcome: sc.intern([]byte(t[2]))}
	}
	return out, nil
}

// jsonLite reads the compact JSON WriteBatch writes. str gives up (false) on escapes, so the
// caller falls back to encoding/json for anything unusual.
type jsonLite struct {
	b []byte
	i int
}

func (p *jsonLite) eat(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *jsonLite) str() ([]byte, bool) {
	if !p.eat('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case '"':
			s := p.b[start:p.i]
			p.i++
			return s, true
		case '\\':
			return nil, false
		}
		p.i++
	}
	return nil, false
}
