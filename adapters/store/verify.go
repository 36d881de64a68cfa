package store

// The reads audit verify walks (audit.VerifySource): each program's orders with their decisions,
// ledger entries and state, and each partition's batches and leaves, streamed in order.

import (
	"context"
	"database/sql"
	"fmt"
	"iter"
	"strconv"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/audit"
)

var _ audit.VerifySource = (*Store)(nil)

func (s *Store) num(col string) string {
	if s.backend == Postgres {
		return col + "::text"
	}
	return col
}

// OrderGroups streams a program's decisions (with their events and inputs) and ledger entries,
// each ordered by order id, and calls fn with each order's group (audit.VerifySource).
func (s *Store) OrderGroups(ctx context.Context, program string, fn func(*audit.OrderGroup) error) error {
	dq := "SELECT d.id, d.event_id, d.order_id, d.affiliate_id, d.policy_version, d.policy_digest, d.qualified, d.failed_rules, d.rate_rule, " +
		s.num("d.rate") + ", " + s.num("d.flat") + ", " + s.num("d.base") + ", " + s.num("d.commission") + ", d.currency, d.rounding, d.trace, d.env, " +
		"d.stream_seq, d.part, d.batch_seq, d.leaf, d.leaf_hash, d.raw, d.is_current, d.pin_version, d.pin_digest, d.prev_id, d.month, " +
		"i.month, i.month_qualified_orders, " + s.num("i.month_qualified_sales") +
		" FROM decisions d LEFT JOIN decision_inputs i ON i.decision_id = d.id WHERE d.program = ? ORDER BY d.order_id, d.id"
	drows, err := s.db.QueryContext(ctx, dq, program)
	if err != nil {
		return fmt.Errorf("reading the decisions of %s: %w", program, err)
	}
	defer drows.Close()
	lrows, err := s.db.QueryContext(ctx, "SELECT id, order_id, decision_id, kind, affiliate_id, currency, "+s.num("amount")+", "+s.timeCol("approve_at")+
		" FROM ledger_entries WHERE program = ? ORDER BY order_id, decision_id, id", program)
	if err != nil {
		return fmt.Errorf("reading the ledger of %s: %w", program, err)
	}
	defer lrows.Close()

	lc := &ledgerCursor{rows: lrows, program: program}
	if err := lc.advance(); err != nil {
		return err
	}
	var og *audit.OrderGroup
	for drows.Next() {
		r, orderID, err := scanDecisionRow(drows, program)
		if err != nil {
			return err
		}
		if og == nil || og.OrderID != orderID {
			if og != nil {
				if err := fn(og); err != nil {
					return err
				}
			}
			if err := lc.orphansBefore(orderID, false, fn); err != nil {
				return err
			}
			og = &audit.OrderGroup{Program: program, OrderID: orderID}
			if err := lc.take(og); err != nil {
				return err
			}
		}
		og.Rows = append(og.Rows, *r)
	}
	if err := drows.Err(); err != nil {
		return fmt.Errorf("reading the decisions of %s: %w", program, err)
	}
	if og != nil {
		if err := fn(og); err != nil {
			return err
		}
	}
	return lc.orphansBefore("", true, fn)
}

// ledgerCursor reads a program's ledger entries, ordered by order id, one row ahead of the
// decisions OrderGroups walks.
type ledgerCursor struct {
	rows    *sql.Rows
	program string
	next    *audit.StoredLedgerEntry // nil at the end
	nextOrd string                   // next's order id
}

// advance reads the next entry into c.next (nil at the end).
func (c *ledgerCursor) advance() error {
	c.next = nil
	if !c.rows.Next() {
		return c.rows.Err()
	}
	l := &audit.StoredLedgerEntry{}
	if err := c.rows.Scan(&l.ID, &c.nextOrd, &l.DecisionID, &l.Kind, &l.AffiliateID, &l.Currency, &l.Amount, timeScanner{&l.ApproveAt}); err != nil {
		return fmt.Errorf("reading the ledger of %s: %w", c.program, err)
	}
	c.next = l
	return nil
}

// take fills og with its order's ledger entries.
func (c *ledgerCursor) take(og *audit.OrderGroup) error {
	for c.next != nil && c.nextOrd == og.OrderID {
		og.Ledger = append(og.Ledger, *c.next)
		if err := c.advance(); err != nil {
			return err
		}
	}
	return nil
}

// orphansBefore makes groups of the ledger entries of orders before orderID (every one left
// when last) that have no decision, and calls fn with each: checkOrder reports them.
func (c *ledgerCursor) orphansBefore(orderID string, last bool, fn func(*audit.OrderGroup) error) error {
	for c.next != nil {
		if !last && c.nextOrd >= orderID {
			return nil
		}
		og := &audit.OrderGroup{Program: c.program, OrderID: c.nextOrd}
		if err := c.take(og); err != nil {
			return err
		}
		if err := fn(og); err != nil {
			return err
		}
	}
	return nil
}

// scanDecisionRow reads the decision drows is at (OrderGroups' columns) as audit verify checks
// it, and its order id.
func scanDecisionRow(drows *sql.Rows, program string) (*audit.Row, string, error) {
	r := &audit.Row{}
	var (
		rate, base, commission string
		flat, month, sales     sql.NullString
		qualified, current     any
		orders, pinVersion     sql.NullInt64
		pinDigest              sql.NullString
		raw                    []byte
		version, seq, bseq     int64
	)
	d := &r.Decision
	var orderID string
	if err := drows.Scan(&d.ID, &d.EventID, &orderID, &d.AffiliateID, &version, &d.PolicyDigest, &qualified, &r.Text.FailedRules, &d.RateRule,
		&rate, &flat, &base, &commission, &d.Currency, &d.Rounding, &r.Text.Trace, &d.Env, &seq, &d.Partition, &bseq, &d.Leaf, &d.LeafHash,
		&raw, &current, &pinVersion, &pinDigest, &r.State.Prev, &r.State.Month, &month, &orders, &sales); err != nil {
		return nil, "", fmt.Errorf("reading the decisions of %s: %w", program, err)
	}
	d.Program, d.OrderID, d.PolicyVersion, d.StreamSeq, d.BatchSeq = program, orderID, int(version), uint64(seq), uint64(bseq)
	r.Text.OrderID, r.Text.Program, r.Text.AffiliateID, r.Text.PolicyVersion = orderID, program, d.AffiliateID, strconv.FormatInt(version, 10)
	r.Text.PolicyDigest, r.Text.RateRule, r.Text.Rate, r.Text.Base, r.Text.Commission = d.PolicyDigest, d.RateRule, rate, base, commission
	r.Text.Flat, r.Text.Currency, r.Text.Rounding, r.Text.Env, r.Text.StreamSeq = audit.NoFlat, d.Currency, d.Rounding, d.Env, strconv.FormatInt(seq, 10)
	if flat.Valid {
		r.Text.Flat = flat.String
	}
	r.Text.Qualified = boolText(qualified)
	r.State.Current = boolText(current) == "true"
	r.State.HasPin, r.State.PinVersion, r.State.PinDigest = pinVersion.Valid, pinVersion.Int64, pinDigest.String
	r.Event = &StoredEvent{ID: d.ID, EventID: d.EventID, Program: program, OrderID: orderID, StreamSeq: uint64(seq), Raw: raw}
	if month.Valid {
		r.Affiliate = &engine.AffiliateMonth{Month: month.String, QualifiedOrders: orders.Int64}
		r.Affiliate.QualifiedSales.SetString(sales.String)
	}
	return r, orderID, nil
}

func boolText(q any) string {
	switch q := q.(type) {
	case bool:
		return strconv.FormatBool(q)
	case int64:
		if q == 0 || q == 1 {
			return strconv.FormatBool(q == 1)
		}
		return strconv.FormatInt(q, 10)
	case []byte:
		return string(q)
	}
	return fmt.Sprint(q)
}

// Partitions returns the partitions with a head, a batch or a leaf.
func (s *Store) Partitions(ctx context.Context) ([]int, error) {
	var out []int
	if err := s.db.NewRaw("SELECT part FROM partitions UNION SELECT DISTINCT part FROM batches UNION SELECT DISTINCT part FROM decisions "+
		"UNION SELECT DISTINCT part FROM dead_letters ORDER BY 1").Scan(ctx, &out); err != nil {
		return nil, fmt.Errorf("reading the partitions: %w", err)
	}
	return out, nil
}

// Batches yields a partition's batch rows by sequence.
func (s *Store) Batches(ctx context.Context, partition int) iter.Seq2[audit.BatchRow, error] {
	return func(yield func(audit.BatchRow, error) bool) {
		rows, err := s.db.QueryContext(ctx, "SELECT seq, epoch, prev_hash, root, hash, leaves, first_stream_seq, last_stream_seq FROM batches WHERE part = ? ORDER BY seq", partition)
		if err != nil {
			yield(audit.BatchRow{}, err)
			return
		}
		defer rows.Close()
		for rows.Next() {
			var b audit.BatchRow
			if err := rows.Scan(&b.Seq, &b.Epoch, &b.Prev, &b.Root, &b.Hash, &b.Leaves, &b.FirstStreamSeq, &b.LastStreamSeq); err != nil {
				yield(b, err)
				return
			}
			if !yield(b, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(audit.BatchRow{}, err)
		}
	}
}

// Leaves yields a partition's leaves — its decisions', and its dead letters' with the columns
// their leaves cover — by batch and leaf index.
func (s *Store) Leaves(ctx context.Context, partition int) iter.Seq2[audit.LeafRow, error] {
	return func(yield func(audit.LeafRow, error) bool) {
		noRaw := "NULL"
		if s.backend == Postgres {
			noRaw = "NULL::bytea"
		}
		rows, err := s.db.QueryContext(ctx, "SELECT batch_seq, leaf, id, leaf_hash, 0, event_id, program, order_id, 0, "+noRaw+", '', '' FROM decisions WHERE part = ? "+
			"UNION ALL SELECT batch_seq, leaf, id, leaf_hash, 1, event_id, program, order_id, stream_seq, raw, kind, reason FROM dead_letters WHERE part = ? ORDER BY 1, 2",
			partition, partition)
		if err != nil {
			yield(audit.LeafRow{}, err)
			return
		}
		defer rows.Close()
		for rows.Next() {
			var l audit.LeafRow
			var dead int64
			if err := rows.Scan(&l.BatchSeq, &l.Leaf, &l.ID, &l.Hash, &dead, &l.EventID, &l.Program, &l.OrderID, &l.StreamSeq, &l.Raw, &l.Kind, &l.Reason); err != nil {
				yield(l, err)
				return
			}
			l.Dead = dead != 0
			if !yield(l, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(audit.LeafRow{}, err)
		}
	}
}
