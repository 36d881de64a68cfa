package engine_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/commissioner/commissioner/engine"
)

// TestMerkleRootMatchesTheLibrary checks our RFC 6962 root against transparency-dev/merkle's
// compact ranges, and every inclusion proof against its verifier, for trees of 1 to 70 leaves.
func TestMerkleRootMatchesTheLibrary(t *testing.T) {
	rf := &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	for n := 1; n <= 70; n++ {
		leaves := make([]engine.Hash, n)
		r := rf.NewEmptyRange(0)
		for i := range leaves {
			leaves[i] = engine.LeafHash([]byte(fmt.Sprintf("leaf %d", i)))
			if err := r.Append(leaves[i][:], nil); err != nil {
				t.Fatal(err)
			}
		}
		want, err := r.GetRootHash(nil)
		if err != nil {
			t.Fatal(err)
		}
		root := engine.MerkleRoot(leaves)
		if string(root[:]) != string(want) {
			t.Fatalf("%d leaves: root %x, the library says %x", n, root, want)
		}
		for i := range leaves {
			p, err := engine.InclusionProof(leaves, i)
			if err != nil {
				t.Fatal(err)
			}
			if err := engine.VerifyInclusion(i, n, leaves[i], p, root); err != nil {
				t.Fatalf("%d leaves: proof of leaf %d does not verify: %v", n, i, err)
			}
			other := leaves[(i+1)%n]
			if n > 1 && engine.VerifyInclusion(i, n, other, p, root) == nil {
				t.Fatalf("%d leaves: proof of leaf %d verifies another leaf", n, i)
			}
		}
	}
	if got, want := engine.MerkleRoot(nil), sha256.Sum256(nil); got != engine.Hash(want) {
		t.Errorf("empty root %x, want SHA-256 of nothing %x", got, want)
	}
}

// TestPassBooksAsBookDoes: over random lifecycles in random batches, Pass's ledger entries and
// order states are exactly what DecideBatch followed by Book gives; its leaves are one per event
// in batch order; its header continues the head; and the same batch passes to the same bytes.
func TestPassBooksAsBookDoes(t *testing.T) {
	eng := engine.New(mustSet(t, map[string]string{"shop/v1.yaml": shopPolicy(1, "2025-01-01T00:00:00Z", "7.5%", "")}))
	ctx := context.Background()
	for seed := uint64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 9))
		evs := randomLifecycles(rng, 30, 6)
		old, cur := engine.NewSnapshot(), engine.NewSnapshot()
		head := engine.PartitionHead{Partition: 3, Epoch: 7, Hash: engine.GenesisHash}
		var lastID int64
		latest := map[engine.OrderKey]int64{}
		for len(evs) > 0 {
			n := min(len(evs), 1+rng.IntN(12))
			batch := make([]engine.Event, n)
			for i := range batch {
				batch[i] = evs[i].event()
			}
			evs = evs[n:]

			a := engine.DecodeEvents(batch, nil)
			eng.DecideBatch(ctx, a, old)
			booking, err := engine.Book(old, a, nil)
			if err != nil {
				t.Fatal(err)
			}
			old.Apply(booking, nil)

			w, err := eng.Pass(ctx, head, engine.DecodeEvents(batch, nil), cur, nil)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := eng.Pass(ctx, head, engine.DecodeEvents(batch, nil), cur, nil)
			if again.Hash != w.Hash {
				t.Fatalf("seed %d: the same batch passed twice gives batch hashes %s and %s", seed, w.Hash, again.Hash)
			}
			if got, want := entriesText(w.Ledger), entriesText(booking.Entries); got != want {
				t.Fatalf("seed %d: Pass booked\n%s\nBook booked\n%s", seed, got, want)
			}
			if len(w.Decisions)+len(w.Dead) != n || w.Header.Leaves != n {
				t.Fatalf("seed %d: %d events gave %d decisions, %d dead letters, %d leaves", seed, n, len(w.Decisions), len(w.Dead), w.Header.Leaves)
			}
			for j, d := range w.Decisions {
				if d.Leaf != j || d.Result != j {
					t.Fatalf("seed %d: decision %d is leaf %d of result %d", seed, j, d.Leaf, d.Result)
				}
			}
			if w.Header.Seq != head.Seq+1 || w.Header.Prev != head.Hash || w.Header.Partition != 3 || w.Header.Epoch != 7 {
				t.Fatalf("seed %d: header %+v does not continue head %+v", seed, w.Header, head)
			}
			// The store reads an order's state back as its decisions (AddDecision), each
			// following the order's decision before it.
			ids := make([]int64, len(w.Decisions))
			for j := range w.Decisions {
				d := &w.Decisions[j]
				lastID++
				ids[j] = lastID
				k := engine.OrderKey{Program: d.Program, OrderID: d.OrderID}
				prev := d.Prev
				if d.PrevDecision >= 0 {
					prev = ids[d.PrevDecision]
				}
				if prev != latest[k] {
					t.Fatalf("seed %d: decision %d of order %s follows %d, its order's latest is %d", seed, j, d.OrderID, prev, latest[k])
				}
				latest[k] = lastID
				past := &engine.PastDecision{ID: lastID, EventID: d.EventID, StreamSeq: d.StreamSeq, AffiliateID: d.AffiliateID, Currency: d.Currency,
					Month: d.Month, Qualified: d.Qualified, Current: d.Current, Pin: d.Pin}
				past.Base.SetString(d.Base)
				past.Commission.SetString(d.Commission)
				cur.AddDecision(k, past)
			}
			for k, v := range booking.Months {
				cur.Months[k] = v
			}
			head.Seq, head.Hash = w.Header.Seq, w.Hash
		}
		for k, st := range old.Orders {
			got := cur.Orders[k]
			if got.EventID != st.EventID || got.Qualified != st.Qualified || got.Commission.Cmp(&st.Commission) != 0 ||
				got.Base.Cmp(&st.Base) != 0 || got.AffiliateID != st.AffiliateID || got.Month != st.Month || pinOf(got.Pin) != pinOf(st.Pin) {
				t.Fatalf("seed %d: order %v: Pass's state %+v, Book's %+v", seed, k, got, st)
			}
		}
	}
}

// TestLeafCoversTheLedger: a leaf changes with every ledger field and the state it covers.
func TestLeafCoversTheLedger(t *testing.T) {
	eng := engine.New(mustSet(t, map[string]string{"shop/v1.yaml": shopPolicy(1, "2025-01-01T00:00:00Z", "10%", "")}))
	w, err := eng.Pass(context.Background(), engine.PartitionHead{}, engine.DecodeEvents([]engine.Event{
		shopEvent{id: "e1", order: "o", status: "completed", amount: "100.00", seq: 1}.event()}, nil), engine.NewSnapshot(), nil)
	if err != nil || len(w.Ledger) != 1 {
		t.Fatalf("Pass: %v, %d entries", err, len(w.Ledger))
	}
	r := &w.Results[0]
	leaf := func(entries []engine.LedgerEntry, st engine.StateChange) engine.Hash {
		return engine.LeafHash(engine.AppendDecisionLeaf(nil, r.Event.ID, r.Event.StreamSeq, r.Event.Raw, r.Decision, entries, st))
	}
	st := engine.StateChange{Current: true, Pin: &engine.Pin{Version: 1, Digest: r.Decision.PolicyDigest}}
	if got := leaf(w.Ledger, st); got != w.Decisions[0].LeafHash {
		t.Fatalf("recomputed leaf %s, Pass stored %s", got, w.Decisions[0].LeafHash)
	}
	changed := map[string]func(e *engine.LedgerEntry, s *engine.StateChange){
		"amount":    func(e *engine.LedgerEntry, _ *engine.StateChange) { e.Amount.SetString("99999.00") },
		"affiliate": func(e *engine.LedgerEntry, _ *engine.StateChange) { e.AffiliateID = "aff-9" },
		"kind":      func(e *engine.LedgerEntry, _ *engine.StateChange) { e.Kind = engine.Adjustment },
		"currency":  func(e *engine.LedgerEntry, _ *engine.StateChange) { e.Currency = "EUR" },
		"approve":   func(e *engine.LedgerEntry, _ *engine.StateChange) { e.ApproveAt = e.ApproveAt.AddDate(0, 0, -30) },
		"current":   func(_ *engine.LedgerEntry, s *engine.StateChange) { s.Current = false },
		"pin":       func(_ *engine.LedgerEntry, s *engine.StateChange) { s.Pin = nil },
	}
	for name, change := range changed {
		e := w.Ledger[0]
		s := st
		change(&e, &s)
		if leaf([]engine.LedgerEntry{e}, s) == w.Decisions[0].LeafHash {
			t.Errorf("changing the %s leaves the leaf hash as it was", name)
		}
	}
	if leaf(nil, st) == w.Decisions[0].LeafHash {
		t.Error("dropping the ledger entry leaves the leaf hash as it was")
	}
}

func entriesText(es []engine.LedgerEntry) string {
	s := ""
	for _, e := range es {
		s += fmt.Sprintf("%d %s %s %s %s %s %s\n", e.Result, e.Kind, e.OrderID, e.AffiliateID, e.Currency, e.Amount.Text('f'), e.ApproveAt)
	}
	return s
}

func pinOf(p *engine.Pin) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprintf("v%d %s", p.Version, p.Digest)
}

// TestPassCutShortIsNotADeadLetter: a batch whose context ends while it is decided fails as a
// whole (to be tried again); none of its events is dead-lettered for a rule "failing" on the
// cancelled context.
func TestPassCutShortIsNotADeadLetter(t *testing.T) {
	eng := engine.New(mustSet(t, map[string]string{"shop/v1.yaml": shopPolicy(1, "2025-01-01T00:00:00Z", "10%", "")}))
	results := engine.DecodeEvents([]engine.Event{shopEvent{id: "e1", order: "o", status: "completed", amount: "100.00", seq: 1}.event()}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w, err := eng.Pass(ctx, engine.PartitionHead{}, results, engine.NewSnapshot(), nil)
	if !errors.Is(err, context.Canceled) || w != nil {
		t.Fatalf("Pass with a cancelled context: %v, %+v; want context.Canceled and no batch", err, w)
	}
	// The same batch on a live context is decided.
	if w, err := eng.Pass(context.Background(), engine.PartitionHead{}, results, engine.NewSnapshot(), nil); err != nil || len(w.Dead) != 0 || len(w.Decisions) != 1 {
		t.Fatalf("Pass again: %v; want one decision and no dead letter", err)
	}
}
