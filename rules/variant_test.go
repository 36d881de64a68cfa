package rules_test

import (
	"os"
	"strings"
	"testing"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/rules"
)

func mustCompile(t *testing.T, file string, src []byte) *rules.Policy {
	t.Helper()
	p, ps := rules.Compile(file, src)
	if p == nil {
		t.Fatalf("compiling %s: %v", file, ps)
	}
	return p
}

func compileFile(t *testing.T, path string) *rules.Policy {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return mustCompile(t, path, src)
}

func dec(t *testing.T, s string) *apd.Decimal {
	t.Helper()
	d, _, err := apd.NewFromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func term(t *testing.T, s string) rules.Term {
	t.Helper()
	x, err := rules.ParseTerm(s)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestWithTermsIsTheFileEditedByHand: a variant is the source with the value written where the
// old one was, nothing else: the file the README's sed writes, with its digest.
func TestWithTermsIsTheFileEditedByHand(t *testing.T) {
	path := "../policies/alibaba/v1.yaml"
	p := compileFile(t, path)
	v, err := p.WithTerms(rules.TermValue{Term: term(t, "selected_returning.rate"), Value: dec(t, "5.5")})
	if err != nil {
		t.Fatal(err)
	}
	const old = "when: order.buyer.country in selected_markets && !order.buyer.new\n    rate: \"6%\""
	want := strings.Replace(string(p.Source), old, strings.Replace(old, `"6%"`, `"5.5%"`, 1), 1)
	if string(v.Source) != want || v.Digest != rules.Digest([]byte(want)) || v.Digest == p.Digest {
		t.Fatalf("the variant is not the file with selected_returning's rate edited:\n%s", v.Source)
	}
	if v.Program != p.Program || v.Version != p.Version || v.File != p.File {
		t.Errorf("variant %s v%d %s, want the original's program, version and file", v.Program, v.Version, v.File)
	}
	for _, r := range v.Rates {
		want := map[string]string{"selected_new": "10", "selected_returning": "5.5", "other_new": "9", "other_returning": "5"}[r.ID]
		if r.Rate.Text('f') != want {
			t.Errorf("rule %s: rate %s, want %s", r.ID, r.Rate.Text('f'), want)
		}
	}
	// the same value written back gives the very file
	same, err := p.WithTerms(rules.TermValue{Term: term(t, "selected_returning.rate"), Value: dec(t, "6")})
	if err != nil {
		t.Fatal(err)
	}
	if same.Digest != p.Digest {
		t.Errorf("6%% written back: digest %s, want the original's %s", same.Digest, p.Digest)
	}
}

func TestWithTermsSeveralTermsAndStyles(t *testing.T) {
	hybrid := compileFile(t, "../policies/examples/hybrid/v1.yaml")
	v, err := hybrid.WithTerms(
		rules.TermValue{Term: term(t, "new_buyer.flat.EUR"), Value: dec(t, "9.50")},
		rules.TermValue{Term: term(t, "new_buyer.rate"), Value: dec(t, "4")},
		rules.TermValue{Term: term(t, "returning_buyer.flat.GBP"), Value: dec(t, "0.75")},
	)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`rate: "4%"` + "\n    flat: {USD: \"10.00\", EUR: \"9.50\", GBP: \"8.00\"}", `flat: {USD: "2.00", EUR: "2.00", GBP: "0.75"}`} {
		if !strings.Contains(string(v.Source), want) {
			t.Errorf("the variant does not say %q:\n%s", want, v.Source)
		}
	}
	// plain and single-quoted values keep their style
	src := strings.NewReplacer(`rate: "10%"`, `rate: '10%'`, `rate: "5%"`, `rate: 5%`).Replace(seedTerms(t))
	p := mustCompile(t, "plain.yaml", []byte(src))
	v, err = p.WithTerms(rules.TermValue{Term: term(t, "selected_new.rate"), Value: dec(t, "12")},
		rules.TermValue{Term: term(t, "other_returning.rate"), Value: dec(t, "4.25")})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(v.Source), "rate: '12%'\n") || !strings.Contains(string(v.Source), "rate: 4.25%\n") {
		t.Errorf("styles not kept:\n%s", v.Source)
	}
	// a flat amount named without its currency is the rule's only one
	cpa := compileFile(t, "../policies/examples/cpa/v1.yaml")
	if _, err := cpa.ResolveTerm(term(t, "per_new_buyer.flat")); err == nil || !strings.Contains(err.Error(), "name one, e.g. per_new_buyer.flat.EUR") {
		t.Errorf("flat in three currencies without one named: got %v", err)
	}
	one := mustCompile(t, "one.yaml", []byte(strings.Replace(string(cpa.Source), `flat: {USD: "30.00", EUR: "27.00", GBP: "24.00"}`, `flat: {USD: "30.00"}`, 1)))
	got, err := one.ResolveTerm(term(t, "per_new_buyer.flat"))
	if err != nil || got.String() != "per_new_buyer.flat.USD" {
		t.Errorf("resolved %v, %v; want per_new_buyer.flat.USD", got, err)
	}
}

func TestWithTermsErrorsNameTheRuleAndTheFile(t *testing.T) {
	seed := compileFile(t, "../policies/alibaba/v1.yaml")
	cpa := compileFile(t, "../policies/examples/cpa/v1.yaml")
	tv := func(s, v string) rules.TermValue { return rules.TermValue{Term: term(t, s), Value: dec(t, v)} }
	for _, c := range []struct {
		name   string
		p      *rules.Policy
		values []rules.TermValue
		want   string
	}{
		{"no such rule", seed, []rules.TermValue{tv("selected_returnin.rate", "5")},
			`../policies/alibaba/v1.yaml: no rate rule "selected_returnin" (the rate rules: selected_new, selected_returning, other_new, other_returning)`},
		{"a qualification rule", seed, []rules.TermValue{tv("completed.rate", "5")},
			`../policies/alibaba/v1.yaml:33: completed is a qualification rule, which has no rate or flat amount to vary`},
		{"no flat", seed, []rules.TermValue{tv("selected_new.flat.USD", "5")},
			`../policies/alibaba/v1.yaml:52: rule selected_new pays no flat amount, only a rate: nothing for selected_new.flat.USD to vary (selected_new.rate would)`},
		{"no rate", cpa, []rules.TermValue{tv("per_new_buyer.rate", "5")},
			`../policies/examples/cpa/v1.yaml:42: rule per_new_buyer pays no rate, only a flat amount (EUR, GBP, USD): nothing for per_new_buyer.rate to vary`},
		{"a currency not paid", cpa, []rules.TermValue{tv("per_new_buyer.flat.JPY", "5")},
			`../policies/examples/cpa/v1.yaml:42: rule per_new_buyer pays no flat amount in JPY (it pays one in EUR, GBP, USD)`},
		{"twice", seed, []rules.TermValue{tv("selected_new.rate", "5"), tv("selected_new.rate", "6")},
			`../policies/alibaba/v1.yaml: selected_new.rate is given two values`},
		{"above 100%", seed, []rules.TermValue{tv("selected_new.rate", "120")},
			`the variant with selected_new.rate=120% does not compile:` + "\n" + `../policies/alibaba/v1.yaml:55:11: selected_new: rate "120%" must be a percentage from 0% to 100%`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.p.WithTerms(c.values...)
			if err == nil || !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("got %v\nwant %s", err, c.want)
			}
		})
	}
	// a rate inherited through a merge key cannot be edited in place
	src := strings.Replace(seedTerms(t), "rates:\n  - id: selected_new\n    description: Selected market, new buyer.\n    when: order.buyer.country in selected_markets && order.buyer.new\n    rate: \"10%\"\n",
		"rates:\n  - &sn\n    id: selected_new\n    description: Selected market, new buyer.\n    when: order.buyer.country in selected_markets && order.buyer.new\n    rate: \"10%\"\n", 1)
	src = strings.Replace(src, "    when: order.buyer.country in selected_markets && !order.buyer.new\n    rate: \"6%\"\n",
		"    <<: *sn\n    description: Selected market, returning buyer.\n    when: order.buyer.country in selected_markets && !order.buyer.new\n", 1)
	src = strings.Replace(src, "  - id: selected_returning\n    description: Selected market, returning buyer.\n", "  - id: selected_returning\n", 1)
	merged := mustCompile(t, "merged.yaml", []byte(src))
	_, err := merged.WithTerms(tv("selected_returning.rate", "5"))
	if err == nil || !strings.Contains(err.Error(), "merged.yaml: ") || !strings.Contains(err.Error(), "rule selected_returning: its rate is not written in the rule (merged in with <<?)") {
		t.Errorf("merged rate: got %v", err)
	}
}

func TestParseTerm(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{in: "selected_returning.rate", want: "selected_returning.rate"},
		{in: "new_buyer.flat.EUR", want: "new_buyer.flat.EUR"},
		{in: "per_new_buyer.flat", want: "per_new_buyer.flat"},
		{in: "rate", err: `"rate": want RULE.rate, RULE.flat or RULE.flat.CUR`},
		{in: "Selected.rate", err: `"Selected" is not a rule id`},
		{in: "x.rates", err: `a rate rule's terms are x.rate and x.flat (x.flat.CUR for one currency), not "rates"`},
		{in: "x.rate.USD", err: `not "rate.USD"`},
		{in: "x.flat.usd", err: `"usd" is not a currency code`},
	} {
		got, err := rules.ParseTerm(c.in)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: got %v, want an error with %q", c.in, err, c.err)
		case c.err == "" && (err != nil || got.String() != c.want):
			t.Errorf("%q: got %v, %v; want %s", c.in, got, err, c.want)
		}
	}
}
