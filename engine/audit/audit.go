package audit

// What a leaf proves. Each decision is stored with the hash of its Merkle leaf
// (engine.AppendDecisionLeaf: the event's identity and digest, the decision in canonical form,
// the ledger entries it booked and its change to the order's state); each batch with the root of
// its leaves, chained per partition (engine/chain.go). Audit recomputes a leaf from the sources of
// truth only — the stored order event and the stored policy source (its digest checked) — by
// deciding the event again, and the ledger entries and state change by booking the order's
// decisions again in the order they were made; it never hashes the decision row's own columns. So:
//
//   - a row whose columns differ from the re-run while its leaf hash matches the re-run was changed
//     after it was stored ("altered": the leaf is the witness of the original content);
//   - a row whose columns reproduce but whose leaf hash does not was given another hash, or forged;
//   - a row where neither matches does not reproduce: engine or policy drift, or a forgery.
//
// Columns compared field by field (each difference named, stored vs re-run): order_id, program,
// affiliate_id, policy_version, policy_digest, qualified, failed_rules, rate_rule, rate, flat,
// base, commission, currency, rounding, every trace outcome, env, and the decision's stream_seq
// against its event's. A field-by-field comparison, rather than one byte comparison of canonical
// forms, tells an auditor which value changed; the leaf hash covers the canonical form.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// ErrNotFound is what a Source's reads match (errors.Is) when no row has the key.
var ErrNotFound = errors.New("not found")

// ErrCannotRecheck is matched (errors.Is) by every *RecheckError: a stored decision could not be
// decided again.
var ErrCannotRecheck = errors.New("decision cannot be re-run")

// ErrPolicyAltered is matched (errors.Is) by a *RecheckError whose stored policy source no longer
// has the digest it was stored with.
var ErrPolicyAltered = errors.New("stored policy source does not match its digest")

// Reasons a stored decision cannot be re-run (RecheckError.Reason).
const (
	ReasonPolicyMissing = "policy_missing" // its policy version is not in policy_versions
	ReasonPolicyAltered = "policy_altered" // the stored source's digest is not the recorded one
	ReasonPolicyInvalid = "policy_invalid" // the stored source no longer compiles, or names another version
	ReasonEventMissing  = "event_missing"  // no order event with its event id is stored
	ReasonEventInvalid  = "event_invalid"  // the stored event no longer decodes as an order
	ReasonDecideFailed  = "decide_failed"  // deciding it again failed (a rule error, no rate rule…)
)

// RecheckError says why a stored decision could not be decided again. It matches
// ErrCannotRecheck, and ErrPolicyAltered when Reason is ReasonPolicyAltered.
type RecheckError struct {
	Reason string // one of the Reason… constants
	Msg    string
}

func (e *RecheckError) Error() string { return e.Msg }

// Is matches ErrCannotRecheck, and ErrPolicyAltered for an altered policy.
func (e *RecheckError) Is(target error) bool {
	return target == ErrCannotRecheck || target == ErrPolicyAltered && e.Reason == ReasonPolicyAltered
}

func recheckErr(reason, format string, args ...any) *RecheckError {
	return &RecheckError{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// Source is what re-running a stored decision reads (adapters/store implements it). Its methods
// must be safe for concurrent use.
type Source interface {
	// PolicyVersion returns a stored policy version; an error matching ErrNotFound when none.
	PolicyVersion(ctx context.Context, program string, version int) (StoredPolicy, error)
	// Event returns a stored order event by its event id; an error matching ErrNotFound when none.
	Event(ctx context.Context, eventID string) (StoredEvent, error)
	// DecisionInputs returns what a decision was decided with besides its event and policy
	// version (the order's pin, the affiliate.* inputs); the zero value when nothing.
	DecisionInputs(ctx context.Context, decisionID int64) (DecisionInputs, error)
	// DecisionsByOrder returns an order's decisions, newest first.
	DecisionsByOrder(ctx context.Context, program, orderID string) ([]StoredDecision, error)
	// BatchLeaves returns a batch and its stored leaf hashes; ErrNotFound when none.
	BatchLeaves(ctx context.Context, partition int, seq uint64) (StoredBatch, error)
}

// StoredEvent is one stored order event.
type StoredEvent struct {
	ID          int64 // the row id: insertion order
	EventID     string
	Program     string
	OrderID     string
	AffiliateID string
	Subject     string
	StreamSeq   uint64
	Raw         []byte // the order JSON exactly as received
	PlacedAt    time.Time
	ReceivedAt  time.Time
}

// TraceEntry is what one rule of the deciding policy said.
type TraceEntry struct {
	Stage   string // "qualify" or "rate"
	Rule    string
	Outcome string // pass, fail, match, no_match or not_evaluated
}

// StoredDecision is one stored decision, with its place in its partition's chain of batches.
type StoredDecision struct {
	ID             int64
	EventID        string
	OrderID        string
	Program        string
	AffiliateID    string
	engine.Verdict // what it said: version, outcome, money
	Trace          []TraceEntry
	Env            string
	StreamSeq      uint64
	DecidedAt      time.Time
	Partition      int
	BatchSeq       uint64
	Leaf           int    // its index in the batch's Merkle tree
	LeafHash       string // engine.LeafHash of its leaf bytes, hex
	Current        bool   // the order's current decision: the one its state (and payouts) follow
}

// StoredPolicy is a policy version as first used.
type StoredPolicy struct {
	Program       string
	Version       int
	Digest        string
	Source        []byte // the file's bytes
	File          string
	EffectiveFrom time.Time
	FirstUsedAt   time.Time
}

// DecisionInputs is what a decision was decided with besides its event and policy version.
type DecisionInputs struct {
	DecisionID int64
	// Pin is the order's pin when the event was decided (nil: none yet); Pinned says the decision
	// was made with it rather than with the version in force.
	Pin    *engine.Pin
	Pinned bool
	// Affiliate is the affiliate.* inputs, when the policy read them (nil otherwise). To decide the
	// event again, set the decoded order's Affiliate to it.
	Affiliate *engine.AffiliateMonth
}

// --- re-running a stored decision ---

// FieldDiff is one stored field that differs from the re-run decision.
type FieldDiff struct {
	Field  string // the column, or trace[rule id] for one rule's outcome
	Stored string
	Rerun  string
}

// Recheck is what deciding a stored decision's event again, with its recorded policy version,
// found.
type Recheck struct {
	Again *engine.Decision // nil when Err is set
	// Diffs are the fields where the stored row differs from Again; empty when it reproduces.
	Diffs []FieldDiff
	// LeafOK: the row's leaf hash is the leaf of its event, Again, and what Again booked and did to
	// its order's state (Ledger, State) when the order's decisions are booked again in order.
	LeafOK bool
	// Ledger and State are what the re-run booked: the ledger entries and state change its leaf covers.
	Ledger []engine.LedgerEntry
	State  engine.StateChange
	// LeafErr says why the leaf could not be recomputed (an earlier decision of the order
	// could not be re-run); nil otherwise.
	LeafErr error
	// Err (a *RecheckError) is why the decision could not be decided again.
	Err error
}

// Reproduced reports whether the decision was decided again to exactly the stored row.
func (r *Recheck) Reproduced() bool { return r.Err == nil && len(r.Diffs) == 0 }

// Auditor re-runs stored decisions with their recorded policy versions, compiling each stored
// policy source once (after checking its digest). It is safe for concurrent use.
type Auditor struct {
	src Source
	eng *engine.Engine

	mu       sync.Mutex
	policies map[string]*auditPolicy // policyKey → the loaded version, or why it cannot be used
}

type auditPolicy struct {
	stored StoredPolicy
	p      *rules.Policy
	err    error
}

// NewAuditor returns an auditor reading from src.
func NewAuditor(src Source) *Auditor {
	empty, _ := rules.NewSet(nil)
	return &Auditor{src: src, eng: engine.New(empty), policies: map[string]*auditPolicy{}}
}

// Policy returns a stored policy version compiled from its stored source, after checking that
// the source still has the recorded digest. A missing, altered or no longer compiling version
// gives a *RecheckError (remembered: asking again gives the same answer); a failed read gives
// the read's error (not remembered).
func (a *Auditor) Policy(ctx context.Context, program string, version int) (*rules.Policy, StoredPolicy, error) {
	key := policyKey(program, version)
	a.mu.Lock()
	defer a.mu.Unlock()
	if ap, ok := a.policies[key]; ok {
		return ap.p, ap.stored, ap.err
	}
	sp, err := a.src.PolicyVersion(ctx, program, version)
	if errors.Is(err, ErrNotFound) {
		err = recheckErr(ReasonPolicyMissing, "policy %s v%d is not stored", program, version)
	}
	if err != nil {
		var re *RecheckError
		if errors.As(err, &re) {
			a.policies[key] = &auditPolicy{err: err}
		}
		return nil, sp, err
	}
	ap := &auditPolicy{stored: sp}
	a.policies[key] = ap
	if got := rules.Digest(sp.Source); got != sp.Digest {
		ap.err = recheckErr(ReasonPolicyAltered, "policy %s v%d: the stored source has digest %s, but it was stored with digest %s: the source was altered after it was used",
			program, version, got, sp.Digest)
		return nil, sp, ap.err
	}
	p, problems := rules.Compile(sp.File, sp.Source)
	switch {
	case p == nil:
		ap.err = recheckErr(ReasonPolicyInvalid, "policy %s v%d (%s): the stored source no longer compiles:\n%v", program, version, sp.File, problems)
	case p.Program != program || p.Version != version:
		ap.err = recheckErr(ReasonPolicyInvalid, "policy %s v%d: the stored source is of %s v%d", program, version, p.Program, p.Version)
	default:
		ap.p = p
	}
	return ap.p, sp, ap.err
}

// Recheck decides a stored decision's event (ev; nil when it is not stored) again with the
// decision's recorded policy version and compares. A failed read of the policy is returned as
// the error; everything the audit should report is in the Recheck.
func (a *Auditor) Recheck(ctx context.Context, d *StoredDecision, ev *StoredEvent) (Recheck, error) {
	in, err := a.src.DecisionInputs(ctx, d.ID)
	if err != nil {
		return Recheck{}, err
	}
	rc, _, err := a.recheck(ctx, d, textOf(d), ev, in.Affiliate, false)
	if err == nil && rc.Err == nil {
		err = a.checkLeaf(ctx, d, ev, &rc)
	}
	return rc, err
}

// recheck decides d's event again, with the affiliate.* inputs recorded for it (nil: none); t is
// d's checked columns as stored. The leaf is checked separately (checkLeaf): it needs the order's
// earlier decisions.
func (a *Auditor) recheck(ctx context.Context, d *StoredDecision, t *StoredText, ev *StoredEvent, aff *engine.AffiliateMonth, explain bool) (Recheck, *engine.Explanation, error) {
	o, again, x, rcErr, err := a.rerun(ctx, d, ev, aff, explain)
	if err != nil || rcErr != nil {
		return Recheck{Err: rcErr}, nil, err
	}
	_ = o
	return Recheck{Again: again, Diffs: diffText(t, again, ev)}, x, nil
}

// rerun decides d's event again. rcErr (a *RecheckError) is why it could not be; err a failed read.
func (a *Auditor) rerun(ctx context.Context, d *StoredDecision, ev *StoredEvent, aff *engine.AffiliateMonth, explain bool) (
	o *engine.Order, again *engine.Decision, x *engine.Explanation, rcErr error, err error) {
	if ev == nil {
		return nil, nil, nil, recheckErr(ReasonEventMissing, "decision %d: its order event %s is not stored (the decision was inserted without one, or the event was deleted)",
			d.ID, d.EventID), nil
	}
	p, _, err := a.Policy(ctx, d.Program, d.PolicyVersion)
	if err != nil {
		if errors.Is(err, ErrCannotRecheck) {
			return nil, nil, nil, err, nil
		}
		return nil, nil, nil, nil, err
	}
	if o, err = engine.DecodeOrder(ev.Raw); err != nil {
		return nil, nil, nil, recheckErr(ReasonEventInvalid, "decision %d: its stored event %s no longer decodes: %v", d.ID, d.EventID, err), nil
	}
	if aff != nil {
		// What the affiliate had sold that month is history, not part of the event: the
		// decision recorded it (and its leaf covers it).
		o.Affiliate = *aff
	}
	if explain {
		if x, err = a.eng.Explain(ctx, p, o); err == nil {
			again = x.Decision
		}
	} else {
		again, err = a.eng.DecideWith(ctx, p, o)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, nil, nil, ctx.Err()
		}
		return nil, nil, nil, recheckErr(ReasonDecideFailed, "decision %d: deciding event %s again with %s v%d: %v", d.ID, d.EventID, d.Program, d.PolicyVersion, err), nil
	}
	return o, again, x, nil, nil
}

// checkLeaf books d's order again, decision by decision up to d (each decided again), and sets
// rc's Ledger, State and LeafOK (or LeafErr). rc.Again must be set.
func (a *Auditor) checkLeaf(ctx context.Context, d *StoredDecision, ev *StoredEvent, rc *Recheck) error {
	all, err := a.src.DecisionsByOrder(ctx, d.Program, d.OrderID)
	if err != nil {
		return err
	}
	book := engine.NewOrderBook()
	for i := len(all) - 1; i >= 0; i-- {
		x := &all[i]
		if x.ID > d.ID {
			continue
		}
		xev, again := ev, rc.Again
		if x.ID != d.ID {
			e, err := a.src.Event(ctx, x.EventID)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			in, err := a.src.DecisionInputs(ctx, x.ID)
			if err != nil {
				return err
			}
			var rcErr error
			_, again, _, rcErr, err = a.rerun(ctx, x, &e, in.Affiliate, false)
			if err != nil {
				return err
			}
			if rcErr != nil {
				rc.LeafErr = fmt.Errorf("decision %d of the same order, before this one, cannot be decided again: %w", x.ID, rcErr)
				return nil
			}
			xev = &e
		}
		o, err := engine.DecodeOrder(xev.Raw)
		if err != nil {
			rc.LeafErr = fmt.Errorf("decision %d's event no longer decodes: %w", x.ID, err)
			return nil
		}
		r := engine.Result{Event: engine.Event{ID: xev.EventID, StreamSeq: xev.StreamSeq}, Order: o, Decision: again}
		entries, st, err := book.Book(&r)
		if err != nil {
			rc.LeafErr = err
			return nil
		}
		if x.ID == d.ID {
			rc.Ledger, rc.State = entries, st
			rc.LeafOK = engine.LeafHash(engine.AppendDecisionLeaf(nil, ev.EventID, ev.StreamSeq, ev.Raw, again, entries, st)).String() == d.LeafHash
			return nil
		}
	}
	rc.LeafErr = fmt.Errorf("decision %d is not among its order's decisions", d.ID)
	return nil
}

// Explained is a stored decision with its re-run explanation.
type Explained struct {
	Decision StoredDecision
	Event    *StoredEvent // nil when it is not stored
	Policy   StoredPolicy // zero when it could not be read
	// Explanation is the re-run's: every rule's expression, outcome and inputs. Nil when the
	// decision could not be re-run (Recheck.Err).
	Explanation *engine.Explanation
	Recheck     Recheck
	// Inputs is what the decision was decided with besides its event and policy version: the
	// order's pin, the affiliate.* inputs.
	Inputs DecisionInputs
	// Inclusion is the decision's proof of inclusion in its batch's Merkle root.
	Inclusion *Inclusion
	// Checkpoint, when asked for (ProveInCheckpoint), continues the inclusion to the head a
	// signed checkpoint covers.
	Checkpoint *CheckpointProof
}

// Explain reads a stored decision's event and policy version and explains it by deciding it
// again (engine.Explain), comparing the result with the stored row. Only a failed read is an
// error; an unexplainable decision has Recheck.Err set.
func (a *Auditor) Explain(ctx context.Context, d StoredDecision) (Explained, error) {
	out := Explained{Decision: d}
	ev, err := a.src.Event(ctx, d.EventID)
	switch {
	case err == nil:
		out.Event = &ev
	case !errors.Is(err, ErrNotFound):
		return out, err
	}
	if _, sp, err := a.Policy(ctx, d.Program, d.PolicyVersion); err == nil || errors.Is(err, ErrCannotRecheck) {
		out.Policy = sp
	} else {
		return out, err
	}
	if out.Inputs, err = a.src.DecisionInputs(ctx, d.ID); err != nil {
		return out, err
	}
	if out.Recheck, out.Explanation, err = a.recheck(ctx, &out.Decision, textOf(&out.Decision), out.Event, out.Inputs.Affiliate, true); err != nil {
		return out, err
	}
	if out.Recheck.Err == nil {
		if err = a.checkLeaf(ctx, &out.Decision, out.Event, &out.Recheck); err != nil {
			return out, err
		}
	}
	out.Inclusion, err = a.inclusion(ctx, &out.Decision)
	return out, err
}

// StoredText is a stored decision's checked columns as text, as stored: what Diff compares with
// the re-run, column by column.
type StoredText struct {
	OrderID, Program, AffiliateID, PolicyVersion, PolicyDigest, Qualified, FailedRules, RateRule string
	Rate, Flat, Base, Commission, Currency, Rounding, Trace, Env, StreamSeq                      string
}

// NoFlat is the flat column of a decision whose rate rule pays no flat amount (NULL).
const NoFlat = "(none)"

func textOf(d *StoredDecision) *StoredText {
	t := &StoredText{
		OrderID: d.OrderID, Program: d.Program, AffiliateID: d.AffiliateID, PolicyVersion: strconv.Itoa(d.PolicyVersion),
		PolicyDigest: d.PolicyDigest, Qualified: strconv.FormatBool(d.Qualified), FailedRules: string(engine.AppendStrings(nil, d.FailedRules)),
		RateRule: d.RateRule, Rate: d.Rate.Text('f'), Flat: NoFlat, Base: d.Base.Text('f'), Commission: d.Commission.Text('f'),
		Currency: d.Currency, Rounding: d.Rounding, Env: d.Env, StreamSeq: strconv.FormatUint(d.StreamSeq, 10),
	}
	if d.HasFlat {
		t.Flat = d.Flat.Text('f')
	}
	b := []byte{'['}
	for i, e := range d.Trace {
		if i > 0 {
			b = append(b, ',')
		}
		b = engine.AppendStrings(b, []string{e.Stage, e.Rule, e.Outcome})
	}
	t.Trace = string(append(b, ']'))
	return t
}

// Diff compares a stored decision with the same event decided again (ev is the stored event; its
// stream sequence is compared with the decision's). It returns every differing field, in column
// order; none when the row reproduces exactly.
func Diff(d *StoredDecision, again *engine.Decision, ev *StoredEvent) []FieldDiff {
	return diffText(textOf(d), again, ev)
}

func diffText(t *StoredText, again *engine.Decision, ev *StoredEvent) []FieldDiff {
	var out []FieldDiff
	cmp := func(field, stored, rerun string) {
		if stored != rerun {
			out = append(out, FieldDiff{Field: field, Stored: stored, Rerun: rerun})
		}
	}
	// Decimals compare by value and scale: PostgreSQL's NUMERIC text may spell a stored value
	// differently; a text that is no decimal at all differs.
	dec := func(field, stored, rerun string) {
		if stored == rerun {
			return
		}
		var v apd.Decimal
		if _, _, err := v.SetString(stored); err == nil && v.Text('f') == rerun {
			return
		}
		out = append(out, FieldDiff{Field: field, Stored: stored, Rerun: rerun})
	}
	cmp("order_id", t.OrderID, engine.StorableText(again.OrderID))
	cmp("program", t.Program, engine.StorableText(again.Program))
	cmp("affiliate_id", t.AffiliateID, engine.StorableText(again.AffiliateID))
	cmp("policy_version", t.PolicyVersion, strconv.Itoa(again.PolicyVersion))
	cmp("policy_digest", t.PolicyDigest, again.PolicyDigest)
	cmp("qualified", t.Qualified, strconv.FormatBool(again.Qualified))
	cmp("failed_rules", t.FailedRules, string(engine.AppendStrings(nil, again.FailedRules)))
	cmp("rate_rule", t.RateRule, again.RateRule)
	dec("rate", t.Rate, again.Rate.Text('f'))
	if again.HasFlat() {
		dec("flat", t.Flat, again.Flat.Text('f'))
	} else {
		cmp("flat", t.Flat, NoFlat)
	}
	dec("base", t.Base, again.Base.Text('f'))
	dec("commission", t.Commission, again.Commission.Text('f'))
	cmp("currency", t.Currency, again.Currency.Code)
	cmp("rounding", t.Rounding, string(again.Rounding))
	if want := string(again.AppendCompactTrace(nil)); t.Trace != want {
		out = append(out, traceDiffs(t.Trace, want)...)
	}
	cmp("env", t.Env, again.Env)
	if ev != nil {
		cmp("stream_seq", t.StreamSeq, strconv.FormatUint(ev.StreamSeq, 10))
	}
	return out
}

// traceDiffs names the rules whose stored outcome differs; the whole column when it does not
// parse or lists other rules.
func traceDiffs(stored, rerun string) []FieldDiff {
	var s, r [][3]string
	if json.Unmarshal([]byte(stored), &s) != nil || json.Unmarshal([]byte(rerun), &r) != nil || len(s) != len(r) {
		return []FieldDiff{{Field: "trace", Stored: stored, Rerun: rerun}}
	}
	var out []FieldDiff
	for i := range s {
		switch {
		case s[i][0] != r[i][0] || s[i][1] != r[i][1]:
			out = append(out, FieldDiff{Field: "trace[" + strconv.Itoa(i) + "]", Stored: s[i][0] + " " + s[i][1], Rerun: r[i][0] + " " + r[i][1]})
		case s[i][2] != r[i][2]:
			out = append(out, FieldDiff{Field: "trace[" + s[i][1] + "]", Stored: s[i][2], Rerun: r[i][2]})
		}
	}
	if len(out) == 0 { // same entries, other spelling
		out = append(out, FieldDiff{Field: "trace", Stored: stored, Rerun: rerun})
	}
	return out
}

// StoredBatch is a batch row: its place in its partition's chain and its Merkle root.
type StoredBatch struct {
	Partition        int
	Seq, Epoch       uint64
	Prev, Root, Hash string
	Leaves           int
	// LeafHashes are the stored leaf hashes of its decisions and dead letters, by leaf index.
	LeafHashes []string
}

// Inclusion is a decision's proof of inclusion in its batch: the RFC 6962 audit path from its
// leaf to the batch's root, and whether it verifies against the stored root.
type Inclusion struct {
	Batch    StoredBatch // LeafHashes left out
	Leaf     int
	Path     []string // sibling hashes, leaf to root
	Verified bool
	Err      string // why there is no proof, or why it does not verify
}

// inclusion builds and checks d's inclusion proof from its batch's stored leaves.
func (a *Auditor) inclusion(ctx context.Context, d *StoredDecision) (*Inclusion, error) {
	b, err := a.src.BatchLeaves(ctx, d.Partition, d.BatchSeq)
	if errors.Is(err, ErrNotFound) {
		return &Inclusion{Leaf: d.Leaf, Err: err.Error()}, nil
	}
	if err != nil {
		return nil, err
	}
	leaves := make([]engine.Hash, len(b.LeafHashes))
	for i, h := range b.LeafHashes {
		if leaves[i], err = engine.ParseHash(h); err != nil {
			return &Inclusion{Batch: b, Leaf: d.Leaf, Err: fmt.Sprintf("leaf %d: %v", i, err)}, nil
		}
	}
	b.LeafHashes = nil
	out := &Inclusion{Batch: b, Leaf: d.Leaf}
	path, err := engine.InclusionProof(leaves, d.Leaf)
	if err != nil {
		out.Err = err.Error()
		return out, nil
	}
	for _, h := range path {
		out.Path = append(out.Path, h.String())
	}
	leaf, err1 := engine.ParseHash(d.LeafHash)
	root, err2 := engine.ParseHash(b.Root)
	switch err := errors.Join(err1, err2); {
	case err != nil:
		out.Err = err.Error()
	case len(leaves) != b.Leaves:
		out.Err = fmt.Sprintf("the batch records %d leaves, %d are stored", b.Leaves, len(leaves))
	default:
		if err := engine.VerifyInclusion(d.Leaf, len(leaves), leaf, path, root); err != nil {
			out.Err = err.Error()
		} else {
			out.Verified = true
		}
	}
	return out, nil
}

func policyKey(program string, version int) string {
	return program + "\x00" + strconv.Itoa(version)
}
