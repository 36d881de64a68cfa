package httpapi

import (
	"time"

	"github.com/commissioner/commissioner/engine/audit"
)

// The audit API's wire format. Field names are stable: clients and `commissioner explain --json`
// depend on them. Money and rates are exact decimal strings, never JSON numbers.

// DecisionView is one stored decision.
type DecisionView struct {
	ID          int64     `json:"id"`
	EventID     string    `json:"event_id"`
	StreamSeq   uint64    `json:"stream_seq"`
	OrderID     string    `json:"order_id"`
	Program     string    `json:"program"`
	AffiliateID string    `json:"affiliate_id"`
	Policy      PolicyRef `json:"policy"`
	Qualified   bool      `json:"qualified"`
	FailedRules []string  `json:"failed_rules"`
	RateRule    string    `json:"rate_rule"`
	Rate        string    `json:"rate"`
	Flat        *string   `json:"flat"` // null when the rate rule pays no flat amount
	Base        string    `json:"base"`
	Commission  string    `json:"commission"`
	Currency    string    `json:"currency"`
	Rounding    string    `json:"rounding"`
	Env         string    `json:"env"`
	DecidedAt   time.Time `json:"decided_at"`
	// BecameCurrent: the order's state followed this decision when it was stored (false for an
	// event older in the stream than the order's current one, which arrived late).
	BecameCurrent bool `json:"became_current"`
	// Current is set where an order's decisions are listed together (explain): whether this is
	// the order's current decision, the one its state and payouts follow now.
	Current *bool    `json:"current,omitempty"`
	Chain   ChainRef `json:"chain"`
	// Trace is every rule of the deciding policy in policy order with its stored outcome; an
	// explained decision adds each rule's expression and the input values it read.
	Trace []RuleView `json:"trace"`
	// Inputs is what the decision was decided with besides its event and policy version; present
	// when explained.
	Inputs *InputsView `json:"inputs,omitempty"`
	// Check is present when the decision was decided again (GET /v1/decisions/{id}, explain).
	Check *CheckView `json:"check,omitempty"`
}

// InputsView is what a decision was decided with besides its order event and policy version.
type InputsView struct {
	// Pinned: the event was decided with the policy version that decided the order's first
	// qualifying event (Pin), not the version in force at its time.
	Pinned bool       `json:"pinned"`
	Pin    *PolicyPin `json:"pin"` // the order's pin when the event was decided; null when none yet
	// Affiliate is the affiliate.* inputs, recorded when the policy reads them; null otherwise.
	Affiliate *AffiliateView `json:"affiliate"`
}

// PolicyPin is the policy version an order is pinned to.
type PolicyPin struct {
	Version int    `json:"version"`
	Digest  string `json:"digest"`
}

// AffiliateView is what the order's affiliate had sold in the order's month before it.
type AffiliateView struct {
	Month                string `json:"month"`
	MonthQualifiedOrders int64  `json:"month_qualified_orders"`
	MonthQualifiedSales  string `json:"month_qualified_sales"`
}

// PolicyRef names the policy version that made a decision.
type PolicyRef struct {
	Version       int        `json:"version"`
	Digest        string     `json:"digest"`
	EffectiveFrom *time.Time `json:"effective_from,omitempty"` // from the stored policy, when read
	File          string     `json:"file,omitempty"`
}

// ChainRef is a decision's place in its partition's chain of batches: the batch, its leaf and
// leaf hash and, when explained, its inclusion proof.
type ChainRef struct {
	Partition int    `json:"partition"`
	BatchSeq  uint64 `json:"batch_seq"`
	Leaf      int    `json:"leaf"`
	LeafHash  string `json:"leaf_hash"`
	// Inclusion is the RFC 6962 audit path from the leaf to the batch's root (explained only).
	Inclusion *InclusionView `json:"inclusion,omitempty"`
	// Checkpoint continues the proof to a signed checkpoint of the partition's head (explained,
	// when the service signs checkpoints).
	Checkpoint *CheckpointProofView `json:"checkpoint,omitempty"`
}

// CheckpointProofView shows that a signed checkpoint commits to the decision: its batch and each
// batch after it, each naming the one before, up to the head the checkpoint signed. Note is the
// signed checkpoint itself, to verify with one's own copy of the public key (audit pubkey).
type CheckpointProofView struct {
	Covered  bool            `json:"covered"` // false: no checkpoint covers the decision's batch yet
	Note     string          `json:"note,omitempty"`
	SignedAt *time.Time      `json:"signed_at,omitempty"`
	HeadSeq  uint64          `json:"head_seq,omitempty"`
	HeadHash string          `json:"head_hash,omitempty"`
	Batches  []BatchLinkView `json:"batches,omitempty"` // the decision's batch first
	Verified bool            `json:"verified"`
	Error    string          `json:"error,omitempty"`
}

// BatchLinkView is one batch header of a checkpoint proof (its hash is the hash of these fields
// with its partition: engine.BatchHeader).
type BatchLinkView struct {
	Seq            int64  `json:"seq"`
	Epoch          int64  `json:"epoch"`
	PrevHash       string `json:"prev_hash"`
	Root           string `json:"root"`
	Leaves         int64  `json:"leaves"`
	FirstStreamSeq int64  `json:"first_stream_seq"`
	LastStreamSeq  int64  `json:"last_stream_seq"`
	Hash           string `json:"hash"`
}

// NewCheckpointProofView renders a checkpoint proof.
func NewCheckpointProofView(p *audit.CheckpointProof) *CheckpointProofView {
	v := &CheckpointProofView{Covered: !p.Uncovered, Verified: p.Verified, Error: p.Err}
	if p.Uncovered {
		return v
	}
	at := p.Time.UTC()
	v.Note, v.SignedAt, v.HeadSeq, v.HeadHash = string(p.Signed), &at, p.HeadSeq, p.HeadHash
	for _, b := range p.Batches {
		v.Batches = append(v.Batches, BatchLinkView{Seq: b.Seq, Epoch: b.Epoch, PrevHash: b.Prev, Root: b.Root, Leaves: b.Leaves,
			FirstStreamSeq: b.FirstStreamSeq, LastStreamSeq: b.LastStreamSeq, Hash: b.Hash})
	}
	return v
}

// InclusionView is a decision's proof of inclusion in its batch.
type InclusionView struct {
	BatchRoot string   `json:"batch_root"`
	BatchHash string   `json:"batch_hash"`
	PrevHash  string   `json:"prev_hash"`
	Leaves    int      `json:"leaves"`
	Path      []string `json:"path"`
	Verified  bool     `json:"verified"`
	Error     string   `json:"error,omitempty"`
}

// RuleView is one rule's part in a decision.
type RuleView struct {
	Stage   string `json:"stage"`   // qualify | rate
	Rule    string `json:"rule"`    // the rule id
	Outcome string `json:"outcome"` // pass | fail | match | no_match | not_evaluated (as stored)
	// The rest is present when explained.
	Line   int         `json:"line,omitempty"`   // the rule's line in the policy file
	Expr   string      `json:"expr,omitempty"`   // the expression (a rate rule's condition)
	Text   string      `json:"text,omitempty"`   // a qualification rule's reason, a rate rule's description
	Terms  string      `json:"terms,omitempty"`  // a rate rule's terms: "10%", "10% + USD 5.00"
	Inputs []InputView `json:"inputs,omitempty"` // the order fields and constants it read
}

// InputView is one value a rule read, formatted for reading (strings quoted, decimals exact).
type InputView struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// CheckView is what deciding the stored event again with the recorded policy version found.
type CheckView struct {
	// Reproduced: the re-run gave exactly the stored decision.
	Reproduced bool `json:"reproduced"`
	// LeafOK: the row's leaf hash covers the re-run decision and what it booked.
	LeafOK bool `json:"leaf_ok"`
	// Drift lists every stored field that differs from the re-run.
	Drift []DriftView `json:"drift"`
	// Error says why the decision could not be decided again ("" when it was).
	Error string `json:"error,omitempty"`
	// Reason classifies Error: policy_missing, policy_altered, policy_invalid, event_missing,
	// event_invalid, decide_failed.
	Reason string `json:"reason,omitempty"`
}

// DriftView is one field where the stored decision and the re-run differ.
type DriftView struct {
	Field  string `json:"field"`
	Stored string `json:"stored"`
	Rerun  string `json:"rerun"`
}

// PolicyView is a stored policy version with its source.
type PolicyView struct {
	Program       string    `json:"program"`
	Version       int       `json:"version"`
	Digest        string    `json:"digest"`        // as recorded when first used
	SourceDigest  string    `json:"source_digest"` // of the source as stored now
	DigestOK      bool      `json:"digest_ok"`     // the two agree: the source is the one decisions were made with
	File          string    `json:"file"`
	EffectiveFrom time.Time `json:"effective_from"`
	FirstUsedAt   time.Time `json:"first_used_at"`
	Source        string    `json:"source"`
}

// OrderDecisionsView is one page of an order's decisions, newest first.
type OrderDecisionsView struct {
	OrderID   string         `json:"order_id"`
	Program   string         `json:"program,omitempty"`
	Decisions []DecisionView `json:"decisions"`
	// NextCursor, when present, is passed as ?cursor= to get the next page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// ErrorView is every error response's body.
type ErrorView struct {
	Error   string `json:"error"` // a stable code: unauthorized, not_found, bad_request, too_large, timeout, …
	Message string `json:"message"`
}

// NewDecisionView renders a stored decision (with its stored trace, not explained).
func NewDecisionView(d audit.StoredDecision) DecisionView {
	v := DecisionView{
		ID: d.ID, EventID: d.EventID, StreamSeq: d.StreamSeq, OrderID: d.OrderID, Program: d.Program,
		AffiliateID: d.AffiliateID, Policy: PolicyRef{Version: d.PolicyVersion, Digest: d.PolicyDigest},
		Qualified: d.Qualified, FailedRules: d.FailedRules, RateRule: d.RateRule,
		Rate: d.Rate.Text('f'), Base: d.Base.Text('f'), Commission: d.Commission.Text('f'),
		Currency: d.Currency, Rounding: d.Rounding, Env: d.Env, DecidedAt: d.DecidedAt.UTC(), BecameCurrent: d.Current,
		Chain: ChainRef{Partition: d.Partition, BatchSeq: d.BatchSeq, Leaf: d.Leaf, LeafHash: d.LeafHash},
		Trace: make([]RuleView, len(d.Trace)),
	}
	if v.FailedRules == nil {
		v.FailedRules = []string{}
	}
	if d.HasFlat {
		f := d.Flat.Text('f')
		v.Flat = &f
	}
	for i, t := range d.Trace {
		v.Trace[i] = RuleView{Stage: t.Stage, Rule: t.Rule, Outcome: t.Outcome}
	}
	return v
}

// NewExplainedView renders a stored decision with its explanation: the policy's effective_from
// and file, every rule's expression and inputs, and the re-run check.
func NewExplainedView(x audit.Explained) DecisionView {
	v := NewDecisionView(x.Decision)
	if x.Policy.Digest != "" {
		eff := x.Policy.EffectiveFrom.UTC()
		v.Policy.EffectiveFrom, v.Policy.File = &eff, x.Policy.File
	}
	if x.Explanation != nil {
		for i := range v.Trace {
			if i >= len(x.Explanation.Rules) {
				break
			}
			r := x.Explanation.Rules[i]
			if r.ID != v.Trace[i].Rule || r.Stage != v.Trace[i].Stage {
				continue
			}
			t := &v.Trace[i]
			t.Line, t.Expr, t.Text, t.Terms = r.Line, r.Expr, r.Text, r.Terms
			for _, in := range r.Inputs {
				t.Inputs = append(t.Inputs, InputView{Name: in.Name, Value: in.Value})
			}
		}
	}
	in := &InputsView{Pinned: x.Inputs.Pinned}
	if p := x.Inputs.Pin; p != nil {
		in.Pin = &PolicyPin{Version: p.Version, Digest: p.Digest}
	}
	if a := x.Inputs.Affiliate; a != nil {
		in.Affiliate = &AffiliateView{Month: a.Month, MonthQualifiedOrders: a.QualifiedOrders, MonthQualifiedSales: a.QualifiedSales.Text('f')}
	}
	v.Inputs = in
	if in := x.Inclusion; in != nil {
		iv := &InclusionView{BatchRoot: in.Batch.Root, BatchHash: in.Batch.Hash, PrevHash: in.Batch.Prev, Leaves: in.Batch.Leaves,
			Path: in.Path, Verified: in.Verified, Error: in.Err}
		if iv.Path == nil {
			iv.Path = []string{}
		}
		v.Chain.Inclusion = iv
	}
	if x.Checkpoint != nil {
		v.Chain.Checkpoint = NewCheckpointProofView(x.Checkpoint)
	}
	c := &CheckView{Reproduced: x.Recheck.Reproduced(), LeafOK: x.Recheck.LeafOK, Drift: []DriftView{}}
	for _, d := range x.Recheck.Diffs {
		c.Drift = append(c.Drift, DriftView{Field: d.Field, Stored: d.Stored, Rerun: d.Rerun})
	}
	if x.Recheck.Err != nil {
		c.Error = x.Recheck.Err.Error()
		if re, ok := x.Recheck.Err.(*audit.RecheckError); ok {
			c.Reason = re.Reason
		}
	}
	v.Check = c
	return v
}

// NewPolicyView renders a stored policy version, checking its source against its digest.
func NewPolicyView(p audit.StoredPolicy, sourceDigest string) PolicyView {
	return PolicyView{Program: p.Program, Version: p.Version, Digest: p.Digest, SourceDigest: sourceDigest,
		DigestOK: sourceDigest == p.Digest, File: p.File, EffectiveFrom: p.EffectiveFrom.UTC(),
		FirstUsedAt: p.FirstUsedAt.UTC(), Source: string(p.Source)}
}

// DeadLetterView is a dead letter: an event that got no decision, and why (GET /v1/dead-letters,
// commissioner dead-letters --format json, explain --json).
type DeadLetterView struct {
	ID          int64      `json:"id"`
	EventID     string     `json:"event_id"`
	Kind        string     `json:"kind"`
	Reason      string     `json:"reason"`
	Program     string     `json:"program,omitempty"`
	OrderID     string     `json:"order_id,omitempty"`
	AffiliateID string     `json:"affiliate_id,omitempty"`
	PlacedAt    *time.Time `json:"placed_at,omitempty"`
	ReceivedAt  time.Time  `json:"received_at"`
	Subject     string     `json:"subject"`
	StreamSeq   uint64     `json:"stream_seq"`
	Partition   int        `json:"partition"`
	BatchSeq    uint64     `json:"batch_seq"`
	Leaf        int        `json:"leaf"`
	Raw         *string    `json:"raw,omitempty"` // the event as received (one dead letter shown whole)
}

// NewDeadLetterView is d's view, with its raw event when raw is set.
func NewDeadLetterView(d audit.DeadLetter, raw bool) DeadLetterView {
	out := DeadLetterView{ID: d.ID, EventID: d.EventID, Kind: d.Kind, Reason: d.Reason, Program: d.Program, OrderID: d.OrderID,
		AffiliateID: d.AffiliateID, PlacedAt: d.PlacedAt, ReceivedAt: d.ReceivedAt.UTC(), Subject: d.Subject, StreamSeq: d.StreamSeq,
		Partition: d.Partition, BatchSeq: d.BatchSeq, Leaf: d.Leaf}
	if raw {
		r := string(d.Raw)
		out.Raw = &r
	}
	return out
}

// DeadLettersView is a list of dead letters, oldest first.
type DeadLettersView struct {
	DeadLetters []DeadLetterView `json:"dead_letters"`
}
