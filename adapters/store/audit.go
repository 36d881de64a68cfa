package store

// The audit side of the store: the reads the audit package's ports need (explain, audit verify,
// the HTTP audit API). Re-running, booking again and checking leaves and roots is the audit
// package's (engine/audit); nothing here decides.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/commissioner/commissioner/engine/audit"
)

// The rows the store reads are the audit package's value types (its ports' vocabulary).
type (
	StoredDecision = audit.StoredDecision
	StoredEvent    = audit.StoredEvent
	StoredPolicy   = audit.StoredPolicy
	TraceEntry     = audit.TraceEntry
	DecisionInputs = audit.DecisionInputs
	StoredBatch    = audit.StoredBatch
)

// ErrNotFound: no stored row has that key (it is audit.ErrNotFound).
var ErrNotFound = audit.ErrNotFound

var _ audit.Source = (*Store)(nil)

// Event returns the stored order event with that event id; ErrNotFound when there is none.
func (s *Store) Event(ctx context.Context, eventID string) (StoredEvent, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+eventColumns+" FROM order_events WHERE event_id = ?", eventID)
	if err != nil {
		return StoredEvent{}, fmt.Errorf("reading event %s: %w", eventID, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return StoredEvent{}, fmt.Errorf("reading event %s: %w", eventID, err)
		}
		return StoredEvent{}, fmt.Errorf("event %s: %w", eventID, ErrNotFound)
	}
	e, err := scanEvent(rows)
	if err != nil {
		return StoredEvent{}, fmt.Errorf("reading event %s: %w", eventID, err)
	}
	return e, rows.Err()
}

const eventColumns = "id, event_id, program, order_id, affiliate_id, subject, stream_seq, raw, placed_at, received_at"

func scanEvent(rows interface{ Scan(...any) error }) (StoredEvent, error) {
	var e StoredEvent
	var seq int64
	if err := rows.Scan(&e.ID, &e.EventID, &e.Program, &e.OrderID, &e.AffiliateID, &e.Subject, &seq, &e.Raw,
		&e.PlacedAt, &e.ReceivedAt); err != nil {
		return e, err
	}
	e.StreamSeq = uint64(seq)
	e.PlacedAt, e.ReceivedAt = e.PlacedAt.UTC(), e.ReceivedAt.UTC()
	return e, nil
}

// OrderDecisionsPage returns up to limit decisions of an order, newest first by storage order
// (decision id descending), starting after the decision id before (0: from the newest). An empty
// program matches every program. Pass the last id of a page as before to get the next page.
func (s *Store) OrderDecisionsPage(ctx context.Context, program, orderID string, before int64, limit int) ([]StoredDecision, error) {
	var out []StoredDecision
	collect := func(d StoredDecision) error { out = append(out, d); return nil }
	where, args := "program IN (SELECT DISTINCT program FROM policy_versions) AND order_id = ?", []any{orderID}
	if program != "" {
		where, args = "program = ? AND order_id = ?", []any{program, orderID}
	}
	if before > 0 {
		where, args = where+" AND id < ?", append(args, before)
	}
	if err := s.queryDecisions(ctx, collect, "WHERE "+where+" ORDER BY id DESC LIMIT ?", append(args, limit)...); err != nil {
		return nil, fmt.Errorf("reading decisions of order %s: %w", orderID, err)
	}
	return out, nil
}

// PolicyVersions returns every stored policy version of a program ("" for every program), by
// program and version.
func (s *Store) PolicyVersions(ctx context.Context, program string) ([]StoredPolicy, error) {
	var rows []policyRow
	q := s.db.NewSelect().Model(&rows).Order("program", "version")
	if program != "" {
		q = q.Where("program = ?", program)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("reading policy versions: %w", err)
	}
	out := make([]StoredPolicy, len(rows))
	for i, r := range rows {
		out[i] = StoredPolicy{Program: r.Program, Version: r.Version, Digest: r.Digest, Source: []byte(r.Source), File: r.File,
			EffectiveFrom: r.EffectiveFrom.UTC(), FirstUsedAt: r.FirstUsedAt.UTC()}
	}
	return out, nil
}

// DecisionPrograms returns, sorted, every program that has a stored decision.
func (s *Store) DecisionPrograms(ctx context.Context) ([]string, error) {
	var out []string
	err := s.db.NewRaw("SELECT DISTINCT program FROM decisions ORDER BY 1").Scan(ctx, &out)
	if err != nil {
		return nil, fmt.Errorf("reading the programs with decisions: %w", err)
	}
	return out, nil
}

// OrphanEvents returns up to limit stored events of a program ("" for every program) that have
// neither a decision nor a dead letter — the trace a deleted decision leaves — in storage order.
func (s *Store) OrphanEvents(ctx context.Context, program string, limit int) ([]StoredEvent, error) {
	where, args := "", []any{}
	if program != "" {
		where, args = "e.program = ? AND ", append(args, program)
	}
	cols := "e." + strings.ReplaceAll(eventColumns, ", ", ", e.")
	rows, err := s.db.QueryContext(ctx, "SELECT "+cols+" FROM order_events e WHERE "+where+
		`NOT EXISTS (SELECT 1 FROM decisions d WHERE d.id = e.decision_id)
		AND NOT EXISTS (SELECT 1 FROM dead_letters x WHERE x.event_id = e.event_id) ORDER BY e.id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("reading events without a decision: %w", err)
	}
	defer rows.Close()
	var out []StoredEvent
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("reading events without a decision: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading events without a decision: %w", err)
	}
	return out, nil
}

// BatchLeaves returns a batch and its leaves' stored hashes; ErrNotFound when it has no row.
func (s *Store) BatchLeaves(ctx context.Context, partition int, seq uint64) (StoredBatch, error) {
	var b audit.BatchRow
	err := s.db.QueryRowContext(ctx, "SELECT seq, epoch, prev_hash, root, hash, leaves, first_stream_seq, last_stream_seq FROM batches WHERE part = ? AND seq = ?",
		partition, int64(seq)).Scan(&b.Seq, &b.Epoch, &b.Prev, &b.Root, &b.Hash, &b.Leaves, &b.FirstStreamSeq, &b.LastStreamSeq)
	if errors.Is(err, sql.ErrNoRows) {
		return StoredBatch{}, fmt.Errorf("batch %d of partition %d: %w", seq, partition, ErrNotFound)
	}
	if err != nil {
		return StoredBatch{}, fmt.Errorf("reading batch %d of partition %d: %w", seq, partition, err)
	}
	out := StoredBatch{Partition: partition, Seq: uint64(b.Seq), Epoch: uint64(b.Epoch), Prev: b.Prev, Root: b.Root, Hash: b.Hash, Leaves: int(b.Leaves)}
	if err := s.db.NewRaw("SELECT leaf_hash FROM (SELECT leaf, leaf_hash FROM decisions WHERE part = ? AND batch_seq = ? "+
		"UNION ALL SELECT leaf, leaf_hash FROM dead_letters WHERE part = ? AND batch_seq = ?) AS l ORDER BY leaf",
		partition, int64(seq), partition, int64(seq)).Scan(ctx, &out.LeafHashes); err != nil {
		return StoredBatch{}, fmt.Errorf("reading the leaves of batch %d of partition %d: %w", seq, partition, err)
	}
	return out, nil
}
