package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/commissioner/commissioner/engine"
)

// Stats summarises what is stored. Money is exact: decimal strings, never float.
type Stats struct {
	Events      int64 // order events stored that decoded (decided, or dead-lettered later)
	Decisions   int64
	Qualified   int64 // decisions whose order qualified
	DeadLetters int64
	// Commission is the total commission of qualified decisions per currency, as an exact
	// decimal string with the currency's minor units ("1234.50").
	Commission map[string]string
	// ByRateRule counts qualified decisions per matching rate rule.
	ByRateRule map[string]int64
	// ByFailedRule counts decisions per failed qualification rule (an order failing two rules
	// counts for both).
	ByFailedRule map[string]int64
}

// EventFilter selects stored events (engine.EventFilter).
type EventFilter = engine.EventFilter

// Stats counts what is stored and totals commissions exactly.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	st := Stats{Commission: map[string]string{}, ByRateRule: map[string]int64{}, ByFailedRule: map[string]int64{}}
	counts := []struct {
		n     *int64
		query string
	}{
		{&st.Events, "SELECT (SELECT count(*) FROM decisions) + (SELECT count(*) FROM dead_letters WHERE placed_at IS NOT NULL)"},
		{&st.Decisions, "SELECT count(*) FROM decisions"},
		{&st.Qualified, "SELECT count(*) FROM decisions WHERE qualified"},
		{&st.DeadLetters, "SELECT count(*) FROM dead_letters"},
	}
	for _, c := range counts {
		if err := s.db.NewRaw(c.query).Scan(ctx, c.n); err != nil {
			return Stats{}, fmt.Errorf("reading stats: %w", err)
		}
	}

	sum := "SUM(commission)::text"
	failed := "SELECT r.value AS k, count(*) AS n FROM decisions, jsonb_array_elements_text(failed_rules::jsonb) AS r(value) WHERE NOT qualified GROUP BY r.value"
	if s.backend == SQLite {
		sum = decimalSumFunc + "(commission)"
		failed = "SELECT j.value AS k, count(*) AS n FROM decisions, json_each(decisions.failed_rules) AS j WHERE NOT qualified GROUP BY j.value"
	}
	type kv struct {
		K string `bun:"k"`
		V string `bun:"v"`
	}
	var totals []kv
	if err := s.db.NewRaw("SELECT currency AS k, "+sum+" AS v FROM decisions WHERE qualified GROUP BY currency").Scan(ctx, &totals); err != nil {
		return Stats{}, fmt.Errorf("reading commission totals: %w", err)
	}
	for _, t := range totals {
		d, err := parseDecimal(t.V, "commission total")
		if err != nil {
			return Stats{}, err
		}
		st.Commission[t.K] = d.Text('f')
	}
	type kn struct {
		K string `bun:"k"`
		N int64  `bun:"n"`
	}
	var byRate, byFailed []kn
	if err := s.db.NewRaw("SELECT rate_rule AS k, count(*) AS n FROM decisions WHERE qualified GROUP BY rate_rule").Scan(ctx, &byRate); err != nil {
		return Stats{}, fmt.Errorf("reading decisions per rate rule: %w", err)
	}
	if err := s.db.NewRaw(failed).Scan(ctx, &byFailed); err != nil {
		return Stats{}, fmt.Errorf("reading decisions per failed rule: %w", err)
	}
	for _, r := range byRate {
		st.ByRateRule[r.K] = r.N
	}
	for _, r := range byFailed {
		st.ByFailedRule[r.K] = r.N
	}
	return st, nil
}

// --- decisions ---

const decisionColumns = "id, event_id, order_id, program, affiliate_id, policy_version, policy_digest, qualified, " +
	"failed_rules, rate_rule, rate, flat, base, commission, currency, rounding, trace, env, stream_seq, decided_at, " +
	"part, batch_seq, leaf, leaf_hash, is_current"

// decisionColumns casts the decimal columns to text in PostgreSQL, so they scan as exact strings.
// In SQLite decided_at is read as text, for timeScanner.
func (s *Store) decisionColumns() string {
	if s.backend == Postgres {
		return strings.NewReplacer(" rate,", " rate::text,", " flat,", " flat::text,", " base,", " base::text,",
			" commission,", " commission::text,").Replace(decisionColumns)
	}
	return strings.Replace(decisionColumns, " decided_at,", " "+s.timeCol("decided_at")+",", 1)
}

func scanDecision(rows interface{ Scan(...any) error }) (StoredDecision, error) {
	var (
		d                                  StoredDecision
		failed, rate, base, commission, tr string
		flat                               sql.NullString
		streamSeq, batchSeq                int64
	)
	if err := rows.Scan(&d.ID, &d.EventID, &d.OrderID, &d.Program, &d.AffiliateID, &d.PolicyVersion, &d.PolicyDigest,
		&d.Qualified, &failed, &d.RateRule, &rate, &flat, &base, &commission, &d.Currency, &d.Rounding, &tr, &d.Env,
		&streamSeq, timeScanner{&d.DecidedAt}, &d.Partition, &batchSeq, &d.Leaf, &d.LeafHash, &d.Current); err != nil {
		return d, err
	}
	d.StreamSeq, d.BatchSeq = uint64(streamSeq), uint64(batchSeq)
	var err error
	if d.Rate, err = parseDecimal(rate, "rate"); err != nil {
		return d, err
	}
	if d.Base, err = parseDecimal(base, "base"); err != nil {
		return d, err
	}
	if d.Commission, err = parseDecimal(commission, "commission"); err != nil {
		return d, err
	}
	if flat.Valid {
		d.HasFlat = true
		if d.Flat, err = parseDecimal(flat.String, "flat"); err != nil {
			return d, err
		}
	}
	if err := json.Unmarshal([]byte(failed), &d.FailedRules); err != nil {
		return d, fmt.Errorf("reading failed_rules of decision %d: %w", d.ID, err)
	}
	var trace [][3]string
	if err := json.Unmarshal([]byte(tr), &trace); err != nil {
		return d, fmt.Errorf("reading trace of decision %d: %w", d.ID, err)
	}
	d.Trace = make([]TraceEntry, len(trace))
	for i, t := range trace {
		d.Trace[i] = TraceEntry{Stage: t[0], Rule: t[1], Outcome: t[2]}
	}
	return d, nil
}

// queryDecisions runs a query over decisionColumns and calls fn for each row, streaming.
func (s *Store) queryDecisions(ctx context.Context, fn func(StoredDecision) error, tail string, args ...any) error {
	rows, err := s.db.QueryContext(ctx, "SELECT "+s.decisionColumns()+" FROM decisions "+tail, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		d, err := scanDecision(rows)
		if err != nil {
			return err
		}
		if err := fn(d); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Decision returns one decision by its id; ErrNotFound when there is none.
func (s *Store) Decision(ctx context.Context, id int64) (StoredDecision, error) {
	var out StoredDecision
	found := false
	err := s.queryDecisions(ctx, func(d StoredDecision) error { out, found = d, true; return nil }, "WHERE id = ?", id)
	if err != nil {
		return out, fmt.Errorf("reading decision %d: %w", id, err)
	}
	if !found {
		return out, fmt.Errorf("decision %d: %w", id, ErrNotFound)
	}
	return out, nil
}

// DecisionsByOrder returns every decision of an order (all its events, all policy versions),
// newest first. An empty program matches every program. No decision is not an error.
func (s *Store) DecisionsByOrder(ctx context.Context, program, orderID string) ([]StoredDecision, error) {
	var out []StoredDecision
	collect := func(d StoredDecision) error { out = append(out, d); return nil }
	var err error
	if program == "" {
		// Every program with decisions has a stored policy version: listing them lets the
		// (program, order_id) index serve the lookup.
		err = s.queryDecisions(ctx, collect, "WHERE program IN (SELECT DISTINCT program FROM policy_versions) AND order_id = ? ORDER BY id DESC", orderID)
	} else {
		err = s.queryDecisions(ctx, collect, "WHERE program = ? AND order_id = ? ORDER BY id DESC", program, orderID)
	}
	if err != nil {
		return nil, fmt.Errorf("reading decisions of order %s: %w", orderID, err)
	}
	return out, nil
}

// PolicyVersion returns a stored policy version; ErrNotFound when it was never used.
func (s *Store) PolicyVersion(ctx context.Context, program string, version int) (StoredPolicy, error) {
	var r policyRow
	err := s.db.NewSelect().Model(&r).Where("program = ? AND version = ?", program, version).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return StoredPolicy{}, fmt.Errorf("policy %s v%d: %w", program, version, ErrNotFound)
	}
	if err != nil {
		return StoredPolicy{}, fmt.Errorf("reading policy %s v%d: %w", program, version, err)
	}
	return StoredPolicy{Program: r.Program, Version: r.Version, Digest: r.Digest, Source: []byte(r.Source), File: r.File,
		EffectiveFrom: r.EffectiveFrom.UTC(), FirstUsedAt: r.FirstUsedAt.UTC()}, nil
}

// --- events ---

// Events calls fn for each stored event the filter selects, in placed_at order (then storage
// order), streaming rows from the database: replaying millions of events keeps memory flat (the
// database sorts them, spilling to disk; no index keeps placed_at order, which would cost every
// stored event an insert at a random place). fn's
// error stops the walk and is returned. The walk reads one snapshot (SQLite) or one statement's
// view (PostgreSQL): events stored while it runs may not be seen. fn may call other methods of the
// Store meanwhile; the walk holds one connection until it returns.
func (s *Store) Events(ctx context.Context, f EventFilter, fn func(StoredEvent) error) error {
	var where []string
	var args []any
	if f.Program != "" {
		where, args = append(where, "program = ?"), append(args, f.Program)
	}
	if !f.From.IsZero() {
		where, args = append(where, "placed_at >= ?"), append(args, f.From.UTC())
	}
	if !f.To.IsZero() {
		where, args = append(where, "placed_at < ?"), append(args, f.To.UTC())
	}
	if f.Affiliate != "" {
		where, args = append(where, "affiliate_id = ?"), append(args, f.Affiliate)
	}
	cond := ""
	if len(where) > 0 {
		cond = "WHERE " + strings.Join(where, " AND ")
	}
	// The events that decoded: each decision's, and the dead letters' that have an order.
	events := "(SELECT " + eventColumns + " FROM decisions UNION ALL SELECT " + eventColumns + " FROM dead_letters WHERE placed_at IS NOT NULL) AS e"
	out := "id, event_id, program, order_id, affiliate_id, subject, stream_seq, raw, " + s.timeCol("placed_at") + ", " + s.timeCol("received_at")
	query := "SELECT " + out + " FROM " + events + " " + cond + " ORDER BY placed_at, id"
	if f.LatestPerOrder {
		query = "SELECT " + out + " FROM (SELECT " + eventColumns + ", ROW_NUMBER() OVER (PARTITION BY program, order_id " +
			"ORDER BY stream_seq DESC, id DESC) AS rn FROM " + events + " " + cond + ") AS e WHERE rn = 1 ORDER BY placed_at, id"
	}
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("reading events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e StoredEvent
		var seq int64
		if err := rows.Scan(&e.ID, &e.EventID, &e.Program, &e.OrderID, &e.AffiliateID, &e.Subject, &seq, &e.Raw,
			timeScanner{&e.PlacedAt}, timeScanner{&e.ReceivedAt}); err != nil {
			return fmt.Errorf("reading events: %w", err)
		}
		e.StreamSeq = uint64(seq)
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading events: %w", err)
	}
	return nil
}

// --- reliability checks ---

// CountDuplicateDecisions counts decisions beyond the first for one order event of one program
// (under any policy version) or for one (program, order, stream sequence): 0 when each event was
// decided exactly once.
func (s *Store) CountDuplicateDecisions(ctx context.Context) (int64, error) {
	var byEvent, bySeq int64
	err := s.db.NewRaw(`SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT program, event_id FROM decisions) AS k) FROM decisions`).Scan(ctx, &byEvent)
	if err != nil {
		return 0, fmt.Errorf("counting duplicate decisions: %w", err)
	}
	err = s.db.NewRaw(`SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT program, order_id, stream_seq FROM decisions WHERE stream_seq > 0) AS k)
		FROM decisions WHERE stream_seq > 0`).Scan(ctx, &bySeq)
	if err != nil {
		return 0, fmt.Errorf("counting duplicate decisions: %w", err)
	}
	return max(byEvent, bySeq), nil
}
