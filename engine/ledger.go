package engine

// The commission ledger is append-only: an order's decisions are never changed, and what they
// owe an affiliate changes only by new entries.
//
//   - accrual: the order's current decision qualifies and the one before did not (or there was
//     none): + its commission;
//   - reversal: it qualified and no longer does (refunded, cancelled…): − what was booked,
//     whether or not it was paid out (then the next statement carries the negative line);
//   - adjustment: it qualified before and still does, with another commission (an amount
//     corrected, a partial refund in a program that pays on the rest): + the difference.
//
// So for every order the entries sum to its current decision's commission (0 when it does not
// qualify), and for every affiliate the ledger sums to its orders' current commissions. An
// order moved to another affiliate or currency is reversed in full and accrued anew. An entry
// is approved — payable — from approve_at: the completion of the order (its placed_at when it
// has none) plus the deciding policy's payout.hold_days. Entries of zero are not written.

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/rules"
)

// LedgerKind is what a ledger entry records.
type LedgerKind string

// The kinds of ledger entry.
const (
	Accrual    LedgerKind = "accrual"
	Reversal   LedgerKind = "reversal"
	Adjustment LedgerKind = "adjustment"
)

// LedgerEntry is one line of the commission ledger. Book fills what a decision causes; the store
// adds the ids when it reads entries back.
type LedgerEntry struct {
	Program     string
	AffiliateID string
	OrderID     string
	Currency    string
	Amount      apd.Decimal // signed, with the currency's minor units
	Kind        LedgerKind
	ApproveAt   time.Time // payable from then on
	// Result is the index, in the batch given to Book, of the result whose decision caused it.
	Result int

	// Set when read back from the store.
	ID         int64
	DecisionID int64 // the decision that caused it
	EventID    string
	PayoutID   int64 // 0 until paid
	Status     string
	CreatedAt  time.Time
}

// ApproveAt is when a commission decided by p for order o is approved: its completion (its
// placed_at when it has none) plus the policy's payout.hold_days, in UTC.
func ApproveAt(o *Order, p *rules.Policy) time.Time {
	t := o.PlacedAt
	if o.HasCompletedAt {
		t = o.CompletedAt
	}
	return t.UTC().AddDate(0, 0, p.Payout.HoldDays)
}

// BookedOrder is an order whose history a batch changed.
type BookedOrder struct {
	Key   OrderKey
	State OrderState
	// Result is the index of the result whose decision is now the order's current one; -1 when
	// only its pin changed (an older event, decided late, was its first to qualify).
	Result int
}

// Booking is what a batch of decisions does to the history and the ledger.
type Booking struct {
	Entries []LedgerEntry
	Orders  []BookedOrder            // by program, then order id
	Months  map[MonthKey]MonthTotals // the totals of every month the batch touched, after it
}

// Book takes a batch's decided results into the history h, in batch order, and returns the
// ledger entries they cause and the orders' new states. It skips results without a decision and
// those skip(i) says were not stored (nil: none). Before each decision made by DecideBatch is
// booked, it checks that the decision saw what h (with the batch's earlier results) says now —
// the same pin, the same affiliate.* inputs — and returns an error matching ErrStaleHistory when
// not: deciding the batch again with a fresh history gives the right answer. Book is pure.
func Book(h OrderHistory, results []Result, skip func(i int) bool) (Booking, error) {
	w := newWalk(h)
	var b Booking
	for i := range results {
		r := &results[i]
		if r.Decision == nil || r.Order == nil || (skip != nil && skip(i)) {
			continue
		}
		if err := w.verify(r); err != nil {
			return Booking{}, err
		}
		c := w.apply(i, r)
		if c.current {
			var err error
			if b.Entries, err = appendEntries(b.Entries, i, r, c); err != nil {
				return Booking{}, err
			}
		}
	}
	for k, i := range w.changed {
		b.Orders = append(b.Orders, BookedOrder{Key: k, State: *w.orders[k], Result: i})
	}
	sort.Slice(b.Orders, func(i, j int) bool {
		a, c := b.Orders[i].Key, b.Orders[j].Key
		return a.Program < c.Program || a.Program == c.Program && a.OrderID < c.OrderID
	})
	b.Months = make(map[MonthKey]MonthTotals, len(w.months))
	for k, t := range w.months {
		b.Months[k] = *t
	}
	return b, nil
}

// Apply lays a booking over the snapshot: it is then the history after the booked batch.
func (s *Snapshot) Apply(b Booking, decisionIDs func(result int) int64) {
	for _, o := range b.Orders {
		st := o.State
		if o.Result >= 0 && decisionIDs != nil {
			st.DecisionID = decisionIDs(o.Result)
		}
		s.Orders[o.Key] = st
	}
	for k, t := range b.Months {
		s.Months[k] = t
	}
}

// errLedger: a ledger amount could not be computed exactly (never with real amounts).
var errLedger = errors.New("computing a ledger entry")

// appendEntries appends the entries result i causes, c being what it did to its order.
func appendEntries(out []LedgerEntry, i int, r *Result, c change) ([]LedgerEntry, error) {
	d := r.Decision
	approve := ApproveAt(r.Order, d.Policy)
	entry := func(affiliate, currency string, amount *apd.Decimal, kind LedgerKind) {
		e := LedgerEntry{Program: d.Program, AffiliateID: affiliate, OrderID: d.OrderID, Currency: currency,
			Kind: kind, ApproveAt: approve, Result: i, EventID: r.Event.ID}
		e.Amount.Set(amount)
		out = append(out, e)
	}
	old := c.hadPrev && c.prev.Qualified
	switch {
	case old && d.Qualified && c.prev.AffiliateID == d.AffiliateID && c.prev.Currency == d.Currency.Code:
		var delta apd.Decimal
		if _, err := exact.Sub(&delta, &d.Commission, &c.prev.Commission); err != nil {
			return out, fmt.Errorf("%w: order %s: %v", errLedger, d.OrderID, err)
		}
		if !delta.IsZero() {
			entry(d.AffiliateID, d.Currency.Code, &delta, Adjustment)
		}
	default:
		if old && !c.prev.Commission.IsZero() {
			var neg apd.Decimal
			neg.Neg(&c.prev.Commission)
			entry(c.prev.AffiliateID, c.prev.Currency, &neg, Reversal)
		}
		if d.Qualified && !d.Commission.IsZero() {
			entry(d.AffiliateID, d.Currency.Code, &d.Commission, Accrual)
		}
	}
	return out, nil
}

// Statement is what a payout run owes one affiliate in one currency of a program: the approved
// entries not yet paid — accruals, adjustments and reversals (negative lines), including
// reversals of commissions paid by an earlier run.
type Statement struct {
	Program     string
	AffiliateID string
	Currency    string
	Method      string        // the program's payout method, e.g. wire_transfer
	Lines       []LedgerEntry // in the order they were written
	Accruals    apd.Decimal   // the sum of the accrual lines
	Reversals   apd.Decimal   // of the reversal lines (≤ 0)
	Adjustments apd.Decimal   // of the adjustment lines
	Total       apd.Decimal
	Minimum     *apd.Decimal // the program's minimum payout in the currency; nil: none
	// Payable: the total is positive and reaches the minimum. Otherwise the lines are carried
	// forward, unpaid, to the next statement, and CarriedForward says why.
	Payable        bool
	CarriedForward string
}

// Statements groups payable ledger entries (approved, not paid) into statements, one per program,
// affiliate and currency, in that order, with each program's payout terms. terms returns a
// program's terms, false when it has none (then Statements fails: a payout needs the terms).
func Statements(entries []LedgerEntry, terms func(program string) (rules.Payout, bool)) ([]Statement, error) {
	type key struct{ program, affiliate, currency string }
	idx := map[key]int{}
	var out []Statement
	for _, e := range entries {
		k := key{e.Program, e.AffiliateID, e.Currency}
		i, ok := idx[k]
		if !ok {
			t, found := terms(e.Program)
			if !found {
				return nil, fmt.Errorf("building statements: program %s has ledger entries but no payout terms (no policy of it is loaded)", e.Program)
			}
			st := Statement{Program: e.Program, AffiliateID: e.AffiliateID, Currency: e.Currency, Method: t.Method}
			if m := t.Minimum[e.Currency]; m != nil {
				st.Minimum = new(apd.Decimal).Set(m)
			}
			i = len(out)
			idx[k] = i
			out = append(out, st)
		}
		st := &out[i]
		st.Lines = append(st.Lines, e)
		sum := &st.Accruals
		switch e.Kind {
		case Reversal:
			sum = &st.Reversals
		case Adjustment:
			sum = &st.Adjustments
		}
		for _, s := range []*apd.Decimal{sum, &st.Total} {
			if _, err := exact.Add(s, s, &e.Amount); err != nil {
				return nil, fmt.Errorf("%w: statement of %s %s: %v", errLedger, e.AffiliateID, e.Currency, err)
			}
		}
	}
	for i := range out {
		st := &out[i]
		cur, ok := LookupCurrency(st.Currency)
		minor := int32(2)
		if ok {
			minor = cur.MinorUnits
		}
		for _, s := range []*apd.Decimal{&st.Accruals, &st.Reversals, &st.Adjustments, &st.Total} {
			if s.Exponent > -minor || s.IsZero() {
				exact.Quantize(s, s, -minor) // "0" reads "0.00"
			}
		}
		switch {
		case st.Total.Sign() <= 0:
			st.CarriedForward = "nothing owed: the balance is carried forward"
		case st.Minimum != nil && st.Total.Cmp(st.Minimum) < 0:
			st.CarriedForward = fmt.Sprintf("below the minimum payout of %s %s: carried forward", st.Minimum.Text('f'), st.Currency)
		default:
			st.Payable = true
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Program != b.Program {
			return a.Program < b.Program
		}
		if a.AffiliateID != b.AffiliateID {
			return a.AffiliateID < b.AffiliateID
		}
		return a.Currency < b.Currency
	})
	return out, nil
}

// MonthBounds parses a payout month ("2026-10") and returns the month and the as-of time of its
// statements: the first instant of the next month, UTC. Entries approved before it are payable.
func MonthBounds(month string) (string, time.Time, error) {
	t, err := time.Parse("2006-01", month)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("month %q is not a month such as 2026-10", month)
	}
	return t.Format("2006-01"), t.AddDate(0, 1, 0).UTC(), nil
}

// StatementTotal is statements' sum in one currency: what they pay (or would pay: the payable
// ones) and what they carry forward.
type StatementTotal struct {
	Currency      string
	Paid, Carried apd.Decimal // with the currency's minor units
}

// StatementTotals sums statements per currency, in currency order. The sums are exact: an
// error means an amount could not be added exactly (it cannot happen for amounts the engine
// accepts), never a rounded total.
func StatementTotals(sts []Statement) ([]StatementTotal, error) {
	var out []StatementTotal
	at := map[string]int{}
	for _, s := range sts {
		i, ok := at[s.Currency]
		if !ok {
			i = len(out)
			at[s.Currency] = i
			out = append(out, StatementTotal{Currency: s.Currency})
			// Zero with the currency's minor units, so an empty total prints "0.00", not "0".
			out[i].Paid.SetFinite(0, s.Total.Exponent)
			out[i].Carried.SetFinite(0, s.Total.Exponent)
		}
		sum := &out[i].Carried
		if s.Payable {
			sum = &out[i].Paid
		}
		if _, err := SumContext.Add(sum, sum, &s.Total); err != nil {
			return nil, fmt.Errorf("adding the %s statement of %s/%s: %w", s.Currency, s.Program, s.AffiliateID, err)
		}
	}
	slices.SortFunc(out, func(a, b StatementTotal) int { return strings.Compare(a.Currency, b.Currency) })
	return out, nil
}
