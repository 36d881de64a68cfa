package store

// Reads for the console (adapters/console): recent decisions with filters, recent dead letters,
// the counts of what is stored and how many decisions each policy version made. Every list is
// newest first and paged with a cursor (the last id of a page), so a page costs the same however
// deep it is — and, for the decisions, however few of them its filters select (see
// RecentDecisions and schemaConsoleSearch).

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"
)

// schemaConsoleSearch (migration 20261203000007) holds the indexes that keep the console's pages
// fast on a big store (issue 13: a 100-row search and a decision page under 100 ms with 1 M
// orders; BenchmarkConsole in cmd/commissioner measures them). Each costs a write: one more index
// entry per decision, per batch and per dead letter.
const schemaConsoleSearch = `
-- recent decisions with filters (RecentDecisions): within one (program, qualified, rate_rule),
-- newest first, so a filtered page reads its rows and no others however rare they are
CREATE INDEX IF NOT EXISTS decisions_recent ON decisions (program, qualified, rate_rule, id);
-- the ids of the decisions decided in a time range (RecentDecisions' From and To): a decision's
-- decided_at is its batch's created_at, and its id is in its batch's decision id range
CREATE INDEX IF NOT EXISTS batches_created ON batches (created_at, first_decision_id, last_decision_id);
-- an order's dead letters (the decision page, explain)
CREATE INDEX IF NOT EXISTS dead_letters_order ON dead_letters (order_id);
`

// DecisionFilter selects decisions for RecentDecisions; zero fields select all.
type DecisionFilter struct {
	Program   string
	Qualified *bool  // nil: both
	RateRule  string // the rate rule that matched
	// From and To bound decided_at: [From, To).
	From, To time.Time
}

// RecentDecisions returns up to limit decisions f selects, newest first (id descending), with ids
// below before (0: from the newest). Pass the last id of a page as before to get the next page.
//
// A page reads about limit rows whatever f selects (the indexes of schemaConsoleSearch): From and
// To become an id range first — the decisions decided then are those of the batches created then
// (WriteBatch gives a batch's decisions its own creation time), whose decision id ranges bound
// their ids. Without a program, qualified or rate rule filter the newest ids of that range are the
// page. With any, the page is merged from the newest ids of each (program, qualified, rate rule)
// the filter allows (read from decisions_recent, the ones not given enumerated by skipping
// through it): a page costs a few index reads per such key rather than a scan of every decision
// newer than its oldest row.
func (s *Store) RecentDecisions(ctx context.Context, f DecisionFilter, before int64, limit int) ([]StoredDecision, error) {
	if limit <= 0 {
		limit = 50
	}
	ids, err := s.recentDecisionIDs(ctx, f, before, limit)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	out := make([]StoredDecision, 0, len(ids))
	collect := func(d StoredDecision) error { out = append(out, d); return nil }
	if err := s.queryDecisions(ctx, collect, "WHERE id IN (?) ORDER BY id DESC", bun.In(ids)); err != nil {
		return nil, fmt.Errorf("reading recent decisions: %w", err)
	}
	return out, nil
}

// recentDecisionIDs returns the ids of RecentDecisions' page, newest first.
func (s *Store) recentDecisionIDs(ctx context.Context, f DecisionFilter, before int64, limit int) ([]int64, error) {
	// The page's ids are in [lo, hi].
	lo, hi := int64(1), int64(1)<<62
	if before > 0 {
		hi = before - 1
	}
	var when []string // decided_at conditions, checked on each row: the id range only bounds them
	var whenArgs []any
	if !f.From.IsZero() || !f.To.IsZero() {
		first, last, err := s.decidedIDs(ctx, f.From, f.To)
		if err != nil {
			return nil, fmt.Errorf("reading recent decisions: %w", err)
		}
		lo, hi = max(lo, first), min(hi, last)
		if !f.From.IsZero() {
			when, whenArgs = append(when, "decided_at >= ?"), append(whenArgs, f.From.UTC())
		}
		if !f.To.IsZero() {
			when, whenArgs = append(when, "decided_at < ?"), append(whenArgs, f.To.UTC())
		}
	}
	if lo > hi {
		return nil, nil
	}
	// newest reads the newest ids in [lo, hi] that also meet the conditions where.
	newest := func(where []string, args []any) ([]int64, error) {
		where = append(append(where, "id BETWEEN ? AND ?"), when...)
		args = append(append(append(args, lo, hi), whenArgs...), limit)
		var ids []int64
		if err := s.db.NewRaw("SELECT id FROM decisions WHERE "+strings.Join(where, " AND ")+" ORDER BY id DESC LIMIT ?", args...).Scan(ctx, &ids); err != nil {
			return nil, fmt.Errorf("reading recent decisions: %w", err)
		}
		return ids, nil
	}
	if f.Program == "" && f.Qualified == nil && f.RateRule == "" {
		return newest(nil, nil)
	}
	keys, err := s.decisionKeys(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("reading recent decisions: %w", err)
	}
	var ids []int64
	for _, k := range keys {
		more, err := newest([]string{"program = ?", "qualified = ?", "rate_rule = ?"}, []any{k.program, k.qualified, k.rateRule})
		if err != nil {
			return nil, err
		}
		ids = append(ids, more...)
	}
	slices.SortFunc(ids, func(a, b int64) int { return cmp.Compare(b, a) }) // the keys' rows are apart
	return ids[:min(len(ids), limit)], nil
}

// decisionKey is one (program, qualified, rate_rule) of decisions_recent.
type decisionKey struct {
	program   string
	qualified bool
	rateRule  string
}

// decisionKeys returns the (program, qualified, rate_rule) keys of stored decisions that f
// allows: a field f gives is taken as it is, the others are read by skipping through
// decisions_recent from one distinct value to the next (a read per value: programs, and the rate
// rules of a program, are few).
func (s *Store) decisionKeys(ctx context.Context, f DecisionFilter) ([]decisionKey, error) {
	programs := []string{f.Program}
	if f.Program == "" {
		var err error
		if programs, err = s.distinct(ctx, "program", nil, nil); err != nil {
			return nil, err
		}
	}
	qualified := []bool{false, true}
	if f.Qualified != nil {
		qualified = []bool{*f.Qualified}
	}
	var keys []decisionKey
	for _, p := range programs {
		for _, q := range qualified {
			rules := []string{f.RateRule}
			if f.RateRule == "" {
				var err error
				if rules, err = s.distinct(ctx, "rate_rule", []string{"program = ?", "qualified = ?"}, []any{p, q}); err != nil {
					return nil, err
				}
			}
			for _, r := range rules {
				keys = append(keys, decisionKey{p, q, r})
			}
		}
	}
	return keys, nil
}

// distinct returns the distinct values of a text column of decisions_recent among the rows that
// meet where (equalities on the columns before it), in order: one index read per value.
func (s *Store) distinct(ctx context.Context, col string, where []string, args []any) ([]string, error) {
	var out []string
	for {
		w, a := where, args
		if len(out) > 0 {
			w, a = append(slices.Clip(w), col+" > ?"), append(slices.Clip(a), out[len(out)-1])
		}
		q := "SELECT " + col + " FROM decisions"
		if len(w) > 0 {
			q += " WHERE " + strings.Join(w, " AND ")
		}
		var next []string
		if err := s.db.NewRaw(q+" ORDER BY "+col+" LIMIT 1", a...).Scan(ctx, &next); err != nil {
			return nil, fmt.Errorf("reading the %ss of the decisions: %w", col, err)
		}
		if len(next) == 0 {
			return out, nil
		}
		out = append(out, next[0])
	}
}

// decidedIDs returns the id range [first, last] that holds the ids of every decision decided in
// [from, to) (zero: unbounded); first > last when none was. The decisions decided then are those
// of the batches created then (WriteBatch stores a batch's decisions with its creation time), and
// a batch's decisions have ids in its [first_decision_id, last_decision_id] (0, 0: none). Other
// batches' decisions may have ids in the range too (another partition's batch stored at the same
// time): the caller checks each row's decided_at.
func (s *Store) decidedIDs(ctx context.Context, from, to time.Time) (first, last int64, err error) {
	where, args := []string{"first_decision_id > 0"}, []any(nil)
	if !from.IsZero() {
		where, args = append(where, "created_at >= ?"), append(args, from.UTC())
	}
	if !to.IsZero() {
		where, args = append(where, "created_at < ?"), append(args, to.UTC())
	}
	var f, l sql.NullInt64
	if err := s.db.QueryRowContext(ctx, "SELECT min(first_decision_id), max(last_decision_id) FROM batches WHERE "+
		strings.Join(where, " AND "), args...).Scan(&f, &l); err != nil {
		return 0, 0, fmt.Errorf("reading the batches created from %v to %v: %w", from, to, err)
	}
	if !f.Valid || !l.Valid {
		return 1, 0, nil
	}
	return f.Int64, l.Int64, nil
}

// RecentDeadLetters returns up to limit dead letters of a kind ("": every kind), newest first (id
// descending), with ids below before (0: from the newest).
func (s *Store) RecentDeadLetters(ctx context.Context, kind string, before int64, limit int) ([]DeadLetter, error) {
	var where []string
	var args []any
	if kind != "" {
		where, args = append(where, "kind = ?"), append(args, kind)
	}
	if before > 0 {
		where, args = append(where, "id < ?"), append(args, before)
	}
	if limit <= 0 {
		limit = 50
	}
	q := "SELECT " + s.deadLetterColumns() + " FROM dead_letters"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	rows, err := s.db.QueryContext(ctx, q+" ORDER BY id DESC LIMIT ?", append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("reading recent dead letters: %w", err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		d, err := scanDeadLetter(rows)
		if err != nil {
			return nil, fmt.Errorf("reading recent dead letters: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// Counts returns how many decisions and dead letters are stored (cheaper than Stats, which also
// totals the money).
func (s *Store) Counts(ctx context.Context) (decisions, deadLetters int64, err error) {
	if err := s.db.NewRaw("SELECT count(*) FROM decisions").Scan(ctx, &decisions); err != nil {
		return 0, 0, fmt.Errorf("counting decisions: %w", err)
	}
	if err := s.db.NewRaw("SELECT count(*) FROM dead_letters").Scan(ctx, &deadLetters); err != nil {
		return 0, 0, fmt.Errorf("counting dead letters: %w", err)
	}
	return decisions, deadLetters, nil
}

// PolicyDecisionCounts returns how many stored decisions each policy version of a program made,
// by version (a version that made none is absent).
func (s *Store) PolicyDecisionCounts(ctx context.Context, program string) (map[int]int64, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT policy_version, count(*) FROM decisions WHERE program = ? GROUP BY policy_version", program)
	if err != nil {
		return nil, fmt.Errorf("counting the decisions of %s's policy versions: %w", program, err)
	}
	defer rows.Close()
	out := map[int]int64{}
	for rows.Next() {
		var version, n int64
		if err := rows.Scan(&version, &n); err != nil {
			return nil, fmt.Errorf("counting the decisions of %s's policy versions: %w", program, err)
		}
		out[int(version)] = n
	}
	return out, rows.Err()
}
