package rules

import (
	"bytes"
	"errors"
	"strconv"

	"github.com/cockroachdb/apd/v3"
)

func decodeTests(ps *problems, v any) []TestCase {
	if v == nil {
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		ps.at(v, CodeType, "tests", "tests must be a list of {name, order, expect}")
		return nil
	}
	var out []TestCase
	names := map[string]bool{}
	for _, item := range list {
		m, ok := mapOf(ps, item, "tests")
		if !ok {
			continue
		}
		nv, ok := scalarOf(ps, m, "name", "tests", true)
		if !ok {
			continue
		}
		tc := TestCase{Name: nv.Value, Line: nv.Line}
		if names[tc.Name] {
			ps.at(nv, CodeDuplicate, "tests", "test name %q is used twice", tc.Name)
		}
		names[tc.Name] = true
		knownKeys(ps, m, "test "+tc.Name, "name", "order", "affiliate", "expect")
		ov, ok := m["order"]
		if !ok {
			ps.at(m, CodeMissing, "test "+tc.Name, "missing key \"order\"")
			continue
		}
		var buf bytes.Buffer
		if err := toJSON(&buf, ov); err != nil {
			var se *syntaxError
			if errors.As(err, &se) {
				ps.atPos(se.Line, se.Column, CodeInvalid, "test "+tc.Name, "order: %s", se.Msg)
			} else {
				ps.at(ov, CodeInvalid, "test "+tc.Name, "order: %v", err)
			}
			continue
		}
		tc.Order = buf.Bytes()
		if av, ok := m["affiliate"]; ok {
			tc.Affiliate = decodeAffiliateGiven(ps, av, "test "+tc.Name)
		}
		if ev, ok := m["expect"]; ok {
			tc.Expect = decodeExpect(ps, ev, "test "+tc.Name)
		} else {
			ps.at(m, CodeMissing, "test "+tc.Name, "missing key \"expect\"")
		}
		out = append(out, tc)
	}
	return out
}

func decodeAffiliateGiven(ps *problems, v any, where string) *AffiliateGiven {
	m, ok := mapOf(ps, v, where)
	if !ok {
		return nil
	}
	knownKeys(ps, m, where, "month_qualified_orders", "month_qualified_sales")
	g := &AffiliateGiven{MonthQualifiedSales: apd.New(0, 0)}
	if s, ok := scalarOf(ps, m, "month_qualified_orders", where, false); ok {
		n, err := strconv.ParseInt(s.Value, 10, 64)
		if err != nil || n < 0 {
			ps.at(s, CodeInvalid, where, "affiliate.month_qualified_orders must be a whole number ≥ 0, got %q", s.Value)
		}
		g.MonthQualifiedOrders = n
	}
	if s, ok := scalarOf(ps, m, "month_qualified_sales", where, false); ok {
		d, _, err := apd.NewFromString(s.Value)
		if err != nil || d.Form != apd.Finite || d.Negative {
			ps.at(s, CodeInvalid, where, "affiliate.month_qualified_sales must be a decimal amount ≥ 0, got %q", s.Value)
		} else {
			g.MonthQualifiedSales = d
		}
	}
	return g
}

func decodeExpect(ps *problems, v any, where string) Expectation {
	var e Expectation
	m, ok := mapOf(ps, v, where)
	if !ok {
		return e
	}
	knownKeys(ps, m, where, "qualified", "failed_rules", "rate_rule", "rate", "commission", "error")
	if s, ok := scalarOf(ps, m, "qualified", where, false); ok {
		b, err := strconv.ParseBool(s.Value)
		if err != nil {
			ps.at(s, CodeInvalid, where, "qualified must be true or false")
		}
		e.Qualified = &b
	}
	if fv, ok := m["failed_rules"]; ok {
		e.HasFailed = true
		e.FailedRules = []string{}
		l, ok := fv.([]any)
		if !ok {
			ps.at(fv, CodeType, where, "failed_rules must be a list of rule ids")
		}
		for _, x := range l {
			if s, ok := x.(Scalar); ok {
				e.FailedRules = append(e.FailedRules, s.Value)
			}
		}
	}
	str := func(key string) *string {
		if s, ok := scalarOf(ps, m, key, where, false); ok {
			v := s.Value
			return &v
		}
		return nil
	}
	e.RateRule, e.Rate, e.Commission, e.Error = str("rate_rule"), str("rate"), str("commission"), str("error")
	return e
}
