package engine

// An order's lifecycle: an order is decided once per event (placed, completed, refunded, an amount
// corrected…), and every event's decision is kept. What a later event is decided with depends on
// the order's earlier events, which the engine learns from an OrderHistory the caller loads for the
// whole batch before deciding it (one query, not one per event):
//
//   - the pin: each event after the order's first qualifying one is decided with the policy
//     version that decided that event — the terms in force at the sale, not today's — unless
//     that version's lifecycle terms say in_force. Before the first qualifying event, the
//     version in force at placed_at decides.
//   - the affiliate's month (affiliate.* inputs, for programs whose rules read them): the
//     affiliate's orders of the program, UTC month of placed_at and currency whose current
//     decision qualifies, this order not counted, and their commissionable sales.
//
// Within a batch, events are taken in batch order, each seeing what the earlier ones changed.
// An order's current decision is the one of its latest event: events from the stream are
// ordered by stream sequence (an older event decided late is kept, but does not replace a newer
// one); events with no stream sequence (0) by arrival.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/apd/v3"
)

// ErrPinnedPolicyMissing: an order's events are decided with the policy version that decided
// its first qualifying event, and that version (program, number and digest) is not loaded.
var ErrPinnedPolicyMissing = errors.New("the order's pinned policy version is not loaded")

// ErrStaleHistory: the history a batch was decided with changed before it was stored (another
// batch with events of the same orders, or of the same affiliate's month, was stored
// meanwhile). Nothing was stored; decide the batch again with a fresh history.
var ErrStaleHistory = errors.New("the orders' history changed while the batch was decided")

// MonthOf is the month an order's placed_at falls in, in UTC: "2026-10".
func MonthOf(t time.Time) string { return t.UTC().Format("2006-01") }

// OrderKey identifies an order.
type OrderKey struct{ Program, OrderID string }

// MonthKey identifies one affiliate's orders of a program in one month and currency.
type MonthKey struct{ Program, AffiliateID, Month, Currency string }

// Pin is a policy version an order is pinned to: the one that decided its first qualifying event.
type Pin struct {
	Version int
	Digest  string
}

// Lifecycle is what an order's history said when DecideBatch decided one of its events.
type Lifecycle struct {
	// Pin is the order's pin before this event; nil when no event of it had qualified.
	Pin *Pin
	// Pinned: the event was decided with Pin's version rather than the version in force.
	Pinned bool
}

// OrderState is an order as its history stands: its current decision (the decision of its latest
// event) and its pin.
type OrderState struct {
	AffiliateID string
	Currency    string
	Month       string // MonthOf(placed_at) of the current event
	EventID     string
	StreamSeq   uint64 // of the current event; 0 when it did not come from a stream
	DecisionID  int64  // the store's id of the current decision; 0 until stored
	Latest      int64  // the store's id of the order's latest stored decision (current or not)
	Qualified   bool
	Base        apd.Decimal // the commissionable amount of the current decision (0 when not qualified)
	Commission  apd.Decimal
	Pin         *Pin
}

func (s *OrderState) monthKey(program string) MonthKey {
	return MonthKey{Program: program, AffiliateID: s.AffiliateID, Month: s.Month, Currency: s.Currency}
}

// MonthTotals are an affiliate's orders in a month whose current decision qualifies: how many,
// and their commissionable sales.
type MonthTotals struct {
	Orders int64
	Sales  apd.Decimal
}

// OrderHistory is what deciding a batch needs to know about earlier events. The store implements it
// for a batch's orders and months (loaded at once); the engine only reads it. An OrderHistory is used
// by one goroutine at a time.
type OrderHistory interface {
	// Order returns the order's state before the batch; false when it has no stored decision.
	Order(k OrderKey) (OrderState, bool)
	// Month returns the affiliate's month totals before the batch (zero when none).
	Month(k MonthKey) MonthTotals
}

// Snapshot is an OrderHistory held in maps: what a store loads for a batch, or a test builds.
type Snapshot struct {
	Orders map[OrderKey]OrderState
	Months map[MonthKey]MonthTotals
}

var _ OrderHistory = (*Snapshot)(nil)

// NewSnapshot returns an empty snapshot: no order has a history.
func NewSnapshot() *Snapshot {
	return &Snapshot{Orders: map[OrderKey]OrderState{}, Months: map[MonthKey]MonthTotals{}}
}

// Order implements OrderHistory.
func (s *Snapshot) Order(k OrderKey) (OrderState, bool) {
	st, ok := s.Orders[k]
	return st, ok
}

// Month implements OrderHistory.
func (s *Snapshot) Month(k MonthKey) MonthTotals { return s.Months[k] }

// PastDecision is a stored decision as its order's history reads it: the columns an order's
// state is made of, and the state its leaf covers (Current, Pin).
type PastDecision struct {
	ID                           int64
	EventID                      string
	StreamSeq                    uint64
	AffiliateID, Currency, Month string
	Qualified                    bool
	Base, Commission             apd.Decimal
	Current                      bool // it became the order's current decision when it was made
	Pin                          *Pin // the order's pin after it
}

// AddDecision takes a stored decision of order k into the snapshot. A store reads an order's
// state as its decisions, added in the order they were stored: the order's current decision is
// the last one that became current, its pin the one the last decision left.
func (s *Snapshot) AddDecision(k OrderKey, d *PastDecision) {
	st := s.Orders[k]
	if d.Current {
		st = OrderState{AffiliateID: d.AffiliateID, Currency: d.Currency, Month: d.Month, EventID: d.EventID, StreamSeq: d.StreamSeq,
			DecisionID: d.ID, Qualified: d.Qualified}
		if d.Qualified {
			st.Base.Set(&d.Base)
			st.Commission.Set(&d.Commission)
		}
	}
	st.Pin, st.Latest = d.Pin, d.ID
	s.Orders[k] = st
}

// DecodeEvents decodes a batch of events, appending one Result per event to out, with its
// Order, or with Err when it does not decode. DecideBatch then decides them.
func DecodeEvents(events []Event, out []Result) []Result {
	for _, ev := range events {
		r := Result{Event: ev}
		r.Order, r.Err = DecodeOrder(ev.Raw)
		r.identify()
		out = append(out, r)
	}
	return out
}

// HistoryKeys returns what deciding the decoded results needs from the history: every order, and
// the affiliate months of orders whose program has a version (live or shadow) that reads
// affiliate.* inputs.
func (e *Engine) HistoryKeys(results []Result) ([]OrderKey, []MonthKey) {
	orders := make([]OrderKey, 0, len(results))
	var months []MonthKey
	seenOrder := make(map[OrderKey]bool, len(results))
	seenMonth := map[MonthKey]bool{}
	reads := map[string]bool{}
	for i := range results {
		o := results[i].Order
		if o == nil {
			continue
		}
		k := OrderKey{o.Program, o.OrderID}
		if !seenOrder[k] {
			seenOrder[k] = true
			orders = append(orders, k)
		}
		r, ok := reads[o.Program]
		if !ok {
			r = e.readsAffiliate(o.Program) // its live versions' or its shadows'
			reads[o.Program] = r
		}
		if r {
			mk := MonthKey{o.Program, o.AffiliateID, MonthOf(o.PlacedAt), o.Currency.Code}
			if !seenMonth[mk] {
				seenMonth[mk] = true
				months = append(months, mk)
			}
		}
	}
	return orders, months
}

// DecideBatch decides decoded results (DecodeEvents) in batch order with their orders' history:
// each event with its order's pinned version (or the version in force when the order has none, or
// when the pinned version's terms say in_force), and with the affiliate's month when the policy
// reads it; each later event of the batch sees what the earlier ones changed. It sets each
// result's Decision and Err (a result with no Order is left as it is), so a batch can be decided
// again with a fresher history. Each Decision records its Lifecycle.
func (e *Engine) DecideBatch(ctx context.Context, results []Result, h OrderHistory) {
	w := newWalk(h)
	for i := range results {
		r := &results[i]
		if r.Order == nil {
			continue
		}
		if e.decideOne(ctx, w, r); r.Err == nil {
			w.apply(i, r)
		}
	}
}

// walk is a batch's history as it changes, event by event: the loaded history with the batch's
// changes laid over it.
type walk struct {
	h       OrderHistory
	orders  map[OrderKey]*OrderState // nil value: known to have no history
	months  map[MonthKey]*MonthTotals
	changed map[OrderKey]int // the orders whose state changed, and the result that changed it last (-1: only the pin)
}

func newWalk(h OrderHistory) *walk {
	return &walk{h: h, orders: map[OrderKey]*OrderState{}, months: map[MonthKey]*MonthTotals{}, changed: map[OrderKey]int{}}
}

func (w *walk) order(k OrderKey) *OrderState {
	st, ok := w.orders[k]
	if !ok {
		if s, found := w.h.Order(k); found {
			st = &s
		}
		w.orders[k] = st
	}
	return st
}

func (w *walk) month(k MonthKey) *MonthTotals {
	t, ok := w.months[k]
	if !ok {
		m := w.h.Month(k)
		t = &m
		w.months[k] = t
	}
	return t
}

// figures are the affiliate.* inputs for order o: its affiliate's month totals without the
// order's own current contribution.
func (w *walk) figures(k OrderKey, o *Order) AffiliateMonth {
	mk := MonthKey{o.Program, o.AffiliateID, MonthOf(o.PlacedAt), o.Currency.Code}
	t := w.month(mk)
	out := AffiliateMonth{Month: mk.Month, QualifiedOrders: t.Orders}
	out.QualifiedSales.Set(&t.Sales)
	if st := w.order(k); st != nil && st.Qualified && st.monthKey(k.Program) == mk {
		out.QualifiedOrders--
		exact.Sub(&out.QualifiedSales, &out.QualifiedSales, &st.Base)
	}
	return out
}

// change is what one decided event did to its order.
type change struct {
	prev    OrderState // before the event (zero when !hadPrev)
	hadPrev bool
	current bool // the event's decision became the order's current one
}

// apply takes result i's decision into the history: it pins the order at its first qualifying
// decision, and makes the decision current when its event is newer than the current one.
func (w *walk) apply(i int, r *Result) change {
	d := r.Decision
	k := OrderKey{d.Program, d.OrderID}
	st := w.order(k)
	var c change
	if st != nil {
		c.prev, c.hadPrev = *st, true
	}
	pin := c.prev.Pin
	if pin == nil && d.Qualified {
		pin = &Pin{Version: d.PolicyVersion, Digest: d.PolicyDigest}
	}
	ev := &r.Event
	newer := st == nil || (ev.ID != st.EventID && (ev.StreamSeq == 0 || ev.StreamSeq > st.StreamSeq))
	if !newer {
		if st.Pin != pin {
			st.Pin = pin
			if _, ok := w.changed[k]; !ok {
				w.changed[k] = -1
			}
		}
		return c
	}
	next := &OrderState{AffiliateID: d.AffiliateID, Currency: d.Currency.Code, Month: MonthOf(r.Order.PlacedAt),
		EventID: ev.ID, StreamSeq: ev.StreamSeq, Qualified: d.Qualified, Pin: pin}
	if d.Qualified {
		next.Base.Set(&d.Base)
		next.Commission.Set(&d.Commission)
	}
	if c.hadPrev && c.prev.Qualified {
		t := w.month(c.prev.monthKey(k.Program))
		t.Orders--
		exact.Sub(&t.Sales, &t.Sales, &c.prev.Base)
	}
	if next.Qualified {
		t := w.month(next.monthKey(k.Program))
		t.Orders++
		exact.Add(&t.Sales, &t.Sales, &next.Base)
	}
	w.orders[k] = next
	w.changed[k] = i
	c.current = true
	return c
}

// verify checks that result r was decided with what the history says now: the same pin, and the
// same affiliate.* inputs. A decision made without the history (no Lifecycle) is not checked.
func (w *walk) verify(r *Result) error {
	d := r.Decision
	if d.Lifecycle == nil {
		return nil
	}
	k := OrderKey{d.Program, d.OrderID}
	var pin *Pin
	if st := w.order(k); st != nil {
		pin = st.Pin
	}
	if !samePin(pin, d.Lifecycle.Pin) {
		return fmt.Errorf("%w: order %s of %s is pinned to %s now, it was decided seeing %s", ErrStaleHistory, d.OrderID, d.Program, pinText(pin), pinText(d.Lifecycle.Pin))
	}
	if d.Affiliate != nil {
		want := w.figures(k, r.Order)
		if want.Month != d.Affiliate.Month || want.QualifiedOrders != d.Affiliate.QualifiedOrders || want.QualifiedSales.Cmp(&d.Affiliate.QualifiedSales) != 0 {
			return fmt.Errorf("%w: order %s of %s: affiliate %s's month %s is %d orders, %s now; it was decided with %d, %s", ErrStaleHistory,
				d.OrderID, d.Program, d.AffiliateID, want.Month, want.QualifiedOrders, want.QualifiedSales.Text('f'),
				d.Affiliate.QualifiedOrders, d.Affiliate.QualifiedSales.Text('f'))
		}
	}
	return nil
}

func samePin(a, b *Pin) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func pinText(p *Pin) string {
	if p == nil {
		return "no version (no qualifying event yet)"
	}
	return fmt.Sprintf("version %d (%s)", p.Version, p.Digest)
}
