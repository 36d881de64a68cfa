package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/audit"
)

type explainParams struct {
	OrderID string
	Program string // "" every program
	JSON    bool
	// Proof: the checkpoints to prove each decision against (a checkpoint log FILE, "stream" or
	// "store"; "": none), Key the public key they were signed with ("": the configured one).
	Proof, Key string
}

func newExplainCmd(s streams) *cobra.Command {
	var p explainParams
	cmd := &cobra.Command{
		Use:   "explain ORDER_ID [--program P] [--json]",
		Short: "Explain every stored decision of an order: each rule, what it read and what it said",
		Long: `Prints every stored decision of the order (all its events) in stream order, the order's current
decision marked (the one its state and payouts follow): the policy version,
its digest and effective_from; whether the order qualified, each qualification rule with its
expression, outcome and the input values it read; the rate rule that matched and why each earlier
one did not; the rate, base amount, commission and rounding.

Each decision is explained by deciding its stored order event again with its recorded policy
version — the source stored when the version was first used, its digest checked — and the
re-run is compared with the stored decision field by field and with the row's leaf hash (which
also covers the ledger entries it booked), and its inclusion in its batch's Merkle root is
proven. A decision that does not reproduce is reported as DRIFT and the command exits 1.

With --proof, each decision is also proven against the signed checkpoints (a checkpoint log
FILE, "stream" or "store", verified with --key): its batch, and every batch after it up to the
head the earliest covering checkpoint signed, each linking to the one before. A decision no
checkpoint covers yet says so; one whose chain does not reach the signed head is NOT PROVEN
(exit 1).`,
		Args: cobra.ExactArgs(1),
	}
	cf := addConfigFlags(cmd, storeFlags|natsFlags) // nats: --proof stream
	cmd.Flags().StringVar(&p.Program, "program", "", "only this program's decisions")
	cmd.Flags().BoolVar(&p.JSON, "json", false, "JSON for machines (the audit API's decision format)")
	cmd.Flags().StringVar(&p.Proof, "proof", "", "prove each decision against signed checkpoints: a checkpoint log FILE, \"stream\" or \"store\"")
	cmd.Flags().StringVar(&p.Key, "key", "", "the public key the checkpoints were signed with, or a file holding it (default: the configured checkpoint key's)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		p.OrderID = args[0]
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		st, err := store.Open(cmd.Context(), cfg.storeConfig())
		if err != nil {
			return err
		}
		defer st.Close()
		var cps []audit.OpenedCheckpoint
		if p.Proof != "" {
			key, err := checkpointVerifier(cfg, p.Key)
			if err != nil {
				return err
			}
			signed, err := readCheckpoints(cmd.Context(), cfg, p.Proof, st)
			if err != nil {
				return err
			}
			var refused []audit.RefusedCheckpoint
			if cps, refused = audit.OpenCheckpoints(signed, key); len(refused) > 0 {
				fmt.Fprintf(s.err, "explain: %d of %d checkpoints do not verify with key %s and are not used (the first, at %s: %v)\n",
					len(refused), len(signed), key.Name(), refused[0].Where, refused[0].Err)
			}
		}
		return runExplain(cmd.Context(), st, p, cps, s.out)
	}
	return cmd
}

// explainJSON is `explain --json`'s output.
type explainJSON struct {
	OrderID string `json:"order_id"`
	Program string `json:"program,omitempty"`
	// Reproduced: every decision was decided again to exactly the stored row.
	Reproduced bool                   `json:"reproduced"`
	Decisions  []httpapi.DecisionView `json:"decisions"`
	// DeadLetters are the order's events that got no decision, with their reasons.
	DeadLetters []httpapi.DeadLetterView `json:"dead_letters"`
}

// runExplain explains every decision of an order. It returns exitCode(1) after printing when any
// decision does not reproduce or cannot be decided again.
func runExplain(ctx context.Context, st *store.Store, p explainParams, cps []audit.OpenedCheckpoint, out io.Writer) error {
	ds, err := st.DecisionsByOrder(ctx, p.Program, p.OrderID)
	if err != nil {
		return err
	}
	dead, err := st.DeadLetters(ctx, store.DeadLetterFilter{Program: p.Program, OrderID: p.OrderID})
	if err != nil {
		return err
	}
	if len(ds) == 0 && len(dead) == 0 {
		where := ""
		if p.Program != "" {
			where = " in program " + p.Program
		}
		return fmt.Errorf("order %s has no stored decision and no dead-lettered event%s in %s", p.OrderID, where, st)
	}
	ds, current := audit.InStreamOrder(ds)
	a := audit.NewAuditor(st)
	xs := make([]audit.Explained, 0, len(ds))
	ok := true
	for _, d := range ds {
		x, err := a.Explain(ctx, d)
		if err != nil {
			return fmt.Errorf("explaining decision %d of order %s: %w", d.ID, p.OrderID, err)
		}
		ok = ok && x.Recheck.Reproduced() && x.Recheck.LeafOK && x.Inclusion != nil && x.Inclusion.Verified
		if p.Proof != "" {
			if x.Checkpoint, err = audit.ProveInCheckpoint(ctx, st, &x.Decision, cps); err != nil {
				return fmt.Errorf("proving decision %d of order %s: %w", d.ID, p.OrderID, err)
			}
			ok = ok && (x.Checkpoint.Verified || x.Checkpoint.Uncovered)
		}
		xs = append(xs, x)
	}
	if p.JSON {
		doc := explainJSON{OrderID: p.OrderID, Program: p.Program, Reproduced: ok, Decisions: make([]httpapi.DecisionView, len(xs)),
			DeadLetters: make([]httpapi.DeadLetterView, len(dead))}
		for i, x := range xs {
			doc.Decisions[i] = httpapi.NewExplainedView(x)
			doc.Decisions[i].Current = new(current[x.Decision.ID])
		}
		for i, d := range dead {
			doc.DeadLetters[i] = httpapi.NewDeadLetterView(d, true)
		}
		if err := writeJSONDoc(out, doc); err != nil {
			return err
		}
	} else {
		plural := "s"
		if len(xs) == 1 {
			plural = ""
		}
		fmt.Fprintf(out, "order %s: %d decision%s, in stream order", p.OrderID, len(xs), plural)
		for _, x := range xs {
			if current[x.Decision.ID] {
				fmt.Fprintf(out, "; current: decision %d", x.Decision.ID)
			}
		}
		if len(dead) > 0 {
			fmt.Fprintf(out, "; %d event(s) dead-lettered (below)", len(dead))
		}
		fmt.Fprintln(out)
		for _, x := range xs {
			writeExplained(out, x, current[x.Decision.ID])
		}
		for _, d := range dead {
			fmt.Fprintln(out)
			writeDeadLetter(out, d)
		}
	}
	if !ok {
		return exitCode(1)
	}
	return nil
}

// writeExplained prints one decision for an auditor: a header of aligned fields, the check, then
// one block per rule.
func writeExplained(w io.Writer, x audit.Explained, current bool) {
	title := fmt.Sprint(x.Decision.ID)
	if current {
		title += " (current)"
	}
	fmt.Fprintf(w, "\n== decision %s %s\n", title, strings.Repeat("=", max(0, 60-len(title))))
	writeExplainedDecision(w, x)
	writeExplainedProof(w, x)
	if !writeExplainedCheck(w, x) || x.Explanation == nil {
		return
	}
	writeRules(w, x.Explanation.Rules)
}

// explainFields returns the writer of the aligned "name value" lines of a decision's header.
func explainFields(w io.Writer) func(name, format string, args ...any) {
	return func(name, format string, args ...any) {
		fmt.Fprintf(w, "  %-15s %s\n", name, fmt.Sprintf(format, args...))
	}
}

// writeExplainedDecision writes the header fields of what was decided: the order and event, the
// policy version, its inputs, and whether and how the order qualified.
func writeExplainedDecision(w io.Writer, x audit.Explained) {
	d := &x.Decision
	field := explainFields(w)
	field("order", "%s (affiliate %s)", d.OrderID, d.AffiliateID)
	field("event", "%s (stream seq %d)", d.EventID, d.StreamSeq)
	field("decided at", "%s", d.DecidedAt.Format("2006-01-02T15:04:05Z07:00"))
	field("program", "%s", d.Program)
	field("policy", "version %d, digest %s", d.PolicyVersion, d.PolicyDigest)
	if x.Policy.Digest != "" {
		field("effective from", "%s (%s)", x.Policy.EffectiveFrom.Format("2006-01-02T15:04:05Z07:00"), x.Policy.File)
	}
	if in := x.Inputs; in.Pinned && in.Pin != nil {
		field("pinned", "yes: decided with v%d, which decided the order's first qualifying event, not the version in force", in.Pin.Version)
	}
	if a := x.Inputs.Affiliate; a != nil {
		field("affiliate month", "%s: %d qualified orders, sales %s %s before this one (recorded when decided)",
			a.Month, a.QualifiedOrders, d.Currency, a.QualifiedSales.Text('f'))
	}
	if d.Qualified {
		field("qualified", "yes: every qualification rule passed")
		terms := d.Rate.Text('f') + "%"
		if d.HasFlat {
			terms += " + " + d.Currency + " " + d.Flat.Text('f')
		}
		field("rate rule", "%s: %s", d.RateRule, terms)
		field("base amount", "%s %s (amount − refunded amount)", d.Currency, d.Base.Text('f'))
		formula := d.Base.Text('f') + " × " + d.Rate.Text('f') + "%"
		if d.HasFlat {
			formula += " + " + d.Flat.Text('f')
		}
		field("commission", "%s %s = %s, rounded %s to the currency's minor unit", d.Currency, d.Commission.Text('f'), formula, d.Rounding)
	} else {
		field("qualified", "no: failed %s", strings.Join(d.FailedRules, ", "))
		field("commission", "%s %s (rounding %s)", d.Currency, d.Commission.Text('f'), d.Rounding)
	}
}

// writeExplainedProof writes where the decision is in its partition's chain and what proves it
// is there: its batch's inclusion proof and the signed checkpoint covering it.
func writeExplainedProof(w io.Writer, x audit.Explained) {
	d := &x.Decision
	field := explainFields(w)
	field("chain", "partition %d batch %d leaf %d, leaf hash %s", d.Partition, d.BatchSeq, d.Leaf, d.LeafHash)
	if in := x.Inclusion; in != nil && in.Batch.Hash != "" {
		prev := in.Batch.Prev
		if prev == engine.GenesisHash.String() {
			prev = "none (the partition's first)"
		}
		field("batch", "%d leaves, root %s, hash %s, after %s", in.Batch.Leaves, in.Batch.Root, in.Batch.Hash, prev)
	}
	if in := x.Inclusion; in != nil && in.Verified {
		field("inclusion", "verified: the leaf and %d sibling hashes give the batch's root (RFC 6962)", len(in.Path))
	} else if in != nil {
		fmt.Fprintf(w, "\n  !! NOT INCLUDED: the decision's leaf is not proven in its batch's root: %s\n", in.Err)
	}
	switch cp := x.Checkpoint; {
	case cp == nil:
	case cp.Verified:
		field("checkpoint", "proven: batches %d–%d link to the head the checkpoint at %s (%s) signed, hash %s",
			d.BatchSeq, cp.HeadSeq, cp.Where, cp.Time.Format(time.RFC3339), cp.HeadHash)
	case cp.Uncovered:
		field("checkpoint", "not yet covered: %s", cp.Err)
	default:
		fmt.Fprintf(w, "\n  !! NOT PROVEN against the checkpoint at %s: %s\n", cp.Where, cp.Err)
	}
}

// writeExplainedCheck writes whether deciding the stored event again reproduces the decision and
// its leaf hash; false when the decision cannot be explained (its stored outcomes are listed
// instead of its rules).
func writeExplainedCheck(w io.Writer, x audit.Explained) bool {
	d := &x.Decision
	field := explainFields(w)
	rc := &x.Recheck
	switch {
	case rc.Err != nil:
		fmt.Fprintf(w, "\n  !! CANNOT EXPLAIN: %v\n", rc.Err)
		if errors.Is(rc.Err, audit.ErrPolicyAltered) {
			fmt.Fprintf(w, "  !! the policy text decisions were made with is no longer in the store; this decision cannot be verified\n")
		}
		fmt.Fprintf(w, "  the stored outcomes:\n")
		for _, t := range d.Trace {
			fmt.Fprintf(w, "    %-8s %-24s %s\n", t.Stage, t.Rule, t.Outcome)
		}
		return false
	case len(rc.Diffs) > 0:
		fmt.Fprintf(w, "\n  !! DRIFT: deciding the stored event again with %s v%d does not give the stored decision\n", d.Program, d.PolicyVersion)
		width := 0
		for _, f := range rc.Diffs {
			width = max(width, len(f.Field))
		}
		for _, f := range rc.Diffs {
			fmt.Fprintf(w, "  !!   %-*s  stored %q, re-run %q\n", width, f.Field, f.Stored, f.Rerun)
		}
		if rc.LeafOK {
			fmt.Fprintf(w, "  !! the row's leaf hash covers the re-run: the stored row was altered after it was decided\n")
		} else {
			fmt.Fprintf(w, "  !! the row's leaf hash covers neither: policy or engine drift, or a forged row\n")
		}
		fmt.Fprintf(w, "  the rules below are the re-run's\n")
	case rc.LeafErr != nil:
		fmt.Fprintf(w, "\n  !! LEAF NOT CHECKED: %v\n", rc.LeafErr)
	case !rc.LeafOK:
		fmt.Fprintf(w, "\n  !! LEAF MISMATCH: the decision reproduces, but its leaf hash does not cover it with what it booked (the hash, the ledger or the order's decisions were changed, or the row forged)\n")
	default:
		booked := fmt.Sprintf("the %d ledger entries it booked", len(rc.Ledger))
		switch len(rc.Ledger) {
		case 0:
			booked = "what it booked (nothing)"
		case 1:
			booked = "the ledger entry it booked"
		}
		field("check", "reproduced: deciding the stored event again with v%d gives exactly this decision; its leaf hash covers it and %s",
			d.PolicyVersion, booked)
	}
	return true
}

func writeRules(w io.Writer, rs []engine.RuleExplanation) {
	ratesEvaluated := false
	for _, r := range rs {
		ratesEvaluated = ratesEvaluated || r.Stage == "rate" && r.Outcome != "not_evaluated"
	}
	stage := ""
	for _, r := range rs {
		if r.Stage != stage {
			stage = r.Stage
			switch {
			case stage == "qualify":
				fmt.Fprintf(w, "\n  qualification: every rule must pass\n")
			case ratesEvaluated:
				fmt.Fprintf(w, "\n  rates: the first rule that matches sets the rate\n")
			default:
				fmt.Fprintf(w, "\n  rates: not evaluated (the order did not qualify)\n")
			}
		}
		if r.Stage == "rate" && !ratesEvaluated {
			continue
		}
		line := fmt.Sprintf("    %-24s %-14s", r.ID, strings.ReplaceAll(r.Outcome, "_", " "))
		if r.Stage == "rate" && r.Terms != "" {
			line += " pays " + r.Terms
		}
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(line, " "))
		if r.Text != "" && (r.Stage == "rate" || r.Outcome == "fail") {
			label := "reason"
			if r.Stage == "rate" {
				label = "about"
			}
			fmt.Fprintf(w, "      %-6s %s\n", label, r.Text)
		}
		label := "expr"
		if r.Stage == "rate" {
			label = "when"
		}
		fmt.Fprintf(w, "      %-6s %s   (line %d)\n", label, oneLine(r.Expr), r.Line)
		if r.Outcome == "not_evaluated" {
			continue
		}
		width := 0
		for _, in := range r.Inputs {
			width = max(width, len(in.Name))
		}
		for i, in := range r.Inputs {
			label := "read"
			if i > 0 {
				label = ""
			}
			fmt.Fprintf(w, "      %-6s %-*s = %s\n", label, width, in.Name, in.Value)
		}
	}
}

// oneLine folds a multi-line expression onto one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
