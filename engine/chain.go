package engine

// The tamper evidence. Each partition of the stream has one chain of batches; each batch is a
// Merkle tree (RFC 6962) of leaves, one per event the batch stored an outcome for — a decision, or a
// dead letter — in the batch's order:
//
//	leaf hash   = SHA-256(0x00 ‖ leaf bytes)                (RFC 6962 §2.1, transparency-dev/merkle)
//	batch root  = RFC 6962 Merkle tree hash of the batch's leaf hashes
//	batch hash  = SHA-256(batch header bytes), the header naming the partition, the batch's
//	              sequence in it, the previous batch's hash (GenesisHash for the first), the root,
//	              the number of leaves and the stream sequences the batch covers.
//
// A decision's leaf bytes cover what was decided — the event's identity, stream position and the
// SHA-256 of its raw bytes, the decision in its canonical JSON (policy version and digest, inputs,
// outcome, every rule's outcome) — and what the decision caused: the ledger entries it booked and
// the change it made to its order's state. So editing a commission, a ledger amount or affiliate,
// or an order's state in the database, deleting, inserting or reordering a decision or a batch,
// shows when audit verify recomputes leaves, roots and the chain. Everything here is pure: the
// store writes the values, audit recomputes them.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// Hash is a SHA-256 hash: a leaf hash, a Merkle root or a batch hash.
type Hash [sha256.Size]byte

// GenesisHash is the previous-batch hash of every partition's first batch.
var GenesisHash Hash

// String is the lowercase hex form, as stored.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ParseHash reads the hex form of a hash.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*len(h) {
		return h, fmt.Errorf("hash %q is not %d hex digits", s, 2*len(h))
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("hash %q: %w", s, err)
	}
	return h, nil
}

var hasher = rfc6962.DefaultHasher

// StateChange is what a decision did to its order's state: whether it became the order's current
// decision (its event is the order's newest), and the order's pin after it (the version of its
// first qualifying decision; nil while none qualified).
type StateChange struct {
	Current bool
	Pin     *Pin
}

// AppendDecisionLeaf appends a decision's leaf bytes:
//
//	{"event_id":…,"stream_seq":…,"event_sha256":…,"decision":<d.AppendJSON(…, true)>,
//	 "ledger":[{"kind":…,"affiliate_id":…,"currency":…,"amount":…,"approve_at":…},…],
//	 "state":{"current":…,"pin_version":…,"pin_digest":…}}
//
// entries are the ledger entries the decision booked, in booking order; amounts as decimal text,
// approve_at in RFC 3339 UTC; pin_version 0 and pin_digest "" when the order has no pin.
func AppendDecisionLeaf(b []byte, eventID string, streamSeq uint64, raw []byte, d *Decision, entries []LedgerEntry, st StateChange) []byte {
	b = appendLeafEvent(b, eventID, streamSeq, raw)
	b = append(b, `,"decision":`...)
	b = d.AppendJSON(b, true)
	b = append(b, `,"ledger":[`...)
	for i := range entries {
		e := &entries[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"kind":`...)
		b = appendString(b, string(e.Kind))
		b = append(b, `,"affiliate_id":`...)
		b = appendString(b, e.AffiliateID)
		b = append(b, `,"currency":`...)
		b = appendString(b, e.Currency)
		b = append(b, `,"amount":"`...)
		b = e.Amount.Append(b, 'f')
		b = append(b, `","approve_at":"`...)
		b = e.ApproveAt.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `"}`...)
	}
	b = append(b, `],"state":{"current":`...)
	b = strconv.AppendBool(b, st.Current)
	b = append(b, `,"pin_version":`...)
	var pv int
	var pd string
	if st.Pin != nil {
		pv, pd = st.Pin.Version, st.Pin.Digest
	}
	b = strconv.AppendInt(b, int64(pv), 10)
	b = append(b, `,"pin_digest":`...)
	b = appendString(b, pd)
	return append(b, "}}"...)
}

// AppendDeadLetterLeaf appends a dead letter's leaf bytes:
//
//	{"event_id":…,"stream_seq":…,"event_sha256":…,"dead_letter":{"kind":…,"reason":…}}
func AppendDeadLetterLeaf(b []byte, eventID string, streamSeq uint64, raw []byte, kind, reason string) []byte {
	b = appendLeafEvent(b, eventID, streamSeq, raw)
	b = append(b, `,"dead_letter":{"kind":`...)
	b = appendString(b, StorableText(kind))
	b = append(b, `,"reason":`...)
	b = appendString(b, StorableText(reason))
	return append(b, "}}"...)
}

func appendLeafEvent(b []byte, eventID string, streamSeq uint64, raw []byte) []byte {
	sum := sha256.Sum256(raw)
	b = append(b, `{"event_id":`...)
	b = appendString(b, StorableText(eventID))
	b = append(b, `,"stream_seq":`...)
	b = strconv.AppendUint(b, streamSeq, 10)
	b = append(b, `,"event_sha256":"`...)
	b = hex.AppendEncode(b, sum[:])
	return append(b, '"')
}

// StorableText is s as a database TEXT column keeps it: invalid UTF-8 and NUL bytes become
// U+FFFD (PostgreSQL refuses both). Leaves cover event ids and dead-letter reasons in this form,
// so that they can be recomputed from the stored rows.
func StorableText(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// LeafHash is the RFC 6962 leaf hash of leaf bytes.
func LeafHash(leaf []byte) Hash { return Hash(hasher.HashLeaf(leaf)) }

// MerkleRoot is the RFC 6962 Merkle tree hash of the leaf hashes (the hash of the empty string
// when there are none).
func MerkleRoot(leaves []Hash) Hash {
	if len(leaves) == 0 {
		return Hash(hasher.EmptyRoot())
	}
	return mth(leaves)
}

// mth is RFC 6962's MTH over at least one leaf hash: the left subtree holds the largest power of
// two smaller than n leaves.
func mth(leaves []Hash) Hash {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := split(len(leaves))
	l, r := mth(leaves[:k]), mth(leaves[k:])
	return Hash(hasher.HashChildren(l[:], r[:]))
}

// split is the largest power of two smaller than n (n ≥ 2).
func split(n int) int {
	k := 1
	for k<<1 < n {
		k <<= 1
	}
	return k
}

// InclusionProof is the RFC 6962 audit path of leaf index in a tree of the given leaf hashes:
// the sibling hashes from the leaf up to the root.
func InclusionProof(leaves []Hash, index int) ([]Hash, error) {
	if index < 0 || index >= len(leaves) {
		return nil, fmt.Errorf("inclusion proof: leaf %d is not in a tree of %d leaves", index, len(leaves))
	}
	return path(leaves, index), nil
}

func path(leaves []Hash, m int) []Hash {
	if len(leaves) == 1 {
		return nil
	}
	k := split(len(leaves))
	if m < k {
		return append(path(leaves[:k], m), mth(leaves[k:]))
	}
	return append(path(leaves[k:], m-k), mth(leaves[:k]))
}

// VerifyInclusion checks an inclusion proof of a leaf hash at index in a tree of size leaves with
// the given root (transparency-dev/merkle's verifier).
func VerifyInclusion(index, size int, leaf Hash, p []Hash, root Hash) error {
	if index < 0 || size <= 0 {
		return errors.New("inclusion proof: no such leaf")
	}
	raw := make([][]byte, len(p))
	for i := range p {
		raw[i] = p[i][:]
	}
	return proof.VerifyInclusion(hasher, uint64(index), uint64(size), leaf[:], raw, root[:])
}

// BatchHeader is what a batch row records: its place in its partition's chain and what it holds.
type BatchHeader struct {
	Partition int
	Seq       uint64 // 1, 2, 3, … within the partition
	Epoch     uint64 // the fencing token of the owner that wrote it
	Prev      Hash   // the previous batch's hash; GenesisHash for the first
	Root      Hash   // MerkleRoot of its leaves
	Leaves    int
	// FirstStreamSeq and LastStreamSeq are the stream sequences of the batch's first and last
	// events (0 when its events came from no stream).
	FirstStreamSeq, LastStreamSeq uint64
}

// AppendBytes appends the header's canonical bytes:
//
//	{"partition":…,"seq":…,"epoch":…,"prev":"<hex>","root":"<hex>","leaves":…,"first_stream_seq":…,"last_stream_seq":…}
func (h *BatchHeader) AppendBytes(b []byte) []byte {
	b = append(b, `{"partition":`...)
	b = strconv.AppendInt(b, int64(h.Partition), 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, h.Seq, 10)
	b = append(b, `,"epoch":`...)
	b = strconv.AppendUint(b, h.Epoch, 10)
	b = append(b, `,"prev":"`...)
	b = hex.AppendEncode(b, h.Prev[:])
	b = append(b, `","root":"`...)
	b = hex.AppendEncode(b, h.Root[:])
	b = append(b, `","leaves":`...)
	b = strconv.AppendInt(b, int64(h.Leaves), 10)
	b = append(b, `,"first_stream_seq":`...)
	b = strconv.AppendUint(b, h.FirstStreamSeq, 10)
	b = append(b, `,"last_stream_seq":`...)
	b = strconv.AppendUint(b, h.LastStreamSeq, 10)
	return append(b, '}')
}

// Hash is the batch's hash: SHA-256 of its canonical bytes. The next batch of the partition
// names it as Prev.
func (h *BatchHeader) Hash() Hash { return sha256.Sum256(h.AppendBytes(make([]byte, 0, 256))) }

// PartitionHead is a partition's chain as its owner continues it: the last stored batch and the
// stream position it reached.
type PartitionHead struct {
	Partition int
	Epoch     uint64 // the current owner's fencing token
	Seq       uint64 // the last stored batch's sequence; 0 when none
	Hash      Hash   // its hash; GenesisHash when none
	// LastStreamSeq is the stream sequence of the last event stored in the partition (0: none),
	// in the stream Source names ("" until one was recorded).
	LastStreamSeq uint64
	Source        string
}
