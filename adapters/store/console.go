package store

// Reads for the console (adapters/console): recent decisions with filters, recent dead letters,
// the counts of what is stored and how many decisions each policy version made. Every list is newest first and paged with a cursor (the last
// id of a page), so a page costs the same however deep it is.

import (
	"context"
	"fmt"
	"strings"
	"time"
)

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
func (s *Store) RecentDecisions(ctx context.Context, f DecisionFilter, before int64, limit int) ([]StoredDecision, error) {
	var where []string
	var args []any
	add := func(cond string, v any) { where, args = append(where, cond), append(args, v) }
	if f.Program != "" {
		add("program = ?", f.Program)
	}
	if f.Qualified != nil {
		add("qualified = ?", *f.Qualified)
	}
	if f.RateRule != "" {
		add("rate_rule = ?", f.RateRule)
	}
	if !f.From.IsZero() {
		add("decided_at >= ?", f.From.UTC())
	}
	if !f.To.IsZero() {
		add("decided_at < ?", f.To.UTC())
	}
	if before > 0 {
		add("id < ?", before)
	}
	if limit <= 0 {
		limit = 50
	}
	tail := ""
	if len(where) > 0 {
		tail = "WHERE " + strings.Join(where, " AND ") + " "
	}
	var out []StoredDecision
	collect := func(d StoredDecision) error { out = append(out, d); return nil }
	if err := s.queryDecisions(ctx, collect, tail+"ORDER BY id DESC LIMIT ?", append(args, limit)...); err != nil {
		return nil, fmt.Errorf("reading recent decisions: %w", err)
	}
	return out, nil
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
