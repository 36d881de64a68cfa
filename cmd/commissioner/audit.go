package main

import (
	"context"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine/audit"
)

// The audit API reads the store through its consumer-owned port.
var _ httpapi.AuditStore = (*store.Store)(nil)

// mountAuditAPI serves the audit API (/v1/…) on the service's HTTP server, with the bearer tokens
// of the configuration. It reads the store; only its dead-letter redrive (rd) writes, to the
// order stream.
func mountAuditAPI(srv *httpapi.Server, st *store.Store, cfg httpapi.Config, key note.Verifier, rd httpapi.Redriver, log *slog.Logger) {
	srv.MountAuditAPI(httpapi.NewAuditAPI(st, httpapi.AuditOptions{Tokens: cfg.Tokens, OperatorTokens: cfg.OperatorTokens, MaxReplays: cfg.MaxReplays, CheckpointKey: key,
		Redriver: rd, Log: log}))
	if len(cfg.Tokens)+len(cfg.OperatorTokens) == 0 {
		log.Warn("audit API: no bearer tokens configured (http.tokens, http.operator_tokens); every /v1 call is refused")
	}
}

type auditVerifyParams struct {
	Program     string
	JSON        bool
	Workers     int
	MaxFindings int // findings printed; all are counted
	// Checkpoints: a checkpoint log file, "stream" or "store" ("": none); Key: the public key
	// they were signed with ("": the configured key file's).
	Checkpoints, Key string
	// Reconcile: hold the stored outcomes against the order stream's sequences.
	Reconcile bool
}

// newAuditCmd registers audit and its subcommands, verify and pubkey.
func newAuditCmd(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Audit stored decisions",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newAuditVerifyCmd(s))
	cmd.AddCommand(newAuditPubkeyCmd(s))
	return cmd
}

// newAuditVerifyCmd registers audit verify; most of its length is the help text, which lists
// every check and finding kind.
func newAuditVerifyCmd(s streams) *cobra.Command {
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
    ("ledger"), and the order state its row holds (is_current, the pin, the decision it follows,
    its month: what the order's later events and its affiliate's month figures are read from)
    what the order's decisions leave ("order_state");
  - every partition's chain of batches: batches 1, 2, 3, … with no gap ("missing"), each
    linked to the hash of the one before ("broken_link"), each row's hash the hash of its
    header ("batch_hash"), its leaves complete ("missing", "inserted") and hashing to its Merkle
    root ("root_mismatch"), and the partition's head naming its last batch ("head_mismatch").
    An event is stored in its decision's row (or its dead letter's), so a deleted decision is a
    leaf missing from its batch;
  - with --checkpoints, the signed checkpoints of the partitions' heads (the checkpoint log the
    service appends to, the CHECKPOINTS stream, or the store's own copy): each one's signature
    with --key (a forged or re-signed one is "checkpoint_signature"), and every batch they name
    stored with the signed hash ("checkpoint_mismatch": the chain was rewritten from there or
    before, its events decided again; "checkpoint_cut": the chain ends before it).

Every finding names its place (partition, batch, leaf) and the decision id; the first finding of
each partition is repeated in its summary. Rows are streamed and re-evaluated in parallel. Exits 1
when anything is found.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(verify, storeFlags|natsFlags) // nats: --checkpoints stream, --reconcile
	f := verify.Flags()
	f.StringVar(&p.Program, "program", "", "only this program")
	f.BoolVar(&p.JSON, "json", false, "JSON for machines")
	f.IntVar(&p.Workers, "workers", p.Workers, "decisions re-evaluated in parallel")
	f.IntVar(&p.MaxFindings, "max-findings", p.MaxFindings, "findings printed (all are counted)")
	f.StringVar(&p.Checkpoints, "checkpoints", "", "also hold the chains against signed checkpoints: a checkpoint log FILE, "+
		"\"stream\" (the CHECKPOINTS stream on nats.url) or \"store\" (the database's own copy)")
	f.StringVar(&p.Key, "key", "", "the public key the checkpoints were signed with, or a file holding it (default: the configured checkpoint key's)")
	f.BoolVar(&p.Reconcile, "reconcile", false, "also hold the stored outcomes against the order stream (nats.url, or the embedded server of a running serve): "+
		"every sequence gone from the stream must have a decision or dead letter stored")
	verify.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		return auditVerifyStore(cmd.Context(), cfg, p, s.out, s.err)
	}
	return verify
}

// auditVerifyStore opens the configured store, reads the checkpoints (--checkpoints) and
// reconciles the order stream (--reconcile) as p asks, then verifies the store (runAuditVerify).
func auditVerifyStore(ctx context.Context, cfg Config, p auditVerifyParams, out, errOut io.Writer) error {
	st, err := store.Open(ctx, cfg.storeConfig())
	if err != nil {
		return err
	}
	defer st.Close()
	var opts audit.VerifyOptions
	if p.Checkpoints != "" {
		if opts.CheckpointKey, err = checkpointVerifier(cfg, p.Key); err != nil {
			return err
		}
		if opts.Checkpoints, err = readCheckpoints(ctx, cfg, p.Checkpoints, st); err != nil {
			return err
		}
		if len(opts.Checkpoints) == 0 {
			return fmt.Errorf("--checkpoints %s: no checkpoint there", p.Checkpoints)
		}
	}
	if p.Reconcile {
		rec, err := reconcile(ctx, cfg, st)
		if err != nil {
			return err
		}
		opts.Reconciled = &rec
	}
	return runAuditVerify(ctx, st, p, opts, out, errOut)
}

// newAuditPubkeyCmd registers audit pubkey.
func newAuditPubkeyCmd(s streams) *cobra.Command {
	pubkey := &cobra.Command{
		Use:   "pubkey",
		Short: "Print the public key the service signs its checkpoints with",
		Long: `Prints the public key of the configured checkpoint key (audit.checkpoint_key; by default the data
directory's checkpoint.key, made on the service's first run): the key audit verify --checkpoints
checks signatures with. Give it to whoever audits, through a channel of its own: a checkpoint
verified with a key read from the same host proves only as much as that host.`,
		Args: cobra.NoArgs,
	}
	pcf := addConfigFlags(pubkey, flagDataDir) // the checkpoint key is in the data directory
	pubkey.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := pcf.load()
		if err != nil {
			return err
		}
		_, vkey, err := checkpointKey(cfg.checkpointKeyPath(), false)
		if err != nil {
			return err
		}
		fmt.Fprintln(s.out, vkey)
		return nil
	}
	return pubkey
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
	// With --checkpoints: the checkpoints whose signature verified, and the batches they name
	// that were held against the store.
	Checkpoints  int `json:"checkpoints,omitempty"`
	Checkpointed int `json:"checkpointed_batches,omitempty"`
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
// found. On a terminal errOut shows how far it got.
func runAuditVerify(ctx context.Context, st *store.Store, p auditVerifyParams, opts audit.VerifyOptions, out, errOut io.Writer) error {
	start := time.Now()
	src := &verifyProgress{VerifySource: st}
	prog := startProgress(errOut, src.status(start))
	defer prog.Stop()
	out = prog.Through(out) // the findings, printed as they are found
	doc := auditJSON{Store: st.String(), Findings: []findingJSON{}, Partitions: []partitionJSON{}}
	shown := 0
	if !p.JSON {
		fmt.Fprintf(out, "audit verify: %s\n", st)
	}
	opts.Program, opts.Workers = p.Program, p.Workers
	opts.OnFinding = func(f audit.Finding) {
		if shown >= p.MaxFindings {
			return
		}
		shown++
		if p.JSON {
			doc.Findings = append(doc.Findings, toFindingJSON(f))
			return
		}
		fmt.Fprintf(out, "FINDING %s\n", f)
	}
	rep, err := audit.Verify(ctx, src, opts)
	prog.Stop()
	if err == nil && opts.Reconciled != nil {
		for _, f := range opts.Reconciled.Findings {
			rep.Findings++
			rep.ByKind[f.Kind]++
			opts.OnFinding(f)
		}
	}
	recordVerifyRun(ctx, st, audit.NewVerifyRun("cli", p.Program, start, time.Now(), rep, err), errOut)
	if err != nil {
		return fmt.Errorf("verifying %s: %w", st, err)
	}
	took := time.Since(start)
	if p.JSON {
		if err := writeAuditJSON(out, doc, rep, took); err != nil {
			return err
		}
	} else {
		if rep.Findings > shown {
			fmt.Fprintf(out, "… and %s more not shown (--max-findings %d)\n", plural(rep.Findings-shown, "finding"), p.MaxFindings)
		}
		writeAuditText(out, rep, opts, took)
	}
	if !rep.OK() {
		return exitCode(1)
	}
	return nil
}

// recordVerifyRun records the run in the store, where the console's health page shows the last
// one. A run cut short by ctx is not recorded; a store that refuses the row (a read-only
// replica) only gets a note: the verification itself stands.
func recordVerifyRun(ctx context.Context, st *store.Store, run audit.VerifyRun, errOut io.Writer) {
	if ctx.Err() != nil {
		return
	}
	if _, err := st.RecordVerifyRun(ctx, run); err != nil {
		fmt.Fprintf(errOut, "note: this run was not recorded in the store: %v\n", err)
	}
}

// writeAuditJSON completes doc, which holds the findings shown, with the report and writes it.
func writeAuditJSON(out io.Writer, doc auditJSON, rep *audit.VerifyReport, took time.Duration) error {
	doc.OK, doc.Policies, doc.FindingsTotal, doc.ByKind, doc.Seconds = rep.OK(), rep.Policies, rep.Findings, rep.ByKind, took.Seconds()
	doc.Decisions, doc.Reproduced, doc.Orders = rep.Decisions, rep.Reproduced, rep.Orders
	doc.Checkpoints, doc.Checkpointed = rep.Checkpoints, rep.Checkpointed
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
	return writeJSONDoc(out, doc)
}

// writeAuditText writes the report's summary after the findings: the policy versions, the
// decisions, the chains, the stream and the checkpoints, then the verdict.
func writeAuditText(out io.Writer, rep *audit.VerifyReport, opts audit.VerifyOptions, took time.Duration) {
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
	writeAuditChains(out, rep)
	if r := opts.Reconciled; r != nil {
		if r.Skipped != "" {
			fmt.Fprintf(out, "stream: not reconciled: %s\n", r.Skipped)
		} else {
			fmt.Fprintf(out, "stream: %d sequences have an outcome stored (%d of them no longer in the stream, which is fine: the store keeps the event), "+
				"%d are not decided yet, %d were lost\n", r.Consumed, r.Gone, r.Pending, r.Lost)
		}
	}
	if len(opts.Checkpoints) > 0 {
		writeAuditCheckpoints(out, rep, opts)
	}
	writeAuditVerdict(out, rep, took)
}

// writeAuditChains writes a line per partition's chain, with its findings' count and the first
// of them, and a line saying every chain is sound when none has a finding.
func writeAuditChains(out io.Writer, rep *audit.VerifyReport) {
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
}

// writeAuditCheckpoints writes how many checkpoints verified and whether the batches they name
// are stored as signed.
func writeAuditCheckpoints(out io.Writer, rep *audit.VerifyReport, opts audit.VerifyOptions) {
	bad := rep.ByKind[audit.FindingCheckpointSignature]
	held := rep.ByKind[audit.FindingCheckpointMismatch] + rep.ByKind[audit.FindingCheckpointCut]
	fmt.Fprintf(out, "checkpoints: %d of %d signed by %s verify; the %d batches they name are ", rep.Checkpoints, len(opts.Checkpoints), opts.CheckpointKey.Name(), rep.Checkpointed)
	if held == 0 {
		fmt.Fprintf(out, "stored as signed")
	} else {
		fmt.Fprintf(out, "not all stored as signed: see the findings")
	}
	if bad > 0 {
		fmt.Fprintf(out, "; %d refused", bad)
	}
	fmt.Fprintln(out)
}

// writeAuditVerdict writes the last line: OK, or FAILED with the findings by kind; either with
// the decisions verified and the rate.
func writeAuditVerdict(out io.Writer, rep *audit.VerifyReport, took time.Duration) {
	rows := rep.Decisions
	rate := ""
	if took > 0 && rows > 0 {
		rate = fmt.Sprintf(", %.0f decisions/s", float64(rows)/took.Seconds())
	}
	if rep.OK() {
		fmt.Fprintf(out, "OK: %d decisions verified in %s%s; nothing found\n", rows, took.Round(time.Millisecond), rate)
		return
	}
	var kinds []string
	for _, k := range slices.Sorted(maps.Keys(rep.ByKind)) {
		kinds = append(kinds, fmt.Sprintf("%d %s", rep.ByKind[k], k))
	}
	fmt.Fprintf(out, "FAILED: %s (%s); %d decisions verified in %s%s\n", plural(rep.Findings, "finding"), strings.Join(kinds, ", "),
		rows, took.Round(time.Millisecond), rate)
}

// plural writes "1 finding", "2 findings".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// verifyProgress counts what audit verify has read, for its progress line: the decisions of
// the orders, then the batches of the partitions' chains.
type verifyProgress struct {
	audit.VerifySource
	orders, decisions, batches atomic.Int64
	partition                  atomic.Int64 // the chain being read; -1: none yet
}

func (v *verifyProgress) OrderGroups(ctx context.Context, program string, fn func(*audit.OrderGroup) error) error {
	return v.VerifySource.OrderGroups(ctx, program, func(g *audit.OrderGroup) error {
		v.orders.Add(1)
		v.decisions.Add(int64(len(g.Rows)))
		return fn(g)
	})
}

func (v *verifyProgress) Batches(ctx context.Context, partition int) iter.Seq2[audit.BatchRow, error] {
	v.partition.Store(int64(partition))
	return func(yield func(audit.BatchRow, error) bool) {
		for b, err := range v.VerifySource.Batches(ctx, partition) {
			v.batches.Add(1)
			if !yield(b, err) {
				return
			}
		}
	}
}

// status is the progress line's text.
func (v *verifyProgress) status(start time.Time) func() string {
	v.partition.Store(-1)
	return func() string {
		line := fmt.Sprintf("audit verify: decisions read %s (%d orders)", perSecond(v.decisions.Load(), start), v.orders.Load())
		if p := v.partition.Load(); p >= 0 {
			line += fmt.Sprintf("; chains: partition %d, %d batches read", p, v.batches.Load())
		}
		return line
	}
}
