package store

// The write side: a partition's owner claims it (ClaimPartition) and stores each batch the engine
// computed (WriteBatch) in one transaction. Nothing here decides, encodes, books or chains: the
// rows arrive as engine.BatchWrite values and are written as they are. The fence is the
// partitions row: a batch is stored only by the owner whose epoch the row holds, as the next one
// after the row's seq — so an owner that lost its lease cannot store the batch it held.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/audit"
	"github.com/commissioner/commissioner/rules"
)

var _ engine.Store = (*Store)(nil)

type partitionRow struct {
	Part          int64     `bun:"part"`
	Epoch         int64     `bun:"epoch"`
	Seq           int64     `bun:"seq"`
	Hash          string    `bun:"hash"`
	LastStreamSeq int64     `bun:"last_stream_seq"`
	Source        string    `bun:"source"`
	ClaimedAt     time.Time `bun:"claimed_at"`
}

// ClaimPartition records epoch as the partition's owner, unless a later epoch holds it (an error
// matching engine.ErrFenced), and returns the partition's head: its last batch and stream position.
func (s *Store) ClaimPartition(ctx context.Context, partition int, epoch uint64) (engine.PartitionHead, error) {
	head := engine.PartitionHead{Partition: partition, Epoch: epoch}
	if epoch == 0 || epoch > 1<<62 {
		return head, fmt.Errorf("claiming partition %d: epoch %d is not a fencing token (1 … 2^62)", partition, epoch)
	}
	err := s.writeTx(ctx, func(ctx context.Context, w *wtx) error {
		if _, err := w.ExecContext(ctx, "INSERT INTO partitions (part, epoch, seq, hash, last_stream_seq, source, claimed_at) VALUES (?, 0, 0, ?, 0, '', ?) "+
			"ON CONFLICT (part) DO NOTHING", partition, engine.GenesisHash.String(), time.Now().UTC()); err != nil {
			return err
		}
		res, err := w.ExecContext(ctx, "UPDATE partitions SET epoch = ?, claimed_at = ? WHERE part = ? AND epoch <= ?",
			int64(epoch), time.Now().UTC(), partition, int64(epoch))
		if err != nil {
			return err
		}
		var row partitionRow
		if err := w.NewSelect().Table("partitions").Column("part", "epoch", "seq", "hash", "last_stream_seq", "source", "claimed_at").
			Where("part = ?", partition).Scan(ctx, &row); err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("%w: partition %d is held by epoch %d, later than this owner's %d", engine.ErrFenced, partition, row.Epoch, epoch)
		}
		h, err := engine.ParseHash(row.Hash)
		if err != nil {
			return fmt.Errorf("partition %d's head: %w", partition, err)
		}
		head.Seq, head.Hash, head.LastStreamSeq, head.Source = uint64(row.Seq), h, uint64(row.LastStreamSeq), row.Source
		return nil
	})
	if err != nil {
		return engine.PartitionHead{}, fmt.Errorf("claiming partition %d for epoch %d: %w", partition, epoch, err)
	}
	return head, nil
}

// SetPartitionSource records that the partition's stream position is now in another stream
// (source), from its start: the owner of epoch found the partition's position recorded for a
// stream that is gone (deleted and made again, or a new embedded server beside an old database),
// so it reads the new stream from its first event; events stored already are recognised by their
// ids. The partition's chain goes on. Fenced like a batch: only the epoch that holds it.
func (s *Store) SetPartitionSource(ctx context.Context, partition int, epoch uint64, source string) error {
	err := s.writeTx(ctx, func(ctx context.Context, w *wtx) error {
		res, err := w.ExecContext(ctx, "UPDATE partitions SET source = ?, last_stream_seq = 0 WHERE part = ? AND epoch = ?", source, partition, int64(epoch))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("%w: partition %d is not held by epoch %d", engine.ErrFenced, partition, epoch)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording partition %d's stream %s: %w", partition, source, err)
	}
	return nil
}

// PartitionHeads returns every partition's row: owner epoch and chain head.
func (s *Store) PartitionHeads(ctx context.Context) ([]engine.PartitionHead, error) {
	var rows []partitionRow
	if err := s.db.NewSelect().Table("partitions").Column("part", "epoch", "seq", "hash", "last_stream_seq", "source", "claimed_at").
		Order("part").Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("reading the partitions: %w", err)
	}
	out := make([]engine.PartitionHead, len(rows))
	for i, r := range rows {
		h, _ := engine.ParseHash(r.Hash) // a malformed head is audit verify's finding, not a failed read
		out[i] = engine.PartitionHead{Partition: int(r.Part), Epoch: uint64(r.Epoch), Seq: uint64(r.Seq), Hash: h,
			LastStreamSeq: uint64(r.LastStreamSeq), Source: r.Source}
	}
	return out, nil
}

// StoredEvents returns which of the event ids are stored: decided or dead-lettered.
func (s *Store) StoredEvents(ctx context.Context, ids []string) (map[string]bool, error) {
	out := map[string]bool{}
	err := inChunks(ids, func(safe []string, back map[string]string) error {
		var got []string
		if err := s.db.NewRaw("SELECT event_id FROM decisions WHERE event_id IN (?) UNION SELECT event_id FROM dead_letters WHERE event_id IN (?)",
			bun.In(safe), bun.In(safe)).Scan(ctx, &got); err != nil {
			return fmt.Errorf("reading which of %d events are stored: %w", len(ids), err)
		}
		for _, id := range got {
			out[back[id]] = true
		}
		return nil
	})
	return out, err
}

// inChunks calls fn with the event ids historyChunk at a time, as the database holds them
// (safeText), and a map from those back to the ids given.
func inChunks(ids []string, fn func(safe []string, back map[string]string) error) error {
	for start := 0; start < len(ids); start += historyChunk {
		chunk := ids[start:min(start+historyChunk, len(ids))]
		safe := make([]string, len(chunk))
		back := make(map[string]string, len(chunk))
		for i, id := range chunk {
			safe[i] = safeText(id)
			back[safe[i]] = id
		}
		if err := fn(safe, back); err != nil {
			return err
		}
	}
	return nil
}

// SavedOf counts what WriteBatch stored of b.
func SavedOf(b *engine.BatchWrite) Saved {
	out := Saved{Events: len(b.Decisions), Decisions: len(b.Decisions), DeadLetters: len(b.Dead), Duplicates: len(b.SkippedSeqs)}
	for _, d := range b.Dead {
		if b.Results[d.Result].Order != nil {
			out.Events++
		}
	}
	return out
}

// WriteBatch stores a batch in one transaction: the fence (the partition's row moves to the
// batch, only from the batch before it and for the epoch that holds it), the policy versions on
// first use, the decisions with their events and leaves (each only as the next of its order's
// line), dead letters, ledger entries, decision inputs, the shadow versions' outcomes (outside
// the chain: writeShadowRows) and the batch row. On any error nothing is
// stored; the error matches engine.ErrFenced when that is why, and both engine.ErrEventsStored and
// engine.ErrStaleHistory when a decision collides with a stored one (its event is stored
// already, or its order's line moved on): the writer passes the batch again either way.
func (s *Store) WriteBatch(ctx context.Context, b *engine.BatchWrite) error {
	now := time.Now().UTC()
	h := &b.Header
	newPolicies, err := s.newPolicies(b)
	if err != nil {
		return err
	}
	if s.backend == SQLite {
		err = s.writeGrouped(ctx, b, newPolicies, now)
	} else {
		err = s.writeTx(ctx, func(ctx context.Context, w *wtx) error { return s.writeBatchRows(ctx, w, b, newPolicies, now) })
	}
	if err != nil {
		return fmt.Errorf("storing batch %d of partition %d (%d events): %w", h.Seq, h.Partition, len(b.Results), err)
	}
	s.knownMu.Lock()
	for _, p := range newPolicies {
		s.known[policyKey(p.Program, p.Version)] = p.Digest
	}
	s.knownMu.Unlock()
	return nil
}

// writeBatchRows writes one batch's rows in the write transaction w.
func (s *Store) writeBatchRows(ctx context.Context, w *wtx, b *engine.BatchWrite, newPolicies []*rules.Policy, now time.Time) error {
	h := &b.Header
	if err := s.fence(ctx, w, b); err != nil {
		return err
	}
	if err := s.storePolicies(ctx, w.Tx, newPolicies, now); err != nil {
		return err
	}
	ids, err := s.decisionIDs(ctx, w, len(b.Decisions))
	if err != nil {
		return err
	}
	if err := s.writeDecisions(ctx, w, b, ids, now); err != nil {
		return err
	}
	if err := s.writeDeadLetters(ctx, w, b, now); err != nil {
		return err
	}
	if err := s.writeLedger(ctx, w, b, ids, now); err != nil {
		return err
	}
	if err := s.writeInputs(ctx, w, b, ids); err != nil {
		return err
	}
	if len(b.Shadows) > 0 {
		if _, err := s.writeShadowRows(ctx, w, b.Shadows); err != nil {
			return err
		}
	}
	// One row: a plain INSERT (a COPY's set-up costs PostgreSQL several round trips).
	var firstID, lastID int64
	if len(ids) > 0 {
		firstID, lastID = ids[0], ids[len(ids)-1]
	}
	skipped := make([]string, len(b.SkippedSeqs))
	for i, seq := range b.SkippedSeqs {
		skipped[i] = strconv.FormatUint(seq, 10)
	}
	if _, err := w.ExecContext(ctx, "INSERT INTO batches (part, seq, epoch, prev_hash, root, hash, leaves, first_stream_seq, last_stream_seq, "+
		"first_decision_id, last_decision_id, skipped_seqs, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", int64(h.Partition), int64(h.Seq),
		int64(h.Epoch), h.Prev.String(), h.Root.String(), b.Hash.String(), int64(h.Leaves), int64(h.FirstStreamSeq), int64(h.LastStreamSeq),
		firstID, lastID, strings.Join(skipped, " "), now); err != nil {
		return fmt.Errorf("storing the batch row: %w", err)
	}
	if s.hookBeforeCommit != nil {
		if err := s.hookBeforeCommit(ctx); err != nil {
			return err
		}
	}
	return ctx.Err() // cancelled meanwhile: not stored
}

// groupWrite is one batch waiting for SQLite's writer.
type groupWrite struct {
	ctx         context.Context
	b           *engine.BatchWrite
	newPolicies []*rules.Policy
	err         error
	done        chan struct{}
}

// writeGrouped stores a batch on SQLite by group commit. SQLite has one writer, and a commit
// (the WAL's frames and its fsync) costs as much as a third of a batch's rows; the partitions'
// owners hand their batches to whichever of them writes next, which stores all that are waiting
// in one transaction. One fsync serves them all, and the pages they share (the right edges of
// the B-trees) are written once. When a batch of the group fails (fenced, stale, cancelled), the
// whole transaction is rolled back and each batch is written again in a transaction of its own,
// so each gets its own outcome. (A savepoint per batch would spare that, but makes SQLite journal
// every page the batch changes: 8% of the CPU per order, measured; failures are rare.)
func (s *Store) writeGrouped(ctx context.Context, b *engine.BatchWrite, newPolicies []*rules.Policy, now time.Time) error {
	me := &groupWrite{ctx: ctx, b: b, newPolicies: newPolicies, done: make(chan struct{})}
	s.groupMu.Lock()
	s.group = append(s.group, me)
	s.groupMu.Unlock()

	s.leaderMu.Lock()
	select {
	case <-me.done: // the writer before took it
		s.leaderMu.Unlock()
		return me.err
	default:
	}
	s.groupMu.Lock()
	group := s.group
	s.group = nil
	s.groupMu.Unlock()
	var live []*groupWrite
	for _, g := range group {
		if g.err = context.Cause(g.ctx); g.err == nil {
			live = append(live, g)
		}
	}
	failed := false
	err := s.writeTx(context.WithoutCancel(ctx), func(txctx context.Context, w *wtx) error {
		for _, g := range live {
			if g.err = s.writeBatchRows(g.ctx, w, g.b, g.newPolicies, now); g.err != nil {
				failed = true
				return g.err
			}
		}
		return nil
	})
	if failed && len(live) > 1 {
		for _, g := range live {
			g.err = s.writeTx(context.WithoutCancel(ctx), func(_ context.Context, w *wtx) error {
				return s.writeBatchRows(g.ctx, w, g.b, g.newPolicies, now)
			})
		}
		err = nil
	}
	for _, g := range group {
		if err != nil && g.err == nil {
			g.err = err
		}
		close(g.done)
	}
	s.leaderMu.Unlock()
	return me.err
}

// fence moves the partition's head to the batch: only from the batch before it, and only for the
// epoch that holds the partition. Anything else is engine.ErrFenced. On PostgreSQL the UPDATE
// locks the partition's row (only its own) until the commit.
func (s *Store) fence(ctx context.Context, w *wtx, b *engine.BatchWrite) error {
	h := &b.Header
	res, err := w.ExecContext(ctx, "UPDATE partitions SET seq = ?, hash = ?, last_stream_seq = CASE WHEN last_stream_seq > ? THEN last_stream_seq ELSE ? END "+
		"WHERE part = ? AND epoch = ? AND seq = ? AND hash = ?",
		int64(h.Seq), b.Hash.String(), int64(h.LastStreamSeq), int64(h.LastStreamSeq), h.Partition, int64(h.Epoch), int64(h.Seq-1), h.Prev.String())
	if err != nil {
		return fmt.Errorf("moving partition %d's head: %w", h.Partition, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	var row partitionRow
	if err := w.NewSelect().Table("partitions").Column("part", "epoch", "seq", "hash", "last_stream_seq", "source", "claimed_at").
		Where("part = ?", h.Partition).Scan(ctx, &row); errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: partition %d was never claimed", engine.ErrFenced, h.Partition)
	} else if err != nil {
		return err
	}
	if uint64(row.Epoch) != h.Epoch {
		return fmt.Errorf("%w: partition %d is held by epoch %d, this owner has %d", engine.ErrFenced, h.Partition, row.Epoch, h.Epoch)
	}
	return fmt.Errorf("%w: partition %d's head is batch %d (%s), this owner continued batch %d (%s)", engine.ErrFenced,
		h.Partition, row.Seq, short(row.Hash), h.Seq-1, short(h.Prev.String()))
}

// newPolicies are the batch's policy versions this Store has not seen stored (the transaction
// stores them); a version it saw stored with another digest refuses the batch.
func (s *Store) newPolicies(b *engine.BatchWrite) (out []*rules.Policy, err error) {
	s.knownMu.Lock()
	defer s.knownMu.Unlock()
	for _, p := range b.Policies {
		digest, ok := s.known[policyKey(p.Program, p.Version)]
		switch {
		case !ok:
			out = append(out, p)
		case digest != p.Digest:
			return nil, &PolicyChangedError{File: p.File, Program: p.Program, Version: p.Version, StoredDigest: digest, CurrentDigest: p.Digest}
		}
	}
	return out, nil
}

// decisionIDs reserves n decision ids. SQLite: after the largest stored (this transaction holds
// the only write lock); PostgreSQL: from the column's identity sequence.
func (s *Store) decisionIDs(ctx context.Context, w *wtx, n int) ([]int64, error) {
	ids := make([]int64, 0, n)
	if n == 0 {
		return ids, nil
	}
	if s.backend == SQLite {
		var last int64
		if err := w.NewRaw("SELECT COALESCE(MAX(id), 0) FROM decisions").Scan(ctx, &last); err != nil {
			return nil, fmt.Errorf("reserving %d decision ids: %w", n, err)
		}
		for i := range n {
			ids = append(ids, last+1+int64(i))
		}
		return ids, nil
	}
	if err := w.NewRaw("SELECT nextval(pg_get_serial_sequence('decisions', 'id')) FROM generate_series(1, ?)", n).Scan(ctx, &ids); err != nil {
		return nil, fmt.Errorf("reserving %d decision ids: %w", n, err)
	}
	if len(ids) != n {
		return nil, fmt.Errorf("reserving %d decision ids: got %d", n, len(ids))
	}
	return ids, nil
}

// The tables WriteBatch writes through insertRows, with the columns in the order of the values.
var (
	decisionsTable = bulkTable{name: "decisions", cols: []string{"id", "event_id", "order_id", "program", "affiliate_id", "policy_version",
		"policy_digest", "qualified", "failed_rules", "rate_rule", "rate", "flat", "base", "commission", "currency", "rounding", "trace", "env",
		"subject", "stream_seq", "raw", "placed_at", "received_at", "month", "prev_id", "is_current", "pin_version", "pin_digest",
		"decided_at", "part", "batch_seq", "leaf", "leaf_hash"}}
	deadLettersTable = bulkTable{name: "dead_letters", cols: []string{"event_id", "subject", "stream_seq", "raw", "program", "order_id",
		"affiliate_id", "placed_at", "reason", "kind", "received_at", "part", "batch_seq", "leaf", "leaf_hash"}}
)

// writeDecisions stores the batch's decisions with their events. A decision that collides with
// a stored one — its event (unique event_id), or the decision its order's line continues from
// (unique program, order_id, prev_id) — fails the batch: the event is stored already, or another
// partition's owner decided the order meanwhile.
func (s *Store) writeDecisions(ctx context.Context, w *wtx, b *engine.BatchWrite, ids []int64, now time.Time) error {
	h := &b.Header
	err := s.insertRows(ctx, w, decisionsTable, len(b.Decisions), func(i int, args []any) []any {
		d := &b.Decisions[i]
		r := &b.Results[d.Result]
		ev := &r.Event
		var flat, pinVersion, pinDigest any
		if d.Flat != "" {
			flat = d.Flat
		}
		if d.Pin != nil {
			pinVersion, pinDigest = int64(d.Pin.Version), d.Pin.Digest
		}
		prev := d.Prev
		if d.PrevDecision >= 0 {
			prev = ids[d.PrevDecision]
		}
		raw, received := storedEvent(ev, now)
		return append(args, ids[i], safeText(d.EventID), safeText(d.OrderID), safeText(d.Program), safeText(d.AffiliateID),
			int64(d.PolicyVersion), d.PolicyDigest, d.Qualified, d.FailedRules, d.RateRule, d.Rate, flat, d.Base, d.Commission,
			d.Currency, d.Rounding, d.Trace, d.Env, safeText(ev.Subject), int64(d.StreamSeq), raw, r.Order.PlacedAt.UTC(), received,
			d.Month, prev, d.Current, pinVersion, pinDigest, now, int64(h.Partition), int64(h.Seq), int64(d.Leaf), d.LeafHash.String())
	})
	if err != nil {
		if isUniqueViolation(err) || errors.Is(err, errNotAllStored) {
			return fmt.Errorf("%w (or %w): %v", engine.ErrEventsStored, engine.ErrStaleHistory, err)
		}
		return fmt.Errorf("inserting %d decisions: %w", len(b.Decisions), err)
	}
	return nil
}

// storedEvent is an event's raw bytes and receipt time as stored: never NULL bytes (the column is
// NOT NULL), and now for an event with no receipt time.
func storedEvent(ev *engine.Event, now time.Time) (raw []byte, received time.Time) {
	raw, received = ev.Raw, ev.ReceivedAt.UTC()
	if raw == nil {
		raw = []byte{}
	}
	if ev.ReceivedAt.IsZero() {
		received = now
	}
	return raw, received
}

func (s *Store) writeDeadLetters(ctx context.Context, w *wtx, b *engine.BatchWrite, now time.Time) error {
	h := &b.Header
	err := s.insertRows(ctx, w, deadLettersTable, len(b.Dead), func(i int, args []any) []any {
		d := &b.Dead[i]
		ev := &d.Event
		raw, received := storedEvent(ev, now)
		affiliate, placed := "", any(nil) // set when the event decoded: replay decides it again
		if o := b.Results[d.Result].Order; o != nil {
			affiliate, placed = safeText(o.AffiliateID), o.PlacedAt.UTC()
		}
		return append(args, safeText(ev.ID), safeText(ev.Subject), int64(ev.StreamSeq), raw, safeText(d.Program), safeText(d.OrderID),
			affiliate, placed, safeText(d.Reason), d.Kind, received, int64(h.Partition), int64(h.Seq), int64(d.Leaf), d.LeafHash.String())
	})
	if err != nil {
		if isUniqueViolation(err) || errors.Is(err, errNotAllStored) {
			return fmt.Errorf("%w: %v", engine.ErrEventsStored, err)
		}
		return fmt.Errorf("inserting %d dead letters: %w", len(b.Dead), err)
	}
	return nil
}

// decisionIndex maps a result's index to its decision's index in b.Decisions.
func decisionIndex(b *engine.BatchWrite) map[int]int {
	m := make(map[int]int, len(b.Decisions))
	for j := range b.Decisions {
		m[b.Decisions[j].Result] = j
	}
	return m
}

func (s *Store) writeLedger(ctx context.Context, w *wtx, b *engine.BatchWrite, ids []int64, now time.Time) error {
	if len(b.Ledger) == 0 {
		return nil
	}
	idx := decisionIndex(b)
	err := s.insertRows(ctx, w, ledgerTable, len(b.Ledger), func(i int, args []any) []any {
		e := &b.Ledger[i]
		return append(args, safeText(e.Program), safeText(e.AffiliateID), safeText(e.OrderID), e.Currency, e.Amount.Text('f'),
			string(e.Kind), ids[idx[e.Result]], safeText(e.EventID), StatusPending, e.ApproveAt.UTC(), now)
	})
	if err != nil {
		return fmt.Errorf("inserting %d ledger entries: %w", len(b.Ledger), err)
	}
	return nil
}

func (s *Store) writeInputs(ctx context.Context, w *wtx, b *engine.BatchWrite, ids []int64) error {
	var rows []decisionInputRow
	for j := range b.Decisions {
		d := &b.Decisions[j]
		in := d.Inputs
		if in == nil {
			continue
		}
		r := decisionInputRow{DecisionID: ids[j], Program: safeText(d.Program), EventID: safeText(d.EventID), Pinned: in.Pinned}
		if in.Pin != nil {
			r.PinVersion = sql.NullInt64{Int64: int64(in.Pin.Version), Valid: true}
			r.PinDigest = sql.NullString{String: in.Pin.Digest, Valid: true}
		}
		if a := in.Affiliate; a != nil {
			r.Month = sql.NullString{String: a.Month, Valid: true}
			r.MonthQualifiedOrders = sql.NullInt64{Int64: a.QualifiedOrders, Valid: true}
			r.MonthQualifiedSales = sql.NullString{String: a.QualifiedSales.Text('f'), Valid: true}
		}
		rows = append(rows, r)
	}
	if err := s.insertRows(ctx, w, decisionInputsTable, len(rows), func(i int, args []any) []any {
		in := &rows[i]
		return append(args, in.DecisionID, in.Program, in.EventID, nullInt64(in.PinVersion), nullString(in.PinDigest), in.Pinned,
			nullString(in.Month), nullInt64(in.MonthQualifiedOrders), nullString(in.MonthQualifiedSales))
	}); err != nil {
		return fmt.Errorf("inserting the inputs of %d decisions: %w", len(rows), err)
	}
	return nil
}

// short abbreviates a hash for messages.
func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}

// WriteCheckpoint stores a signed checkpoint (audit.CheckpointSink).
func (s *Store) WriteCheckpoint(ctx context.Context, c *audit.Checkpoint, signed []byte) error {
	if _, err := s.db.ExecContext(ctx, "INSERT INTO checkpoints (origin, signed_at, note) VALUES (?, ?, ?)", c.Origin, c.Time.UTC(), string(signed)); err != nil {
		return fmt.Errorf("storing the checkpoint of %s: %w", c.Time.UTC().Format(time.RFC3339Nano), err)
	}
	return nil
}

// Checkpoints returns the signed checkpoints stored, oldest first (audit verify --checkpoints
// store: a copy the database's administrator could have rewritten, unlike the exported ones).
func (s *Store) Checkpoints(ctx context.Context) ([]audit.SignedCheckpoint, error) {
	var rows []struct {
		ID   int64  `bun:"id"`
		Note string `bun:"note"`
	}
	if err := s.db.NewRaw("SELECT id, note FROM checkpoints ORDER BY id").Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("reading the checkpoints: %w", err)
	}
	out := make([]audit.SignedCheckpoint, len(rows))
	for i, r := range rows {
		out[i] = audit.SignedCheckpoint{Where: fmt.Sprintf("the store's checkpoint %d", r.ID), Signed: []byte(r.Note)}
	}
	return out, nil
}

// RecentCheckpoints returns the latest n signed checkpoints stored, newest first.
func (s *Store) RecentCheckpoints(ctx context.Context, n int) ([]audit.SignedCheckpoint, error) {
	var rows []struct {
		ID   int64  `bun:"id"`
		Note string `bun:"note"`
	}
	if err := s.db.NewRaw("SELECT id, note FROM checkpoints ORDER BY id DESC LIMIT ?", n).Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("reading the latest checkpoints: %w", err)
	}
	out := make([]audit.SignedCheckpoint, len(rows))
	for i, r := range rows {
		out[i] = audit.SignedCheckpoint{Where: fmt.Sprintf("the store's checkpoint %d", r.ID), Signed: []byte(r.Note)}
	}
	return out, nil
}

// ConsumedStreamSeqs returns, sorted and each once, the stream sequences the store holds an
// outcome for — a decision, a dead letter, or an event a batch skipped as stored already — and the
// streams (sources) the partitions read them from (audit.Reconcile).
func (s *Store) ConsumedStreamSeqs(ctx context.Context) (seqs []uint64, sources []string, err error) {
	if err := s.db.NewRaw("SELECT DISTINCT source FROM partitions ORDER BY 1").Scan(ctx, &sources); err != nil {
		return nil, nil, fmt.Errorf("reading the partitions' streams: %w", err)
	}
	var stored []int64
	if err := s.db.NewRaw("SELECT stream_seq FROM decisions UNION SELECT stream_seq FROM dead_letters ORDER BY 1").Scan(ctx, &stored); err != nil {
		return nil, nil, fmt.Errorf("reading the stored stream sequences: %w", err)
	}
	var skipped []string
	if err := s.db.NewRaw("SELECT skipped_seqs FROM batches WHERE skipped_seqs <> ''").Scan(ctx, &skipped); err != nil {
		return nil, nil, fmt.Errorf("reading the skipped stream sequences: %w", err)
	}
	seqs = make([]uint64, 0, len(stored))
	for _, v := range stored {
		if v > 0 {
			seqs = append(seqs, uint64(v))
		}
	}
	for _, list := range skipped {
		for _, f := range strings.Fields(list) {
			v, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				return nil, nil, fmt.Errorf("batches.skipped_seqs %q: %w", list, err)
			}
			seqs = append(seqs, v)
		}
	}
	slices.Sort(seqs)
	return slices.Compact(seqs), sources, nil
}
