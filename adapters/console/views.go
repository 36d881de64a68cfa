package console

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/audit"
)

// decisionView is one decision laid out for the decision page.
type decisionView struct {
	ID                    int64
	Current               bool
	Program               string
	PolicyVersion         int
	PolicyURL             string // the stored version's page
	PolicyDigest          string
	PolicyFile, Effective string // "" when the policy could not be read
	EventID, DecidedAt    string
	StreamSeq             uint64
	AffiliateID           string
	Pinned                string // "" when not pinned
	AffiliateMonth        string // the affiliate.* inputs, "" when none were read
	Qualified             bool
	FailedRules           string
	Qualify, Rates        []ruleView
	RatesEvaluated        bool
	Arithmetic            string // base × rate% [+ flat] = commission
	Rounding              string
	// Rerun says the rules shown are the re-run's (false: the stored outcomes only, the decision
	// could not be re-run).
	Rerun bool
	// The tamper evidence: the verdict, whether it is clean, and the details.
	Verdict   string
	VerdictOK bool
	Diffs     []audit.FieldDiff
	Chain     string
	Batch     string
}

type ruleView struct {
	ID, Outcome, Expr string
	Line              int
	Reads             []engine.Input
	Reason            string // a failed qualification rule's reason
	About, Terms      string // a rate rule's description and what it pays
}

func newDecisionView(x audit.Explained, current bool) decisionView {
	d := &x.Decision
	v := decisionView{ID: d.ID, Current: current, Program: d.Program, PolicyVersion: d.PolicyVersion, PolicyDigest: d.PolicyDigest,
		PolicyURL: policyPath(d.Program, d.PolicyVersion),
		EventID:   d.EventID, StreamSeq: d.StreamSeq, DecidedAt: d.DecidedAt.UTC().Format(time.RFC3339), AffiliateID: d.AffiliateID,
		Qualified: d.Qualified, FailedRules: strings.Join(d.FailedRules, ", "), Rounding: d.Rounding}
	if x.Policy.Digest != "" {
		v.PolicyFile, v.Effective = x.Policy.File, x.Policy.EffectiveFrom.UTC().Format(time.RFC3339)
	}
	if in := x.Inputs; in.Pinned && in.Pin != nil {
		v.Pinned = fmt.Sprintf("decided with v%d, the version that decided the order's first qualifying event", in.Pin.Version)
	}
	if a := x.Inputs.Affiliate; a != nil {
		v.AffiliateMonth = fmt.Sprintf("%s: %d qualified orders, sales %s %s before this one", a.Month, a.QualifiedOrders, d.Currency, a.QualifiedSales.Text('f'))
	}
	formula := d.Currency + " " + d.Base.Text('f') + " × " + d.Rate.Text('f') + "%"
	if d.HasFlat {
		formula += " + " + d.Currency + " " + d.Flat.Text('f')
	}
	v.Arithmetic = formula + " = " + d.Currency + " " + d.Commission.Text('f')
	if !d.Qualified {
		v.Arithmetic = "not qualified: commission " + d.Currency + " " + d.Commission.Text('f')
	}
	if x.Explanation != nil {
		v.Rerun = true
		for _, r := range x.Explanation.Rules {
			rv := ruleView{ID: r.ID, Outcome: r.Outcome, Expr: strings.Join(strings.Fields(r.Expr), " "), Line: r.Line}
			if r.Outcome != "not_evaluated" {
				rv.Reads = r.Inputs
			}
			if r.Stage == "qualify" {
				if r.Outcome == "fail" {
					rv.Reason = r.Text
				}
				v.Qualify = append(v.Qualify, rv)
				continue
			}
			rv.About, rv.Terms = r.Text, r.Terms
			v.RatesEvaluated = v.RatesEvaluated || r.Outcome != "not_evaluated"
			v.Rates = append(v.Rates, rv)
		}
	} else {
		for _, t := range d.Trace {
			rv := ruleView{ID: t.Rule, Outcome: t.Outcome}
			if t.Stage == "qualify" {
				v.Qualify = append(v.Qualify, rv)
				continue
			}
			v.RatesEvaluated = v.RatesEvaluated || t.Outcome != "not_evaluated"
			v.Rates = append(v.Rates, rv)
		}
	}
	v.Chain = fmt.Sprintf("partition %d, batch %d, leaf %d, leaf hash %s", d.Partition, d.BatchSeq, d.Leaf, d.LeafHash)
	if in := x.Inclusion; in != nil && in.Batch.Hash != "" {
		v.Batch = fmt.Sprintf("%d leaves, root %s, hash %s", in.Batch.Leaves, in.Batch.Root, in.Batch.Hash)
	}
	v.Verdict, v.VerdictOK = verdict(x)
	v.Diffs = x.Recheck.Diffs
	return v
}

// verdict is the decision's tamper evidence in one sentence, and whether it is clean.
func verdict(x audit.Explained) (string, bool) {
	d, rc := &x.Decision, &x.Recheck
	switch {
	case rc.Err != nil:
		msg := "cannot be re-run: " + rc.Err.Error()
		if errors.Is(rc.Err, audit.ErrPolicyAltered) {
			msg += " (the policy text the decision was made with is no longer in the store: it cannot be verified)"
		}
		return msg, false
	case len(rc.Diffs) > 0 && rc.LeafOK:
		return "altered: the stored row differs from the re-run, which its leaf hash covers — the row was changed after it was decided", false
	case len(rc.Diffs) > 0:
		return "does not reproduce: deciding the stored event again gives another decision, and the leaf hash covers neither (policy or engine drift, or a forged row)", false
	case rc.LeafErr != nil:
		return "reproduced, but its leaf was not checked: " + rc.LeafErr.Error(), false
	case !rc.LeafOK:
		return "leaf mismatch: the decision reproduces, but its leaf hash does not cover it with what it booked", false
	case x.Inclusion == nil || !x.Inclusion.Verified:
		why := "no proof"
		if x.Inclusion != nil && x.Inclusion.Err != "" {
			why = x.Inclusion.Err
		}
		return fmt.Sprintf("reproduced, but not proven included in batch %d of partition %d: %s", d.BatchSeq, d.Partition, why), false
	}
	return fmt.Sprintf("reproduced and included in batch %d of partition %d", d.BatchSeq, d.Partition), true
}

// deadLetterRow is one dead letter as the order and health pages list it.
type deadLetterRow struct {
	ID                         int64
	EventID, Kind, Reason      string
	Program, OrderID, OrderURL string
	ReceivedAt, Subject        string
	StreamSeq                  uint64
}

func newDeadLetterRow(d audit.DeadLetter) deadLetterRow {
	r := deadLetterRow{ID: d.ID, EventID: d.EventID, Kind: d.Kind, Reason: d.Reason, Program: d.Program, OrderID: d.OrderID,
		ReceivedAt: d.ReceivedAt.UTC().Format(time.RFC3339), Subject: d.Subject, StreamSeq: d.StreamSeq}
	if d.OrderID != "" {
		r.OrderURL = orderPath(d.OrderID)
	}
	return r
}
