package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cockroachdb/apd/v3"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/migrate"

	"github.com/commissioner/commissioner/engine"
)

// The replay side of the store: the order events with the decision recorded for each, read
// for engine.Replay, and the replay runs recorded for audit (`commissioner replay --record`).

func init() {
	laterMigrations = append(laterMigrations, migrate.Migration{
		Name:    "20250601000002",
		Comment: "replay_runs",
		Up: func(ctx context.Context, m *migrate.Migrator, _ *migrate.Migration) error {
			db := m.DB()
			return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				return execScript(ctx, tx, render(schemaReplayRuns, typesFor(db.Dialect().Name())))
			})
		},
		Down: func(ctx context.Context, m *migrate.Migrator, _ *migrate.Migration) error {
			return execScript(ctx, m.DB(), "DROP TABLE IF EXISTS replay_runs")
		},
	})
}

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
// for it: what engine.Replay reads. Make one with Store.History.
type History struct {
	s *Store
	f EventFilter
	// BatchSize is how many events each batch passed to Walk's fn holds.
	BatchSize int
}

var _ engine.History = (*History)(nil)

// History returns the events f selects (with f.LatestPerOrder, only the latest event of each
// order: the highest stream sequence, then the latest stored) with their recorded decisions.
func (s *Store) History(f EventFilter) *History { return &History{s: s, f: f, BatchSize: 512} }

// replayColumns are read for each event: the event, then its latest decision (NULL when none).
func (s *Store) replayColumns() string {
	num := func(c string) string {
		if s.kind == Postgres {
			return "d." + c + "::text"
		}
		return "d." + c
	}
	return "e.event_id, e.subject, e.stream_seq, e.raw, " +
		"d.policy_version, d.policy_digest, d.qualified, d.failed_rules, d.rate_rule, " +
		num("rate") + ", " + num("flat") + ", " + num("base") + ", " + num("commission") + ", " +
		"d.currency, d.rounding, d.trace"
}

// historyQuery builds the query for a filter. Rows come in no particular order: a replay
// aggregates, and sorts what it lists.
func (s *Store) historyQuery(f EventFilter, extra string, extraArgs ...any) (string, []any) {
	var where []string
	var args []any
	// SQLite: the + keeps the planner from walking an index and fetching rows in its order (a
	// random read per event); a straight scan of the table is several times faster when the
	// filter selects much of it.
	col := func(c string) string {
		if s.kind == SQLite {
			return "+e." + c
		}
		return "e." + c
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
	if f.LatestPerOrder {
		// An order with one event (the common case) is answered from the index alone.
		where = append(where, `((SELECT count(*) FROM order_events c WHERE c.program = e.program AND c.order_id = e.order_id) = 1
			OR NOT EXISTS (SELECT 1 FROM order_events l WHERE l.program = e.program AND l.order_id = e.order_id
				AND (l.stream_seq > e.stream_seq OR (l.stream_seq = e.stream_seq AND l.id > e.id))))`)
	}
	if extra != "" {
		where, args = append(where, extra), append(args, extraArgs...)
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	join := " LEFT JOIN decisions d ON d.id = (SELECT max(x.id) FROM decisions x WHERE x.event_id = e.event_id)"
	if s.kind == Postgres {
		join = " LEFT JOIN LATERAL (SELECT * FROM decisions x WHERE x.event_id = e.event_id ORDER BY x.id DESC LIMIT 1) d ON true"
	}
	return "SELECT " + s.replayColumns() + " FROM order_events e" + join + cond, args
}

// Walk reads the events and their decisions in one streaming query (one snapshot on SQLite,
// one statement's view on PostgreSQL) and calls fn with batches of BatchSize. See
// engine.History for the contract.
func (h *History) Walk(ctx context.Context, fn func([]engine.ReplayEvent) error) error {
	query, args := h.s.historyQuery(h.f, "")
	rows, err := h.s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("reading events to replay: %w", err)
	}
	defer rows.Close()
	size := max(h.BatchSize, 1)
	sc := newRecordScanner()
	batch := make([]engine.ReplayEvent, 0, size)
	for rows.Next() {
		ev, err := sc.scan(rows)
		if err != nil {
			return fmt.Errorf("reading events to replay: %w", err)
		}
		batch = append(batch, ev)
		if len(batch) == size {
			if err := fn(batch); err != nil {
				return err
			}
			batch = make([]engine.ReplayEvent, 0, size)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading events to replay: %w", err)
	}
	if len(batch) > 0 {
		return fn(batch)
	}
	return nil
}

// RecordedDecisions returns the latest decision recorded for each of the events (by event id)
// that has one: the stream replay's lookup. Events with no decision are absent from the map.
func (s *Store) RecordedDecisions(ctx context.Context, eventIDs []string) (map[string]*engine.RecordedDecision, error) {
	out := make(map[string]*engine.RecordedDecision, len(eventIDs))
	const chunk = 500
	sc := newRecordScanner()
	for start := 0; start < len(eventIDs); start += chunk {
		ids := eventIDs[start:min(start+chunk, len(eventIDs))]
		query := "SELECT NULL, NULL, 0, NULL, " + strings.TrimPrefix(s.replayColumns(), "e.event_id, e.subject, e.stream_seq, e.raw, ") +
			", d.event_id FROM decisions d WHERE d.id IN (SELECT max(x.id) FROM decisions x WHERE x.event_id IN (?) GROUP BY x.event_id)"
		rows, err := s.db.QueryContext(ctx, query, bun.In(ids))
		if err != nil {
			return nil, fmt.Errorf("reading the decisions of %d events: %w", len(ids), err)
		}
		for rows.Next() {
			var eventID string
			ev, err := sc.scan(rows, &eventID)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("reading the decisions of %d events: %w", len(ids), err)
			}
			out[eventID] = ev.Recorded
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, fmt.Errorf("reading the decisions of %d events: %w", len(ids), err)
		}
	}
	return out, nil
}

// recordScanner turns history rows into replay events. It interns the strings that repeat
// (subjects, digests, rule ids, currencies), so a million decisions do not hold a million
// copies of each. Not safe for concurrent use.
type recordScanner struct {
	strs map[string]string
	// raw column values, reused from row to row
	eventID, subject, raw, digest, failed, rateRule, rate, flat, base, commission, currency, rounding, trace sql.RawBytes
}

func newRecordScanner() *recordScanner { return &recordScanner{strs: map[string]string{}} }

func (sc *recordScanner) intern(b []byte) string {
	if s, ok := sc.strs[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(sc.strs) < 100_000 {
		sc.strs[s] = s
	}
	return s
}

// scan reads one row of replayColumns (and any extra destinations after them).
func (sc *recordScanner) scan(rows *sql.Rows, extra ...any) (engine.ReplayEvent, error) {
	var (
		ev        engine.ReplayEvent
		seq       int64
		version   sql.NullInt64
		qualified sql.NullBool
	)
	dest := append([]any{&sc.eventID, &sc.subject, &seq, &sc.raw, &version, &sc.digest, &qualified, &sc.failed,
		&sc.rateRule, &sc.rate, &sc.flat, &sc.base, &sc.commission, &sc.currency, &sc.rounding, &sc.trace}, extra...)
	if err := rows.Scan(dest...); err != nil {
		return ev, err
	}
	ev.Event = engine.Event{ID: string(sc.eventID), Subject: sc.intern(sc.subject), StreamSeq: uint64(seq),
		Raw: append([]byte(nil), sc.raw...)}
	if !version.Valid {
		return ev, nil
	}
	r := &engine.RecordedDecision{
		PolicyVersion: int(version.Int64), PolicyDigest: sc.intern(sc.digest), Qualified: qualified.Bool,
		RateRule: sc.intern(sc.rateRule), Currency: sc.intern(sc.currency), Rounding: sc.intern(sc.rounding),
		HasFlat: sc.flat != nil,
	}
	var err error
	if err = setDecimal(&r.Rate, sc.rate, "rate"); err == nil {
		if err = setDecimal(&r.Base, sc.base, "base"); err == nil {
			err = setDecimal(&r.Commission, sc.commission, "commission")
		}
	}
	if err == nil && r.HasFlat {
		err = setDecimal(&r.Flat, sc.flat, "flat")
	}
	if err == nil {
		r.FailedRules, err = sc.stringList(sc.failed)
	}
	if err == nil {
		r.Trace, err = sc.parseTrace(sc.trace)
	}
	if err != nil {
		return ev, fmt.Errorf("decision of event %s: %w", ev.Event.ID, err)
	}
	ev.Recorded = r
	return ev, nil
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

// stringList parses a JSON array of strings as SaveBatch writes it: ["a","b"].
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

// jsonLite reads the compact JSON SaveBatch writes. str gives up (false) on escapes, so the
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
