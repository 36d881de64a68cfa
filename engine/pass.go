package engine

// One pass through the engine per batch: decode → decide → book → chain, into plain values the
// store writes in one transaction without calling back into the engine.

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/commissioner/commissioner/rules"
)

// DecisionRow is a decision as stored: every column already encoded.
type DecisionRow struct {
	Result   int  // the result's index in the batch
	Leaf     int  // its leaf's index in the batch's Merkle tree
	LeafHash Hash // LeafHash(AppendDecisionLeaf(…))

	EventID, OrderID, Program, AffiliateID string
	PolicyVersion                          int
	PolicyDigest                           string
	Qualified                              bool
	FailedRules                            string // a JSON array of rule ids
	RateRule, Rate, Flat                   string // Flat "" when the rule pays none
	Base, Commission, Currency, Rounding   string
	Trace                                  string // AppendCompactTrace
	Env                                    string
	StreamSeq                              uint64
	Month                                  string // MonthOf(the order's placed_at): the affiliate month it counts in
	// Its order's state after it (what its leaf's "state" covers): Current, its event is the
	// order's latest, so it is the order's current decision; Pin, the order's pin (nil: none yet).
	Current bool
	Pin     *Pin
	// The order's decision before it, which it follows: Prev, a stored decision's id (0: none
	// stored), or PrevDecision, an earlier decision of this batch (its index in
	// BatchWrite.Decisions; -1: none). An order's decisions form one line, each following the one
	// stored before it; the store keeps two from following the same one (two writers that read
	// the same history: the second is refused with ErrStaleHistory).
	Prev         int64
	PrevDecision int
	// Inputs is what the decision was decided with besides its event and policy version,
	// recorded so it can be reproduced; nil when there is nothing to record.
	Inputs *DecisionInputs
}

// DecisionInputs are a decision's recorded inputs: the pin its order had (and whether it decided
// with it), and the affiliate.* figures when its policy read them.
type DecisionInputs struct {
	Pin    *Pin
	Pinned bool
	// Affiliate is nil when the policy does not read affiliate.* inputs.
	Affiliate *AffiliateMonth
}

// DeadLetterRow is an event that got no decision, and why.
type DeadLetterRow struct {
	Result   int
	Leaf     int
	LeafHash Hash
	Event    Event
	Program  string // "" when the event did not decode that far
	OrderID  string
	Kind     string // ErrorKind
	Reason   string
}

// BatchWrite is everything one batch stores, computed in one pass: what the store writes, in one
// transaction, as it is.
type BatchWrite struct {
	Header BatchHeader
	Hash   Hash // Header.Hash()
	// Results are the batch's results, decided (Err set for the dead letters).
	Results   []Result
	Decisions []DecisionRow
	Dead      []DeadLetterRow
	// Ledger are the entries the decisions booked; Result names the deciding result.
	Ledger []LedgerEntry
	// Policies are the versions the decisions used, each once (the store keeps a version's
	// source on its first use).
	Policies []*rules.Policy
	// SkippedSeqs are the stream sequences of the events left out as stored already (stored
	// said so, or the batch held them twice): consumed, with no row of their own
	// (reconciliation with the stream counts them as consumed).
	SkippedSeqs []uint64
	// Shadows are the shadow versions' outcomes for the batch's decided events (shadow.go). They
	// are no part of the chain or the ledger: the store writes them in the batch's transaction,
	// insert-or-ignore, apart from the decisions (store.WriteBatch).
	Shadows []ShadowRow
}

// Pass is one batch through the engine: it decides the decoded results (DecodeEvents) in batch
// order with the history (each event sees what the earlier ones changed), books the ledger,
// builds every row and the batch's leaves, Merkle root and header continuing head, and returns
// them. stored(eventID) reports events whose outcome is stored already (a re-published event):
// they are left out. Results without an Order are dead letters. Pass is pure.
func (e *Engine) Pass(ctx context.Context, head PartitionHead, results []Result, h OrderHistory, stored func(eventID string) bool) (*BatchWrite, error) {
	// Sized for the batch: growing them by appends copied each row several times (a DecisionRow
	// is ~400 bytes): a quarter of the pass's garbage.
	out := &BatchWrite{Results: results, Decisions: make([]DecisionRow, 0, len(results)), Ledger: make([]LedgerEntry, 0, len(results))}
	w := newWalk(h)
	policies := map[*rules.Policy]bool{}
	seen := make(map[string]bool, len(results))
	leaves := make([]Hash, 0, len(results))
	buf := make([]byte, 0, 4096)
	var first, last uint64
	lastOf := make(map[OrderKey]int, len(results)) // an order's latest decision in the batch
	for i := range results {
		r := &results[i]
		ev := &r.Event
		if ev.ID == "" {
			return nil, fmt.Errorf("batch of %d: event %d has no id", len(results), i)
		}
		if first == 0 {
			first = ev.StreamSeq
		}
		last = max(last, ev.StreamSeq)
		if seen[ev.ID] || (stored != nil && stored(ev.ID)) {
			out.SkippedSeqs = append(out.SkippedSeqs, ev.StreamSeq)
			continue
		}
		seen[ev.ID] = true
		if r.Order != nil {
			e.decideOne(ctx, w, r)
			if r.Err != nil && ctx.Err() != nil {
				// Cut short, not undecidable: the batch fails (and is tried again); its events are
				// never dead-lettered for it.
				return nil, fmt.Errorf("deciding a batch of %d: %w", len(results), ctx.Err())
			}
		}
		if r.Err != nil || r.Decision == nil {
			if r.Err == nil {
				r.Err = errors.New("no decision and no error")
			}
			dl := DeadLetterRow{Result: i, Leaf: len(leaves), Event: *ev, OrderID: r.OrderID(), Kind: ErrorKind(r.Err), Reason: r.Err.Error()}
			if r.Order != nil {
				dl.Program = r.Order.Program
			}
			buf = AppendDeadLetterLeaf(buf[:0], ev.ID, ev.StreamSeq, ev.Raw, dl.Kind, dl.Reason)
			dl.LeafHash = LeafHash(buf)
			leaves = append(leaves, dl.LeafHash)
			out.Dead = append(out.Dead, dl)
			continue
		}
		d := r.Decision
		if shadows := e.set.Shadows(d.Program); len(shadows) > 0 {
			if out.Shadows == nil { // sized for the batch, as the decisions are
				out.Shadows = make([]ShadowRow, 0, (len(results)-i)*len(shadows))
			}
			out.Shadows = e.decideShadows(ctx, out.Shadows, w, i, r, shadows)
		}
		booked := len(out.Ledger)
		var st StateChange
		var err error
		if out.Ledger, st, err = w.book(out.Ledger, i, r); err != nil {
			return nil, err
		}
		row := decisionRow(i, r)
		row.Current, row.Pin = st.Current, st.Pin
		k := OrderKey{d.Program, d.OrderID}
		if j, ok := lastOf[k]; ok {
			row.PrevDecision = j
		} else if before, ok := h.Order(k); ok {
			row.Prev = before.Latest
		}
		lastOf[k] = len(out.Decisions)
		row.Leaf = len(leaves)
		buf = AppendDecisionLeaf(buf[:0], ev.ID, ev.StreamSeq, ev.Raw, d, out.Ledger[booked:], st)
		row.LeafHash = LeafHash(buf)
		leaves = append(leaves, row.LeafHash)
		out.Decisions = append(out.Decisions, row)
		policies[d.Policy] = true
	}
	for p := range policies {
		out.Policies = append(out.Policies, p)
	}
	sortPolicies(out.Policies)
	out.Header = BatchHeader{Partition: head.Partition, Seq: head.Seq + 1, Epoch: head.Epoch, Prev: head.Hash,
		Root: MerkleRoot(leaves), Leaves: len(leaves), FirstStreamSeq: first, LastStreamSeq: last}
	out.Hash = out.Header.Hash()
	for i := range out.Shadows {
		out.Shadows[i].Partition, out.Shadows[i].BatchSeq = out.Header.Partition, out.Header.Seq
	}
	return out, nil
}

// decideOne decides one decoded result with the walk's history, as DecideBatch does.
func (e *Engine) decideOne(ctx context.Context, w *walk, r *Result) {
	r.Decision, r.Err = nil, nil
	o := r.Order
	k := OrderKey{o.Program, o.OrderID}
	lc := &Lifecycle{}
	var p *rules.Policy
	if st := w.order(k); st != nil && st.Pin != nil {
		lc.Pin = st.Pin
		pinned, err := e.set.Version(o.Program, st.Pin.Version)
		if err != nil || pinned.Digest != st.Pin.Digest {
			r.Err = fmt.Errorf("%w: order %s of program %s was first qualified by version %d (%s), which is not loaded: "+
				"an order's later events are decided with the terms of its sale; restore that version's file (its source is stored) and publish the event again",
				ErrPinnedPolicyMissing, o.OrderID, o.Program, st.Pin.Version, st.Pin.Digest)
			return
		}
		if pinned.Lifecycle.Terms != rules.TermsInForce {
			p, lc.Pinned = pinned, true
		}
	}
	if p == nil {
		var err error
		if p, err = e.PolicyFor(o); err != nil {
			r.Err = err
			return
		}
	}
	o.Affiliate = AffiliateMonth{}
	if p.ReadsAffiliate() {
		o.Affiliate = w.figures(k, o)
	}
	d, err := e.DecideWith(ctx, p, o)
	if err != nil {
		r.Err = err
		return
	}
	d.Lifecycle = lc
	r.Decision = d
}

// decisionRow encodes result i's decision as its row (Leaf and LeafHash left to the caller).
func decisionRow(i int, r *Result) DecisionRow {
	d := r.Decision
	row := DecisionRow{Result: i, EventID: r.Event.ID, OrderID: d.OrderID, Program: d.Program, AffiliateID: d.AffiliateID,
		PolicyVersion: d.PolicyVersion, PolicyDigest: d.PolicyDigest, Qualified: d.Qualified,
		FailedRules: string(AppendStrings(nil, d.FailedRules)), RateRule: d.RateRule,
		Rate: d.Rate.Text('f'), Base: d.Base.Text('f'), Commission: d.Commission.Text('f'),
		Currency: d.Currency.Code, Rounding: string(d.Rounding), Trace: string(d.AppendCompactTrace(make([]byte, 0, 256))),
		Env: d.Env, StreamSeq: r.Event.StreamSeq, Month: MonthOf(r.Order.PlacedAt), PrevDecision: -1}
	if d.HasFlat() {
		row.Flat = d.Flat.Text('f')
	}
	if lc := d.Lifecycle; d.Affiliate != nil || (lc != nil && lc.Pinned) {
		in := &DecisionInputs{Affiliate: d.Affiliate}
		if lc != nil {
			in.Pin, in.Pinned = lc.Pin, lc.Pinned
		}
		row.Inputs = in
	}
	return row
}

func sortPolicies(ps []*rules.Policy) {
	sort.Slice(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		return a.Program < b.Program || a.Program == b.Program && a.Version < b.Version
	})
}

// OrderBook recomputes, from an order's decisions taken in the order they were decided, what each
// booked and did to the order's state — what its leaf covers — starting from no history. Audit
// uses it to check leaves, the ledger and the order states against the decisions.
type OrderBook struct{ w *walk }

// NewOrderBook returns a book with no history.
func NewOrderBook() *OrderBook { return &OrderBook{w: newWalk(NewSnapshot())} }

// Book takes r's decision (r.Order, r.Decision and r.Event's ID and StreamSeq set) into the
// history and returns the ledger entries it books and its state change.
func (b *OrderBook) Book(r *Result) ([]LedgerEntry, StateChange, error) {
	return b.w.book(nil, 0, r)
}

// book takes result i's decision into the walk and appends the ledger entries it books to
// entries; it returns them with the decision's change to its order's state — what its leaf
// covers. Pass and OrderBook (audit) book through it, so both compute the same leaf.
func (w *walk) book(entries []LedgerEntry, i int, r *Result) ([]LedgerEntry, StateChange, error) {
	d := r.Decision
	c := w.apply(i, r)
	if c.current {
		var err error
		if entries, err = appendEntries(entries, i, r, c); err != nil {
			return entries, StateChange{}, err
		}
	}
	st := StateChange{Current: c.current}
	if now := w.order(OrderKey{d.Program, d.OrderID}); now != nil {
		st.Pin = now.Pin
	}
	return entries, st, nil
}

// State is the order's state after the decisions booked so far.
func (b *OrderBook) State(k OrderKey) (OrderState, bool) {
	st := b.w.order(k)
	if st == nil {
		return OrderState{}, false
	}
	return *st, true
}
