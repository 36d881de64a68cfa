package httpapi

// The shadow report document: one shape for `commissioner shadow report --format json` and
// GET /v1/shadow/report. Its summary has replay's shape (summary.totals[]: currency, orders,
// commission_changed, before, after, difference), the live decisions as before and the shadow
// version's outcomes as after; money is exact decimal text, differences carry their sign.

import (
	"time"

	"github.com/commissioner/commissioner/engine"
)

// ShadowDocument is a shadow report.
type ShadowDocument struct {
	Shadow         ShadowVersionDoc    `json:"shadow"`
	Live           []ReplayRecordedDoc `json:"live_versions"`
	Parameters     ShadowParamsDoc     `json:"parameters"`
	Summary        ShadowSummaryDoc    `json:"summary"`
	Qualification  ShadowMatrixDoc     `json:"qualification"`
	ByRateRule     []ShadowRuleDoc     `json:"by_rate_rule"`
	ByCause        []ReplayGroupDoc    `json:"by_first_differing_rule"`
	ByMarket       []ReplayGroupDoc    `json:"by_market"`
	ByBuyer        []ReplayGroupDoc    `json:"by_buyer"`
	TopAffiliates  []ReplayGroupDoc    `json:"top_affiliates"`
	DivergingTotal int64               `json:"diverging_total"`
	Diverging      []ShadowOrderDoc    `json:"diverging"`
	ErrorSamples   []ReplayErrorDoc    `json:"error_samples"`
}

// ShadowVersionDoc is the shadow version reported on: its digests (a file edited in place keeps
// its number and gets another digest), each with the events it decided.
type ShadowVersionDoc struct {
	Program string            `json:"program"`
	Version int               `json:"version"`
	Digests []ShadowDigestDoc `json:"digests"`
}

// ShadowDigestDoc is one digest of the shadow version: events decided (every event) and orders
// compared (each order's latest event).
type ShadowDigestDoc struct {
	Digest string `json:"digest"`
	Events int64  `json:"events"`
	Orders int64  `json:"orders"`
}

// ShadowParamsDoc is what the report covers: the program, the shadow version and the orders'
// placed_at range.
type ShadowParamsDoc struct {
	Program string `json:"program"`
	Version int    `json:"version"`
	From    string `json:"from,omitempty"`
	To      string `json:"to,omitempty"`
}

// ShadowSummaryDoc counts what the shadow decided and how it differs, with the money per
// currency (before: live, after: shadow) in replay's shape.
type ShadowSummaryDoc struct {
	Events            int64            `json:"events"`
	Evaluated         int64            `json:"evaluated"`
	Errors            map[string]int64 `json:"not_decidable"`
	NewlyQualified    int64            `json:"newly_qualified"`
	NewlyDisqualified int64            `json:"newly_disqualified"`
	Changed           int64            `json:"decision_changed"`
	CommissionChanged int64            `json:"commission_changed"`
	Totals            []ReplayGroupDoc `json:"totals"`
}

// ShadowMatrixDoc is the compared orders by live × shadow qualification.
type ShadowMatrixDoc struct {
	BothQualified   int64 `json:"live_qualified_shadow_qualified"`
	LiveOnly        int64 `json:"live_qualified_shadow_not"`
	ShadowOnly      int64 `json:"live_not_shadow_qualified"`
	NeitherQualifed int64 `json:"live_not_shadow_not"`
}

// ShadowRuleDoc is the orders that went from one live rate rule to a shadow one ("" not qualified).
type ShadowRuleDoc struct {
	Live   string `json:"live_rule"`
	Shadow string `json:"shadow_rule"`
	ReplayGroupDoc
}

// ShadowOrderDoc is one diverging order: both outcomes, the difference, the first rule that
// differed, and the command that explains its live decision.
type ShadowOrderDoc struct {
	OrderID     string         `json:"order_id"`
	EventID     string         `json:"event_id"`
	Program     string         `json:"program"`
	AffiliateID string         `json:"affiliate_id"`
	PlacedAt    string         `json:"placed_at"`
	Currency    string         `json:"currency"`
	Market      string         `json:"market"`
	Buyer       string         `json:"buyer"`
	Live        ReplaySideDoc  `json:"live"`
	Shadow      ReplaySideDoc  `json:"shadow"`
	Diff        string         `json:"difference"`
	Cause       ReplayCauseDoc `json:"cause"`
	Explain     string         `json:"explain"`
}

// ExplainCommand is the command that explains an order's live decisions.
func ExplainCommand(program, orderID string) string {
	return "commissioner explain " + shellQuote(orderID) + " --program " + shellQuote(program)
}

// shellQuote quotes s for a POSIX shell when it holds anything but plain characters.
func shellQuote(s string) string {
	plain := s != ""
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':' || c == '/') {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	out := "'"
	for _, c := range s {
		if c == '\'' {
			out += `'\''`
			continue
		}
		out += string(c)
	}
	return out + "'"
}

// NewShadowDocument is the shadow report document for a report of filter f (program and version
// resolved).
func NewShadowDocument(rep *engine.ShadowReport, f engine.ShadowFilter) ShadowDocument {
	d := ShadowDocument{
		Shadow:     ShadowVersionDoc{Program: f.Program, Version: f.Version, Digests: []ShadowDigestDoc{}},
		Live:       []ReplayRecordedDoc{},
		Parameters: ShadowParamsDoc{Program: f.Program, Version: f.Version},
		Summary: ShadowSummaryDoc{Events: rep.Events, Evaluated: rep.Compared, Errors: rep.Errors,
			NewlyQualified: rep.Matrix.ShadowOnly, NewlyDisqualified: rep.Matrix.LiveOnly, Changed: rep.Diverged,
			CommissionChanged: rep.CommissionChanged, Totals: []ReplayGroupDoc{}},
		Qualification: ShadowMatrixDoc{BothQualified: rep.Matrix.BothQualified, LiveOnly: rep.Matrix.LiveOnly,
			ShadowOnly: rep.Matrix.ShadowOnly, NeitherQualifed: rep.Matrix.NeitherQualify},
		ByRateRule:     []ShadowRuleDoc{},
		ByCause:        replayGroupDocs(rep.ByCause),
		ByMarket:       replayGroupDocs(rep.ByMarket),
		ByBuyer:        replayGroupDocs(rep.ByBuyer),
		TopAffiliates:  replayGroupDocs(rep.TopAffiliates),
		DivergingTotal: rep.DivergingTotal,
		Diverging:      []ShadowOrderDoc{},
		ErrorSamples:   []ReplayErrorDoc{},
	}
	if d.Summary.Errors == nil {
		d.Summary.Errors = map[string]int64{}
	}
	if !f.From.IsZero() {
		d.Parameters.From = f.From.UTC().Format(time.RFC3339)
	}
	if !f.To.IsZero() {
		d.Parameters.To = f.To.UTC().Format(time.RFC3339)
	}
	for _, v := range rep.Shadows {
		if v.Program == f.Program && v.Version == f.Version {
			d.Shadow.Digests = append(d.Shadow.Digests, ShadowDigestDoc{Digest: v.Digest, Events: v.Events, Orders: v.Orders})
		}
	}
	for _, r := range rep.Live {
		d.Live = append(d.Live, ReplayRecordedDoc{Program: r.Program, Version: r.Version, Digest: r.Digest, Orders: r.Orders})
	}
	for _, t := range rep.Totals {
		d.Summary.Totals = append(d.Summary.Totals, ReplayGroupDoc{Currency: t.Currency, Orders: t.Orders, Changed: t.Changed,
			Before: t.Before.Text('f'), After: t.After.Text('f'), Diff: SignedDecimal(&t.Diff)})
	}
	for _, g := range rep.ByRateRule {
		d.ByRateRule = append(d.ByRateRule, ShadowRuleDoc{Live: g.Old, Shadow: g.New, ReplayGroupDoc: replayGroupDocOf(g.ReplayGroup)})
	}
	for i := range rep.Diverging {
		c := &rep.Diverging[i]
		o := ShadowOrderDoc{OrderID: c.OrderID, EventID: c.EventID, Program: c.Program, AffiliateID: c.AffiliateID,
			PlacedAt: c.PlacedAt.UTC().Format(time.RFC3339), Currency: c.Currency, Market: c.Market, Buyer: BuyerKind(c.NewBuyer),
			Shadow: replaySideDocOf(&c.New), Diff: ChangeDifference(c), Explain: ExplainCommand(c.Program, c.OrderID),
			Cause: ReplayCauseDoc{Kind: c.Cause.Kind, Rule: c.Cause.Rule, Old: c.Cause.Old, New: c.Cause.New, Text: c.Cause.String()}}
		if c.Cause.Kind == engine.CauseOutcome || c.Cause.Kind == engine.CauseTerms {
			o.Cause.Stage = c.Cause.Stage.String()
		}
		if c.Old != nil {
			o.Live = replaySideDocOf(c.Old)
		}
		d.Diverging = append(d.Diverging, o)
	}
	for _, e := range rep.ErrorSamples {
		d.ErrorSamples = append(d.ErrorSamples, ReplayErrorDoc{EventID: e.EventID, Program: e.Program, OrderID: e.OrderID, Kind: e.Kind, Reason: e.Reason})
	}
	return d
}
