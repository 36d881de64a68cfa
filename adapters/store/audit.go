package store

// The audit side of the store: re-running stored decisions with their recorded policy version
// (explain, audit verify, the HTTP audit API), and the read helpers they need.
//
// What a chain hash proves. SaveBatch hashes, for each decision, CanonicalBytes(event id, stream
// sequence, decision) chained to the previous row's hash. Audit recomputes that hash from the
// sources of truth only — the stored order event and the stored policy source (its digest
// checked) — by deciding the event again; it never hashes the decision row's own columns. So:
//
//   - a row whose columns differ from the re-run while its hash matches the re-run was changed
//     after it was chained ("altered": the hash is the witness of the original content);
//   - a row whose columns reproduce but whose hash does not was given another hash, or forged;
//   - a row where neither matches does not reproduce: engine or policy drift, or a forgery.
//
// Columns compared field by field (each difference named, stored vs re-run): order_id, program,
// affiliate_id, policy_version, policy_digest, qualified, failed_rules, rate_rule, rate, flat,
// base, commission, currency, rounding, every trace outcome, env, and the decision's stream_seq
// against its event's. A field-by-field comparison, rather than one byte comparison of canonical
// forms, tells an auditor which value changed; the hash check covers the canonical form.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/cockroachdb/apd/v3"
	"golang.org/x/sync/errgroup"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// ErrCannotRecheck is matched (errors.Is) by every *RecheckError: a stored decision could not be
// decided again.
var ErrCannotRecheck = errors.New("decision cannot be re-run")

// ErrPolicyAltered is matched (errors.Is) by a *RecheckError whose stored policy source no longer
// has the digest it was stored with.
var ErrPolicyAltered = errors.New("stored policy source does not match its digest")

// Reasons a stored decision cannot be re-run (RecheckError.Reason).
const (
	ReasonPolicyMissing = "policy_missing" // its policy version is not in policy_versions
	ReasonPolicyAltered = "policy_altered" // the stored source's digest is not the recorded one
	ReasonPolicyInvalid = "policy_invalid" // the stored source no longer compiles, or names another version
	ReasonEventMissing  = "event_missing"  // no order event with its event id is stored
	ReasonEventInvalid  = "event_invalid"  // the stored event no longer decodes as an order
	ReasonDecideFailed  = "decide_failed"  // deciding it again failed (a rule error, no rate rule…)
)

// RecheckError says why a stored decision could not be decided again. It matches
// ErrCannotRecheck, and ErrPolicyAltered when Reason is ReasonPolicyAltered.
type RecheckError struct {
	Reason string // one of the Reason… constants
	Msg    string
}

func (e *RecheckError) Error() string { return e.Msg }

// Is matches ErrCannotRecheck, and ErrPolicyAltered for an altered policy.
func (e *RecheckError) Is(target error) bool {
	return target == ErrCannotRecheck || target == ErrPolicyAltered && e.Reason == ReasonPolicyAltered
}

func recheckErr(reason, format string, args ...any) *RecheckError {
	return &RecheckError{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// AuditSource is what re-running a stored decision reads. *Store implements it; the methods
// must be safe for concurrent use.
type AuditSource interface {
	// PolicyVersion returns a stored policy version; an error matching ErrNotFound when none.
	PolicyVersion(ctx context.Context, program string, version int) (StoredPolicy, error)
	// Event returns a stored order event by its event id; an error matching ErrNotFound when none.
	Event(ctx context.Context, eventID string) (StoredEvent, error)
	// DecisionInputs returns what a decision was decided with besides its event and policy
	// version (the order's pin, the affiliate.* inputs); the zero value when nothing.
	DecisionInputs(ctx context.Context, decisionID int64) (DecisionInputs, error)
}

var _ AuditSource = (*Store)(nil)

// Event returns the stored order event with that event id; ErrNotFound when there is none.
func (s *Store) Event(ctx context.Context, eventID string) (StoredEvent, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+eventColumns+" FROM order_events WHERE event_id = ?", eventID)
	if err != nil {
		return StoredEvent{}, fmt.Errorf("reading event %s: %w", eventID, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return StoredEvent{}, fmt.Errorf("reading event %s: %w", eventID, err)
		}
		return StoredEvent{}, fmt.Errorf("event %s: %w", eventID, ErrNotFound)
	}
	e, err := scanEvent(rows)
	if err != nil {
		return StoredEvent{}, fmt.Errorf("reading event %s: %w", eventID, err)
	}
	return e, rows.Err()
}

const eventColumns = "id, event_id, program, order_id, affiliate_id, subject, stream_seq, raw, placed_at, received_at"

func scanEvent(rows interface{ Scan(...any) error }) (StoredEvent, error) {
	var e StoredEvent
	var seq int64
	if err := rows.Scan(&e.ID, &e.EventID, &e.Program, &e.OrderID, &e.AffiliateID, &e.Subject, &seq, &e.Raw,
		&e.PlacedAt, &e.ReceivedAt); err != nil {
		return e, err
	}
	e.StreamSeq = uint64(seq)
	e.PlacedAt, e.ReceivedAt = e.PlacedAt.UTC(), e.ReceivedAt.UTC()
	return e, nil
}

// OrderDecisionsPage returns up to limit decisions of an order, newest first by storage order
// (decision id descending), starting after the decision id before (0: from the newest). An empty
// program matches every program. Pass the last id of a page as before to get the next page.
func (s *Store) OrderDecisionsPage(ctx context.Context, program, orderID string, before int64, limit int) ([]StoredDecision, error) {
	var out []StoredDecision
	collect := func(d StoredDecision) error { out = append(out, d); return nil }
	where, args := "program IN (SELECT program FROM chain_heads) AND order_id = ?", []any{orderID}
	if program != "" {
		where, args = "program = ? AND order_id = ?", []any{program, orderID}
	}
	if before > 0 {
		where, args = where+" AND id < ?", append(args, before)
	}
	if err := s.queryDecisions(ctx, collect, "WHERE "+where+" ORDER BY id DESC LIMIT ?", append(args, limit)...); err != nil {
		return nil, fmt.Errorf("reading decisions of order %s: %w", orderID, err)
	}
	return out, nil
}

// PolicyVersions returns every stored policy version of a program ("" for every program), by
// program and version.
func (s *Store) PolicyVersions(ctx context.Context, program string) ([]StoredPolicy, error) {
	var rows []policyRow
	q := s.db.NewSelect().Model(&rows).Order("program", "version")
	if program != "" {
		q = q.Where("program = ?", program)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("reading policy versions: %w", err)
	}
	out := make([]StoredPolicy, len(rows))
	for i, r := range rows {
		out[i] = StoredPolicy{Program: r.Program, Version: r.Version, Digest: r.Digest, Source: []byte(r.Source), File: r.File,
			EffectiveFrom: r.EffectiveFrom.UTC(), FirstUsedAt: r.FirstUsedAt.UTC()}
	}
	return out, nil
}

// ChainPrograms returns, sorted, every program that has a chain head or a stored decision (a
// decision row of a program with no head is itself a finding).
func (s *Store) ChainPrograms(ctx context.Context) ([]string, error) {
	var out []string
	err := s.db.NewRaw("SELECT program FROM chain_heads UNION SELECT DISTINCT program FROM decisions ORDER BY 1").Scan(ctx, &out)
	if err != nil {
		return nil, fmt.Errorf("reading the programs with decisions: %w", err)
	}
	return out, nil
}

// OrphanEvents returns up to limit stored events of a program ("" for every program) that have
// neither a decision nor a dead letter — the trace a deleted decision leaves — in storage order.
func (s *Store) OrphanEvents(ctx context.Context, program string, limit int) ([]StoredEvent, error) {
	where, args := "", []any{}
	if program != "" {
		where, args = "e.program = ? AND ", append(args, program)
	}
	cols := "e." + strings.ReplaceAll(eventColumns, ", ", ", e.")
	rows, err := s.db.QueryContext(ctx, "SELECT "+cols+" FROM order_events e WHERE "+where+
		`NOT EXISTS (SELECT 1 FROM decisions d WHERE d.event_id = e.event_id)
		AND NOT EXISTS (SELECT 1 FROM dead_letters x WHERE x.event_id = e.event_id) ORDER BY e.id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("reading events without a decision: %w", err)
	}
	defer rows.Close()
	var out []StoredEvent
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("reading events without a decision: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading events without a decision: %w", err)
	}
	return out, nil
}

// chainRow is one decision row as audit verify reads it: the columns it checks, as stored (text,
// unparsed), with the stored event it decided (evID invalid when none is stored). Parsing is left
// to the workers, so the one goroutine that reads rows does as little as it can, and a column
// that no longer parses (edited in SQL) is a finding rather than a failed read.
type chainRow struct {
	id, policyVersion, streamSeq, chainSeq int64
	eventID, orderID, program, affiliateID string
	policyDigest, failedRules, rateRule    string
	rate, base, commission                 string
	flat                                   sql.NullString
	qualified                              any
	currency, rounding, trace, env         string
	prevHash, hash                         string
	evID, evSeq                            sql.NullInt64
	evRaw                                  []byte
	// The affiliate.* inputs recorded for the decision (decision_inputs), when its policy read them.
	month       sql.NullString
	monthOrders sql.NullInt64
	monthSales  sql.NullString
}

// walkChainRows calls fn for each decision of a program in chain order (chain_seq ascending),
// streaming. fn's error stops the walk and is returned; fn may keep the rows.
func (s *Store) walkChainRows(ctx context.Context, program string, fn func(*chainRow) error) error {
	num := func(c string) string {
		if s.kind == Postgres {
			return "d." + c + "::text"
		}
		return "d." + c
	}
	query := "SELECT d.id, d.policy_version, d.stream_seq, d.chain_seq, d.event_id, d.order_id, d.program, d.affiliate_id, " +
		"d.policy_digest, d.failed_rules, d.rate_rule, " + num("rate") + ", " + num("base") + ", " + num("commission") + ", " +
		num("flat") + ", d.qualified, d.currency, d.rounding, d.trace, d.env, d.prev_hash, d.hash, e.id, e.stream_seq, e.raw, " +
		"i.month, i.month_qualified_orders, " + strings.Replace(num("month_qualified_sales"), "d.", "i.", 1) + " " +
		"FROM decisions d LEFT JOIN order_events e ON e.event_id = d.event_id LEFT JOIN decision_inputs i ON i.decision_id = d.id " +
		"WHERE d.program = ? ORDER BY d.chain_seq"
	rows, err := s.db.QueryContext(ctx, query, program)
	if err != nil {
		return fmt.Errorf("walking the decision chain of %s: %w", program, err)
	}
	defer rows.Close()
	for rows.Next() {
		r := &chainRow{}
		if err := rows.Scan(&r.id, &r.policyVersion, &r.streamSeq, &r.chainSeq, &r.eventID, &r.orderID, &r.program, &r.affiliateID,
			&r.policyDigest, &r.failedRules, &r.rateRule, &r.rate, &r.base, &r.commission, &r.flat, &r.qualified,
			&r.currency, &r.rounding, &r.trace, &r.env, &r.prevHash, &r.hash, &r.evID, &r.evSeq, &r.evRaw,
			&r.month, &r.monthOrders, &r.monthSales); err != nil {
			return fmt.Errorf("walking the decision chain of %s: %w", program, err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("walking the decision chain of %s: %w", program, err)
	}
	return nil
}

// affiliate returns the recorded affiliate.* inputs; nil when none were recorded. A recorded
// sales figure that does not parse is given as zero: the re-run then differs, which is reported.
func (r *chainRow) affiliate() *engine.AffiliateMonth {
	if !r.month.Valid {
		return nil
	}
	a := &engine.AffiliateMonth{Month: r.month.String, QualifiedOrders: r.monthOrders.Int64}
	a.QualifiedSales.SetString(r.monthSales.String)
	return a
}

// decision returns the row's identity and chain fields as a StoredDecision (the checked columns
// stay text, in texts), and its event (nil when none is stored).
func (r *chainRow) decision() (*StoredDecision, *StoredEvent, *storedText) {
	d := &StoredDecision{ID: r.id, EventID: r.eventID, OrderID: r.orderID, Program: r.program, AffiliateID: r.affiliateID,
		PolicyVersion: int(r.policyVersion), PolicyDigest: r.policyDigest, RateRule: r.rateRule, Currency: r.currency,
		Rounding: r.rounding, Env: r.env, StreamSeq: uint64(r.streamSeq), ChainSeq: r.chainSeq, PrevHash: r.prevHash, Hash: r.hash}
	var ev *StoredEvent
	if r.evID.Valid {
		ev = &StoredEvent{ID: r.evID.Int64, EventID: r.eventID, StreamSeq: uint64(r.evSeq.Int64), Raw: r.evRaw}
	}
	t := &storedText{
		orderID: r.orderID, program: r.program, affiliateID: r.affiliateID, policyVersion: strconv.FormatInt(r.policyVersion, 10),
		policyDigest: r.policyDigest, failedRules: r.failedRules, rateRule: r.rateRule, rate: r.rate, base: r.base,
		commission: r.commission, flat: noFlat, currency: r.currency, rounding: r.rounding, trace: r.trace, env: r.env,
		streamSeq: strconv.FormatInt(r.streamSeq, 10),
	}
	if r.flat.Valid {
		t.flat = r.flat.String
	}
	switch q := r.qualified.(type) {
	case bool:
		t.qualified = strconv.FormatBool(q)
	case int64:
		t.qualified = map[int64]string{0: "false", 1: "true"}[q]
		if q != 0 && q != 1 {
			t.qualified = strconv.FormatInt(q, 10)
		}
	case []byte:
		t.qualified = string(q)
	default:
		t.qualified = fmt.Sprint(q)
	}
	return d, ev, t
}

// --- re-running a stored decision ---

// FieldDiff is one stored field that differs from the re-run decision.
type FieldDiff struct {
	Field  string // the column, or trace[rule id] for one rule's outcome
	Stored string
	Rerun  string
}

// Recheck is what deciding a stored decision's event again, with its recorded policy version,
// found.
type Recheck struct {
	Again *engine.Decision // nil when Err is set
	// Diffs are the fields where the stored row differs from Again; empty when it reproduces.
	Diffs []FieldDiff
	// HashOK: the row's hash is ChainHash(its prev_hash, CanonicalBytes of its event and Again).
	HashOK bool
	// Err (a *RecheckError) is why the decision could not be decided again.
	Err error
}

// Reproduced reports whether the decision was decided again to exactly the stored row.
func (r *Recheck) Reproduced() bool { return r.Err == nil && len(r.Diffs) == 0 }

// Auditor re-runs stored decisions with their recorded policy versions, compiling each stored
// policy source once (after checking its digest). It is safe for concurrent use.
type Auditor struct {
	src AuditSource
	eng *engine.Engine

	mu       sync.Mutex
	policies map[string]*auditPolicy // policyKey → the loaded version, or why it cannot be used
}

type auditPolicy struct {
	stored StoredPolicy
	p      *rules.Policy
	err    error
}

// NewAuditor returns an auditor reading from src.
func NewAuditor(src AuditSource) *Auditor {
	empty, _ := rules.NewSet(nil)
	return &Auditor{src: src, eng: engine.New(empty), policies: map[string]*auditPolicy{}}
}

// Policy returns a stored policy version compiled from its stored source, after checking that
// the source still has the recorded digest. A missing, altered or no longer compiling version
// gives a *RecheckError (remembered: asking again gives the same answer); a failed read gives
// the read's error (not remembered).
func (a *Auditor) Policy(ctx context.Context, program string, version int) (*rules.Policy, StoredPolicy, error) {
	key := policyKey(program, version)
	a.mu.Lock()
	defer a.mu.Unlock()
	if ap, ok := a.policies[key]; ok {
		return ap.p, ap.stored, ap.err
	}
	sp, err := a.src.PolicyVersion(ctx, program, version)
	if errors.Is(err, ErrNotFound) {
		err = recheckErr(ReasonPolicyMissing, "policy %s v%d is not stored", program, version)
	}
	if err != nil {
		var re *RecheckError
		if errors.As(err, &re) {
			a.policies[key] = &auditPolicy{err: err}
		}
		return nil, sp, err
	}
	ap := &auditPolicy{stored: sp}
	a.policies[key] = ap
	if got := rules.Digest(sp.Source); got != sp.Digest {
		ap.err = recheckErr(ReasonPolicyAltered, "policy %s v%d: the stored source has digest %s, but it was stored with digest %s: the source was altered after it was used",
			program, version, got, sp.Digest)
		return nil, sp, ap.err
	}
	p, problems := rules.Compile(sp.File, sp.Source)
	switch {
	case p == nil:
		ap.err = recheckErr(ReasonPolicyInvalid, "policy %s v%d (%s): the stored source no longer compiles:\n%v", program, version, sp.File, problems)
	case p.Program != program || p.Version != version:
		ap.err = recheckErr(ReasonPolicyInvalid, "policy %s v%d: the stored source is of %s v%d", program, version, p.Program, p.Version)
	default:
		ap.p = p
	}
	return ap.p, sp, ap.err
}

// Recheck decides a stored decision's event (ev; nil when it is not stored) again with the
// decision's recorded policy version and compares. A failed read of the policy is returned as
// the error; everything the audit should report is in the Recheck.
func (a *Auditor) Recheck(ctx context.Context, d *StoredDecision, ev *StoredEvent) (Recheck, error) {
	in, err := a.src.DecisionInputs(ctx, d.ID)
	if err != nil {
		return Recheck{}, err
	}
	rc, _, err := a.recheck(ctx, d, textOf(d), ev, in.Affiliate, false)
	return rc, err
}

// recheck decides d's event again, with the affiliate.* inputs recorded for it (nil: none); t is
// d's checked columns as stored.
func (a *Auditor) recheck(ctx context.Context, d *StoredDecision, t *storedText, ev *StoredEvent, aff *engine.AffiliateMonth, explain bool) (Recheck, *engine.Explanation, error) {
	if ev == nil {
		return Recheck{Err: recheckErr(ReasonEventMissing, "decision %d: its order event %s is not stored (the decision was inserted without one, or the event was deleted)",
			d.ID, d.EventID)}, nil, nil
	}
	p, _, err := a.Policy(ctx, d.Program, d.PolicyVersion)
	if err != nil {
		if errors.Is(err, ErrCannotRecheck) {
			return Recheck{Err: err}, nil, nil
		}
		return Recheck{}, nil, err
	}
	o, err := engine.DecodeOrder(ev.Raw)
	if err != nil {
		return Recheck{Err: recheckErr(ReasonEventInvalid, "decision %d: its stored event %s no longer decodes: %v", d.ID, d.EventID, err)}, nil, nil
	}
	if aff != nil {
		// What the affiliate had sold that month is history, not part of the event: the
		// decision recorded it (and its hash covers it).
		o.Affiliate = *aff
	}
	var (
		again *engine.Decision
		x     *engine.Explanation
	)
	if explain {
		if x, err = a.eng.Explain(ctx, p, o); err == nil {
			again = x.Decision
		}
	} else {
		again, err = a.eng.DecideWith(ctx, p, o)
	}
	if err != nil {
		if ctx.Err() != nil {
			return Recheck{}, nil, ctx.Err()
		}
		return Recheck{Err: recheckErr(ReasonDecideFailed, "decision %d: deciding event %s again with %s v%d: %v", d.ID, d.EventID, d.Program, d.PolicyVersion, err)}, nil, nil
	}
	rc := Recheck{Again: again, Diffs: diffText(t, again, ev)}
	hash, err := ChainHash(d.PrevHash, CanonicalBytes(ev.EventID, ev.StreamSeq, again))
	rc.HashOK = err == nil && hash == d.Hash
	return rc, x, nil
}

// Explained is a stored decision with its re-run explanation.
type Explained struct {
	Decision StoredDecision
	Event    *StoredEvent // nil when it is not stored
	Policy   StoredPolicy // zero when it could not be read
	// Explanation is the re-run's: every rule's expression, outcome and inputs. Nil when the
	// decision could not be re-run (Recheck.Err).
	Explanation *engine.Explanation
	Recheck     Recheck
	// Inputs is what the decision was decided with besides its event and policy version: the
	// order's pin, the affiliate.* inputs.
	Inputs DecisionInputs
}

// Explain reads a stored decision's event and policy version and explains it by deciding it
// again (engine.Explain), comparing the result with the stored row. Only a failed read is an
// error; an unexplainable decision has Recheck.Err set.
func (a *Auditor) Explain(ctx context.Context, d StoredDecision) (Explained, error) {
	out := Explained{Decision: d}
	ev, err := a.src.Event(ctx, d.EventID)
	switch {
	case err == nil:
		out.Event = &ev
	case !errors.Is(err, ErrNotFound):
		return out, err
	}
	if _, sp, err := a.Policy(ctx, d.Program, d.PolicyVersion); err == nil || errors.Is(err, ErrCannotRecheck) {
		out.Policy = sp
	} else {
		return out, err
	}
	if out.Inputs, err = a.src.DecisionInputs(ctx, d.ID); err != nil {
		return out, err
	}
	if out.Recheck, out.Explanation, err = a.recheck(ctx, &out.Decision, textOf(&out.Decision), out.Event, out.Inputs.Affiliate, true); err != nil {
		return out, err
	}
	return out, nil
}

// storedText is a stored decision's checked columns as text, as stored: what Diff compares with
// the re-run, column by column.
type storedText struct {
	orderID, program, affiliateID, policyVersion, policyDigest, qualified, failedRules, rateRule string
	rate, flat, base, commission, currency, rounding, trace, env, streamSeq                      string
}

// noFlat is the flat column of a decision whose rate rule pays no flat amount (NULL).
const noFlat = "(none)"

func textOf(d *StoredDecision) *storedText {
	t := &storedText{
		orderID: d.OrderID, program: d.Program, affiliateID: d.AffiliateID, policyVersion: strconv.Itoa(d.PolicyVersion),
		policyDigest: d.PolicyDigest, qualified: strconv.FormatBool(d.Qualified), failedRules: string(stringsJSON(nil, d.FailedRules)),
		rateRule: d.RateRule, rate: d.Rate.Text('f'), flat: noFlat, base: d.Base.Text('f'), commission: d.Commission.Text('f'),
		currency: d.Currency, rounding: d.Rounding, env: d.Env, streamSeq: strconv.FormatUint(d.StreamSeq, 10),
	}
	if d.HasFlat {
		t.flat = d.Flat.Text('f')
	}
	b := []byte{'['}
	for i, e := range d.Trace {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = appendJSONString(b, e.Stage)
		b = append(b, ',')
		b = appendJSONString(b, e.Rule)
		b = append(b, ',')
		b = appendJSONString(b, e.Outcome)
		b = append(b, ']')
	}
	t.trace = string(append(b, ']'))
	return t
}

// Diff compares a stored decision with the same event decided again (ev is the stored event; its
// stream sequence is compared with the decision's). It returns every differing field, in column
// order; none when the row reproduces exactly.
func Diff(d *StoredDecision, again *engine.Decision, ev *StoredEvent) []FieldDiff {
	return diffText(textOf(d), again, ev)
}

func diffText(t *storedText, again *engine.Decision, ev *StoredEvent) []FieldDiff {
	var out []FieldDiff
	cmp := func(field, stored, rerun string) {
		if stored != rerun {
			out = append(out, FieldDiff{Field: field, Stored: stored, Rerun: rerun})
		}
	}
	// Decimals compare by value and scale: PostgreSQL's NUMERIC text may spell a stored value
	// differently; a text that is no decimal at all differs.
	dec := func(field, stored, rerun string) {
		if stored == rerun {
			return
		}
		var v apd.Decimal
		if _, _, err := v.SetString(stored); err == nil && v.Text('f') == rerun {
			return
		}
		out = append(out, FieldDiff{Field: field, Stored: stored, Rerun: rerun})
	}
	cmp("order_id", t.orderID, safeText(again.OrderID))
	cmp("program", t.program, safeText(again.Program))
	cmp("affiliate_id", t.affiliateID, safeText(again.AffiliateID))
	cmp("policy_version", t.policyVersion, strconv.Itoa(again.PolicyVersion))
	cmp("policy_digest", t.policyDigest, again.PolicyDigest)
	cmp("qualified", t.qualified, strconv.FormatBool(again.Qualified))
	cmp("failed_rules", t.failedRules, string(stringsJSON(nil, again.FailedRules)))
	cmp("rate_rule", t.rateRule, again.RateRule)
	dec("rate", t.rate, again.Rate.Text('f'))
	if again.HasFlat() {
		dec("flat", t.flat, again.Flat.Text('f'))
	} else {
		cmp("flat", t.flat, noFlat)
	}
	dec("base", t.base, again.Base.Text('f'))
	dec("commission", t.commission, again.Commission.Text('f'))
	cmp("currency", t.currency, again.Currency.Code)
	cmp("rounding", t.rounding, string(again.Rounding))
	if want := string(traceJSON(nil, again)); t.trace != want {
		out = append(out, traceDiffs(t.trace, want)...)
	}
	cmp("env", t.env, again.Env)
	if ev != nil {
		cmp("stream_seq", t.streamSeq, strconv.FormatUint(ev.StreamSeq, 10))
	}
	return out
}

// traceDiffs names the rules whose stored outcome differs; the whole column when it does not
// parse or lists other rules.
func traceDiffs(stored, rerun string) []FieldDiff {
	var s, r [][3]string
	if json.Unmarshal([]byte(stored), &s) != nil || json.Unmarshal([]byte(rerun), &r) != nil || len(s) != len(r) {
		return []FieldDiff{{Field: "trace", Stored: stored, Rerun: rerun}}
	}
	var out []FieldDiff
	for i := range s {
		switch {
		case s[i][0] != r[i][0] || s[i][1] != r[i][1]:
			out = append(out, FieldDiff{Field: "trace[" + strconv.Itoa(i) + "]", Stored: s[i][0] + " " + s[i][1], Rerun: r[i][0] + " " + r[i][1]})
		case s[i][2] != r[i][2]:
			out = append(out, FieldDiff{Field: "trace[" + s[i][1] + "]", Stored: s[i][2], Rerun: r[i][2]})
		}
	}
	if len(out) == 0 { // same entries, other spelling
		out = append(out, FieldDiff{Field: "trace", Stored: stored, Rerun: rerun})
	}
	return out
}

// --- audit verify ---

// Finding kinds: what audit verify reports.
const (
	// FindingAltered: the row's columns differ from the re-run while its hash covers the re-run:
	// the row was changed after it was chained.
	FindingAltered = "altered"
	// FindingNotReproduced: neither the row's columns nor its hash match the re-run: engine or
	// policy drift, or a forged row.
	FindingNotReproduced = "not_reproduced"
	// FindingHashMismatch: the columns reproduce but the hash does not cover them: the hash or
	// prev_hash was changed, or the row was forged.
	FindingHashMismatch = "hash_mismatch"
	// FindingUnverifiable: the row could not be decided again (its event or policy version is
	// missing or altered); Reason says which.
	FindingUnverifiable = "unverifiable"
	// FindingMissing: chain positions with no row (deleted rows).
	FindingMissing = "missing"
	// FindingInserted: a row outside the chain's sequence: before position 1, beyond the chain
	// head, or in a program that has no chain head.
	FindingInserted = "inserted"
	// FindingBrokenLink: the row's prev_hash is not the previous row's hash: a row before it was
	// replaced, or this one was put in.
	FindingBrokenLink = "broken_link"
	// FindingHeadMismatch: the chain head (chain_heads) does not name the last row and its hash.
	FindingHeadMismatch = "head_mismatch"
	// FindingPolicy: a stored policy version cannot be used: its source was altered (digest
	// mismatch) or no longer compiles; Reason says which.
	FindingPolicy = "policy"
	// FindingOrphanEvent: a stored order event has neither a decision nor a dead letter (its
	// decision was deleted).
	FindingOrphanEvent = "orphan_event"
)

// Finding is one thing audit verify found.
type Finding struct {
	Kind       string
	Reason     string // for unverifiable and policy findings: a Reason… constant
	Program    string
	ChainSeq   int64 // the row's chain position; for missing rows the first missing one; 0 when about no row
	DecisionID int64 // 0 when about no row
	EventID    string
	OrderID    string
	Detail     string
	Diffs      []FieldDiff
}

func (f Finding) String() string {
	var b strings.Builder
	b.WriteString(f.Program)
	if f.ChainSeq != 0 {
		fmt.Fprintf(&b, " chain_seq %d", f.ChainSeq)
	}
	if f.DecisionID != 0 {
		fmt.Fprintf(&b, " decision %d", f.DecisionID)
	}
	if f.OrderID != "" {
		fmt.Fprintf(&b, " order %s", f.OrderID)
	}
	fmt.Fprintf(&b, ": %s: %s", f.Kind, f.Detail)
	for _, d := range f.Diffs {
		fmt.Fprintf(&b, "\n    %s: stored %q, re-run %q", d.Field, d.Stored, d.Rerun)
	}
	return b.String()
}

// VerifyOptions say what Verify checks and where findings go.
type VerifyOptions struct {
	Program string // "" verifies every program
	Workers int    // decisions re-run in parallel; 0: GOMAXPROCS
	// OnFinding receives every finding, in chain order within a program, one at a time (never
	// concurrently). Nil drops them (the report still counts them).
	OnFinding func(Finding)
	// OrphanLimit bounds how many orphan events are reported; 0: 100.
	OrphanLimit int
}

// ChainReport is what Verify found in one program's chain.
type ChainReport struct {
	Program    string
	Rows       int64 // decision rows walked
	Reproduced int64 // rows decided again to exactly the stored row, hash included
	LastSeq    int64 // the last row's chain_seq (0 when none)
	LastHash   string
	Head       ChainHead // the stored head; zero when none
	HasHead    bool
	Findings   int
	First      *Finding // the first finding in chain order; nil when none
}

// VerifyReport is the result of Verify.
type VerifyReport struct {
	Policies int // stored policy versions checked
	Chains   []ChainReport
	Findings int
	ByKind   map[string]int
}

// OK reports whether nothing was found.
func (r *VerifyReport) OK() bool { return r.Findings == 0 }

type verifyItem struct {
	row     *chainRow
	d       *StoredDecision // set by a worker, like the rest
	finding *Finding
	ok      bool // reproduced exactly, hash included
}

type verifyBatch struct {
	items []verifyItem
	done  chan struct{}
	err   error
}

// Verify audits the stored decisions: every stored policy version's source against its digest;
// every decision decided again with its recorded policy version (in parallel, streaming) and
// compared field by field and by chain hash; every chain's sequence, links and head; and the
// events left without any outcome. It returns an error only when it could not do the work (a
// failed read, a cancelled ctx); what it found is in the report and given to opts.OnFinding.
func (s *Store) Verify(ctx context.Context, opts VerifyOptions) (*VerifyReport, error) {
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.OrphanLimit <= 0 {
		opts.OrphanLimit = 100
	}
	rep := &VerifyReport{ByKind: map[string]int{}}
	var chain *ChainReport
	emit := func(f Finding) {
		rep.Findings++
		rep.ByKind[f.Kind]++
		if chain != nil && chain.Program == f.Program {
			chain.Findings++
			if chain.First == nil {
				ff := f
				chain.First = &ff
			}
		}
		if opts.OnFinding != nil {
			opts.OnFinding(f)
		}
	}
	a := NewAuditor(s)

	policies, err := s.PolicyVersions(ctx, opts.Program)
	if err != nil {
		return nil, err
	}
	for _, sp := range policies {
		rep.Policies++
		if _, _, err := a.Policy(ctx, sp.Program, sp.Version); err != nil {
			var re *RecheckError
			if !errors.As(err, &re) {
				return nil, err
			}
			emit(Finding{Kind: FindingPolicy, Reason: re.Reason, Program: sp.Program, Detail: re.Msg})
		}
	}

	programs := []string{opts.Program}
	if opts.Program == "" {
		if programs, err = s.ChainPrograms(ctx); err != nil {
			return nil, err
		}
	}
	heads, err := s.ChainHeads(ctx)
	if err != nil {
		return nil, err
	}
	headOf := map[string]ChainHead{}
	for _, h := range heads {
		headOf[h.Program] = h
	}
	for _, prog := range programs {
		rep.Chains = append(rep.Chains, ChainReport{Program: prog})
		chain = &rep.Chains[len(rep.Chains)-1]
		chain.Head, chain.HasHead = headOf[prog]
		if err := s.verifyChain(ctx, a, chain, opts.Workers, emit); err != nil {
			return nil, err
		}
	}
	chain = nil

	orphans, err := s.OrphanEvents(ctx, opts.Program, opts.OrphanLimit)
	if err != nil {
		return nil, err
	}
	for _, e := range orphans {
		emit(Finding{Kind: FindingOrphanEvent, Program: e.Program, EventID: e.EventID, OrderID: e.OrderID,
			Detail: fmt.Sprintf("order event %s (stream seq %d) has no decision and no dead letter: its decision was deleted", e.EventID, e.StreamSeq)})
	}
	return rep, nil
}

// verifyChain walks one program's chain: a reader streams rows in chain order in batches, workers
// decide them again, and this goroutine checks sequence and links and emits findings in order.
func (s *Store) verifyChain(ctx context.Context, a *Auditor, chain *ChainReport, workers int, emit func(Finding)) error {
	const batchSize = 256
	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan *verifyBatch, workers)
	ordered := make(chan *verifyBatch, 2*workers)
	g.Go(func() error {
		defer close(jobs)
		defer close(ordered)
		b := &verifyBatch{done: make(chan struct{}), items: make([]verifyItem, 0, batchSize)}
		send := func() error {
			select {
			case ordered <- b:
			case <-gctx.Done():
				return gctx.Err()
			}
			select {
			case jobs <- b:
			case <-gctx.Done():
				return gctx.Err()
			}
			b = &verifyBatch{done: make(chan struct{}), items: make([]verifyItem, 0, batchSize)}
			return nil
		}
		err := s.walkChainRows(gctx, chain.Program, func(r *chainRow) error {
			b.items = append(b.items, verifyItem{row: r})
			if len(b.items) == batchSize {
				return send()
			}
			return nil
		})
		if err == nil && len(b.items) > 0 {
			err = send()
		}
		return err
	})
	for range workers {
		g.Go(func() error {
			for b := range jobs {
				for i := range b.items {
					if b.err = recheckItem(gctx, a, &b.items[i]); b.err != nil {
						break
					}
				}
				close(b.done)
			}
			return nil
		})
	}
	g.Go(func() error {
		expect, prevHash, prevID := int64(1), GenesisHash, int64(0)
		for b := range ordered {
			select {
			case <-b.done:
			case <-gctx.Done():
				return gctx.Err()
			}
			if b.err != nil {
				return b.err
			}
			for i := range b.items {
				it := &b.items[i]
				d := it.d
				chain.Rows++
				row := Finding{Program: d.Program, ChainSeq: d.ChainSeq, DecisionID: d.ID, EventID: d.EventID, OrderID: d.OrderID}
				gap := false
				switch {
				case d.ChainSeq > expect:
					gap = true
					f := row
					f.Kind, f.ChainSeq, f.DecisionID, f.EventID, f.OrderID = FindingMissing, expect, 0, "", ""
					f.Detail = fmt.Sprintf("%s between decision %d (chain_seq %d) and decision %d (chain_seq %d): the row was deleted",
						seqRange(expect, d.ChainSeq-1), prevID, expect-1, d.ID, d.ChainSeq)
					if prevID == 0 {
						f.Detail = fmt.Sprintf("%s before decision %d (chain_seq %d): the chain's first rows were deleted", seqRange(expect, d.ChainSeq-1), d.ID, d.ChainSeq)
					}
					emit(f)
				case d.ChainSeq < expect:
					f := row
					f.Kind = FindingInserted
					f.Detail = fmt.Sprintf("chain_seq %d is not a position in the chain (the next is %d): the row was put in", d.ChainSeq, expect)
					emit(f)
				}
				if !gap && d.PrevHash != prevHash {
					f := row
					f.Kind = FindingBrokenLink
					f.Detail = fmt.Sprintf("prev_hash %s is not the hash %s of the row before it (decision %d): that row was replaced or this one was put in",
						short(d.PrevHash), short(prevHash), prevID)
					if prevID == 0 {
						f.Detail = fmt.Sprintf("prev_hash %s of the chain's first row is not the genesis hash", short(d.PrevHash))
					}
					emit(f)
				}
				if chain.HasHead && d.ChainSeq > chain.Head.ChainSeq {
					f := row
					f.Kind = FindingInserted
					f.Detail = fmt.Sprintf("chain_seq %d is beyond the chain head (%d decisions): the row was added outside SaveBatch", d.ChainSeq, chain.Head.ChainSeq)
					emit(f)
				}
				if it.finding != nil {
					emit(*it.finding)
				}
				if it.ok {
					chain.Reproduced++
				}
				if d.ChainSeq >= expect {
					expect = d.ChainSeq + 1
				}
				prevHash, prevID = d.Hash, d.ID
				chain.LastSeq, chain.LastHash = d.ChainSeq, d.Hash
			}
		}
		if err := gctx.Err(); err != nil {
			return err
		}
		switch {
		case !chain.HasHead && chain.Rows > 0:
			emit(Finding{Kind: FindingInserted, Program: chain.Program,
				Detail: fmt.Sprintf("%d decision rows of program %s, but no chain head: they were added outside SaveBatch", chain.Rows, chain.Program)})
		case !chain.HasHead:
		case chain.LastSeq < chain.Head.ChainSeq:
			emit(Finding{Kind: FindingMissing, Program: chain.Program, ChainSeq: chain.LastSeq + 1,
				Detail: fmt.Sprintf("%s at the end: the chain head says %d decisions (hash %s), the last row is chain_seq %d: the rows were deleted",
					seqRange(chain.LastSeq+1, chain.Head.ChainSeq), chain.Head.ChainSeq, short(chain.Head.Hash), chain.LastSeq)})
		case chain.LastSeq == chain.Head.ChainSeq && chain.LastHash != chain.Head.Hash:
			emit(Finding{Kind: FindingHeadMismatch, Program: chain.Program, ChainSeq: chain.LastSeq, DecisionID: prevID,
				Detail: fmt.Sprintf("the chain head's hash %s is not the last row's hash %s", short(chain.Head.Hash), short(chain.LastHash))})
		}
		return nil
	})
	return g.Wait()
}

// recheckItem decides one row again and classifies it.
func recheckItem(ctx context.Context, a *Auditor, it *verifyItem) error {
	d, ev, t := it.row.decision()
	it.d = d
	rc, _, err := a.recheck(ctx, d, t, ev, it.row.affiliate(), false)
	if err != nil {
		return err
	}
	f := Finding{Program: d.Program, ChainSeq: d.ChainSeq, DecisionID: d.ID, EventID: d.EventID, OrderID: d.OrderID, Diffs: rc.Diffs}
	switch {
	case rc.Err != nil:
		var re *RecheckError
		errors.As(rc.Err, &re)
		f.Kind, f.Reason, f.Detail = FindingUnverifiable, re.Reason, re.Msg
	case len(rc.Diffs) > 0 && rc.HashOK:
		f.Kind = FindingAltered
		f.Detail = fmt.Sprintf("the stored row differs from the re-run with %s v%d, whose content its chain hash covers: the row was changed after it was stored",
			d.Program, d.PolicyVersion)
	case len(rc.Diffs) > 0:
		f.Kind = FindingNotReproduced
		f.Detail = fmt.Sprintf("deciding event %s again with %s v%d gives another decision, and the row's hash covers neither: policy or engine drift, or a forged row",
			d.EventID, d.Program, d.PolicyVersion)
	case !rc.HashOK:
		f.Kind = FindingHashMismatch
		f.Detail = fmt.Sprintf("the row reproduces, but its hash %s is not SHA-256(prev_hash ‖ canonical decision): the hash was changed, or the row was forged",
			short(d.Hash))
	default:
		it.ok = true
		return nil
	}
	it.finding = &f
	return nil
}

func seqRange(from, to int64) string {
	if from == to {
		return fmt.Sprintf("chain_seq %d is missing", from)
	}
	return fmt.Sprintf("chain_seq %d–%d (%d rows) are missing", from, to, to-from+1)
}

// short abbreviates a hash for messages.
func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}
