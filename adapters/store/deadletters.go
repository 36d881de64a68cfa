package store

// Dead letters as support reads them: listed with filters, one shown whole (commissioner
// dead-letters, explain).

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/uptrace/bun"

	"github.com/commissioner/commissioner/engine/audit"
)

// DeadLetter and DeadLetterFilter are the audit package's: readers (the CLI, the HTTP API) name
// them without importing the store.
type (
	DeadLetter       = audit.DeadLetter
	DeadLetterFilter = audit.DeadLetterFilter
)

func (s *Store) deadLetterColumns() string {
	return "id, event_id, subject, stream_seq, raw, program, order_id, affiliate_id, " + s.timeCol("placed_at") + ", kind, reason, " +
		s.timeCol("received_at") + ", part, batch_seq, leaf"
}

func scanDeadLetter(rows interface{ Scan(...any) error }) (DeadLetter, error) {
	var d DeadLetter
	var seq, bseq int64
	dest := []any{&d.ID, &d.EventID, &d.Subject, &seq, &d.Raw, &d.Program, &d.OrderID, &d.AffiliateID, optTimeScanner{&d.PlacedAt},
		&d.Kind, &d.Reason, timeScanner{&d.ReceivedAt}, &d.Partition, &bseq, &d.Leaf}
	if err := rows.Scan(dest...); err != nil {
		return d, err
	}
	d.StreamSeq, d.BatchSeq = uint64(seq), uint64(bseq)
	return d, nil
}

// DeadLetters returns the dead letters f selects, oldest first.
func (s *Store) DeadLetters(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error) {
	var where []string
	var args []any
	add := func(cond string, v any) { where, args = append(where, cond), append(args, v) }
	if f.Kind != "" {
		add("kind = ?", f.Kind)
	}
	if f.Program != "" {
		add("program = ?", f.Program)
	}
	if f.OrderID != "" {
		add("order_id = ?", f.OrderID)
	}
	if !f.From.IsZero() {
		add("received_at >= ?", f.From.UTC())
	}
	if !f.To.IsZero() {
		add("received_at < ?", f.To.UTC())
	}
	if f.AfterID > 0 {
		add("id > ?", f.AfterID)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	q := "SELECT " + s.deadLetterColumns() + " FROM dead_letters"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	rows, err := s.db.QueryContext(ctx, q+" ORDER BY id LIMIT ?", append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("reading dead letters: %w", err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		d, err := scanDeadLetter(rows)
		if err != nil {
			return nil, fmt.Errorf("reading dead letters: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// DeadLetter returns one dead letter by id; ErrNotFound when there is none.
func (s *Store) DeadLetter(ctx context.Context, id int64) (DeadLetter, error) {
	d, err := scanDeadLetter(s.db.QueryRowContext(ctx, "SELECT "+s.deadLetterColumns()+" FROM dead_letters WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("dead letter %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return d, fmt.Errorf("reading dead letter %d: %w", id, err)
	}
	return d, nil
}

// EventOutcome is what the store holds for one event identity: its decision, or its dead letter
// and why (both zero: nothing yet).
type EventOutcome struct {
	DecisionID   int64
	DeadLetterID int64
	Reason       string // the dead letter's
}

// EventOutcomes returns what is stored for each of the event identities that is stored (the
// others are absent from the map).
func (s *Store) EventOutcomes(ctx context.Context, ids []string) (map[string]EventOutcome, error) {
	out := make(map[string]EventOutcome, len(ids))
	err := inChunks(ids, func(safe []string, back map[string]string) error {
		var rows []struct {
			EventID  string `bun:"event_id"`
			Decision int64  `bun:"decision_id"`
			Dead     int64  `bun:"dead_letter_id"`
			Reason   string `bun:"reason"`
		}
		if err := s.db.NewRaw("SELECT event_id, id AS decision_id, 0 AS dead_letter_id, '' AS reason FROM decisions WHERE event_id IN (?) "+
			"UNION ALL SELECT event_id, 0, id, reason FROM dead_letters WHERE event_id IN (?)",
			bun.In(safe), bun.In(safe)).Scan(ctx, &rows); err != nil {
			return fmt.Errorf("reading the outcome of %d events: %w", len(ids), err)
		}
		for _, r := range rows {
			out[back[r.EventID]] = EventOutcome{DecisionID: r.Decision, DeadLetterID: r.Dead, Reason: r.Reason}
		}
		return nil
	})
	return out, err
}
