package engine

import (
	"context"
	"errors"
	"testing"

	"github.com/commissioner/commissioner/rules"
)

func TestExplainShowsWhatEachRuleRead(t *testing.T) {
	set, err := rules.LoadDir("../policies/alibaba")
	if err != nil {
		t.Fatal(err)
	}
	e := New(set)
	o, err := DecodeOrder([]byte(`{"order_id":"x-1","program":"alibaba","affiliate_id":"a","status":"completed",
		"placed_at":"2025-03-10T12:00:00+02:00","click_at":"2025-03-01T12:00:00Z",
		"buyer":{"id":"b","country":"DE","new":false},"traffic_country":"CN","currency":"EUR","amount":"100.00",
		"items":[{"sku":"s-1","category":"toys","amount":"100.00","quantity":2}]}`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.PolicyFor(o)
	if err != nil {
		t.Fatal(err)
	}
	x, err := e.Explain(context.Background(), p, o)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]RuleExplanation{}
	for _, r := range x.Rules {
		byID[r.ID] = r
	}
	tests := []struct {
		rule, outcome string
		inputs        map[string]string
	}{
		{"traffic_allowed", "fail", map[string]string{"order.traffic_country": `"CN"`, "banned_traffic_countries": `["CN", "IN", "NG"]`}},
		{"completed", "pass", map[string]string{"order.status": `"completed"`}},
		{"no_forbidden_items", "pass", map[string]string{"order.items": `[{sku: "s-1", category: "toys", quantity: 2}]`}},
		{"click_in_window", "pass", map[string]string{"order.placed_at": "2025-03-10T10:00:00Z", "order.click_at": "2025-03-01T12:00:00Z", "cookie_window": `duration("720h")`}},
		{"selected_returning", "not_evaluated", map[string]string{"order.buyer.country": `"DE"`, "order.buyer.new": "false"}},
	}
	for _, tc := range tests {
		r, ok := byID[tc.rule]
		if !ok {
			t.Fatalf("rule %s: not in the explanation", tc.rule)
		}
		if r.Outcome != tc.outcome {
			t.Errorf("rule %s: outcome got %q, want %q", tc.rule, r.Outcome, tc.outcome)
		}
		got := map[string]string{}
		for _, in := range r.Inputs {
			got[in.Name] = in.Value
		}
		for name, want := range tc.inputs {
			if got[name] != want {
				t.Errorf("rule %s: input %s got %q, want %q", tc.rule, name, got[name], want)
			}
		}
	}
	if x.Decision.Qualified || len(x.Decision.FailedRules) != 1 {
		t.Errorf("decision: got qualified=%t failed=%v, want disqualified by traffic_allowed only", x.Decision.Qualified, x.Decision.FailedRules)
	}
	if got := Terms(p.Rates[0]); got != "10%" {
		t.Errorf("Terms(selected_new): got %q, want %q", got, "10%")
	}
}

func TestTimestampsOutsideTheSupportedYearsAreRejected(t *testing.T) {
	for _, ts := range []string{"0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "2200-01-01T00:00:00Z", "9999-12-31T23:59:59Z"} {
		_, err := DecodeOrder([]byte(`{"order_id":"x","program":"alibaba","affiliate_id":"a","status":"completed",
			"placed_at":"2025-03-10T12:00:00Z","click_at":"` + ts + `","buyer":{"id":"b","country":"US","new":true},
			"currency":"USD","amount":"1.00"}`))
		var ie *InputError
		if !errors.As(err, &ie) || ie.Field != "click_at" {
			t.Errorf("click_at %s: got %v, want an input error on click_at", ts, err)
		}
	}
}
