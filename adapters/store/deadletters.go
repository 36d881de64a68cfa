package store

// Dead letters as support reads them: listed with filters, one shown whole (commissioner
// dead-letters, explain).

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// DeadLetter is a stored dead letter: an event that got no decision, and why.
type DeadLetter struct {
	ID          int64
	EventID     string
	Subject     string
	StreamSeq   uint64
	Raw         []byte
	Program     string // "" when the event did not decode that far
	OrderID     string
	AffiliateID string
	PlacedAt    *time.Time // nil when the event did not decode
	Kind        string     // engine.ErrorKind…
	Reason      string
	ReceivedAt  time.Time
	Partition   int
	BatchSeq    uint64
	Leaf        int
}

// DeadLetterFilter selects dead letters; zero fields select all.
type DeadLetterFilter struct {
	Kind, Program, OrderID string
	From, To               time.Time // received_at in [From, To)
	Limit                  int       // 0: 1 000
}

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
