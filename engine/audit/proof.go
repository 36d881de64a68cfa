package audit

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/commissioner/commissioner/engine"
)

// BatchRanger reads a partition's batch rows from one sequence to another (adapters/store).
type BatchRanger interface {
	BatchRange(ctx context.Context, partition int, from, to uint64) ([]BatchRow, error)
}

// OpenedCheckpoint is a checkpoint whose signature verified, and where it was read.
type OpenedCheckpoint struct {
	*Checkpoint
	Where  string
	Signed []byte // the signed note, for whoever checks it with their own copy of the key
}

// RefusedCheckpoint is a checkpoint whose signature did not verify, and why.
type RefusedCheckpoint struct {
	Where string
	Err   error
}

// OpenCheckpoints verifies signed checkpoints with the key and returns those that verify, and
// those that do not with why.
func OpenCheckpoints(signed []SignedCheckpoint, key note.Verifier) (out []OpenedCheckpoint, refused []RefusedCheckpoint) {
	for _, sc := range signed {
		cp, err := OpenCheckpoint(sc.Signed, key)
		if err != nil {
			refused = append(refused, RefusedCheckpoint{Where: sc.Where, Err: err})
			continue
		}
		out = append(out, OpenedCheckpoint{Checkpoint: cp, Where: sc.Where, Signed: sc.Signed})
	}
	return out, refused
}

// CheckpointProof shows that a signed checkpoint commits to a decision: the decision's leaf is in
// its batch's root (its Inclusion), that batch's hash is the hash of its header, and each batch
// after it up to the checkpoint's head names the one before (prev hash) and hashes to its stored
// hash, the last to the hash the checkpoint signed.
type CheckpointProof struct {
	Where     string    // the checkpoint
	Time      time.Time // when it was signed
	Signed    []byte    // its signed note
	HeadSeq   uint64    // the batch it signed for the decision's partition
	HeadHash  string
	Batches   []BatchRow // the decision's batch, then every batch up to the signed one
	Verified  bool
	Err       string // why it does not verify; "" when it does
	Uncovered bool   // no checkpoint covers the decision's batch yet (signed before it was stored)
}

// ProveInCheckpoint proves decision d (in partition d.Partition, batch d.BatchSeq) against the
// earliest of the checkpoints that covers its batch. It does not check d's inclusion in its
// batch: that is Explain's Inclusion, which the proof continues.
func ProveInCheckpoint(ctx context.Context, src BatchRanger, d *StoredDecision, cps []OpenedCheckpoint) (*CheckpointProof, error) {
	var best *OpenedCheckpoint
	var head Head
	for i := range cps {
		for _, h := range cps[i].Heads {
			if h.Partition != d.Partition || h.Seq < d.BatchSeq {
				continue
			}
			if best == nil || h.Seq < head.Seq {
				best, head = &cps[i], h
			}
		}
	}
	if best == nil {
		return &CheckpointProof{Uncovered: true, Err: fmt.Sprintf("no checkpoint given covers batch %d of partition %d: it was stored after the last one", d.BatchSeq, d.Partition)}, nil
	}
	out := &CheckpointProof{Where: best.Where, Time: best.Time, Signed: best.Signed, HeadSeq: head.Seq, HeadHash: head.Hash.String()}
	rows, err := src.BatchRange(ctx, d.Partition, d.BatchSeq, head.Seq)
	if err != nil {
		return nil, err
	}
	out.Batches = rows
	prev := ""
	for i, b := range rows {
		want := d.BatchSeq + uint64(i)
		if uint64(b.Seq) != want {
			out.Err = fmt.Sprintf("batch %d of partition %d is not stored", want, d.Partition)
			return out, nil
		}
		hdr := engine.BatchHeader{Partition: d.Partition, Seq: uint64(b.Seq), Epoch: uint64(b.Epoch), Leaves: int(b.Leaves),
			FirstStreamSeq: uint64(b.FirstStreamSeq), LastStreamSeq: uint64(b.LastStreamSeq)}
		var err1, err2 error
		hdr.Prev, err1 = engine.ParseHash(b.Prev)
		hdr.Root, err2 = engine.ParseHash(b.Root)
		switch {
		case err1 != nil || err2 != nil || hdr.Hash().String() != b.Hash:
			out.Err = fmt.Sprintf("batch %d's stored hash %s is not the hash of its header", b.Seq, short(b.Hash))
			return out, nil
		case i > 0 && b.Prev != prev:
			out.Err = fmt.Sprintf("batch %d does not follow batch %d: its prev hash %s is not %s", b.Seq, b.Seq-1, short(b.Prev), short(prev))
			return out, nil
		}
		prev = b.Hash
	}
	switch {
	case uint64(len(rows)) != head.Seq-d.BatchSeq+1:
		out.Err = fmt.Sprintf("batches %d–%d of partition %d are not all stored", d.BatchSeq, head.Seq, d.Partition)
	case prev != out.HeadHash:
		out.Err = fmt.Sprintf("batch %d is stored with hash %s, the checkpoint signed %s: the chain was rewritten", head.Seq, short(prev), short(out.HeadHash))
	default:
		out.Verified = true
	}
	return out, nil
}
