package audit

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
	"errors"
	"fmt"
	"iter"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/apd/v3"
	"golang.org/x/mod/sumdb/note"
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
	// FindingOrderState: a decision's stored order-state columns (is_current, the pin, the
	// decision it follows, its month) are not what the order's decisions leave: the history the
	// next events of the order, and its affiliate's month figures, are read from.
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
	// FindingCheckpointSignature: a checkpoint given to verify does not verify with the key: it
	// was forged or changed, or signed by another key. Its heads are not used.
	FindingCheckpointSignature = "checkpoint_signature"
	// FindingCheckpointMismatch: a batch a signed checkpoint names is stored with another hash:
	// the partition's chain was rewritten from there or before (its events decided again, its
	// rows replaced).
	FindingCheckpointMismatch = "checkpoint_mismatch"
	// FindingCheckpointCut: a batch a signed checkpoint names is not stored: the partition's
	// chain was cut back.
	FindingCheckpointCut = "checkpoint_cut"
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
	if len(parts) > 0 {
		b.WriteString(strings.Join(parts, " ") + ": ")
	}
	fmt.Fprintf(&b, "%s: %s", f.Kind, f.Detail)
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
	// Checkpoints, when given, are signed checkpoints to hold the chains against, each verified
	// with CheckpointKey: every batch one of them names must be stored with the signed hash.
	Checkpoints   []SignedCheckpoint
	CheckpointKey note.Verifier
	// Reconciled, when set, is a reconciliation with the order stream (Reconcile) whose findings
	// the caller reports with Verify's.
	Reconciled *Reconciliation
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
	// Signed is the latest batch a verified checkpoint names (0: none).
	Signed  uint64
	checked int
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
	// Checkpoints counts the signed checkpoints verified (their signatures good); Checkpointed
	// counts the batches they name that were checked.
	Checkpoints, Checkpointed int
}

// OK reports whether nothing was found.
func (r *VerifyReport) OK() bool { return r.Findings == 0 }

// Verify audits the store: every stored policy version's source against its digest; every
// decision decided again and its order booked again (leaves, ledger, the order-state columns);
// and every partition's chain of batches (an event is stored in its decision's row or its dead
// letter's, so a deleted decision is a leaf missing from its batch). It returns an error
// only when it could not do the work (a failed read, a cancelled ctx).
func Verify(ctx context.Context, s VerifySource, opts VerifyOptions) (*VerifyReport, error) {
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	rep := &VerifyReport{ByKind: map[string]int{}}
	sink := &findingSink{rep: rep, on: opts.OnFinding}
	emit := sink.emit
	a := NewAuditor(s)
	if err := verifyPolicies(ctx, s, a, opts.Program, rep, emit); err != nil {
		return nil, err
	}

	programs := []string{opts.Program}
	if opts.Program == "" {
		var err error
		if programs, err = s.DecisionPrograms(ctx); err != nil {
			return nil, err
		}
	}
	for _, prog := range programs {
		if err := verifyOrders(ctx, s, a, prog, opts.Workers, rep, emit); err != nil {
			return nil, err
		}
	}

	if err := verifyPartitions(ctx, s, opts, sink); err != nil {
		return nil, err
	}
	return rep, nil
}

// findingSink counts each finding in the report (and in the partition being walked, if any)
// and hands it on.
type findingSink struct {
	rep  *VerifyReport
	part *PartitionReport // the partition being walked; nil outside the partition walk
	on   func(Finding)    // nil: counted only
}

func (k *findingSink) emit(f Finding) {
	k.rep.Findings++
	k.rep.ByKind[f.Kind]++
	if k.part != nil {
		k.part.Findings++
		if k.part.First == nil {
			ff := f
			k.part.First = &ff
		}
	}
	if k.on != nil {
		k.on(f)
	}
}

// verifyPolicies checks every stored policy version of program ("" for all) against its digest
// and that it still compiles.
func verifyPolicies(ctx context.Context, s VerifySource, a *Auditor, program string, rep *VerifyReport, emit func(Finding)) error {
	policies, err := s.PolicyVersions(ctx, program)
	if err != nil {
		return err
	}
	for _, sp := range policies {
		rep.Policies++
		if _, _, err := a.Policy(ctx, sp.Program, sp.Version); err != nil {
			var re *RecheckError
			if !errors.As(err, &re) {
				return err
			}
			emit(Finding{Kind: FindingPolicy, Reason: re.Reason, Program: sp.Program, Leaf: -1, Detail: re.Msg})
		}
	}
	return nil
}

// verifyPartitions walks every partition's chain, in partition order, against the signed
// checkpoints in opts: the partitions with a row, and those only a checkpoint names.
func verifyPartitions(ctx context.Context, s VerifySource, opts VerifyOptions, sink *findingSink) error {
	rep := sink.rep
	signed, err := openCheckpoints(opts, rep, sink.emit)
	if err != nil {
		return err
	}
	parts, err := s.Partitions(ctx)
	if err != nil {
		return err
	}
	for p := range signed { // a partition only checkpoints name: every row of it is gone
		if !slices.Contains(parts, p) {
			parts = append(parts, p)
		}
	}
	sort.Ints(parts)
	heads, err := s.PartitionHeads(ctx)
	if err != nil {
		return err
	}
	defer func() { sink.part = nil }()
	for _, p := range parts {
		rep.Partitions = append(rep.Partitions, PartitionReport{Partition: p})
		part := &rep.Partitions[len(rep.Partitions)-1]
		sink.part = part
		for _, h := range heads {
			if h.Partition == p {
				part.Head, part.HasHead = h, true
			}
		}
		if err := verifyPartition(ctx, s, part, signed[p], sink.emit); err != nil {
			return err
		}
		rep.Checkpointed += part.checked
	}
	return nil
}

// VerifySource is what Verify reads: Source, and the store's rows in the orders Verify walks them.
// adapters/store implements it.
type VerifySource interface {
	Source
	// PolicyVersions returns every stored policy version of a program ("" for every program).
	PolicyVersions(ctx context.Context, program string) ([]StoredPolicy, error)
	// DecisionPrograms returns, sorted, every program with a stored decision.
	DecisionPrograms(ctx context.Context) ([]string, error)
	// OrderGroups calls fn with each order of the program, by order id: its decisions in the
	// order they were made (with their events and recorded inputs, columns as stored), its
	// ledger entries (by decision) and its state. An order with ledger entries or a state but
	// no decision comes too.
	OrderGroups(ctx context.Context, program string, fn func(*OrderGroup) error) error
	// Partitions returns the partitions with a head, a batch or a leaf; PartitionHeads their heads.
	Partitions(ctx context.Context) ([]int, error)
	PartitionHeads(ctx context.Context) ([]engine.PartitionHead, error)
	// Batches yields a partition's batch rows by sequence; Leaves its decisions' and dead
	// letters' leaves by batch and leaf index.
	Batches(ctx context.Context, partition int) iter.Seq2[BatchRow, error]
	Leaves(ctx context.Context, partition int) iter.Seq2[LeafRow, error]
}

// OrderGroup is one order as stored: its decisions and ledger entries.
type OrderGroup struct {
	Program, OrderID string
	Rows             []Row
	Ledger           []StoredLedgerEntry
}

// Row is one stored decision as Verify checks it: its columns as stored (Text: unparsed, so a
// column that no longer parses is a finding), its event (nil when none is stored) and its
// recorded affiliate.* inputs (nil when none).
type Row struct {
	Decision  StoredDecision // identity, place and the columns that always parse
	Text      StoredText
	Event     *StoredEvent
	Affiliate *engine.AffiliateMonth
	State     StoredState
}

// StoredLedgerEntry is a ledger row as Verify compares it (amount as stored text).
type StoredLedgerEntry struct {
	ID, DecisionID                      int64
	Kind, AffiliateID, Currency, Amount string
	ApproveAt                           time.Time
}

// StoredState is the order's state a decision's row holds, as Verify compares it: what its
// order's later decisions and its affiliate's month figures are read from.
type StoredState struct {
	Current    bool // it became the order's current decision
	HasPin     bool // the order's pin after it
	PinVersion int64
	PinDigest  string
	Prev       int64  // the order's decision before it (0: none)
	Month      string // the month of its order's placed_at
}

// BatchRow is a batch row as stored.
type BatchRow struct {
	Seq, Epoch, Leaves, FirstStreamSeq, LastStreamSeq int64
	Prev, Root, Hash                                  string
}

// LeafRow is one leaf of a partition as stored: a decision's, or a dead letter's with the
// columns its leaf covers.
type LeafRow struct {
	BatchSeq, Leaf, ID        int64
	Hash                      string
	Dead                      bool
	EventID, Program, OrderID string
	StreamSeq                 int64
	Raw                       []byte
	Kind, Reason              string
}

// --- order by order ---

// checkedGroup is an order group with what checkOrder found.
type checkedGroup struct {
	*OrderGroup
	findings   []Finding
	reproduced int64
	done       chan struct{}
}

func verifyOrders(ctx context.Context, s VerifySource, a *Auditor, program string, workers int, rep *VerifyReport, emit func(Finding)) error {
	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan *checkedGroup, 4*workers)
	ordered := make(chan *checkedGroup, 64*workers)
	g.Go(func() error {
		defer close(jobs)
		defer close(ordered)
		return s.OrderGroups(gctx, program, func(g *OrderGroup) error {
			og := &checkedGroup{OrderGroup: g, done: make(chan struct{})}
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
			rep.Decisions += int64(len(og.Rows))
			rep.Reproduced += og.reproduced
			for _, f := range og.findings {
				emit(f)
			}
		}
		return nil
	})
	return g.Wait()
}

// checkOrder decides the order's decisions again, in the order they were made, and books them
// again (until one cannot be decided again), recording in og.findings what differs from the
// stored rows: columns, leaf hash, order state and ledger entries, and ledger entries that
// name none of the order's decisions.
func checkOrder(ctx context.Context, a *Auditor, og *checkedGroup) error {
	book := engine.NewOrderBook()
	bookable := true
	var prev int64 // the decision before, in the order they were made
	ledgerOf := map[int64][]StoredLedgerEntry{}
	for _, l := range og.Ledger {
		ledgerOf[l.DecisionID] = append(ledgerOf[l.DecisionID], l)
	}
	for i := range og.Rows {
		r := &og.Rows[i]
		d := &r.Decision
		f := og.place(r)
		o, again, _, rcErr, err := a.rerun(ctx, d, r.Event, r.Affiliate, false)
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
		diffs := diffText(&r.Text, again, r.Event)
		var booked []engine.LedgerEntry
		leafOK := false
		if bookable {
			if booked, leafOK, err = og.bookAgain(book, r, o, again, prev); err != nil {
				return err
			}
		}
		prev = d.ID
		if og.judge(f, d, diffs, leafOK, bookable) {
			og.reproduced++
		}
		if bookable {
			if lf := ledgerDiffs(booked, ledgerOf[d.ID]); len(lf) > 0 {
				g := og.place(r)
				g.Kind, g.Diffs = FindingLedger, lf
				g.Detail = fmt.Sprintf("the ledger entries stored for decision %d are not what it books: they were changed, deleted or added after it was stored", d.ID)
				og.findings = append(og.findings, g)
			}
		}
		delete(ledgerOf, d.ID)
	}
	for id, ls := range ledgerOf {
		og.findings = append(og.findings, Finding{Kind: FindingLedger, Program: og.Program, Leaf: -1, OrderID: og.OrderID, DecisionID: id,
			Detail: fmt.Sprintf("ledger entries %s name decision %d, which is not among the order's stored decisions: it was deleted, or they were added outside the pipeline",
				ledgerIDs(ls), id)})
	}
	return nil
}

// place is a finding placed at row r of the order.
func (og *checkedGroup) place(r *Row) Finding {
	d := &r.Decision
	return Finding{Program: og.Program, Partition: d.Partition, BatchSeq: d.BatchSeq, Leaf: d.Leaf, DecisionID: d.ID, EventID: d.EventID, OrderID: og.OrderID}
}

// bookAgain books row r's decision decided again (again, for order o) on the order's book and
// returns the ledger entries it books and whether the row's leaf hash covers them; a row whose
// order-state columns are not what booking leaves (prev: the decision before it) is a finding.
func (og *checkedGroup) bookAgain(book *engine.OrderBook, r *Row, o *engine.Order, again *engine.Decision, prev int64) ([]engine.LedgerEntry, bool, error) {
	d := &r.Decision
	res := engine.Result{Event: engine.Event{ID: r.Event.EventID, StreamSeq: r.Event.StreamSeq}, Order: o, Decision: again}
	entries, st, err := book.Book(&res)
	if err != nil {
		return nil, false, err
	}
	leafOK := engine.LeafHash(engine.AppendDecisionLeaf(nil, r.Event.EventID, r.Event.StreamSeq, r.Event.Raw, again, entries, st)).String() == d.LeafHash
	if sd := stateDiffs(&r.State, st, prev, engine.MonthOf(o.PlacedAt)); len(sd) > 0 {
		g := og.place(r)
		g.Kind, g.Diffs = FindingOrderState, sd
		g.Detail = fmt.Sprintf("decision %d's order-state columns are not what the order's decisions leave: they were changed after it was stored", d.ID)
		og.findings = append(og.findings, g)
	}
	return entries, leafOK, nil
}

// judge records f, placed at decision d, when the re-run's column diffs and the leaf hash
// (leafOK, known when bookable) show the row altered, not reproduced or its hash mismatched,
// and reports whether the row was reproduced exactly.
func (og *checkedGroup) judge(f Finding, d *StoredDecision, diffs []FieldDiff, leafOK, bookable bool) bool {
	switch {
	case len(diffs) > 0 && leafOK:
		f.Kind = FindingAltered
		f.Detail = fmt.Sprintf("the stored row differs from the re-run with %s v%d, whose content its leaf hash covers: the row was changed after it was stored",
			og.Program, d.PolicyVersion)
	case len(diffs) > 0:
		f.Kind = FindingNotReproduced
		f.Detail = fmt.Sprintf("deciding event %s again with %s v%d gives another decision, and the row's leaf hash covers neither: policy or engine drift, or a forged row",
			d.EventID, og.Program, d.PolicyVersion)
	case bookable && !leafOK:
		f.Kind = FindingLeafMismatch
		f.Detail = fmt.Sprintf("the row reproduces, but its leaf hash %s is not the leaf of its event, its decision and what it books: the hash was changed, or the row was forged or moved",
			short(d.LeafHash))
	}
	if f.Kind != "" {
		f.Diffs = diffs
		og.findings = append(og.findings, f)
		return false
	}
	return bookable
}

func ledgerIDs(ls []StoredLedgerEntry) string {
	ids := make([]string, len(ls))
	for i, l := range ls {
		ids[i] = strconv.FormatInt(l.ID, 10)
	}
	return strings.Join(ids, ", ")
}

func ledgerDiffs(want []engine.LedgerEntry, got []StoredLedgerEntry) []FieldDiff {
	text := func(kind, aff, cur, amount string, at time.Time) string {
		return fmt.Sprintf("%s %s %s %s approve %s", kind, aff, cur, amount, at.UTC().Format(time.RFC3339))
	}
	var out []FieldDiff
	for i := 0; i < max(len(want), len(got)); i++ {
		var w, g string
		if i < len(want) {
			e := &want[i]
			w = text(string(e.Kind), engine.StorableText(e.AffiliateID), e.Currency, e.Amount.Text('f'), e.ApproveAt)
		}
		if i < len(got) {
			l := &got[i]
			amount := l.Amount
			var v apd.Decimal
			if _, _, err := v.SetString(amount); err == nil {
				amount = v.Text('f')
			}
			g = text(l.Kind, l.AffiliateID, l.Currency, amount, l.ApproveAt)
		}
		if w != g {
			out = append(out, FieldDiff{Field: "ledger[" + strconv.Itoa(i) + "]", Stored: g, Rerun: w})
		}
	}
	return out
}

// stateDiffs compares a decision's stored order-state columns with what booking the order's
// decisions again gives: its state change, the decision before it and its month.
func stateDiffs(got *StoredState, want engine.StateChange, prev int64, month string) []FieldDiff {
	var out []FieldDiff
	cmp := func(field, stored, rerun string) {
		if stored != rerun {
			out = append(out, FieldDiff{Field: field, Stored: stored, Rerun: rerun})
		}
	}
	cmp("is_current", strconv.FormatBool(got.Current), strconv.FormatBool(want.Current))
	gotPin, wantPin := "none", "none"
	if got.HasPin {
		gotPin = fmt.Sprintf("v%d %s", got.PinVersion, got.PinDigest)
	}
	if want.Pin != nil {
		wantPin = fmt.Sprintf("v%d %s", want.Pin.Version, want.Pin.Digest)
	}
	cmp("pin", gotPin, wantPin)
	cmp("prev_id", strconv.FormatInt(got.Prev, 10), strconv.FormatInt(prev, 10))
	cmp("month", got.Month, month)
	return out
}

// --- partition by partition ---

// verifyPartition walks one partition's batches by sequence and its leaves by batch and index
// together: each batch row's place in the sequence, its link and its hash, then its leaves and
// root, then the signed checkpoints up to it; at the end the leaves in no batch, the signed
// batches beyond the last and the partition's head.
func verifyPartition(ctx context.Context, s VerifySource, rep *PartitionReport, signed []signedHead, emit func(Finding)) error {
	p := rep.Partition
	check := newSignedCheck(rep, signed, emit)
	nextLeaf, stopLeaves := iter.Pull2(s.Leaves(ctx, p))
	defer stopLeaves()
	w := &partitionWalk{p: p, rep: rep, emit: emit, nextLeaf: nextLeaf}
	if err := w.advance(); err != nil {
		return err
	}
	expect, prevHash := int64(1), engine.GenesisHash.String()
	for b, err := range s.Batches(ctx, p) {
		if err != nil {
			return fmt.Errorf("reading the batches of partition %d: %w", p, err)
		}
		rep.Batches++
		if err := w.strays(b.Seq); err != nil {
			return err
		}
		w.checkBatchRow(b, expect, prevHash)
		if err := w.checkLeaves(b); err != nil {
			return err
		}
		check.batch(b)
		if b.Seq >= expect {
			expect = b.Seq + 1
		}
		prevHash = b.Hash
		rep.LastSeq, rep.LastHash = uint64(b.Seq), b.Hash
	}
	if err := w.strays(1 << 62); err != nil {
		return err
	}
	check.end()
	w.checkHead()
	return nil
}

// partitionWalk is what verifyPartition's steps share: the partition, its report, where
// findings go and the leaves, pulled one at a time in batch and leaf order.
type partitionWalk struct {
	p        int
	rep      *PartitionReport
	emit     func(Finding)
	nextLeaf func() (LeafRow, error, bool)
	next     *LeafRow // the next leaf not yet taken; nil when there are no more
}

// advance takes the next leaf into w.next (nil at the end).
func (w *partitionWalk) advance() error {
	w.next = nil
	l, err, ok := w.nextLeaf()
	if !ok {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the leaves of partition %d: %w", w.p, err)
	}
	w.next = &l
	return nil
}

// at is a finding placed at leaf l.
func (w *partitionWalk) at(l *LeafRow) Finding {
	f := Finding{Program: l.Program, Partition: w.p, BatchSeq: uint64(l.BatchSeq), Leaf: int(l.Leaf), EventID: l.EventID, OrderID: l.OrderID}
	if !l.Dead {
		f.DecisionID = l.ID
	}
	return f
}

// leafName names leaf l's row for messages.
func leafName(l *LeafRow) string {
	if l.Dead {
		return fmt.Sprintf("dead letter %d", l.ID)
	}
	return fmt.Sprintf("decision %d", l.ID)
}

// strays reports leaves before batch seq that belong to no batch row.
func (w *partitionWalk) strays(seq int64) error {
	for w.next != nil && w.next.BatchSeq < seq {
		f := w.at(w.next)
		f.Kind = FindingInserted
		f.Detail = fmt.Sprintf("%s names batch %d of partition %d, which has no batch row: the row was put in, or its batch deleted", leafName(w.next), w.next.BatchSeq, w.p)
		w.emit(f)
		w.rep.Leaves++
		if err := w.advance(); err != nil {
			return err
		}
	}
	return nil
}

// checkBatchRow checks batch row b's place in the sequence (expect is the next sequence),
// its link to the batch before (whose hash is prevHash) and its hash over its header.
func (w *partitionWalk) checkBatchRow(b BatchRow, expect int64, prevHash string) {
	p := w.p
	batch := Finding{Partition: p, BatchSeq: uint64(b.Seq), Leaf: -1}
	switch {
	case b.Seq > expect:
		f := batch
		f.Kind, f.BatchSeq = FindingMissing, uint64(expect)
		f.Detail = fmt.Sprintf("batches %d–%d of partition %d are missing before batch %d: they were deleted", expect, b.Seq-1, p, b.Seq)
		w.emit(f)
	case b.Seq < expect:
		f := batch
		f.Kind = FindingInserted
		f.Detail = fmt.Sprintf("batch %d is out of sequence (the next is %d)", b.Seq, expect)
		w.emit(f)
	}
	if b.Seq == expect && b.Prev != prevHash {
		f := batch
		f.Kind = FindingBrokenLink
		f.Detail = fmt.Sprintf("prev_hash %s is not the hash %s of batch %d: batches were swapped, replaced or put in", short(b.Prev), short(prevHash), b.Seq-1)
		w.emit(f)
	}
	hdr := engine.BatchHeader{Partition: p, Seq: uint64(b.Seq), Epoch: uint64(b.Epoch), Leaves: int(b.Leaves),
		FirstStreamSeq: uint64(b.FirstStreamSeq), LastStreamSeq: uint64(b.LastStreamSeq)}
	var err1, err2 error
	hdr.Prev, err1 = engine.ParseHash(b.Prev)
	hdr.Root, err2 = engine.ParseHash(b.Root)
	if h := hdr.Hash(); err1 != nil || err2 != nil || h.String() != b.Hash {
		f := batch
		f.Kind = FindingBatchHash
		f.Detail = fmt.Sprintf("the batch's hash %s is not the hash of its header: the batch row was edited", short(b.Hash))
		w.emit(f)
	}
}

// checkLeaves takes batch b's leaves: each in range and none missing, each dead letter's hash
// over its columns, and the batch's root over their stored hashes.
func (w *partitionWalk) checkLeaves(b BatchRow) error {
	var leaves []engine.Hash
	want := int64(0)
	for w.next != nil && w.next.BatchSeq == b.Seq {
		l := w.next
		w.rep.Leaves++
		f := w.at(l)
		switch {
		case l.Leaf >= b.Leaves:
			f.Kind = FindingInserted
			f.Detail = fmt.Sprintf("%s is leaf %d of a batch of %d leaves: the row was put in", leafName(l), l.Leaf, b.Leaves)
			w.emit(f)
		case l.Leaf > want:
			f.Kind, f.Leaf, f.DecisionID, f.EventID, f.OrderID = FindingMissing, int(want), 0, "", ""
			f.Detail = leafRange(want, l.Leaf-1, b.Seq, b.Leaves)
			w.emit(f)
		}
		if l.Dead {
			w.checkDeadLetter(l)
		}
		if h, err := engine.ParseHash(l.Hash); err == nil {
			leaves = append(leaves, h)
		}
		want = l.Leaf + 1
		if err := w.advance(); err != nil {
			return err
		}
	}
	batch := Finding{Partition: w.p, BatchSeq: uint64(b.Seq), Leaf: -1}
	if want < b.Leaves {
		f := batch
		f.Kind, f.Leaf = FindingMissing, int(want)
		f.Detail = leafRange(want, b.Leaves-1, b.Seq, b.Leaves)
		w.emit(f)
	}
	if root := engine.MerkleRoot(leaves); root.String() != b.Root {
		f := batch
		f.Kind = FindingRootMismatch
		f.Detail = fmt.Sprintf("the batch's %d stored leaves hash to %s, not to its root %s: a leaf was removed, added, replaced or moved", len(leaves), short(root.String()), short(b.Root))
		w.emit(f)
	}
	return nil
}

// checkDeadLetter checks dead letter l's leaf hash against the columns it covers.
func (w *partitionWalk) checkDeadLetter(l *LeafRow) {
	got := engine.LeafHash(engine.AppendDeadLetterLeaf(nil, l.EventID, uint64(l.StreamSeq), l.Raw, l.Kind, l.Reason)).String()
	if got != l.Hash {
		f := w.at(l)
		f.Kind = FindingLeafMismatch
		f.Detail = fmt.Sprintf("dead letter %d's leaf hash %s is not the leaf of its stored columns: the row was changed", l.ID, short(l.Hash))
		w.emit(f)
	}
}

// checkHead holds the partition's stored head against its last stored batch.
func (w *partitionWalk) checkHead() {
	p, rep, emit := w.p, w.rep, w.emit
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
	case rep.LastSeq == 0 && rep.Head.Hash == engine.GenesisHash:
		// claimed, and no batch written yet: the head is the genesis
	case rep.LastHash != rep.Head.Hash.String():
		emit(Finding{Kind: FindingHeadMismatch, Partition: p, BatchSeq: rep.LastSeq, Leaf: -1,
			Detail: fmt.Sprintf("the partition's head hash %s is not the last batch's hash %s", short(rep.Head.Hash.String()), short(rep.LastHash))})
	}
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

// --- against signed checkpoints ---

// signedHead is a batch a verified checkpoint names.
type signedHead struct {
	Seq   uint64
	Hash  string
	Where string // the checkpoint: its place in its log or stream, and its time
}

// openCheckpoints verifies the checkpoints' signatures (a bad one is a finding and its heads are
// not used) and returns, per partition, the batches they name by sequence, each once. Two good
// checkpoints naming one batch with two hashes mean the key signed two histories: both are kept,
// and the stored batch can match at most one of them.
func openCheckpoints(opts VerifyOptions, rep *VerifyReport, emit func(Finding)) (map[int][]signedHead, error) {
	out := map[int][]signedHead{}
	if len(opts.Checkpoints) == 0 {
		return out, nil
	}
	if opts.CheckpointKey == nil {
		return nil, errors.New("verifying against checkpoints needs the key that signed them")
	}
	opened, refused := OpenCheckpoints(opts.Checkpoints, opts.CheckpointKey)
	for _, r := range refused {
		emit(Finding{Kind: FindingCheckpointSignature, Leaf: -1,
			Detail: fmt.Sprintf("the checkpoint at %s is refused: %v; its heads are not used", r.Where, r.Err)})
	}
	rep.Checkpoints = len(opened)
	type key struct {
		part int
		seq  uint64
		hash string
	}
	seen := map[key]bool{}
	for _, cp := range opened {
		where := cp.Where + " (" + cp.Time.Format(time.RFC3339) + ")"
		for _, h := range cp.Heads {
			k := key{h.Partition, h.Seq, h.Hash.String()}
			if !seen[k] {
				seen[k] = true
				out[h.Partition] = append(out[h.Partition], signedHead{Seq: h.Seq, Hash: k.hash, Where: where})
			}
		}
	}
	for p := range out {
		sort.SliceStable(out[p], func(i, j int) bool { return out[p][i].Seq < out[p][j].Seq })
	}
	return out, nil
}

// signedCheck holds a partition's stored batches, taken in sequence order, against the batches
// its checkpoints sign: the first signed batch stored with another hash, and the first signed
// batch beyond the last stored one, are findings (one each: a chain rewritten or cut from there on
// differs at every later signed batch too).
type signedCheck struct {
	rep        *PartitionReport
	signed     []signedHead // by sequence, not yet reached
	emit       func(Finding)
	last       int64 // the last stored batch seen
	mismatched bool
}

func newSignedCheck(rep *PartitionReport, signed []signedHead, emit func(Finding)) *signedCheck {
	if len(signed) > 0 {
		rep.Signed = signed[len(signed)-1].Seq
	}
	return &signedCheck{rep: rep, signed: signed, emit: emit}
}

// batch checks the signed batches up to stored batch b. A signed batch below b that is not
// stored is a gap the chain check reports (missing).
func (c *signedCheck) batch(b BatchRow) {
	for len(c.signed) > 0 && int64(c.signed[0].Seq) <= b.Seq {
		h := c.signed[0]
		c.signed = c.signed[1:]
		c.rep.checked++
		if int64(h.Seq) == b.Seq && h.Hash != b.Hash && !c.mismatched {
			c.mismatched = true
			c.emit(Finding{Kind: FindingCheckpointMismatch, Partition: c.rep.Partition, BatchSeq: h.Seq, Leaf: -1,
				Detail: fmt.Sprintf("batch %d of partition %d is stored with hash %s, but the checkpoint at %s signed %s: the chain was rewritten from this batch or before",
					h.Seq, c.rep.Partition, short(b.Hash), h.Where, short(h.Hash))})
		}
	}
	c.last = b.Seq
}

// end reports a signed batch beyond the last stored one: the chain was cut back.
func (c *signedCheck) end() {
	if len(c.signed) == 0 {
		return
	}
	h := c.signed[0]
	c.rep.checked += len(c.signed)
	c.emit(Finding{Kind: FindingCheckpointCut, Partition: c.rep.Partition, BatchSeq: h.Seq, Leaf: -1,
		Detail: fmt.Sprintf("the checkpoint at %s signed batch %d of partition %d (hash %s), but the partition's last stored batch is %d: the chain was cut back",
			h.Where, h.Seq, c.rep.Partition, short(h.Hash), c.last)})
}
