package audit

// Signed checkpoints: what anchors the partitions' chains outside the database. A chain of
// batches proves order and integrity against anyone who edits some rows, but whoever can rewrite
// every row after a point and the heads can rebuild it (re-deciding forged events with the product
// itself gives a chain that verifies). A checkpoint is the heads of the chains, signed by the
// service with a key the database does not hold and exported where the database's administrator
// cannot rewrite it (a file on another volume, a JetStream stream). Verify then checks that the
// database still holds, for every signed head, exactly that batch: a rewritten tail has another
// hash, a cut tail has no batch there.
//
// The text is a signed note (golang.org/x/mod/sumdb/note), in the shape of a c2sp.org
// tlog-checkpoint with extension lines:
//
//	<origin>
//	<batches: the sum of the heads' batch sequences>
//	<base64 SHA-256 of the partition lines below, each with its newline>
//	time <RFC 3339 UTC, nanoseconds>
//	partition <n> <batch seq> <batch hash, hex>
//	…
//
//	— <key name> <signature>

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/commissioner/commissioner/engine"
)

// Checkpoint is a set of partition heads at a time, as signed.
type Checkpoint struct {
	Origin string
	Time   time.Time
	Heads  []Head // by partition
}

// Head is one partition's chain head: its last batch.
type Head struct {
	Partition int
	Seq       uint64
	Hash      engine.Hash
}

// Body is the checkpoint's text (what is signed).
func (c *Checkpoint) Body() []byte {
	heads := append([]Head(nil), c.Heads...)
	sort.Slice(heads, func(i, j int) bool { return heads[i].Partition < heads[j].Partition })
	var lines bytes.Buffer
	var total uint64
	for _, h := range heads {
		fmt.Fprintf(&lines, "partition %d %d %s\n", h.Partition, h.Seq, h.Hash)
		total += h.Seq
	}
	sum := sha256.Sum256(lines.Bytes())
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\n%d\n%s\ntime %s\n", c.Origin, total, base64.StdEncoding.EncodeToString(sum[:]), c.Time.UTC().Format(time.RFC3339Nano))
	b.Write(lines.Bytes())
	return b.Bytes()
}

// Sign returns the checkpoint as a signed note.
func (c *Checkpoint) Sign(s note.Signer) ([]byte, error) {
	return note.Sign(&note.Note{Text: string(c.Body())}, s)
}

// ErrCheckpointSignature: a checkpoint's signature does not verify with the key given.
var ErrCheckpointSignature = errors.New("the checkpoint's signature does not verify")

// OpenCheckpoint verifies a signed checkpoint with the key and parses it. An error matching
// ErrCheckpointSignature means it is not signed by that key (or its text was changed).
func OpenCheckpoint(msg []byte, key note.Verifier) (*Checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(key))
	if err != nil { // malformed, signed by another key, or a signature that does not match the text
		return nil, fmt.Errorf("%w with key %s: %v", ErrCheckpointSignature, key.Name(), err)
	}
	return ParseCheckpoint([]byte(n.Text))
}

// ParseCheckpoint parses a checkpoint's text (not its signature: see OpenCheckpoint), checking
// its summary lines against its partition lines.
func ParseCheckpoint(text []byte) (*Checkpoint, error) {
	lines := strings.Split(strings.TrimSuffix(string(text), "\n"), "\n")
	if len(lines) < 4 {
		return nil, fmt.Errorf("checkpoint: %d lines, want origin, batches, digest, time and the partitions", len(lines))
	}
	c := &Checkpoint{Origin: lines[0]}
	total, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("checkpoint line 2: batches %q: %v", lines[1], err)
	}
	t, ok := strings.CutPrefix(lines[3], "time ")
	if !ok {
		return nil, fmt.Errorf("checkpoint line 4: %q, want time <RFC 3339>", lines[3])
	}
	if c.Time, err = time.Parse(time.RFC3339Nano, t); err != nil {
		return nil, fmt.Errorf("checkpoint line 4: %v", err)
	}
	var sum uint64
	for i, l := range lines[4:] {
		var h Head
		var hash string
		if n, err := fmt.Sscanf(l, "partition %d %d %s", &h.Partition, &h.Seq, &hash); err != nil || n != 3 {
			return nil, fmt.Errorf("checkpoint line %d: %q, want partition <n> <seq> <hash>", i+5, l)
		}
		if h.Hash, err = engine.ParseHash(hash); err != nil {
			return nil, fmt.Errorf("checkpoint line %d: %v", i+5, err)
		}
		c.Heads = append(c.Heads, h)
		sum += h.Seq
	}
	again := (&Checkpoint{Origin: c.Origin, Time: c.Time, Heads: c.Heads}).Body()
	if sum != total || !bytes.Equal(again, text) {
		return nil, errors.New("checkpoint: its batch count or digest is not that of its partition lines")
	}
	return c, nil
}

// --- the checkpoint log ---

// A checkpoint log holds one signed checkpoint per line, as JSON: {"note": "<signed note>"}. A
// signed note spans several lines (the text, a blank line, the signatures); one JSON line each
// keeps the log appendable and each record whole.
type logRecord struct {
	Note string `json:"note"`
}

// AppendLogRecord appends a signed checkpoint as one line of a checkpoint log.
func AppendLogRecord(b, signed []byte) []byte {
	line, _ := json.Marshal(logRecord{Note: string(signed)}) // a string always marshals
	return append(append(b, line...), '\n')
}

// SignedCheckpoint is one record read from a checkpoint log or stream: where it was, and its
// signed note.
type SignedCheckpoint struct {
	Where  string // "checkpoints.log:12", "stream CHECKPOINTS seq 12"
	Signed []byte
}

// ReadLog reads a checkpoint log. name names it in errors and in each record's Where.
func ReadLog(r io.Reader, name string) ([]SignedCheckpoint, error) {
	var out []SignedCheckpoint
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var rec logRecord
		if err := json.Unmarshal(line, &rec); err != nil || rec.Note == "" {
			return out, fmt.Errorf("%s:%d: not a checkpoint record ({\"note\": …}): %v", name, n, err)
		}
		out = append(out, SignedCheckpoint{Where: fmt.Sprintf("%s:%d", name, n), Signed: []byte(rec.Note)})
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("reading %s: %w", name, err)
	}
	return out, nil
}
