package httpapi

// The sweep document: `commissioner replay --sweep … --format json`. Each point carries the
// replay's summary in the very shape of ReplayDocument's (ReplaySummaryDoc), so what reads one
// replay's totals reads a point's.

import (
	"time"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// SweepDocument is a sweep of a candidate's terms: the candidate it varies, its ranges, every
// point with its values, its own version (digest) and its replay summary, and where the change
// crosses each budget.
type SweepDocument struct {
	Candidate  SweepCandidateDoc   `json:"candidate"`
	Recorded   []ReplayRecordedDoc `json:"recorded_versions"`
	Parameters ReplayParamsDoc     `json:"parameters"`
	Sweep      []SweepAxisDoc      `json:"sweep"`
	Points     []SweepPointDoc     `json:"points"`
	Budgets    []SweepBudgetDoc    `json:"budgets"`
	Warnings   []string            `json:"warnings"`
}

// SweepCandidateDoc is the policy the sweep varies: where it came from and its version. Each
// point is this file with the point's values written in.
type SweepCandidateDoc struct {
	Source        string `json:"source"`
	Program       string `json:"program"`
	Version       int    `json:"version"`
	Digest        string `json:"digest"`
	EffectiveFrom string `json:"effective_from"`
	File          string `json:"file"`
}

// SweepAxisDoc is one range: the term and its values, as a policy writes them.
type SweepAxisDoc struct {
	Term   string   `json:"term"`
	Spec   string   `json:"spec"`
	Values []string `json:"values"`
}

// SweepPointDoc is one point: its number (from 1), its values by term ("selected_returning.rate":
// "5%"), the candidate version it is (its own digest) with the orders it decided, its summary as
// replay's, and, per budget currency, whether it keeps to the budget.
type SweepPointDoc struct {
	Point     int               `json:"point"`
	Params    map[string]string `json:"params"`
	Candidate ReplayVersionDoc  `json:"candidate"`
	Summary   ReplaySummaryDoc  `json:"summary"`
	Keeps     map[string]bool   `json:"keeps_budget,omitempty"`
}

// SweepBudgetDoc is a budget and the point at which the sweep's change crosses it (see
// engine.BudgetCrossing): the point, its values, its difference in the currency, whether it keeps
// to the budget, and how many points do.
type SweepBudgetDoc struct {
	Currency   string            `json:"currency"`
	Amount     string            `json:"amount"`
	Point      int               `json:"point"`
	Params     map[string]string `json:"params"`
	Difference string            `json:"difference"`
	Keeps      bool              `json:"keeps_budget"`
	Keeping    int               `json:"points_keeping_budget"`
}

// SweepParams are a point's values by term, as the policy writes them.
func SweepParams(p *engine.SweepPoint) map[string]string {
	m := make(map[string]string, len(p.Values))
	for _, v := range p.Values {
		m[v.Term.String()] = v.Term.Format(v.Value)
	}
	return m
}

// NewSweepDocument is the sweep document. source says where the candidate came from and base is
// its policy as given, params how the replay was run; reports are the points' (one each, in
// order), crossings the budgets' (one each, in order).
func NewSweepDocument(source string, base *rules.Policy, params ReplayParamsDoc, axes []engine.SweepAxis, points []engine.SweepPoint,
	reports []*engine.ReplayReport, budgets []engine.Budget, crossings []engine.BudgetCrossing, warnings []string) SweepDocument {
	d := SweepDocument{
		Recorded:   []ReplayRecordedDoc{},
		Parameters: params,
		Sweep:      []SweepAxisDoc{},
		Points:     []SweepPointDoc{},
		Budgets:    []SweepBudgetDoc{},
		Warnings:   append([]string{}, warnings...),
	}
	d.Parameters.Candidates = nil // in each point's candidate
	d.Candidate = SweepCandidateDoc{Source: source, Program: base.Program, Version: base.Version, Digest: base.Digest,
		EffectiveFrom: base.EffectiveFrom.UTC().Format(time.RFC3339), File: base.File}
	for _, ax := range axes {
		a := SweepAxisDoc{Term: ax.Term.String(), Spec: ax.Spec, Values: []string{}}
		for _, v := range ax.Values {
			a.Values = append(a.Values, ax.Term.Format(v))
		}
		d.Sweep = append(d.Sweep, a)
	}
	if len(reports) > 0 {
		for _, r := range reports[0].Recorded { // the same history for every point
			d.Recorded = append(d.Recorded, ReplayRecordedDoc{Program: r.Program, Version: r.Version, Digest: r.Digest, Orders: r.Orders})
		}
	}
	for i := range points {
		pd := SweepPointDoc{Point: i + 1, Params: SweepParams(&points[i]), Summary: NewReplaySummaryDoc(reports[i])}
		if vs := ReplayVersionDocs(reports[i]); len(vs) > 0 {
			pd.Candidate = vs[0]
		}
		for _, b := range budgets {
			if pd.Keeps == nil {
				pd.Keeps = map[string]bool{}
			}
			diff, _ := b.Difference(reports[i])
			pd.Keeps[b.Currency] = b.Keeps(&diff)
		}
		d.Points = append(d.Points, pd)
	}
	for i, b := range budgets {
		c := crossings[i]
		bd := SweepBudgetDoc{Currency: b.Currency, Amount: b.Amount.Text('f'), Point: c.Point + 1,
			Difference: SignedDecimal(&c.Difference), Keeps: c.Keeps, Keeping: c.Keeping}
		if c.Point >= 0 {
			bd.Params = SweepParams(&points[c.Point])
		}
		d.Budgets = append(d.Budgets, bd)
	}
	return d
}
