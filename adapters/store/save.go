package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/uptrace/bun"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// Dead-letter kinds: why an event got no decision.
const (
	KindInvalid        = "invalid"         // the event is not a valid order (engine.ErrInvalidOrder)
	KindUnknownProgram = "unknown_program" // no policy of its program is loaded (rules.ErrUnknownProgram)
	KindNoPolicy       = "no_policy"       // no version in force at its time (rules.ErrNoPolicyInForce)
	KindPinMissing     = "pin_missing"     // the version its order is pinned to is not loaded (engine.ErrPinnedPolicyMissing)
	KindRuleError      = "rule_error"      // anything else: a rule failed to evaluate, no rate rule matched…
)

// DeadLetterKind classifies why no decision was made, by the error's identity (errors.Is).
func DeadLetterKind(err error) string {
	switch {
	case errors.Is(err, engine.ErrInvalidOrder):
		return KindInvalid
	case errors.Is(err, rules.ErrUnknownProgram):
		return KindUnknownProgram
	case errors.Is(err, rules.ErrNoPolicyInForce):
		return KindNoPolicy
	case errors.Is(err, engine.ErrPinnedPolicyMissing):
		return KindPinMissing
	default:
		return KindRuleError
	}
}

// ErrPolicyChanged: a policy file's content changed while its version number stayed the same,
// after the stored version was used. The running set must refuse such a file.
var ErrPolicyChanged = errors.New("policy changed without a new version")

// PolicyChangedError is the error CheckPolicies and SaveBatch return for a changed policy file.
// It matches ErrPolicyChanged (errors.Is).
type PolicyChangedError struct {
	File          string
	Program       string
	Version       int
	StoredDigest  string
	CurrentDigest string
}

func (e *PolicyChangedError) Error() string {
	return fmt.Sprintf("%s: %s version %d is stored with digest %s, but the file now has digest %s: "+
		"decisions were made with the stored text, so a changed policy needs a new version number — bump the version",
		e.File, e.Program, e.Version, e.StoredDigest, e.CurrentDigest)
}

func (e *PolicyChangedError) Unwrap() error { return ErrPolicyChanged }

// Saved counts what one SaveBatch wrote.
type Saved struct {
	Events      int // order events newly stored
	Decisions   int // decisions newly stored
	DeadLetters int // dead letters newly stored
	// Duplicates counts results whose decision or dead letter was stored already (a redelivery,
	// or the same event twice in the batch): nothing was written for them.
	Duplicates int
}

// --- rows as written ---

type eventRow struct {
	bun.BaseModel `bun:"table:order_events"`

	EventID     string    `bun:"event_id"`
	Program     string    `bun:"program"`
	OrderID     string    `bun:"order_id"`
	AffiliateID string    `bun:"affiliate_id"`
	Subject     string    `bun:"subject"`
	StreamSeq   int64     `bun:"stream_seq"`
	Raw         []byte    `bun:"raw"`
	PlacedAt    time.Time `bun:"placed_at"`
	ReceivedAt  time.Time `bun:"received_at"`
}

type policyRow struct {
	bun.BaseModel `bun:"table:policy_versions"`

	Program       string    `bun:"program"`
	Version       int       `bun:"version"`
	Digest        string    `bun:"digest"`
	Source        string    `bun:"source"`
	File          string    `bun:"file"`
	EffectiveFrom time.Time `bun:"effective_from"`
	FirstUsedAt   time.Time `bun:"first_used_at"`
}

type decisionRow struct {
	bun.BaseModel `bun:"table:decisions"`

	EventID       string    `bun:"event_id"`
	OrderID       string    `bun:"order_id"`
	Program       string    `bun:"program"`
	AffiliateID   string    `bun:"affiliate_id"`
	PolicyVersion int       `bun:"policy_version"`
	PolicyDigest  string    `bun:"policy_digest"`
	Qualified     bool      `bun:"qualified"`
	FailedRules   string    `bun:"failed_rules"`
	RateRule      string    `bun:"rate_rule"`
	Rate          string    `bun:"rate"`
	Flat          string    `bun:"flat,nullzero"`
	Base          string    `bun:"base"`
	Commission    string    `bun:"commission"`
	Currency      string    `bun:"currency"`
	Rounding      string    `bun:"rounding"`
	Trace         string    `bun:"trace"`
	Env           string    `bun:"env"`
	StreamSeq     int64     `bun:"stream_seq"`
	DecidedAt     time.Time `bun:"decided_at"`
	ChainSeq      int64     `bun:"chain_seq"`
	PrevHash      string    `bun:"prev_hash"`
	Hash          string    `bun:"hash"`
}

type deadLetterRow struct {
	bun.BaseModel `bun:"table:dead_letters"`

	EventID    string    `bun:"event_id"`
	Subject    string    `bun:"subject"`
	StreamSeq  int64     `bun:"stream_seq"`
	Raw        []byte    `bun:"raw"`
	Program    string    `bun:"program"`
	OrderID    string    `bun:"order_id"`
	Reason     string    `bun:"reason"`
	Kind       string    `bun:"kind"`
	ReceivedAt time.Time `bun:"received_at"`
}

type chainHeadRow struct {
	bun.BaseModel `bun:"table:chain_heads"`

	Program  string `bun:"program,pk"`
	ChainSeq int64  `bun:"chain_seq"`
	Hash     string `bun:"hash"`
}

// --- the hash chain ---

// GenesisHash is the prev_hash of the first decision of every program's chain.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// CanonicalBytes returns the bytes a decision's chain hash covers:
//
//	{"event_id":<event id as a JSON string>,"stream_seq":<decimal>,"decision":<d.AppendJSON(nil, true)>}
//
// The event id is encoded as encoding/json encodes a string; the decision is the engine's fixed-
// order JSON with the full per-rule trace (so it binds the rule expressions of the stored policy
// source, its digest, what each rule said and the exact commission). No spaces, no newline.
func CanonicalBytes(eventID string, streamSeq uint64, d *engine.Decision) []byte {
	b := make([]byte, 0, 2048)
	return appendCanonical(b, eventID, streamSeq, d)
}

func appendCanonical(b []byte, eventID string, streamSeq uint64, d *engine.Decision) []byte {
	b = append(b, `{"event_id":`...)
	b = appendJSONString(b, eventID)
	b = append(b, `,"stream_seq":`...)
	b = strconv.AppendUint(b, streamSeq, 10)
	b = append(b, `,"decision":`...)
	b = d.AppendJSON(b, true)
	return append(b, '}')
}

// ChainHash computes a decision row's hash from the previous row's hash (GenesisHash for the first
// row of a program) and the row's canonical bytes:
//
//	hash = lowercase hex( SHA-256( hexdecode(prevHash) || canonical ) )
//
// where hexdecode(prevHash) is the previous hash's 32 raw bytes. Chains are per program and run in
// chain_seq order (1, 2, 3, …); chain_heads holds each program's last chain_seq and hash. audit
// verify re-decides each stored event with its recorded policy version, rebuilds canonical with
// CanonicalBytes, and recomputes the chain with ChainHash.
func ChainHash(prevHash string, canonical []byte) (string, error) {
	var prev [sha256.Size]byte
	if len(prevHash) != 2*sha256.Size {
		return "", fmt.Errorf("chain hash: previous hash %q is not %d hex digits", prevHash, 2*sha256.Size)
	}
	if _, err := hex.Decode(prev[:], []byte(prevHash)); err != nil {
		return "", fmt.Errorf("chain hash: previous hash %q: %w", prevHash, err)
	}
	h := sha256.New()
	h.Write(prev[:])
	h.Write(canonical)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// appendJSONString appends s as encoding/json encodes a string.
func appendJSONString(b []byte, s string) []byte {
	simple := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			simple = false
			break
		}
	}
	if simple {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	j, _ := json.Marshal(s) // a string always marshals
	return append(b, j...)
}

// traceJSON is the compact trace column: [stage, rule, outcome] for every rule of the policy, in
// policy order; outcome is pass/fail (qualify), match/no_match (rate) or not_evaluated.
func traceJSON(b []byte, d *engine.Decision) []byte {
	p := d.Policy
	q := make([]string, len(p.Qualify))
	r := make([]string, len(p.Rates))
	for i := range q {
		q[i] = "not_evaluated"
	}
	for i := range r {
		r[i] = "not_evaluated"
	}
	for _, o := range d.Trace {
		switch {
		case o.Stage == engine.StageQualify && o.Result:
			q[o.Index] = "pass"
		case o.Stage == engine.StageQualify:
			q[o.Index] = "fail"
		case o.Result:
			r[o.Index] = "match"
		default:
			r[o.Index] = "no_match"
		}
	}
	b = append(b, '[')
	n := 0
	entry := func(stage, id, outcome string) {
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = append(b, `["`...)
		b = append(b, stage...)
		b = append(b, `",`...)
		b = appendJSONString(b, id)
		b = append(b, `,"`...)
		b = append(b, outcome...)
		b = append(b, `"]`...)
	}
	for i, rule := range p.Qualify {
		entry("qualify", rule.ID, q[i])
	}
	for i, rule := range p.Rates {
		entry("rate", rule.ID, r[i])
	}
	return append(b, ']')
}

func stringsJSON(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// --- SaveBatch ---

// pendingDecision is a decision prepared outside the transaction; its chain fields are filled in
// under the chain lock.
type pendingDecision struct {
	row       decisionRow
	canonical []byte
	result    int // its index in the batch
}

func policyKey(program string, version int) string {
	return program + "\x00" + strconv.Itoa(version)
}

// SaveBatch stores a batch of engine results in one transaction: each decoded event in
// order_events, each policy version on its first use in policy_versions, each decision in
// decisions (extending its program's hash chain), and each result with Err in dead_letters
// (kind from DeadLetterKind, reason from the error). It books the new decisions in the same
// transaction: ledger entries, the orders' states and the decisions' inputs (see ledger.go).
//
// It is idempotent: an event, decision or dead letter already stored (a redelivered batch) is
// skipped and counted in Saved.Duplicates, and only decisions actually inserted extend the chain.
// It is safe for concurrent use, also from several processes on one database.
//
// On any error nothing of the batch is stored: the transaction rolls back and the error (wrapped,
// naming the batch) is returned, so the caller naks and the batch is retried. A cancelled ctx
// aborts the transaction. A policy version stored with another digest gives a *PolicyChangedError;
// a decision made by engine.DecideBatch with a history that changed before the batch was stored
// gives an error matching engine.ErrStaleHistory (decide the batch again with a fresh history).
func (s *Store) SaveBatch(ctx context.Context, results []engine.Result) (Saved, error) {
	var saved Saved
	if len(results) == 0 {
		return saved, nil
	}
	now := time.Now().UTC()

	// Prepare every row outside the transaction: the write lock is held only for the SQL.
	var (
		events    = make([]eventRow, 0, len(results))
		decisions = make([]pendingDecision, 0, len(results))
		dead      []deadLetterRow
		policies  = map[string]*rules.Policy{}
		seen      = make(map[string]struct{}, len(results))
	)
	for i := range results {
		r := &results[i]
		ev := &r.Event
		if ev.ID == "" {
			return saved, fmt.Errorf("saving batch of %d: result %d has no event id", len(results), i)
		}
		eventID, subject := safeText(ev.ID), safeText(ev.Subject)
		if _, dup := seen[eventID]; dup {
			saved.Duplicates++
			continue
		}
		seen[eventID] = struct{}{}
		received := ev.ReceivedAt.UTC()
		if ev.ReceivedAt.IsZero() {
			received = now
		}
		if r.Order != nil {
			o := r.Order
			events = append(events, eventRow{
				EventID: eventID, Program: safeText(o.Program), OrderID: safeText(o.OrderID), AffiliateID: safeText(o.AffiliateID),
				Subject: subject, StreamSeq: int64(ev.StreamSeq), Raw: ev.Raw,
				PlacedAt: o.PlacedAt.UTC(), ReceivedAt: received,
			})
		}
		if r.Err != nil || r.Decision == nil {
			err := r.Err
			if err == nil {
				err = errors.New("no decision and no error")
			}
			program := ""
			if r.Order != nil {
				program = safeText(r.Order.Program)
			}
			raw := ev.Raw
			if raw == nil {
				raw = []byte{}
			}
			dead = append(dead, deadLetterRow{
				EventID: eventID, Subject: subject, StreamSeq: int64(ev.StreamSeq), Raw: raw,
				Program: program, OrderID: safeText(r.OrderID()), Reason: safeText(err.Error()), Kind: DeadLetterKind(err),
				ReceivedAt: received,
			})
			continue
		}
		d := r.Decision
		if d.Policy == nil {
			return saved, fmt.Errorf("saving batch of %d: decision for event %s has no policy", len(results), ev.ID)
		}
		policies[policyKey(d.Program, d.PolicyVersion)] = d.Policy
		row := decisionRow{
			EventID: eventID, OrderID: safeText(d.OrderID), Program: safeText(d.Program), AffiliateID: safeText(d.AffiliateID),
			PolicyVersion: d.PolicyVersion, PolicyDigest: d.PolicyDigest, Qualified: d.Qualified,
			FailedRules: string(stringsJSON(nil, d.FailedRules)), RateRule: d.RateRule,
			Rate: d.Rate.Text('f'), Base: d.Base.Text('f'), Commission: d.Commission.Text('f'),
			Currency: d.Currency.Code, Rounding: string(d.Rounding),
			Trace: string(traceJSON(make([]byte, 0, 256), d)), Env: d.Env,
			StreamSeq: int64(ev.StreamSeq), DecidedAt: now,
		}
		if d.HasFlat() {
			row.Flat = d.Flat.Text('f')
		}
		decisions = append(decisions, pendingDecision{row: row, canonical: CanonicalBytes(eventID, ev.StreamSeq, d), result: i})
	}

	// Policy versions this Store has not seen stored yet; a cached one with another digest is
	// refused at once.
	var newPolicies []*rules.Policy
	s.knownMu.Lock()
	for key, p := range policies {
		digest, ok := s.known[key]
		if !ok {
			newPolicies = append(newPolicies, p)
			continue
		}
		if digest != p.Digest {
			s.knownMu.Unlock()
			return saved, fmt.Errorf("saving batch of %d: %w", len(results), &PolicyChangedError{
				File: p.File, Program: p.Program, Version: p.Version, StoredDigest: digest, CurrentDigest: p.Digest})
		}
	}
	var programs []string
	newHeads := map[string]bool{}
	for i := range decisions {
		prog := decisions[i].row.Program
		if !newHeads[prog] {
			newHeads[prog] = true
			programs = append(programs, prog)
		}
	}
	for prog := range newHeads {
		newHeads[prog] = !s.heads[prog]
	}
	s.knownMu.Unlock()
	sort.Strings(programs)
	sort.Slice(newPolicies, func(i, j int) bool {
		a, b := newPolicies[i], newPolicies[j]
		return a.Program < b.Program || a.Program == b.Program && a.Version < b.Version
	})

	err := s.writeTx(ctx, func(ctx context.Context, w *wtx) error {
		saved.Events, saved.Decisions, saved.DeadLetters = 0, 0, 0
		dups := 0
		if err := s.storePolicies(ctx, w.Tx, newPolicies, now); err != nil {
			return err
		}
		// Events and dead letters do not depend on the chain heads: on PostgreSQL they go in
		// before the chain lock is taken (under a savepoint, see insertUnchained), so that two
		// writers of a program overlap there rather than queue for its lock.
		fresh, nDead, early, err := s.insertUnchainedEarly(ctx, w, events, dead)
		if err != nil {
			return err
		}
		heads, err := s.lockChainHeads(ctx, w.Tx, programs, newHeads)
		if err != nil {
			return err
		}
		if !early {
			if fresh, nDead, err = s.insertUnchained(ctx, w, events, dead, false); err != nil {
				return err
			}
		}
		saved.Events, saved.DeadLetters = len(fresh), nDead
		dups += len(dead) - nDead

		// Events: the ones stored already (a redelivery) are the only ones whose decisions may
		// be stored already.
		var existing map[string]bool
		if len(fresh) < len(events) {
			var old []string
			for i := range events {
				if !fresh[events[i].EventID] {
					old = append(old, events[i].EventID)
				}
			}
			if existing, err = storedDecisionKeys(ctx, w.Tx, old); err != nil {
				return err
			}
		}

		// Decisions not yet stored, chained in batch order under the chain lock.
		rows := make([]decisionRow, 0, len(decisions))
		resultOf := make([]int, 0, len(decisions))
		for i := range decisions {
			pd := &decisions[i]
			if existing[decisionKey(pd.row.EventID, pd.row.Program, pd.row.PolicyVersion)] {
				dups++
				continue
			}
			h := heads[pd.row.Program]
			hash, err := ChainHash(h.Hash, pd.canonical)
			if err != nil {
				return err
			}
			h.ChainSeq++
			pd.row.ChainSeq, pd.row.PrevHash, pd.row.Hash = h.ChainSeq, h.Hash, hash
			h.Hash = hash
			rows = append(rows, pd.row)
			resultOf = append(resultOf, pd.result)
		}
		if err := s.insertDecisions(ctx, w, rows); err != nil {
			return err
		}
		// The order lifecycle and the ledger, booked under the same chain locks (ledger.go).
		if err := s.saveLifecycle(ctx, w, results, rows, resultOf, now); err != nil {
			return err
		}
		saved.Decisions = len(rows)
		if len(rows) > 0 {
			for _, prog := range programs {
				h := heads[prog]
				if _, err := w.NewUpdate().Model(h).Column("chain_seq", "hash").WherePK().Exec(ctx); err != nil {
					return fmt.Errorf("updating the chain head of %s: %w", prog, err)
				}
			}
		}

		saved.Duplicates += dups
		if s.hookBeforeCommit != nil {
			return s.hookBeforeCommit(ctx)
		}
		return nil
	})
	if err != nil {
		return Saved{}, fmt.Errorf("saving batch of %d results (events %s…): %w", len(results), results[0].Event.ID, err)
	}

	s.knownMu.Lock()
	for _, p := range newPolicies {
		s.known[policyKey(p.Program, p.Version)] = p.Digest
	}
	for _, prog := range programs {
		s.heads[prog] = true
	}
	s.knownMu.Unlock()
	return saved, nil
}

// insertUnchained stores a batch's events and dead letters, the rows that do not depend on the
// chain heads. It returns the event ids it stored and how many dead letters. allNew: see
// insertEvents.
func (s *Store) insertUnchained(ctx context.Context, w *wtx, events []eventRow, dead []deadLetterRow, allNew bool) (map[string]bool, int, error) {
	fresh, err := s.insertEvents(ctx, w, events, allNew)
	if err != nil {
		return nil, 0, err
	}
	if len(dead) == 0 {
		return fresh, 0, nil
	}
	res, err := w.NewInsert().Model(&dead).On("CONFLICT (event_id) DO NOTHING").Exec(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("inserting %d dead letters: %w", len(dead), err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return nil, 0, fmt.Errorf("inserting %d dead letters: %w", len(dead), err)
	}
	return fresh, int(n), nil
}

// insertUnchainedEarly runs insertUnchained before the chain lock, on PostgreSQL only (on SQLite
// the write transaction is the lock: nothing to gain), and says whether it did (early).
//
// It copies every event without first reading which are stored (that read cost PostgreSQL
// ~6 ms per batch of 1000): a batch holding a stored event (a redelivery) fails the COPY with a
// unique violation. So does one racing another writer for an event (the same event delivered to
// two processes), after waiting for that writer's commit — or, when their batches overlap in
// different orders, one of them fails with a deadlock. In every such case the rows go in under
// a savepoint, which is rolled back on those two errors, and the caller stores them after taking
// the chain lock, reading first which are stored, as it did before: so a redelivery or a race
// costs some time, never a failed batch, and whichever writer stores an event, its decision is
// read under the chain lock (storedDecisionKeys).
func (s *Store) insertUnchainedEarly(ctx context.Context, w *wtx, events []eventRow, dead []deadLetterRow) (fresh map[string]bool, nDead int, early bool, err error) {
	if s.kind != Postgres || len(events)+len(dead) == 0 {
		return nil, 0, false, nil
	}
	if _, err := w.ExecContext(ctx, "SAVEPOINT unchained"); err != nil {
		return nil, 0, false, fmt.Errorf("storing events before the chain lock: %w", err)
	}
	fresh, nDead, err = s.insertUnchained(ctx, w, events, dead, true)
	if err == nil {
		if _, err := w.ExecContext(ctx, "RELEASE SAVEPOINT unchained"); err != nil {
			return nil, 0, false, fmt.Errorf("storing events before the chain lock: %w", err)
		}
		return fresh, nDead, true, nil
	}
	if !isUniqueViolation(err) && !isDeadlock(err) {
		return nil, 0, false, err
	}
	if _, err := w.ExecContext(ctx, "ROLLBACK TO SAVEPOINT unchained"); err != nil {
		return nil, 0, false, fmt.Errorf("storing events before the chain lock: %w", err)
	}
	return nil, 0, false, nil
}

// isDeadlock reports whether err is PostgreSQL's deadlock_detected (40P01).
func isDeadlock(err error) bool {
	var pg interface{ Field(byte) string }
	return errors.As(err, &pg) && pg.Field('C') == "40P01"
}

func decisionKey(eventID, program string, version int) string {
	return eventID + "\x00" + program + "\x00" + strconv.Itoa(version)
}

// storedDecisionKeys returns the decision keys stored for these events.
func storedDecisionKeys(ctx context.Context, tx bun.Tx, eventIDs []string) (map[string]bool, error) {
	keys := map[string]bool{}
	const chunk = 500
	for start := 0; start < len(eventIDs); start += chunk {
		ids := eventIDs[start:min(start+chunk, len(eventIDs))]
		var rows []struct {
			EventID       string `bun:"event_id"`
			Program       string `bun:"program"`
			PolicyVersion int    `bun:"policy_version"`
		}
		if err := tx.NewSelect().Table("decisions").Column("event_id", "program", "policy_version").
			Where("event_id IN (?)", bun.In(ids)).Scan(ctx, &rows); err != nil {
			return nil, fmt.Errorf("reading stored decisions of %d redelivered events: %w", len(ids), err)
		}
		for _, r := range rows {
			keys[decisionKey(r.EventID, r.Program, r.PolicyVersion)] = true
		}
	}
	return keys, nil
}

// storePolicies stores policy versions on first use and refuses one stored with another digest.
func (s *Store) storePolicies(ctx context.Context, tx bun.Tx, ps []*rules.Policy, now time.Time) error {
	if len(ps) == 0 {
		return nil
	}
	rows := make([]policyRow, len(ps))
	for i, p := range ps {
		rows[i] = policyRow{Program: p.Program, Version: p.Version, Digest: p.Digest, Source: string(p.Source),
			File: p.File, EffectiveFrom: p.EffectiveFrom.UTC(), FirstUsedAt: now}
	}
	if _, err := tx.NewInsert().Model(&rows).On("CONFLICT (program, version) DO NOTHING").Exec(ctx); err != nil {
		return fmt.Errorf("inserting %d policy versions: %w", len(rows), err)
	}
	for _, p := range ps {
		var digest string
		if err := tx.NewSelect().Table("policy_versions").Column("digest").
			Where("program = ? AND version = ?", p.Program, p.Version).Scan(ctx, &digest); err != nil {
			return fmt.Errorf("reading policy %s v%d: %w", p.Program, p.Version, err)
		}
		if digest != p.Digest {
			return &PolicyChangedError{File: p.File, Program: p.Program, Version: p.Version, StoredDigest: digest, CurrentDigest: p.Digest}
		}
	}
	return nil
}

// lockChainHeads creates missing chain heads and locks the programs' heads for the rest of the
// transaction, in program order (so two writers never deadlock). PostgreSQL: SELECT … FOR UPDATE;
// SQLite: the write transaction (BEGIN IMMEDIATE) already excludes every other writer.
func (s *Store) lockChainHeads(ctx context.Context, tx bun.Tx, programs []string, newHeads map[string]bool) (map[string]*chainHeadRow, error) {
	heads := make(map[string]*chainHeadRow, len(programs))
	if len(programs) == 0 {
		return heads, nil
	}
	var create []chainHeadRow
	for _, prog := range programs {
		if newHeads[prog] {
			create = append(create, chainHeadRow{Program: prog, ChainSeq: 0, Hash: GenesisHash})
		}
	}
	if len(create) > 0 {
		if _, err := tx.NewInsert().Model(&create).On("CONFLICT (program) DO NOTHING").Exec(ctx); err != nil {
			return nil, fmt.Errorf("creating chain heads: %w", err)
		}
	}
	var rows []chainHeadRow
	q := tx.NewSelect().Model(&rows).Where("program IN (?)", bun.In(programs)).Order("program")
	if s.kind == Postgres {
		q = q.For("UPDATE")
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("locking chain heads: %w", err)
	}
	for i := range rows {
		heads[rows[i].Program] = &rows[i]
	}
	for _, prog := range programs {
		if heads[prog] == nil {
			return nil, fmt.Errorf("locking chain heads: no head for %s", prog)
		}
	}
	return heads, nil
}

// CheckPolicies compares policy versions with the stored ones: a (program, version) stored with
// another digest gives an error wrapping ErrPolicyChanged (a *PolicyChangedError per changed
// file, joined), naming the file, program, version and both digests. Versions not stored yet are
// fine. Call it before a policy set goes into service (start, reload).
func (s *Store) CheckPolicies(ctx context.Context, ps []*rules.Policy) error {
	if len(ps) == 0 {
		return nil
	}
	programs := map[string]bool{}
	var names []string
	for _, p := range ps {
		if !programs[p.Program] {
			programs[p.Program] = true
			names = append(names, p.Program)
		}
	}
	var rows []struct {
		Program string `bun:"program"`
		Version int    `bun:"version"`
		Digest  string `bun:"digest"`
	}
	if err := s.db.NewSelect().Table("policy_versions").Column("program", "version", "digest").
		Where("program IN (?)", bun.In(names)).Scan(ctx, &rows); err != nil {
		return fmt.Errorf("checking policies against the store: %w", err)
	}
	stored := make(map[string]string, len(rows))
	for _, r := range rows {
		stored[policyKey(r.Program, r.Version)] = r.Digest
	}
	var errs []error
	for _, p := range ps {
		if d, ok := stored[policyKey(p.Program, p.Version)]; ok && d != p.Digest {
			errs = append(errs, &PolicyChangedError{File: p.File, Program: p.Program, Version: p.Version, StoredDigest: d, CurrentDigest: p.Digest})
		}
	}
	return errors.Join(errs...)
}
