package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine/audit"
)

func init() { extraCommands = append(extraCommands, newAuditCmd) }

// The audit API reads the store through its consumer-owned port.
var _ httpapi.AuditStore = (*store.Store)(nil)

// mountAuditAPI serves the read-only audit API (/v1/…) on the service's HTTP server, with the
// bearer tokens of the configuration.
func mountAuditAPI(srv *httpapi.Server, st *store.Store, cfg httpapi.Config, log *slog.Logger) {
	srv.MountAuditAPI(httpapi.NewAuditAPI(st, httpapi.AuditOptions{Tokens: cfg.Tokens, Log: log}))
	if len(cfg.Tokens) == 0 {
		log.Warn("audit API: no bearer tokens configured (http.tokens); every /v1 call is refused")
	}
}

type auditVerifyParams struct {
	Program     string
	JSON        bool
	Workers     int
	MaxFindings int // findings printed; all are counted
}

func newAuditCmd(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Audit stored decisions",
		Args:  cobra.NoArgs,
	}
	p := auditVerifyParams{Workers: runtime.GOMAXPROCS(0), MaxFindings: 50}
	verify := &cobra.Command{
		Use:   "verify [--program P] [--json]",
		Short: "Re-evaluate every stored decision, its ledger and the partitions' chains of batches; exit 1 on any finding",
		Long: `Checks, for every program (or --program):

  - every stored policy version: its source text still has the digest recorded when it was
    first used, and still compiles;
  - every stored decision: its order event is decided again with the recorded policy version
    (from the stored source) and compared with the stored row field by field; its order's
    decisions are booked again in the order they were made, so its Merkle leaf (event, decision,
    the ledger entries it booked, its change to the order's state) is recomputed from the event
    and the re-run alone — a row changed after it was stored is named "altered" (the leaf still
    covers the original), one that no longer reproduces "not_reproduced", one whose leaf hash
    was changed "leaf_mismatch";
  - the ledger and the order states: every decision's stored ledger entries are what it books
    ("ledger"), every order's stored state what its decisions leave ("order_state");
  - every partition's chain of batches: batches 1, 2, 3, … with no gap ("missing"), each
    linked to the hash of the one before ("broken_link"), each row's hash the hash of its
    header ("batch_hash"), its leaves complete ("missing", "inserted") and hashing to its Merkle
    root ("root_mismatch"), and the partition's head naming its last batch ("head_mismatch");
  - stored order events left with neither a decision nor a dead letter ("orphan_event").

Every finding names its place (partition, batch, leaf) and the decision id; the first finding of
each partition is repeated in its summary. Rows are streamed and re-evaluated in parallel. Exits 1
when anything is found.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(verify)
	f := verify.Flags()
	f.StringVar(&p.Program, "program", "", "only this program")
	f.BoolVar(&p.JSON, "json", false, "JSON for machines")
	f.IntVar(&p.Workers, "workers", p.Workers, "decisions re-evaluated in parallel")
	f.IntVar(&p.MaxFindings, "max-findings", p.MaxFindings, "findings printed (all are counted)")
	verify.RunE = func(cmd *cobra.Command, _ []string) error {
		st, err := cf.openStore(cmd.Context())
		if err != nil {
			return err
		}
		defer st.Close()
		return runAuditVerify(cmd.Context(), st, p, s.out)
	}
	cmd.AddCommand(verify)
	return cmd
}

// findingJSON is one finding in `audit verify --json`.
type findingJSON struct {
	Kind       string              `json:"kind"`
	Reason     string              `json:"reason,omitempty"`
	Program    string              `json:"program"`
	Partition  *int                `json:"partition,omitempty"` // with batch_seq: where in the chains
	BatchSeq   uint64              `json:"batch_seq,omitempty"`
	Leaf       *int                `json:"leaf,omitempty"`
	DecisionID int64               `json:"decision_id,omitempty"`
	EventID    string              `json:"event_id,omitempty"`
	OrderID    string              `json:"order_id,omitempty"`
	Detail     string              `json:"detail"`
	Diffs      []httpapi.DriftView `json:"diffs,omitempty"`
}

type partitionJSON struct {
	Partition int          `json:"partition"`
	Batches   int64        `json:"batches"`
	Leaves    int64        `json:"leaves"`
	LastSeq   uint64       `json:"last_seq"`
	LastHash  string       `json:"last_hash"`
	HeadSeq   *uint64      `json:"head_seq"` // null when the partition has no head row
	HeadHash  string       `json:"head_hash,omitempty"`
	Findings  int          `json:"findings"`
	First     *findingJSON `json:"first"` // the first finding in chain order
}

// auditJSON is `audit verify --json`'s output.
type auditJSON struct {
	Store         string          `json:"store"`
	OK            bool            `json:"ok"`
	Policies      int             `json:"policies"`
	Decisions     int64           `json:"decisions"`
	Reproduced    int64           `json:"reproduced"`
	Orders        int64           `json:"orders"`
	Partitions    []partitionJSON `json:"partitions"`
	FindingsTotal int             `json:"findings_total"`
	ByKind        map[string]int  `json:"by_kind"`
	Findings      []findingJSON   `json:"findings"` // the first --max-findings, in chain order
	Seconds       float64         `json:"seconds"`
}

func toFindingJSON(f audit.Finding) findingJSON {
	out := findingJSON{Kind: f.Kind, Reason: f.Reason, Program: f.Program, DecisionID: f.DecisionID,
		EventID: f.EventID, OrderID: f.OrderID, Detail: f.Detail}
	if f.BatchSeq != 0 {
		part := f.Partition
		out.Partition, out.BatchSeq = &part, f.BatchSeq
		if f.Leaf >= 0 {
			leaf := f.Leaf
			out.Leaf = &leaf
		}
	}
	for _, d := range f.Diffs {
		out.Diffs = append(out.Diffs, httpapi.DriftView{Field: d.Field, Stored: d.Stored, Rerun: d.Rerun})
	}
	return out
}

// runAuditVerify verifies the store and reports; exitCode(1) after the report when anything was
// found.
func runAuditVerify(ctx context.Context, st *store.Store, p auditVerifyParams, out io.Writer) error {
	start := time.Now()
	doc := auditJSON{Store: st.String(), Findings: []findingJSON{}, Partitions: []partitionJSON{}}
	shown := 0
	if !p.JSON {
		fmt.Fprintf(out, "audit verify: %s\n", st)
	}
	rep, err := audit.Verify(ctx, st, audit.VerifyOptions{Program: p.Program, Workers: p.Workers, OnFinding: func(f audit.Finding) {
		if shown >= p.MaxFindings {
			return
		}
		shown++
		if p.JSON {
			doc.Findings = append(doc.Findings, toFindingJSON(f))
			return
		}
		fmt.Fprintf(out, "FINDING %s\n", f)
	}})
	if err != nil {
		return fmt.Errorf("verifying %s: %w", st, err)
	}
	took := time.Since(start)
	rows := rep.Decisions
	if p.JSON {
		doc.OK, doc.Policies, doc.FindingsTotal, doc.ByKind, doc.Seconds = rep.OK(), rep.Policies, rep.Findings, rep.ByKind, took.Seconds()
		doc.Decisions, doc.Reproduced, doc.Orders = rep.Decisions, rep.Reproduced, rep.Orders
		for _, c := range rep.Partitions {
			pj := partitionJSON{Partition: c.Partition, Batches: c.Batches, Leaves: c.Leaves, LastSeq: c.LastSeq, LastHash: c.LastHash, Findings: c.Findings}
			if c.HasHead {
				seq := c.Head.Seq
				pj.HeadSeq, pj.HeadHash = &seq, c.Head.Hash.String()
			}
			if c.First != nil {
				f := toFindingJSON(*c.First)
				pj.First = &f
			}
			doc.Partitions = append(doc.Partitions, pj)
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(doc); err != nil {
			return err
		}
	} else {
		if rep.Findings > shown {
			fmt.Fprintf(out, "… and %s more not shown (--max-findings %d)\n", plural(rep.Findings-shown, "finding"), p.MaxFindings)
		}
		if rep.Findings > 0 {
			fmt.Fprintln(out)
		}
		policyFindings := rep.ByKind[audit.FindingPolicy]
		if policyFindings == 0 {
			fmt.Fprintf(out, "policy versions: %d checked; every stored source has the digest recorded when it was first used\n", rep.Policies)
		} else {
			fmt.Fprintf(out, "policy versions: %d checked; %d cannot be used (altered or no longer compiling): see the findings\n", rep.Policies, policyFindings)
		}
		if rep.Decisions == 0 {
			fmt.Fprintln(out, "no decisions are stored")
		} else {
			fmt.Fprintf(out, "decisions: %d of %d (%d orders) re-run with their recorded policy versions reproduce exactly, "+
				"leaf hash, ledger entries and order state included\n", rep.Reproduced, rep.Decisions, rep.Orders)
		}
		clean := len(rep.Partitions) > 0
		for _, c := range rep.Partitions {
			fmt.Fprintf(out, "partition %d: %d batches, %d leaves", c.Partition, c.Batches, c.Leaves)
			if c.HasHead {
				fmt.Fprintf(out, ", head %d %s\n", c.Head.Seq, c.Head.Hash)
			} else {
				fmt.Fprintf(out, ", no head row\n")
			}
			if c.First == nil {
				continue
			}
			clean = false
			fmt.Fprintf(out, "  %s; the first: %s", plural(c.Findings, "finding"), c.First.Kind)
			if p := c.First.Place(); p != "" {
				fmt.Fprintf(out, " at %s", p)
			}
			fmt.Fprintln(out)
		}
		if clean {
			fmt.Fprintf(out, "chains: in every partition each batch links to the one before, its leaves hash to its root, nothing beyond the head\n")
		}
		rate := ""
		if took > 0 && rows > 0 {
			rate = fmt.Sprintf(", %.0f decisions/s", float64(rows)/took.Seconds())
		}
		if rep.OK() {
			fmt.Fprintf(out, "OK: %d decisions verified in %s%s; nothing found\n", rows, took.Round(time.Millisecond), rate)
		} else {
			var kinds []string
			for _, k := range slices.Sorted(maps.Keys(rep.ByKind)) {
				kinds = append(kinds, fmt.Sprintf("%d %s", rep.ByKind[k], k))
			}
			fmt.Fprintf(out, "FAILED: %s (%s); %d decisions verified in %s%s\n", plural(rep.Findings, "finding"), strings.Join(kinds, ", "),
				rows, took.Round(time.Millisecond), rate)
		}
	}
	if !rep.OK() {
		return exitCode(1)
	}
	return nil
}

// plural writes "1 finding", "2 findings".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
