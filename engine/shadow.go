package engine

// Shadow versions on the live stream: in the pass that decides a batch, each event decided by
// its live version is also decided by every shadow version of its program (rules.Set.Shadows),
// with the order already decoded and the same history (the affiliate's month). A shadow's
// outcome is a ShadowRow: compact, apart from the decisions, outside the chain, the ledger and
// the payouts. Nothing a shadow does changes what the live pass computes: its errors (and even a
// panic) become the row's Error, and it is decided with a context the batch's deadline does not
// cut short.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/rules"
)

// ShadowRow is one shadow version's outcome for one event, as stored (store.WriteShadows):
// the event's identity and order time, the shadow version and digest, its verdict in short,
// and how it differs from the live decision of the same event.
type ShadowRow struct {
	Result int // the event's result in the batch (BatchWrite.Results)

	EventID, OrderID, Program, AffiliateID string
	// PlacedAt is the order's time: the time the row is filed under (never the wall clock).
	PlacedAt time.Time
	Version  int
	Digest   string

	// The shadow's verdict, set when it Diverged: an outcome that agrees with the live decision
	// is that decision's verdict, to the cent, and is neither formatted nor stored again.
	Qualified   bool
	FailedRules string // a JSON array of rule ids, as decisions store it
	RateRule    string
	Rate, Flat  string // Flat "" when the rule pays none
	Commission  apd.Decimal
	Currency    string

	// Diverged: the shadow decided the event otherwise than the live version (qualification,
	// failed rules, rate rule, terms or commission). Cause is the first rule whose outcome
	// differs (see causeOf); Kind CauseNone when they agree.
	Diverged bool
	Cause    Cause

	// ErrorKind and Error say why the shadow could not decide the event (ErrorKind…); "" when
	// it did. A row with an error has no verdict.
	ErrorKind, Error string

	// Partition and BatchSeq are the batch that stored the live decision (set once the batch
	// is built). SampleBelow is the shadow's sample bound (rules.Policy.SampleBound; Sampled
	// false: every order): with them the store records which events the shadow decided as one
	// row per batch, and keeps only the outcomes that differ from the live decisions.
	Partition   int
	BatchSeq    uint64
	SampleBelow uint64
	Sampled     bool

	// The live decision's qualification and commission, for the metrics (not stored: the live
	// decision is).
	LiveQualified  bool
	LiveCommission apd.Decimal
}

// SampleHash is the hash a shadow's sample is drawn by (rules.Policy.InSample): FNV-1a (64 bits)
// of the order's identity, program and order id. Every event of an order hashes the same, so
// an order is in a shadow's sample with all its events or with none, and a rerun of the same
// events picks the same ones.
func SampleHash(program, orderID string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(program); i++ {
		h = (h ^ uint64(program[i])) * prime
	}
	h = (h ^ 0xff) * prime // a byte no program name holds: program and order id never run together
	for i := 0; i < len(orderID); i++ {
		h = (h ^ uint64(orderID[i])) * prime
	}
	return h
}

// Shadows returns the shadow versions of a program in the engine's set.
func (e *Engine) Shadows(program string) []*rules.Policy { return e.set.Shadows(program) }

// decideShadows decides result i (decided by its live version, not booked yet) with every shadow
// of its program whose sample holds the order, and appends their rows. The walk gives the
// affiliate's month as the live decision saw it. The order's inputs are left as they were.
func (e *Engine) decideShadows(ctx context.Context, rows []ShadowRow, w *walk, i int, r *Result, shadows []*rules.Policy) []ShadowRow {
	o := r.Order
	saved := o.Affiliate
	defer func() { o.Affiliate = saved }()
	ctx = context.WithoutCancel(ctx) // a shadow's outcome never depends on the batch's deadline
	var h uint64
	hashed := false
	for _, p := range shadows {
		if p.Sample != nil {
			if !hashed {
				h, hashed = SampleHash(o.Program, o.OrderID), true
			}
			if !p.InSample(h) {
				continue
			}
		}
		o.Affiliate = AffiliateMonth{}
		if p.ReadsAffiliate() {
			o.Affiliate = w.figures(OrderKey{o.Program, o.OrderID}, o)
		}
		d, err := decideShadow(ctx, e, p, o, r.Decision)
		rows = append(rows, shadowRow(i, r, p, d, err))
	}
	return rows
}

// decideShadow decides o with shadow p, live being the live decision of o; a panic in the
// shadow's evaluation is its error. A shadow that differs from live's version in terms only (a
// changed rate or flat amount: rulesAlike) takes live's rule outcomes with its own terms, as a
// sweep's points do, which is the decision its rules would make: they are live's rules, with
// the same order and the same affiliate's month.
func decideShadow(ctx context.Context, e *Engine, p *rules.Policy, o *Order, live *Decision) (d *Decision, err error) {
	defer func() {
		if x := recover(); x != nil {
			d, err = nil, fmt.Errorf("%s: shadow v%d panicked: %v", p.File, p.Version, x)
		}
	}()
	if e.alike[[2]*rules.Policy{live.Policy, p}] {
		return live.withTermsOf(p, o)
	}
	return e.DecideWith(ctx, p, o)
}

// shadowRow is the row of shadow p's decision d (or its error) for result i.
func shadowRow(i int, r *Result, p *rules.Policy, d *Decision, err error) ShadowRow {
	o, live := r.Order, r.Decision
	row := ShadowRow{Result: i, EventID: r.Event.ID, OrderID: o.OrderID, Program: o.Program, AffiliateID: o.AffiliateID,
		PlacedAt: o.PlacedAt.UTC(), Version: p.Version, Digest: p.Digest, Currency: o.Currency.Code,
		LiveQualified: live.Qualified}
	row.SampleBelow, row.Sampled = p.SampleBound()
	row.LiveCommission.Set(&live.Commission)
	if err != nil {
		row.ErrorKind, row.Error = ErrorKind(err), err.Error()
		row.FailedRules = "[]"
		return row
	}
	if sameVerdict(d, live) {
		return row // its verdict is the live decision's
	}
	row.Qualified, row.RateRule = d.Qualified, d.RateRule
	row.FailedRules = string(AppendStrings(nil, d.FailedRules))
	row.Rate = d.Rate.Text('f')
	if d.hasFlat {
		row.Flat = d.Flat.Text('f')
	}
	row.Commission.Set(&d.Commission)
	row.Diverged = true
	row.Cause = causeOf(d, &RecordedDecision{Verdict: live.Verdict(), Trace: live.Outcomes()})
	return row
}

// sameVerdict reports whether two decisions of one order say the same: qualification, failed
// rules, rate rule, terms and commission (by value: 6 and 6.0 are one rate).
func sameVerdict(a, b *Decision) bool {
	return a.Qualified == b.Qualified && slices.Equal(a.FailedRules, b.FailedRules) && a.RateRule == b.RateRule &&
		a.Rate.Cmp(&b.Rate) == 0 && a.hasFlat == b.hasFlat && (!a.hasFlat || a.Flat.Cmp(&b.Flat) == 0) &&
		a.Commission.Cmp(&b.Commission) == 0 && a.Currency.Code == b.Currency.Code
}

// readsAffiliate reports whether any version of the program, live or shadow, reads the
// affiliate's month (affiliate.*): then deciding its orders needs the month loaded.
func (e *Engine) readsAffiliate(program string) bool {
	for _, p := range e.set.Versions(program) {
		if p.ReadsAffiliate() {
			return true
		}
	}
	for _, p := range e.set.Shadows(program) {
		if p.ReadsAffiliate() {
			return true
		}
	}
	return false
}

// AppendOutcome appends the outcome of a row with a verdict of its own (Diverged, or ErrorKind
// set) in the form the store keeps it, one JSON object led by the event's id:
//
//	{"event":"…","qualified":true,"failed_rules":[],"rate_rule":"selected_returning","rate":"5",
//	 "commission":"12.34","cause":{"kind":"terms","stage":"rate","rule":"selected_returning","old":"6%","new":"5%"}}
//
// with "flat" when the rate rule pays a flat amount and "cause" when something made the
// difference ("stage" with a rule's outcome or terms); or, for a shadow that could not decide
// the event, {"event":"…","error_kind":"rule_error","error":"…"}. Decimals are strings, as
// written. The event's id and the error are in StorableText's form (no NUL, valid UTF-8), the id
// as the event's decision stores it. ParseShadowOutcome reads it back.
func (r *ShadowRow) AppendOutcome(b []byte) []byte {
	b = append(b, `{"event":`...)
	b = appendString(b, StorableText(r.EventID)) // as decisions store it: what the outcome is read back by
	if r.ErrorKind != "" {
		b = append(b, `,"error_kind":`...)
		b = appendString(b, r.ErrorKind)
		b = append(b, `,"error":`...)
		b = appendString(b, StorableText(r.Error))
		return append(b, '}')
	}
	b = append(b, `,"qualified":`...)
	b = strconv.AppendBool(b, r.Qualified)
	b = append(b, `,"failed_rules":`...)
	if r.FailedRules == "" {
		b = append(b, "[]"...)
	} else {
		b = append(b, r.FailedRules...) // a JSON array already (AppendStrings)
	}
	b = append(b, `,"rate_rule":`...)
	b = appendString(b, r.RateRule)
	b = append(b, `,"rate":`...)
	b = appendString(b, r.Rate)
	if r.Flat != "" {
		b = append(b, `,"flat":`...)
		b = appendString(b, r.Flat)
	}
	b = append(b, `,"commission":"`...)
	b = r.Commission.Append(b, 'f')
	b = append(b, '"')
	if c := &r.Cause; c.Kind != CauseNone {
		b = append(b, `,"cause":{"kind":`...)
		b = appendString(b, c.Kind)
		if c.Kind == CauseOutcome || c.Kind == CauseTerms {
			b = append(b, `,"stage":`...)
			b = appendString(b, c.Stage.String())
		}
		b = append(b, `,"rule":`...)
		b = appendString(b, c.Rule)
		b = append(b, `,"old":`...)
		b = appendString(b, c.Old)
		b = append(b, `,"new":`...)
		b = appendString(b, c.New)
		b = append(b, '}')
	}
	return append(b, '}')
}

// storedOutcome is AppendOutcome's form, as ParseShadowOutcome decodes it.
type storedOutcome struct {
	Event       string   `json:"event"`
	Qualified   bool     `json:"qualified"`
	FailedRules []string `json:"failed_rules"`
	RateRule    string   `json:"rate_rule"`
	Rate        string   `json:"rate"`
	Flat        string   `json:"flat"`
	Commission  string   `json:"commission"`
	Cause       *struct {
		Kind, Stage, Rule, Old, New string
	} `json:"cause"`
	ErrorKind string `json:"error_kind"`
	Error     string `json:"error"`
}

// ParseShadowOutcome reads an outcome in AppendOutcome's form into o (its verdict, cause and
// error; o's program, version, digest and currency are the caller's to set) and returns the
// event's id. The error names the field that does not read.
func ParseShadowOutcome(data []byte, o *ShadowOutcome) (eventID string, err error) {
	var s storedOutcome
	if err := json.Unmarshal(data, &s); err != nil {
		return "", fmt.Errorf("a shadow outcome: %w", err)
	}
	if s.Event == "" {
		return "", errors.New(`a shadow outcome without "event"`)
	}
	o.ErrorKind, o.Error = s.ErrorKind, s.Error
	o.Diverged = s.ErrorKind == ""
	if !o.Diverged {
		return s.Event, nil
	}
	o.Qualified, o.RateRule, o.FailedRules = s.Qualified, s.RateRule, s.FailedRules
	if o.FailedRules == nil {
		o.FailedRules = []string{}
	}
	for _, x := range []struct {
		name, text string
		d          *apd.Decimal
	}{{"rate", s.Rate, &o.Rate}, {"commission", s.Commission, &o.Commission}, {"flat", s.Flat, &o.Flat}} {
		if x.text == "" && x.name == "flat" {
			continue
		}
		if _, _, err := x.d.SetString(x.text); err != nil {
			return "", fmt.Errorf("the shadow outcome of event %s: %s %q is not a decimal", s.Event, x.name, x.text)
		}
	}
	o.HasFlat = s.Flat != ""
	if c := s.Cause; c != nil {
		o.Cause = Cause{Kind: c.Kind, Rule: c.Rule, Old: c.Old, New: c.New}
		if c.Stage == StageRate.String() {
			o.Cause.Stage = StageRate
		}
	}
	return s.Event, nil
}
