package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/commissioner/commissioner/adapters/checkpointlog"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/audit"
)

func TestCheckpointsSQLite(t *testing.T)   { runCheckpointSuite(t, sqliteBackend()) }
func TestCheckpointsPostgres(t *testing.T) { runCheckpointSuite(t, postgresBackend()) }

// checkpointed is a store whose partitions 1 (three batches) and 2 (two) were written through
// their owners' writers, with a checkpoint of both heads signed and logged.
type checkpointed struct {
	s       *Store
	key     note.Verifier
	log     string // the checkpoint log
	writers map[int]*engine.PartitionWriter
}

func newCheckpointed(t *testing.T, b backend) *checkpointed {
	t.Helper()
	ctx := context.Background()
	c := &checkpointed{s: openStore(t, b.fresh(t)), log: filepath.Join(t.TempDir(), "checkpoints.log"), writers: map[int]*engine.PartitionWriter{}}
	skey, vkey, err := note.GenerateKey(rand.Reader, "commissioner-test")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	if c.key, err = note.NewVerifier(vkey); err != nil {
		t.Fatal(err)
	}
	logFile, err := checkpointlog.Open(c.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logFile.Close() })
	cp := audit.NewCheckpointer(signer, 1<<62, nil, c.s, logFile)
	for p, batches := range map[int]int{1: 3, 2: 2} {
		c.writers[p] = c.claim(t, p, 10)
		for i := 1; i <= batches; i++ {
			c.write(t, p, fmt.Sprintf("p%d-b%d", p, i), "")
			cp.Update(c.writers[p].Head())
		}
	}
	if err := cp.Checkpoint(ctx); err != nil || cp.Signed() != 1 {
		t.Fatalf("Checkpoint: %v, %d signed", err, cp.Signed())
	}
	return c
}

func (c *checkpointed) claim(t *testing.T, p int, epoch uint64) *engine.PartitionWriter {
	t.Helper()
	w, err := engine.ClaimPartition(context.Background(), c.s, p, epoch)
	if err != nil {
		t.Fatal(err)
	}
	c.writers[p] = w
	return w
}

// write writes one batch of 10 orders to partition p; raise, when set, replaces every order's
// amount's first digit run with it (forged events under the same ids).
func (c *checkpointed) write(t *testing.T, p int, prefix, raise string) {
	t.Helper()
	var events []engine.Event
	for _, r := range genBatch(t, batchSpec{prefix: prefix, orders: 10, seed: uint64(len(prefix))}) {
		ev := r.Event
		if raise != "" {
			ev.Raw = bytes.Replace(ev.Raw, []byte(`"amount":"`), []byte(`"amount":"`+raise), 1)
		}
		events = append(events, ev)
	}
	if _, err := c.writers[p].Write(context.Background(), seedEngine(t), events); err != nil {
		t.Fatal(err)
	}
}

// cutLast deletes partition p's last batch with its rows and sets the partition's head back to
// the batch before: a consistent, shorter chain.
func (c *checkpointed) cutLast(t *testing.T, p int) {
	t.Helper()
	last := fmt.Sprintf("(SELECT max(seq) FROM batches WHERE part = %d)", p)
	exec(t, c.s, fmt.Sprintf("DELETE FROM ledger_entries WHERE decision_id IN (SELECT id FROM decisions WHERE part = %d AND batch_seq = %s)", p, last))
	exec(t, c.s, fmt.Sprintf("DELETE FROM dead_letters WHERE part = %d AND batch_seq = %s", p, last))
	exec(t, c.s, fmt.Sprintf("DELETE FROM decisions WHERE part = %d AND batch_seq = %s", p, last))
	exec(t, c.s, fmt.Sprintf("DELETE FROM batches WHERE part = %d AND seq = %s", p, last))
	exec(t, c.s, fmt.Sprintf("UPDATE partitions SET seq = %s, hash = (SELECT hash FROM batches WHERE part = %d AND seq = %s) WHERE part = %d", last, p, last, p))
}

// verify verifies the store against the logged checkpoints (none: without) and returns the
// findings reduced.
func (c *checkpointed) verify(t *testing.T, with bool) (*audit.VerifyReport, []gotFinding, []audit.Finding) {
	t.Helper()
	opts := audit.VerifyOptions{Workers: 2}
	if with {
		cps, err := checkpointlog.Read(c.log)
		if err != nil {
			t.Fatal(err)
		}
		opts.Checkpoints, opts.CheckpointKey = cps, c.key
	}
	var fs []audit.Finding
	opts.OnFinding = func(f audit.Finding) { fs = append(fs, f) }
	rep, err := audit.Verify(context.Background(), c.s, opts)
	if err != nil {
		t.Fatal(err)
	}
	return rep, reduce(fs), fs
}

func runCheckpointSuite(t *testing.T, b backend) {

	t.Run("an untouched store holds every signed head", func(t *testing.T) {
		c := newCheckpointed(t, b)
		rep, got, _ := c.verify(t, true)
		if len(got) != 0 || rep.Checkpoints != 1 || rep.Checkpointed != 2 {
			t.Fatalf("findings %v, %d checkpoints, %d batches checked; want none, 1, 2", got, rep.Checkpoints, rep.Checkpointed)
		}
		stored, err := c.s.Checkpoints(context.Background())
		if err != nil || len(stored) != 1 {
			t.Fatalf("the store's copy: %d checkpoints, %v; want 1", len(stored), err)
		}
		// A decision of partition 1's first batch is proven against the head it signed (batch 3).
		proof := c.prove(t, 1, 1)
		if !proof.Verified || proof.HeadSeq != 3 || len(proof.Batches) != 3 {
			t.Fatalf("proof: %+v; want verified through batches 1–3", proof)
		}
		// A batch stored after the checkpoint is not covered yet.
		c.write(t, 2, "p2-b3", "")
		if proof := c.prove(t, 2, 3); proof.Verified || !proof.Uncovered {
			t.Errorf("a batch after the checkpoint: %+v, want not covered", proof)
		}
	})

	t.Run("a cut tail verifies alone, and is named against the checkpoint", func(t *testing.T) {
		c := newCheckpointed(t, b)
		c.cutLast(t, 1)
		if _, got, _ := c.verify(t, false); len(got) != 0 {
			t.Fatalf("without checkpoints: %v; the cut chain is consistent, want nothing found", got)
		}
		_, got, fs := c.verify(t, true)
		if want := []gotFinding{{audit.FindingCheckpointCut, "", 3, -1}}; fmt.Sprint(got) != fmt.Sprint(want) || fs[0].Partition != 1 {
			t.Fatalf("with checkpoints: %v (partition %d), want %v in partition 1", got, fs[0].Partition, want)
		}
	})

	t.Run("events decided again, forged, by the product itself are named against the checkpoint", func(t *testing.T) {
		c := newCheckpointed(t, b)
		// The insider cuts the last batch and runs the pipeline again with the same events,
		// their amounts raised: a new batch 3, with a valid chain and leaves.
		c.cutLast(t, 1)
		c.claim(t, 1, 20)
		c.write(t, 1, "p1-b3", "9")
		var raws [][]byte
		if err := c.s.DB().NewRaw("SELECT raw FROM decisions WHERE part = 1 AND batch_seq = 3").Scan(context.Background(), &raws); err != nil {
			t.Fatal(err)
		}
		raised := 0
		for _, raw := range raws {
			if bytes.Contains(raw, []byte(`"amount":"9`)) {
				raised++
			}
		}
		if raised != 10 {
			t.Fatalf("%d forged events of %d stored as batch 3; want 10", raised, len(raws))
		}
		if _, got, _ := c.verify(t, false); len(got) != 0 {
			t.Fatalf("without checkpoints: %v; the rewritten chain is consistent, want nothing found", got)
		}
		_, got, fs := c.verify(t, true)
		if want := []gotFinding{{audit.FindingCheckpointMismatch, "", 3, -1}}; fmt.Sprint(got) != fmt.Sprint(want) || fs[0].Partition != 1 {
			t.Fatalf("with checkpoints: %v, want %v in partition 1", got, want)
		}
		// An untouched earlier decision no longer proves against the checkpoint either: its chain
		// leads to another head.
		if proof := c.prove(t, 1, 1); proof.Verified || !strings.Contains(proof.Err, "the chain was rewritten") {
			t.Errorf("proof after the rewrite: %+v, want it refused", proof)
		}
	})

	t.Run("a deleted batch and an edited ledger entry are named", func(t *testing.T) {
		c := newCheckpointed(t, b)
		exec(t, c.s, "DELETE FROM decisions WHERE part = 2 AND batch_seq = 1")
		exec(t, c.s, "DELETE FROM batches WHERE part = 2 AND seq = 1")
		exec(t, c.s, "UPDATE ledger_entries SET amount = '99999.00' WHERE id = (SELECT min(id) FROM ledger_entries)")
		_, got, _ := c.verify(t, true)
		kinds := map[string]bool{}
		for _, f := range got {
			kinds[f.Kind] = true
		}
		if !kinds[audit.FindingMissing] || !kinds[audit.FindingLedger] {
			t.Fatalf("findings %v, want missing (the batch) and ledger", got)
		}
	})

	t.Run("a checkpoint with a bad signature is refused", func(t *testing.T) {
		c := newCheckpointed(t, b)
		cps, err := checkpointlog.Read(c.log)
		if err != nil || len(cps) != 1 {
			t.Fatal(err)
		}
		// A head rewritten in the signed text, to cover a cut chain.
		forged := audit.SignedCheckpoint{Where: "forged", Signed: []byte(strings.Replace(string(cps[0].Signed), "partition 1 3 ", "partition 1 2 ", 1))}
		// A checkpoint signed by another key.
		skey, _, _ := note.GenerateKey(rand.Reader, "commissioner-test")
		other, _ := note.NewSigner(skey)
		text, err := audit.ParseCheckpoint(mustOpenText(t, cps[0].Signed))
		if err != nil {
			t.Fatal(err)
		}
		resigned, err := text.Sign(other)
		if err != nil {
			t.Fatal(err)
		}
		var fs []audit.Finding
		rep, err := audit.Verify(context.Background(), c.s, audit.VerifyOptions{Workers: 2, CheckpointKey: c.key,
			Checkpoints: []audit.SignedCheckpoint{forged, {Where: "other key", Signed: resigned}},
			OnFinding:   func(f audit.Finding) { fs = append(fs, f) }})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Checkpoints != 0 || len(fs) != 2 || fs[0].Kind != audit.FindingCheckpointSignature || fs[1].Kind != audit.FindingCheckpointSignature ||
			!strings.Contains(fs[0].Detail, "forged") || !strings.Contains(fs[1].Detail, "other key") {
			t.Fatalf("%d checkpoints used, findings %+v; want none used and both refused", rep.Checkpoints, fs)
		}
	})
}

// prove proves the first decision of partition p's batch against the logged checkpoints.
func (c *checkpointed) prove(t *testing.T, p int, batch uint64) *audit.CheckpointProof {
	t.Helper()
	ctx := context.Background()
	var id int64
	if err := c.s.DB().NewRaw("SELECT min(id) FROM decisions WHERE part = ? AND batch_seq = ?", p, int64(batch)).Scan(ctx, &id); err != nil {
		t.Fatal(err)
	}
	d, err := c.s.Decision(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := checkpointlog.Read(c.log)
	if err != nil {
		t.Fatal(err)
	}
	cps, refused := audit.OpenCheckpoints(signed, c.key)
	if len(refused) != 0 {
		t.Fatalf("%d checkpoints refused: %v", len(refused), refused)
	}
	proof, err := audit.ProveInCheckpoint(ctx, c.s, &d, cps)
	if err != nil {
		t.Fatal(err)
	}
	return proof
}

// mustOpenText returns a signed note's text without checking its signature.
func mustOpenText(t *testing.T, signed []byte) []byte {
	t.Helper()
	text, _, ok := bytes.Cut(signed, []byte("\n\n"))
	if !ok {
		t.Fatal("not a signed note")
	}
	return append(text, '\n')
}
