package store

// audit verify: two walks over the store.
//
//   - Order by order (per program, orders by id, each order's decisions in the order they were
//     made): every decision is decided again with its recorded policy version and compared column
//     by column; the order's decisions are booked again (engine.OrderBook), so each decision's
//     leaf is recomputed from the sources of truth and compared with its stored leaf hash, the
//     stored ledger entries are compared with what the decisions book, and the stored order state
//     with what they leave.
//   - Partition by partition (batches by sequence, each batch's leaves by index): leaf indexes
//     complete and in range, each batch's Merkle root over its stored leaf hashes, its hash over
//     its header, its link to the batch before, and the partition's head.
//
// Together: a changed column, ledger row or order state is named; a deleted, inserted, replaced or
// reordered decision or batch breaks a root, a link or the sequence.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/apd/v3"
	"golang.org/x/sync/errgroup"

	"github.com/commissioner/commissioner/engine"
)

// Finding kinds: what audit verify reports.
const (
	// FindingAltered: the row's columns differ from the re-run while its leaf hash covers the
	// re-run: the row was changed after it was stored.
	FindingAltered = "altered"
	// FindingNotReproduced: neither the row's columns nor its leaf hash match the re-run: engine
	// or policy drift, or a forged row.
	FindingNotReproduced = "not_reproduced"
	// FindingLeafMismatch: the columns reproduce but the leaf hash does not cover them (with the
	// ledger entries and state change the order's decisions book): the hash was changed, or the
	// row was forged or moved to another order.
	FindingLeafMismatch = "leaf_mismatch"
	// FindingUnverifiable: the row could not be decided again (its event or policy version is
	// missing or altered); Reason says which.
	FindingUnverifiable = "unverifiable"
	// FindingLedger: the stored ledger entries of a decision are not what it books (an amount,
	// affiliate, currency, kind or date changed, an entry deleted or added).
	FindingLedger = "ledger"
	// FindingOrderState: an order's stored state is not what its decisions leave.
	FindingOrderState = "order_state"
	// FindingMissing: batches or leaves with no row (deleted rows).
	FindingMissing = "missing"
	// FindingInserted: a row outside the chain: a leaf beyond its batch's count or in no stored
	// batch, a batch beyond the partition's head.
	FindingInserted = "inserted"
	// FindingRootMismatch: a batch's stored leaves do not hash to its root: a leaf was replaced
	// or the leaves reordered.
	FindingRootMismatch = "root_mismatch"
	// FindingBatchHash: a batch row's hash is not the hash of its header (the row was edited).
	FindingBatchHash = "batch_hash"
	// FindingBrokenLink: a batch's prev_hash is not the hash of the batch before it.
	FindingBrokenLink = "broken_link"
	// FindingHeadMismatch: the partition's head (partitions) does not name its last batch.
	FindingHeadMismatch = "head_mismatch"
	// FindingPolicy: a stored policy version cannot be used: its source was altered (digest
	// mismatch) or no longer compiles; Reason says which.
	FindingPolicy = "policy"
	// FindingOrphanEvent: a stored order event has neither a decision nor a dead letter.
	FindingOrphanEvent = "orphan_event"
)

// Finding is one thing audit verify found.
type Finding struct {
	Kind    string
	Reason  string // for unverifiable and policy findings: a Reason… constant
	Program string
	// Partition, BatchSeq and Leaf place it in a partition's chain; BatchSeq 0 when it is about
	// no batch, Leaf -1 when about no leaf.
	Partition  int
	BatchSeq   uint64
	Leaf       int
	DecisionID int64 // 0 when about no decision
	EventID    string
	OrderID    string
	Detail     string
	Diffs      []FieldDiff
}

// Place is where the finding is in the chain, for messages: "partition 3 batch 12 leaf 7".
func (f Finding) Place() string {
	if f.BatchSeq == 0 {
		return ""
	}
	s := fmt.Sprintf("partition %d batch %d", f.Partition, f.BatchSeq)
	if f.Leaf >= 0 {
		s += fmt.Sprintf(" leaf %d", f.Leaf)
	}
	return s
}

func (f Finding) String() string {
	var parts []string
	if f.Program != "" {
		parts = append(parts, f.Program)
	}
	if p := f.Place(); p != "" {
		parts = append(parts, p)
	}
	if f.DecisionID != 0 {
		parts = append(parts, fmt.Sprintf("decision %d", f.DecisionID))
	}
	if f.OrderID != "" {
		parts = append(parts, "order "+f.OrderID)
	}
	var b strings.Builder
	b.WriteString(strings.Join(parts, " "))
	fmt.Fprintf(&b, ": %s: %s", f.Kind, f.Detail)
	for _, d := range f.Diffs {
		fmt.Fprintf(&b, "\n    %s: stored %q, re-run %q", d.Field, d.Stored, d.Rerun)
	}
	return b.String()
}

// VerifyOptions say what Verify checks and where findings go.
type VerifyOptions struct {
	Program string // "" verifies every program's decisions (the partitions' chains are always checked)
	Workers int    // orders re-run in parallel; 0: GOMAXPROCS
	// OnFinding receives every finding, one at a time (never concurrently). Nil drops them (the
	// report still counts them).
	OnFinding func(Finding)
	// OrphanLimit bounds how many orphan events are reported; 0: 100.
	OrphanLimit int
}

// PartitionReport is what Verify found in one partition's chain.
type PartitionReport struct {
	Partition int
	Batches   int64
	Leaves    int64 // decisions and dead letters
	LastSeq   uint64
	LastHash  string
	Head      engine.PartitionHead // the stored head; zero when none
	HasHead   bool
	Findings  int
	First     *Finding // the first finding in chain order; nil when none
}

// VerifyReport is the result of Verify.
type VerifyReport struct {
	Policies   int   // stored policy versions checked
	Decisions  int64 // decisions re-run
	Reproduced int64 // decisions re-run to exactly the stored row, leaf and ledger included
	Orders     int64
	Partitions []PartitionReport
	Findings   int
	ByKind     map[string]int
}

// OK reports whether nothing was found.
func (r *VerifyReport) OK() bool { return r.Findings == 0 }

// Verify audits the store: every stored policy version's source against its digest; every
// decision decided again and its order booked again (leaves, ledger, order state); every
// partition's chain of batches; and the events left without any outcome. It returns an error
// only when it could not do the work (a failed read, a cancelled ctx).
func (s *Store) Verify(ctx context.Context, opts VerifyOptions) (*VerifyReport, error) {
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.OrphanLimit <= 0 {
		opts.OrphanLimit = 100
	}
	rep := &VerifyReport{ByKind: map[string]int{}}
	var part *PartitionReport
	emit := func(f Finding) {
		rep.Findings++
		rep.ByKind[f.Kind]++
		if part != nil {
			part.Findings++
			if part.First == nil {
				ff := f
				part.First = &ff
			}
		}
		if opts.OnFinding != nil {
			opts.OnFinding(f)
		}
	}
	a := NewAuditor(s)
	policies, err := s.PolicyVersions(ctx, opts.Program)
	if err != nil {
		return nil, err
	}
	for _, sp := range policies {
		rep.Policies++
		if _, _, err := a.Policy(ctx, sp.Program, sp.Version); err != nil {
			var re *RecheckError
			if !errors.As(err, &re) {
				return nil, err
			}
			emit(Finding{Kind: FindingPolicy, Reason: re.Reason, Program: sp.Program, Leaf: -1, Detail: re.Msg})
		}
	}

	programs := []string{opts.Program}
	if opts.Program == "" {
		if programs, err = s.DecisionPrograms(ctx); err != nil {
			return nil, err
		}
	}
	for _, prog := range programs {
		if err := s.verifyOrders(ctx, a, prog, opts.Workers, rep, emit); err != nil {
			return nil, err
		}
	}

	parts, err := s.chainPartitions(ctx)
	if err != nil {
		return nil, err
	}
	heads, err := s.PartitionHeads(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		rep.Partitions = append(rep.Partitions, PartitionReport{Partition: p})
		part = &rep.Partitions[len(rep.Partitions)-1]
		for _, h := range heads {
			if h.Partition == p {
				part.Head, part.HasHead = h, true
			}
		}
		if err := s.verifyPartition(ctx, part, emit); err != nil {
			return nil, err
		}
	}
	part = nil

	orphans, err := s.OrphanEvents(ctx, opts.Program, opts.OrphanLimit)
	if err != nil {
		return nil, err
	}
	for _, e := range orphans {
		emit(Finding{Kind: FindingOrphanEvent, Program: e.Program, Leaf: -1, EventID: e.EventID, OrderID: e.OrderID,
			Detail: fmt.Sprintf("order event %s (stream seq %d) has no decision and no dead letter: its decision was deleted", e.EventID, e.StreamSeq)})
	}
	return rep, nil
}

// --- order by order ---

// auditRow is one decision row as verify reads it, with its event and recorded inputs: the
// checked columns as stored (text, unparsed), so a column that no longer parses is a finding.
type auditRow struct {
	d     StoredDecision
	t     storedText
	ev    *StoredEvent
	aff   *engine.AffiliateMonth
	found []Finding
	ok    bool
	// what the decision books, recomputed (nil when it could not be)
	ledger []engine.LedgerEntry
}

// storedLedger is one stored ledger entry as verify compares it.
type storedLedger struct {
	id, decisionID                    int64
	kind, affiliate, currency, amount string
	approveAt                         time.Time
}

// storedState is an order's stored state as verify compares it.
type storedState struct {
	affiliate, currency, eventID, base, commission string
	decisionID, streamSeq                          int64
	qualified                                      bool
	pinVersion                                     sql.NullInt64
	pinDigest                                      sql.NullString
}

// orderGroup is one order's decisions (in the order they were made), ledger and state.
type orderGroup struct {
	program, orderID string
	rows             []*auditRow
	ledger           []storedLedger
	state            *storedState
	findings         []Finding
	reproduced       int64
	done             chan struct{}
}

func (s *Store) num(col string) string {
	if s.kind == Postgres {
		return col + "::text"
	}
	return col
}

// verifyOrders re-runs and re-books every order of a program: a reader merges the decisions,
// ledger and state streams (each ordered by order id) into order groups, workers check them, and
// this goroutine emits the findings in order.
func (s *Store) verifyOrders(ctx context.Context, a *Auditor, program string, workers int, rep *VerifyReport, emit func(Finding)) error {
	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan *orderGroup, 4*workers)
	ordered := make(chan *orderGroup, 64*workers)
	g.Go(func() error {
		defer close(jobs)
		defer close(ordered)
		return s.readOrderGroups(gctx, program, func(og *orderGroup) error {
			og.done = make(chan struct{})
			select {
			case ordered <- og:
			case <-gctx.Done():
				return gctx.Err()
			}
			select {
			case jobs <- og:
			case <-gctx.Done():
				return gctx.Err()
			}
			return nil
		})
	})
	for range workers {
		g.Go(func() error {
			for og := range jobs {
				err := checkOrder(gctx, a, og)
				close(og.done)
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		for og := range ordered {
			select {
			case <-og.done:
			case <-gctx.Done():
				return gctx.Err()
			}
			rep.Orders++
			rep.Decisions += int64(len(og.rows))
			rep.Reproduced += og.reproduced
			for _, f := range og.findings {
				emit(f)
			}
		}
		return nil
	})
	return g.Wait()
}

// readOrderGroups streams a program's decisions (with events and inputs), ledger entries and
// order states, each ordered by order id, and calls fn with each order's group.
func (s *Store) readOrderGroups(ctx context.Context, program string, fn func(*orderGroup) error) error {
	dq := "SELECT d.id, d.event_id, d.order_id, d.affiliate_id, d.policy_version, d.policy_digest, d.qualified, d.failed_rules, d.rate_rule, " +
		s.num("d.rate") + ", " + s.num("d.flat") + ", " + s.num("d.base") + ", " + s.num("d.commission") + ", d.currency, d.rounding, d.trace, d.env, " +
		"d.stream_seq, d.part, d.batch_seq, d.leaf, d.leaf_hash, e.id, e.stream_seq, e.raw, i.month, i.month_qualified_orders, " + s.num("i.month_qualified_sales") +
		" FROM decisions d LEFT JOIN order_events e ON e.event_id = d.event_id LEFT JOIN decision_inputs i ON i.decision_id = d.id " +
		"WHERE d.program = ? ORDER BY d.order_id, d.id"
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
	srows, err := s.db.QueryContext(ctx, "SELECT order_id, affiliate_id, currency, event_id, stream_seq, decision_id, qualified, "+s.num("base")+", "+
		s.num("commission")+", pin_version, pin_digest FROM order_state WHERE program = ? ORDER BY order_id", program)
	if err != nil {
		return fmt.Errorf("reading the order states of %s: %w", program, err)
	}
	defer srows.Close()

	// The ledger and state cursors, one row ahead.
	var (
		nextL    *storedLedger
		nextLOrd string
		nextS    *storedState
		nextSOrd string
	)
	advanceL := func() error {
		nextL = nil
		if !lrows.Next() {
			return lrows.Err()
		}
		l := &storedLedger{}
		if err := lrows.Scan(&l.id, &nextLOrd, &l.decisionID, &l.kind, &l.affiliate, &l.currency, &l.amount, timeScanner{&l.approveAt}); err != nil {
			return fmt.Errorf("reading the ledger of %s: %w", program, err)
		}
		nextL = l
		return nil
	}
	advanceS := func() error {
		nextS = nil
		if !srows.Next() {
			return srows.Err()
		}
		st := &storedState{}
		if err := srows.Scan(&nextSOrd, &st.affiliate, &st.currency, &st.eventID, &st.streamSeq, &st.decisionID, &st.qualified, &st.base,
			&st.commission, &st.pinVersion, &st.pinDigest); err != nil {
			return fmt.Errorf("reading the order states of %s: %w", program, err)
		}
		nextS = st
		return nil
	}
	if err := advanceL(); err != nil {
		return err
	}
	if err := advanceS(); err != nil {
		return err
	}
	// take fills og with its order's ledger entries and state.
	take := func(og *orderGroup) error {
		for nextL != nil && nextLOrd == og.orderID {
			og.ledger = append(og.ledger, *nextL)
			if err := advanceL(); err != nil {
				return err
			}
		}
		if nextS != nil && nextSOrd == og.orderID {
			st := *nextS
			og.state = &st
			if err := advanceS(); err != nil {
				return err
			}
		}
		return nil
	}
	// orphansBefore makes groups of the ledger entries and states of orders before orderID (every
	// one left when last) that have no decision: checkOrder reports them.
	orphansBefore := func(orderID string, last bool) error {
		for nextL != nil || nextS != nil {
			id := ""
			switch {
			case nextL == nil:
				id = nextSOrd
			case nextS == nil:
				id = nextLOrd
			default:
				id = min(nextLOrd, nextSOrd)
			}
			if !last && id >= orderID {
				return nil
			}
			og := &orderGroup{program: program, orderID: id}
			if err := take(og); err != nil {
				return err
			}
			if err := fn(og); err != nil {
				return err
			}
		}
		return nil
	}
	var og *orderGroup
	for drows.Next() {
		r := &auditRow{}
		var (
			rate, base, commission string
			flat, month, sales     sql.NullString
			qualified              any
			evID, evSeq, orders    sql.NullInt64
			raw                    []byte
			version, seq, bseq     int64
		)
		d := &r.d
		var orderID string
		if err := drows.Scan(&d.ID, &d.EventID, &orderID, &d.AffiliateID, &version, &d.PolicyDigest, &qualified, &r.t.failedRules, &d.RateRule,
			&rate, &flat, &base, &commission, &d.Currency, &d.Rounding, &r.t.trace, &d.Env, &seq, &d.Partition, &bseq, &d.Leaf, &d.LeafHash,
			&evID, &evSeq, &raw, &month, &orders, &sales); err != nil {
			return fmt.Errorf("reading the decisions of %s: %w", program, err)
		}
		d.Program, d.OrderID, d.PolicyVersion, d.StreamSeq, d.BatchSeq = program, orderID, int(version), uint64(seq), uint64(bseq)
		r.t.orderID, r.t.program, r.t.affiliateID, r.t.policyVersion = orderID, program, d.AffiliateID, strconv.FormatInt(version, 10)
		r.t.policyDigest, r.t.rateRule, r.t.rate, r.t.base, r.t.commission = d.PolicyDigest, d.RateRule, rate, base, commission
		r.t.flat, r.t.currency, r.t.rounding, r.t.env, r.t.streamSeq = noFlat, d.Currency, d.Rounding, d.Env, strconv.FormatInt(seq, 10)
		if flat.Valid {
			r.t.flat = flat.String
		}
		r.t.qualified = boolText(qualified)
		if evID.Valid {
			r.ev = &StoredEvent{ID: evID.Int64, EventID: d.EventID, Program: program, OrderID: orderID, StreamSeq: uint64(evSeq.Int64), Raw: raw}
		}
		if month.Valid {
			r.aff = &engine.AffiliateMonth{Month: month.String, QualifiedOrders: orders.Int64}
			r.aff.QualifiedSales.SetString(sales.String)
		}
		if og == nil || og.orderID != orderID {
			if og != nil {
				if err := fn(og); err != nil {
					return err
				}
			}
			if err := orphansBefore(orderID, false); err != nil {
				return err
			}
			og = &orderGroup{program: program, orderID: orderID}
			if err := take(og); err != nil {
				return err
			}
		}
		og.rows = append(og.rows, r)
	}
	if err := drows.Err(); err != nil {
		return fmt.Errorf("reading the decisions of %s: %w", program, err)
	}
	if og != nil {
		if err := fn(og); err != nil {
			return err
		}
	}
	return orphansBefore("", true)
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

// checkOrder re-runs an order's decisions in the order they were made, books them again, and
// compares each decision's columns and leaf, its ledger entries, and the order's final state.
func checkOrder(ctx context.Context, a *Auditor, og *orderGroup) error {
	book := engine.NewOrderBook()
	bookable := true
	key := engine.OrderKey{Program: og.program, OrderID: og.orderID} // as decoded: ids are stored as storable text
	ledgerOf := map[int64][]storedLedger{}
	for _, l := range og.ledger {
		ledgerOf[l.decisionID] = append(ledgerOf[l.decisionID], l)
	}
	place := func(r *auditRow) Finding {
		d := &r.d
		return Finding{Program: og.program, Partition: d.Partition, BatchSeq: d.BatchSeq, Leaf: d.Leaf, DecisionID: d.ID, EventID: d.EventID, OrderID: og.orderID}
	}
	for _, r := range og.rows {
		d := &r.d
		f := place(r)
		o, again, _, rcErr, err := a.rerun(ctx, d, r.ev, r.aff, false)
		if err != nil {
			return err
		}
		if rcErr != nil {
			var re *RecheckError
			errors.As(rcErr, &re)
			f.Kind, f.Reason, f.Detail = FindingUnverifiable, re.Reason, re.Msg
			og.findings = append(og.findings, f)
			bookable = false
			delete(ledgerOf, d.ID)
			continue
		}
		diffs := diffText(&r.t, again, r.ev)
		leafOK := false
		if bookable {
			res := engine.Result{Event: engine.Event{ID: r.ev.EventID, StreamSeq: r.ev.StreamSeq}, Order: o, Decision: again}
			entries, st, err := book.Book(&res)
			if err != nil {
				return err
			}
			r.ledger = entries
			key = engine.OrderKey{Program: again.Program, OrderID: again.OrderID}
			leafOK = engine.LeafHash(engine.AppendDecisionLeaf(nil, r.ev.EventID, r.ev.StreamSeq, r.ev.Raw, again, entries, st)).String() == d.LeafHash
		}
		switch {
		case len(diffs) > 0 && leafOK:
			f.Kind = FindingAltered
			f.Detail = fmt.Sprintf("the stored row differs from the re-run with %s v%d, whose content its leaf hash covers: the row was changed after it was stored",
				og.program, d.PolicyVersion)
		case len(diffs) > 0:
			f.Kind = FindingNotReproduced
			f.Detail = fmt.Sprintf("deciding event %s again with %s v%d gives another decision, and the row's leaf hash covers neither: policy or engine drift, or a forged row",
				d.EventID, og.program, d.PolicyVersion)
		case bookable && !leafOK:
			f.Kind = FindingLeafMismatch
			f.Detail = fmt.Sprintf("the row reproduces, but its leaf hash %s is not the leaf of its event, its decision and what it books: the hash was changed, or the row was forged or moved",
				short(d.LeafHash))
		}
		if f.Kind != "" {
			f.Diffs = diffs
			og.findings = append(og.findings, f)
		} else if bookable {
			og.reproduced++
			r.ok = true
		}
		if bookable {
			if lf := ledgerDiffs(r.ledger, ledgerOf[d.ID]); len(lf) > 0 {
				g := place(r)
				g.Kind, g.Diffs = FindingLedger, lf
				g.Detail = fmt.Sprintf("the ledger entries stored for decision %d are not what it books: they were changed, deleted or added after it was stored", d.ID)
				og.findings = append(og.findings, g)
			}
		}
		delete(ledgerOf, d.ID)
	}
	for id, ls := range ledgerOf {
		og.findings = append(og.findings, Finding{Kind: FindingLedger, Program: og.program, Leaf: -1, OrderID: og.orderID, DecisionID: id,
			Detail: fmt.Sprintf("ledger entries %s name decision %d, which is not among the order's stored decisions: it was deleted, or they were added outside the pipeline",
				ledgerIDs(ls), id)})
	}
	if bookable {
		want, has := book.State(key)
		if diffs := stateDiffs(want, has, og.state); len(diffs) > 0 {
			og.findings = append(og.findings, Finding{Kind: FindingOrderState, Program: og.program, Leaf: -1, OrderID: og.orderID, Diffs: diffs,
				Detail: "the order's stored state is not what its decisions leave: it was changed after it was stored"})
		}
	}
	return nil
}

func ledgerIDs(ls []storedLedger) string {
	ids := make([]string, len(ls))
	for i, l := range ls {
		ids[i] = strconv.FormatInt(l.id, 10)
	}
	return strings.Join(ids, ", ")
}

func ledgerDiffs(want []engine.LedgerEntry, got []storedLedger) []FieldDiff {
	text := func(kind, aff, cur, amount string, at time.Time) string {
		return fmt.Sprintf("%s %s %s %s approve %s", kind, aff, cur, amount, at.UTC().Format(time.RFC3339))
	}
	var out []FieldDiff
	for i := 0; i < max(len(want), len(got)); i++ {
		var w, g string
		if i < len(want) {
			e := &want[i]
			w = text(string(e.Kind), safeText(e.AffiliateID), e.Currency, e.Amount.Text('f'), e.ApproveAt)
		}
		if i < len(got) {
			l := &got[i]
			amount := l.amount
			var v apd.Decimal
			if _, _, err := v.SetString(amount); err == nil {
				amount = v.Text('f')
			}
			g = text(l.kind, l.affiliate, l.currency, amount, l.approveAt)
		}
		if w != g {
			out = append(out, FieldDiff{Field: "ledger[" + strconv.Itoa(i) + "]", Stored: g, Rerun: w})
		}
	}
	return out
}

func stateDiffs(want engine.OrderState, has bool, got *storedState) []FieldDiff {
	switch {
	case !has && got == nil:
		return nil
	case !has:
		return []FieldDiff{{Field: "order_state", Stored: "a state (event " + got.eventID + ")", Rerun: "none"}}
	case got == nil:
		return []FieldDiff{{Field: "order_state", Stored: "none", Rerun: "a state (event " + want.EventID + ")"}}
	}
	var out []FieldDiff
	cmp := func(field, stored, rerun string) {
		if stored != rerun {
			out = append(out, FieldDiff{Field: "order_state." + field, Stored: stored, Rerun: rerun})
		}
	}
	dec := func(field, stored string, rerun *apd.Decimal) {
		var v apd.Decimal
		if _, _, err := v.SetString(stored); err != nil || v.Cmp(rerun) != 0 {
			out = append(out, FieldDiff{Field: "order_state." + field, Stored: stored, Rerun: rerun.Text('f')})
		}
	}
	cmp("affiliate_id", got.affiliate, safeText(want.AffiliateID))
	cmp("currency", got.currency, want.Currency)
	cmp("event_id", got.eventID, safeText(want.EventID))
	cmp("stream_seq", strconv.FormatInt(got.streamSeq, 10), strconv.FormatUint(want.StreamSeq, 10))
	cmp("qualified", strconv.FormatBool(got.qualified), strconv.FormatBool(want.Qualified))
	dec("base", got.base, &want.Base)
	dec("commission", got.commission, &want.Commission)
	pin := func(v sql.NullInt64, d sql.NullString) string {
		if !v.Valid {
			return "none"
		}
		return fmt.Sprintf("v%d %s", v.Int64, d.String)
	}
	wantPin := "none"
	if want.Pin != nil {
		wantPin = fmt.Sprintf("v%d %s", want.Pin.Version, want.Pin.Digest)
	}
	cmp("pin", pin(got.pinVersion, got.pinDigest), wantPin)
	return out
}

// --- partition by partition ---

// chainPartitions are the partitions with a head, a batch or a leaf.
func (s *Store) chainPartitions(ctx context.Context) ([]int, error) {
	var out []int
	if err := s.db.NewRaw("SELECT part FROM partitions UNION SELECT DISTINCT part FROM batches UNION SELECT DISTINCT part FROM decisions "+
		"UNION SELECT DISTINCT part FROM dead_letters ORDER BY 1").Scan(ctx, &out); err != nil {
		return nil, fmt.Errorf("reading the partitions: %w", err)
	}
	return out, nil
}

type batchRow struct {
	seq, epoch, leaves, first, last int64
	prev, root, hash                string
}

type leafRow struct {
	batchSeq, leaf, id int64
	hash               string
	dead               bool
	eventID, program   string
	orderID            string
	// a dead letter's columns, to recompute its leaf
	streamSeq    int64
	raw          []byte
	kind, reason string
}

// verifyPartition walks a partition's batches and their leaves in order.
func (s *Store) verifyPartition(ctx context.Context, rep *PartitionReport, emit func(Finding)) error {
	p := rep.Partition
	brows, err := s.db.QueryContext(ctx, "SELECT seq, epoch, prev_hash, root, hash, leaves, first_stream_seq, last_stream_seq FROM batches WHERE part = ? ORDER BY seq", p)
	if err != nil {
		return fmt.Errorf("reading the batches of partition %d: %w", p, err)
	}
	defer brows.Close()
	noRaw := "NULL"
	if s.kind == Postgres {
		noRaw = "NULL::bytea"
	}
	lrows, err := s.db.QueryContext(ctx, "SELECT batch_seq, leaf, id, leaf_hash, 0, event_id, program, order_id, 0, "+noRaw+", '', '' FROM decisions WHERE part = ? "+
		"UNION ALL SELECT batch_seq, leaf, id, leaf_hash, 1, event_id, program, order_id, stream_seq, raw, kind, reason FROM dead_letters WHERE part = ? ORDER BY 1, 2", p, p)
	if err != nil {
		return fmt.Errorf("reading the leaves of partition %d: %w", p, err)
	}
	defer lrows.Close()
	var next *leafRow
	advance := func() error {
		next = nil
		if !lrows.Next() {
			return lrows.Err()
		}
		l := &leafRow{}
		var dead int64
		if err := lrows.Scan(&l.batchSeq, &l.leaf, &l.id, &l.hash, &dead, &l.eventID, &l.program, &l.orderID, &l.streamSeq, &l.raw, &l.kind, &l.reason); err != nil {
			return fmt.Errorf("reading the leaves of partition %d: %w", p, err)
		}
		l.dead = dead != 0
		next = l
		return nil
	}
	if err := advance(); err != nil {
		return err
	}
	at := func(l *leafRow) Finding {
		f := Finding{Program: l.program, Partition: p, BatchSeq: uint64(l.batchSeq), Leaf: int(l.leaf), EventID: l.eventID, OrderID: l.orderID}
		if !l.dead {
			f.DecisionID = l.id
		}
		return f
	}
	what := func(l *leafRow) string {
		if l.dead {
			return fmt.Sprintf("dead letter %d", l.id)
		}
		return fmt.Sprintf("decision %d", l.id)
	}
	// strays reports leaves before batch seq that belong to no batch row.
	strays := func(seq int64) error {
		for next != nil && next.batchSeq < seq {
			f := at(next)
			f.Kind = FindingInserted
			f.Detail = fmt.Sprintf("%s names batch %d of partition %d, which has no batch row: the row was put in, or its batch deleted", what(next), next.batchSeq, p)
			emit(f)
			rep.Leaves++
			if err := advance(); err != nil {
				return err
			}
		}
		return nil
	}
	expect, prevHash := int64(1), engine.GenesisHash.String()
	for brows.Next() {
		var b batchRow
		if err := brows.Scan(&b.seq, &b.epoch, &b.prev, &b.root, &b.hash, &b.leaves, &b.first, &b.last); err != nil {
			return fmt.Errorf("reading the batches of partition %d: %w", p, err)
		}
		rep.Batches++
		batch := Finding{Partition: p, BatchSeq: uint64(b.seq), Leaf: -1}
		if err := strays(b.seq); err != nil {
			return err
		}
		switch {
		case b.seq > expect:
			f := batch
			f.Kind, f.BatchSeq = FindingMissing, uint64(expect)
			f.Detail = fmt.Sprintf("batches %d–%d of partition %d are missing before batch %d: they were deleted", expect, b.seq-1, p, b.seq)
			emit(f)
		case b.seq < expect:
			f := batch
			f.Kind = FindingInserted
			f.Detail = fmt.Sprintf("batch %d is out of sequence (the next is %d)", b.seq, expect)
			emit(f)
		}
		if b.seq == expect && b.prev != prevHash {
			f := batch
			f.Kind = FindingBrokenLink
			f.Detail = fmt.Sprintf("prev_hash %s is not the hash %s of batch %d: batches were swapped, replaced or put in", short(b.prev), short(prevHash), b.seq-1)
			emit(f)
		}
		hdr := engine.BatchHeader{Partition: p, Seq: uint64(b.seq), Epoch: uint64(b.epoch), Leaves: int(b.leaves),
			FirstStreamSeq: uint64(b.first), LastStreamSeq: uint64(b.last)}
		var err1, err2 error
		hdr.Prev, err1 = engine.ParseHash(b.prev)
		hdr.Root, err2 = engine.ParseHash(b.root)
		if h := hdr.Hash(); err1 != nil || err2 != nil || h.String() != b.hash {
			f := batch
			f.Kind = FindingBatchHash
			f.Detail = fmt.Sprintf("the batch's hash %s is not the hash of its header: the batch row was edited", short(b.hash))
			emit(f)
		}
		// Its leaves.
		var leaves []engine.Hash
		want := int64(0)
		for next != nil && next.batchSeq == b.seq {
			l := next
			rep.Leaves++
			f := at(l)
			switch {
			case l.leaf >= b.leaves:
				f.Kind = FindingInserted
				f.Detail = fmt.Sprintf("%s is leaf %d of a batch of %d leaves: the row was put in", what(l), l.leaf, b.leaves)
				emit(f)
			case l.leaf > want:
				f.Kind, f.Leaf, f.DecisionID, f.EventID, f.OrderID = FindingMissing, int(want), 0, "", ""
				f.Detail = leafRange(want, l.leaf-1, b.seq, b.leaves)
				emit(f)
			}
			if l.dead {
				got := engine.LeafHash(engine.AppendDeadLetterLeaf(nil, l.eventID, uint64(l.streamSeq), l.raw, l.kind, l.reason)).String()
				if got != l.hash {
					f := at(l)
					f.Kind = FindingLeafMismatch
					f.Detail = fmt.Sprintf("dead letter %d's leaf hash %s is not the leaf of its stored columns: the row was changed", l.id, short(l.hash))
					emit(f)
				}
			}
			if h, err := engine.ParseHash(l.hash); err == nil {
				leaves = append(leaves, h)
			}
			want = l.leaf + 1
			if err := advance(); err != nil {
				return err
			}
		}
		if want < b.leaves {
			f := batch
			f.Kind, f.Leaf = FindingMissing, int(want)
			f.Detail = leafRange(want, b.leaves-1, b.seq, b.leaves)
			emit(f)
		}
		if root := engine.MerkleRoot(leaves); root.String() != b.root {
			f := batch
			f.Kind = FindingRootMismatch
			f.Detail = fmt.Sprintf("the batch's %d stored leaves hash to %s, not to its root %s: a leaf was removed, added, replaced or moved", len(leaves), short(root.String()), short(b.root))
			emit(f)
		}
		if b.seq >= expect {
			expect = b.seq + 1
		}
		prevHash = b.hash
		rep.LastSeq, rep.LastHash = uint64(b.seq), b.hash
	}
	if err := brows.Err(); err != nil {
		return fmt.Errorf("reading the batches of partition %d: %w", p, err)
	}
	if err := strays(1 << 62); err != nil {
		return err
	}
	switch {
	case !rep.HasHead && rep.Batches > 0:
		emit(Finding{Kind: FindingInserted, Partition: p, Leaf: -1, Detail: fmt.Sprintf("%d batches of partition %d, but no partition row: they were added outside the pipeline", rep.Batches, p)})
	case !rep.HasHead:
	case rep.LastSeq < rep.Head.Seq:
		emit(Finding{Kind: FindingMissing, Partition: p, BatchSeq: rep.LastSeq + 1, Leaf: -1,
			Detail: fmt.Sprintf("batches %d–%d at the end: the partition's head says %d batches (hash %s), the last stored is %d: they were deleted",
				rep.LastSeq+1, rep.Head.Seq, rep.Head.Seq, short(rep.Head.Hash.String()), rep.LastSeq)})
	case rep.LastSeq > rep.Head.Seq:
		emit(Finding{Kind: FindingInserted, Partition: p, BatchSeq: rep.Head.Seq + 1, Leaf: -1,
			Detail: fmt.Sprintf("batches after the partition's head (batch %d): they were added outside the pipeline", rep.Head.Seq)})
	case rep.LastHash != rep.Head.Hash.String():
		emit(Finding{Kind: FindingHeadMismatch, Partition: p, BatchSeq: rep.LastSeq, Leaf: -1,
			Detail: fmt.Sprintf("the partition's head hash %s is not the last batch's hash %s", short(rep.Head.Hash.String()), short(rep.LastHash))})
	}
	return nil
}

// leafRange says which leaves of a batch are missing.
func leafRange(from, to, batch, leaves int64) string {
	if from == to {
		return fmt.Sprintf("leaf %d of batch %d (of %d leaves) is missing: its row was deleted", from, batch, leaves)
	}
	return fmt.Sprintf("leaves %d–%d of batch %d (of %d leaves) are missing: their rows were deleted", from, to, batch, leaves)
}

// short abbreviates a hash for messages.
func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}
