package rules_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commissioner/commissioner/rules"
)

// TestLintCodes checks what Lint finds in small rate tables, by code, rule and line: the kind of
// each finding, not its wording.
func TestLintCodes(t *testing.T) {
	const head = "program: p\nversion: 1\neffective_from: 2025-01-01T00:00:00Z\nrounding: half_up\n"
	cases := []struct {
		name, body string
		want       []string // "code rule line severity", in order
	}{
		{"a catch-all last: nothing to say",
			"qualify: []\nrates:\n  - {id: us, when: 'order.buyer.country == \"US\"', rate: \"10%\"}\n  - {id: rest, when: \"true\", rate: \"5%\"}\n",
			nil},
		{"a gap, and rules that earlier ones cover",
			"constants:\n  markets: [US, GB]\nqualify: []\nrates:\n" +
				"  - {id: us, when: order.buyer.country in markets, rate: \"10%\"}\n" +
				"  - {id: gb, when: 'order.buyer.country == \"GB\"', rate: \"8%\"}\n" +
				"  - {id: late, when: 'order.buyer.country == \"US\"', rate: \"5%\"}\n",
			[]string{"unreachable gb 10 error", "no_rate_match lint 11 error", "unreachable late 11 error"}},
		{"two rules with different terms for one order",
			"qualify: []\nrates:\n" +
				"  - {id: us, when: 'order.buyer.country == \"US\"', rate: \"10%\"}\n" +
				"  - {id: eur, when: 'order.currency == \"EUR\"', rate: \"5%\"}\n" +
				"  - {id: rest, when: \"true\", rate: \"1%\"}\n",
			[]string{"overlap eur 8 warning"}},
		{"no order qualifies from the values named",
			"qualify:\n  - {id: big, expr: 'order.amount > decimal(\"1000000\")', reason: r}\nrates:\n  - {id: all, when: \"true\", rate: \"1%\"}\n",
			[]string{"lint_skipped lint 8 warning"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, ps := rules.Compile("p/v1.yaml", []byte(head+c.body))
			if p == nil {
				t.Fatalf("got %v, want the policy to compile", ps)
			}
			got := findings(rules.Lint(p))
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
			}
		})
	}
}

// TestLayoutCodes checks that every layout finding is a CodeLayout warning on line 1.
func TestLayoutCodes(t *testing.T) {
	const src = "program: shop\nversion: 3\neffective_from: 2025-01-01T00:00:00Z\nrounding: half_up\nqualify: []\nrates: [{id: all, when: \"true\", rate: \"1%\"}]\n"
	dir := writePolicies(t, map[string]string{"other/v2.yaml": src, "shop/v4.yaml.bak": src})
	p, ps := rules.Compile(filepath.Join(dir, "other", "v2.yaml"), []byte(src))
	if p == nil {
		t.Fatalf("got %v, want the policy to compile", ps)
	}
	ignored, err := rules.IgnoredFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		ps   rules.Problems
		want []string
	}{
		// the file's name, its directory, no tests
		{"LintLayout", rules.LintLayout(p), []string{"layout layout 1 warning", "layout layout 1 warning", "layout layout 1 warning"}},
		{"IgnoredFiles", ignored, []string{"layout layout 1 warning"}},
	}
	for _, c := range cases {
		if got := findings(c.ps); strings.Join(got, "\n") != strings.Join(c.want, "\n") {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

// findings renders problems as "code rule line severity".
func findings(ps rules.Problems) []string {
	var out []string
	for _, p := range ps {
		sev := "error"
		if p.Severity == rules.SeverityWarning {
			sev = "warning"
		}
		out = append(out, fmt.Sprintf("%s %s %d %s", p.Code, p.Rule, p.Line, sev))
	}
	return out
}
