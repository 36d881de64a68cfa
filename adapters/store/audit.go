package store

// The audit side of the store: the reads the audit package's ports need (explain, audit verify,
// the HTTP audit API). Re-running, booking again and checking leaves and roots is the audit
// package's (engine/audit); nothing here decides.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

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

// Event returns the stored order event with that event id — from its decision, or from its dead
// letter when it decoded but got no decision; ErrNotFound when there is none.
func (s *Store) Event(ctx context.Context, eventID string) (StoredEvent, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+eventColumns+" FROM decisions WHERE event_id = ? UNION ALL "+
		"SELECT "+eventColumns+" FROM dead_letters WHERE event_id = ? AND placed_at IS NOT NULL", eventID, eventID)
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

// eventColumns are a stored event's columns, in a decision's row or a dead letter's.
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

// BatchLeaves returns a batch and its leaves' stored hashes; ErrNotFound when it has no row.
func (s *Store) BatchLeaves(ctx context.Context, partition int, seq uint64) (StoredBatch, error) {
	var b audit.BatchRow
	var firstID, lastID int64
	err := s.db.QueryRowContext(ctx, "SELECT seq, epoch, prev_hash, root, hash, leaves, first_stream_seq, last_stream_seq, first_decision_id, last_decision_id "+
		"FROM batches WHERE part = ? AND seq = ?", partition, int64(seq)).Scan(&b.Seq, &b.Epoch, &b.Prev, &b.Root, &b.Hash, &b.Leaves,
		&b.FirstStreamSeq, &b.LastStreamSeq, &firstID, &lastID)
	if errors.Is(err, sql.ErrNoRows) {
		return StoredBatch{}, fmt.Errorf("batch %d of partition %d: %w", seq, partition, ErrNotFound)
	}
	if err != nil {
		return StoredBatch{}, fmt.Errorf("reading batch %d of partition %d: %w", seq, partition, err)
	}
	out := StoredBatch{Partition: partition, Seq: uint64(b.Seq), Epoch: uint64(b.Epoch), Prev: b.Prev, Root: b.Root, Hash: b.Hash, Leaves: int(b.Leaves)}
	// The batch's decisions are in its id range (by the primary key; another partition's batch
	// stored at once may have ids in it too), its dead letters by their (part, batch_seq) index.
	if err := s.db.NewRaw("SELECT leaf_hash FROM (SELECT leaf, leaf_hash FROM decisions WHERE id BETWEEN ? AND ? AND part = ? AND batch_seq = ? "+
		"UNION ALL SELECT leaf, leaf_hash FROM dead_letters WHERE part = ? AND batch_seq = ?) AS l ORDER BY leaf",
		firstID, lastID, partition, int64(seq), partition, int64(seq)).Scan(ctx, &out.LeafHashes); err != nil {
		return StoredBatch{}, fmt.Errorf("reading the leaves of batch %d of partition %d: %w", seq, partition, err)
	}
	return out, nil
}

// BatchRange returns a partition's batch rows from seq from to seq to, by sequence
// (audit.BatchRanger: a decision's proof against a checkpoint).
func (s *Store) BatchRange(ctx context.Context, partition int, from, to uint64) ([]audit.BatchRow, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT seq, epoch, prev_hash, root, hash, leaves, first_stream_seq, last_stream_seq FROM batches "+
		"WHERE part = ? AND seq BETWEEN ? AND ? ORDER BY seq", partition, int64(from), int64(to))
	if err != nil {
		return nil, fmt.Errorf("reading batches %d–%d of partition %d: %w", from, to, partition, err)
	}
	defer rows.Close()
	var out []audit.BatchRow
	for rows.Next() {
		var b audit.BatchRow
		if err := rows.Scan(&b.Seq, &b.Epoch, &b.Prev, &b.Root, &b.Hash, &b.Leaves, &b.FirstStreamSeq, &b.LastStreamSeq); err != nil {
			return nil, fmt.Errorf("reading batches %d–%d of partition %d: %w", from, to, partition, err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}
