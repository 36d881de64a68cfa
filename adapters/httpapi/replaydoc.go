package httpapi

// The replay document: one shape for `commissioner replay --format json`, POST /v1/replay and
// the parts `replay --record` stores. Money is exact decimal text; differences carry their sign.

import (
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
)

// ReplayDocument is a replay: the candidate, the versions that made the recorded decisions, the
// parameters, the money summary per currency (before = recorded, after = candidate, difference),
// the breakdowns, the listed per-order changes, drift, the events the candidate could not decide
// and warnings.
type ReplayDocument struct {
	Candidate     ReplayCandidateDoc  `json:"candidate"`
	Recorded      []ReplayRecordedDoc `json:"recorded_versions"`
	Parameters    ReplayParamsDoc     `json:"parameters"`
	Summary       ReplaySummaryDoc    `json:"summary"`
	ByRateRule    []ReplayRateRuleDoc `json:"by_rate_rule"`
	ByMarket      []ReplayGroupDoc    `json:"by_market"`
	ByBuyer       []ReplayGroupDoc    `json:"by_buyer"`
	TopAffiliates []ReplayGroupDoc    `json:"top_affiliates"`
	ChangesTotal  int64               `json:"changes_total"`
	Changes       []ReplayChangeDoc   `json:"changes"`
	Drifted       []ReplayChangeDoc   `json:"drifted"`
	ErrorSamples  []ReplayErrorDoc    `json:"error_samples"`
	Warnings      []string            `json:"warnings"`
}

// ReplayCandidateDoc is where the candidate came from and its versions.
type ReplayCandidateDoc struct {
	Source   string             `json:"source"`
	Versions []ReplayVersionDoc `json:"versions"`
}

// ReplayVersionDoc is one version of the candidate, and how many orders it decided.
type ReplayVersionDoc struct {
	Program       string `json:"program"`
	Version       int    `json:"version"`
	Digest        string `json:"digest"`
	EffectiveFrom string `json:"effective_from"`
	File          string `json:"file"`
	Pinned        bool   `json:"applied_to_every_order"`
	Orders        int64  `json:"orders"`
}

// ReplayRecordedDoc is a policy version that made recorded decisions the replay compared with.
type ReplayRecordedDoc struct {
	Program string `json:"program"`
	Version int    `json:"version"`
	Digest  string `json:"digest"`
	Orders  int64  `json:"orders"`
}

// ReplayParamsDoc is how the replay was run: the candidate asked for, the orders' range, and the
// source of the events (store or stream).
type ReplayParamsDoc struct {
	Policy         string             `json:"policy,omitempty"`
	Version        int                `json:"version,omitempty"`
	Program        string             `json:"program,omitempty"`
	From           string             `json:"from,omitempty"`
	To             string             `json:"to,omitempty"`
	Affiliate      string             `json:"affiliate,omitempty"`
	LatestPerOrder bool               `json:"latest_per_order"`
	Source         string             `json:"source"`
	Candidates     []ReplayVersionDoc `json:"candidates,omitempty"`
}

// ReplaySummaryDoc counts the replay's events and outcomes, with the money per currency.
type ReplaySummaryDoc struct {
	Events            int64            `json:"events"`
	Evaluated         int64            `json:"evaluated"`
	Unrecorded        int64            `json:"without_recorded_decision"`
	Errors            map[string]int64 `json:"not_decidable"`
	NewlyQualified    int64            `json:"newly_qualified"`
	NewlyDisqualified int64            `json:"newly_disqualified"`
	Changed           int64            `json:"decision_changed"`
	CommissionChanged int64            `json:"commission_changed"`
	SameVersion       int64            `json:"same_version"`
	Drift             int64            `json:"drift"`
	DigestMismatch    int64            `json:"digest_mismatch"`
	AffiliateAssumed  int64            `json:"affiliate_month_assumed"`
	Totals            []ReplayGroupDoc `json:"totals"`
}

// ReplayGroupDoc is one group of a breakdown in one currency: orders, how many changed
// commission, the commission before and after and the signed difference.
type ReplayGroupDoc struct {
	Key      string `json:"key,omitempty"`
	Currency string `json:"currency"`
	Orders   int64  `json:"orders"`
	Changed  int64  `json:"commission_changed"`
	Before   string `json:"before"`
	After    string `json:"after"`
	Diff     string `json:"difference"`
}

// ReplayRateRuleDoc is the orders that moved from one rate rule to another ("" not qualified).
type ReplayRateRuleDoc struct {
	Old string `json:"recorded_rule"`
	New string `json:"candidate_rule"`
	ReplayGroupDoc
}

// ReplayChangeDoc is one order whose decision changed: both sides, the difference and its cause.
type ReplayChangeDoc struct {
	OrderID     string         `json:"order_id"`
	EventID     string         `json:"event_id"`
	Program     string         `json:"program"`
	AffiliateID string         `json:"affiliate_id"`
	PlacedAt    string         `json:"placed_at"`
	Currency    string         `json:"currency"`
	Market      string         `json:"market"`
	Buyer       string         `json:"buyer"`
	Old         *ReplaySideDoc `json:"recorded"`
	New         ReplaySideDoc  `json:"candidate"`
	Diff        string         `json:"difference"`
	Cause       ReplayCauseDoc `json:"cause"`
	Drift       bool           `json:"drift,omitempty"`
	DriftFields []string       `json:"drift_fields,omitempty"`
}

// ReplaySideDoc is one side of a change: the recorded decision or the candidate's.
type ReplaySideDoc struct {
	PolicyVersion int      `json:"policy_version"`
	PolicyDigest  string   `json:"policy_digest"`
	Qualified     bool     `json:"qualified"`
	FailedRules   []string `json:"failed_rules"`
	RateRule      string   `json:"rate_rule"`
	Rate          string   `json:"rate"`
	Flat          string   `json:"flat,omitempty"`
	Commission    string   `json:"commission"`
}

// ReplayCauseDoc is the first rule whose outcome or terms differ, and the text saying so.
type ReplayCauseDoc struct {
	Kind  string `json:"kind"`
	Stage string `json:"stage,omitempty"`
	Rule  string `json:"rule,omitempty"`
	Old   string `json:"recorded,omitempty"`
	New   string `json:"candidate,omitempty"`
	Text  string `json:"text"`
}

// ReplayErrorDoc is an event the candidate could not decide.
type ReplayErrorDoc struct {
	EventID string `json:"event_id"`
	Program string `json:"program,omitempty"`
	OrderID string `json:"order_id,omitempty"`
	Kind    string `json:"kind"`
	Reason  string `json:"reason"`
}

// ReplayVersionDocs are the candidate's versions of a report.
func ReplayVersionDocs(rep *engine.ReplayReport) []ReplayVersionDoc {
	out := make([]ReplayVersionDoc, 0, len(rep.Candidates))
	for _, c := range rep.Candidates {
		out = append(out, ReplayVersionDoc{Program: c.Program, Version: c.Version, Digest: c.Digest,
			EffectiveFrom: c.EffectiveFrom.UTC().Format(time.RFC3339), File: c.File, Pinned: c.Pinned, Orders: c.Orders})
	}
	return out
}

// NewReplaySummaryDoc is a report's summary (replay --record stores it).
func NewReplaySummaryDoc(rep *engine.ReplayReport) ReplaySummaryDoc {
	s := ReplaySummaryDoc{Events: rep.Events, Evaluated: rep.Evaluated, Unrecorded: rep.Unrecorded, Errors: rep.Errors,
		NewlyQualified: rep.NewlyQualified, NewlyDisqualified: rep.NewlyDisqualified, Changed: rep.Changed,
		CommissionChanged: rep.CommissionChanged, SameVersion: rep.SameVersion, Drift: rep.Drift, DigestMismatch: rep.DigestMismatch,
		AffiliateAssumed: rep.AffiliateAssumed,
		Totals:           []ReplayGroupDoc{}}
	for _, t := range rep.Totals {
		s.Totals = append(s.Totals, ReplayGroupDoc{Currency: t.Currency, Orders: t.Orders, Changed: t.Changed,
			Before: t.Before.Text('f'), After: t.After.Text('f'), Diff: SignedDecimal(&t.Diff)})
	}
	return s
}

func replayGroupDocs(gs []engine.ReplayGroup) []ReplayGroupDoc {
	out := make([]ReplayGroupDoc, 0, len(gs))
	for _, g := range gs {
		out = append(out, replayGroupDocOf(g))
	}
	return out
}

func replayGroupDocOf(g engine.ReplayGroup) ReplayGroupDoc {
	return ReplayGroupDoc{Key: g.Key, Currency: g.Currency, Orders: g.Orders, Changed: g.Changed,
		Before: g.Before.Text('f'), After: g.After.Text('f'), Diff: SignedDecimal(&g.Diff)}
}

func replaySideDocOf(s *engine.Verdict) ReplaySideDoc {
	d := ReplaySideDoc{PolicyVersion: s.PolicyVersion, PolicyDigest: s.PolicyDigest, Qualified: s.Qualified,
		FailedRules: s.FailedRules, RateRule: s.RateRule, Rate: s.Rate.Text('f'), Commission: s.Commission.Text('f')}
	if d.FailedRules == nil {
		d.FailedRules = []string{}
	}
	if s.HasFlat {
		d.Flat = s.Flat.Text('f')
	}
	return d
}

func replayChangeDocOf(c *engine.OrderChange) ReplayChangeDoc {
	d := ReplayChangeDoc{OrderID: c.OrderID, EventID: c.EventID, Program: c.Program, AffiliateID: c.AffiliateID,
		PlacedAt: c.PlacedAt.UTC().Format(time.RFC3339), Currency: c.Currency, Market: c.Market, Buyer: BuyerKind(c.NewBuyer),
		New: replaySideDocOf(&c.New), Diff: ChangeDifference(c), Drift: c.Drift, DriftFields: c.DriftFields,
		Cause: ReplayCauseDoc{Kind: c.Cause.Kind, Rule: c.Cause.Rule, Old: c.Cause.Old, New: c.Cause.New, Text: c.Cause.String()}}
	if c.Cause.Kind == engine.CauseOutcome || c.Cause.Kind == engine.CauseTerms {
		d.Cause.Stage = c.Cause.Stage.String()
	}
	if c.Old != nil {
		old := replaySideDocOf(c.Old)
		d.Old = &old
	}
	return d
}

// BuyerKind names a buyer for the breakdowns: "new" or "returning".
func BuyerKind(isNew bool) string {
	if isNew {
		return "new"
	}
	return "returning"
}

// ChangeDifference is the candidate's commission less the recorded one (none recorded: 0).
func ChangeDifference(c *engine.OrderChange) string {
	var d apd.Decimal
	if c.Old == nil {
		d.Set(&c.New.Commission)
	} else if _, err := engine.SumContext.Sub(&d, &c.New.Commission, &c.Old.Commission); err != nil {
		return "?"
	}
	return SignedDecimal(&d)
}

// SignedDecimal prints a difference with its sign: +1.50, -0.25, 0.00.
func SignedDecimal(d *apd.Decimal) string {
	s := d.Text('f')
	if d.Sign() > 0 {
		return "+" + s
	}
	return s
}

// NewReplayDocument is the replay document: what `commissioner replay --format json` prints and
// POST /v1/replay answers. source says where the candidate came from (a file, a stored version,
// the request), params how the replay was run; changes are the per-order changes to list (the
// report's, or none), warnings what the reader must know.
func NewReplayDocument(rep *engine.ReplayReport, source string, params ReplayParamsDoc, changes []engine.OrderChange, warnings []string) ReplayDocument {
	d := ReplayDocument{
		Candidate:     ReplayCandidateDoc{Source: source, Versions: ReplayVersionDocs(rep)},
		Recorded:      []ReplayRecordedDoc{},
		Parameters:    params,
		Summary:       NewReplaySummaryDoc(rep),
		ByMarket:      replayGroupDocs(rep.ByMarket),
		ByBuyer:       replayGroupDocs(rep.ByBuyer),
		TopAffiliates: replayGroupDocs(rep.TopAffiliates),
		ByRateRule:    []ReplayRateRuleDoc{},
		ChangesTotal:  rep.ChangesTotal,
		Changes:       []ReplayChangeDoc{},
		Drifted:       []ReplayChangeDoc{},
		ErrorSamples:  []ReplayErrorDoc{},
		Warnings:      append([]string{}, warnings...),
	}
	d.Parameters.Candidates = nil // in candidate.versions
	for _, r := range rep.Recorded {
		d.Recorded = append(d.Recorded, ReplayRecordedDoc{Program: r.Program, Version: r.Version, Digest: r.Digest, Orders: r.Orders})
	}
	for _, g := range rep.ByRateRule {
		d.ByRateRule = append(d.ByRateRule, ReplayRateRuleDoc{Old: g.Old, New: g.New, ReplayGroupDoc: replayGroupDocOf(g.ReplayGroup)})
	}
	for i := range changes {
		d.Changes = append(d.Changes, replayChangeDocOf(&changes[i]))
	}
	for i := range rep.Drifted {
		d.Drifted = append(d.Drifted, replayChangeDocOf(&rep.Drifted[i]))
	}
	for _, e := range rep.ErrorSamples {
		d.ErrorSamples = append(d.ErrorSamples, ReplayErrorDoc{EventID: e.EventID, Program: e.Program, OrderID: e.OrderID, Kind: e.Kind, Reason: e.Reason})
	}
	return d
}
