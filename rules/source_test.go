package rules_test

import (
	"strings"
	"testing"

	"github.com/commissioner/commissioner/rules"
)

// TestPolicyDocumentProblems covers problems with the YAML document itself and with the in-file
// tests, each with its position.
func TestPolicyDocumentProblems(t *testing.T) {
	laughs := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g"} {
		laughs += n + ": &" + n + " [" + strings.TrimSuffix(strings.Repeat("*"+prev+", ", 10), ", ") + "]\n"
		prev = n
	}
	const head = "program: p\nversion: 1\neffective_from: 2025-01-01T00:00:00Z\nrounding: half_up\nqualify: []\nrates: [{id: r, when: \"true\", rate: \"1%\"}]\n"
	// head is 6 lines; tests start on line 7.
	cases := []struct {
		name, src string
		want      []string // "code line:col: rule: message" prefixes, in order
	}{
		{"empty file", "", []string{"yaml 1:1: : the policy file is empty"}},
		{"only a comment", "# nothing here\n", []string{"yaml 1:1: : the policy file is empty"}},
		{"not a mapping", "- program: p\n", []string{"yaml 1:1: : the policy must be a mapping of keys"}},
		{"a scalar", "hello\n", []string{"yaml 1:1: : the policy must be a mapping of keys"}},
		// yaml.v3 names the line where the unclosed sequence's context starts, counted from 0.
		{"YAML syntax error", "program: p\nversion: [1\nrounding: half_up\n", []string{"yaml 1:0: : did not find expected ',' or ']'"}},
		{"bad indentation", "program: p\n  version: 1\n", []string{"yaml 2:0: : mapping values are not allowed in this context"}},
		{"a key twice", "program: p\nversion: 1\nprogram: q\n", []string{`yaml 3:1: : key "program" appears twice`}},
		{"a complex key", "? [a]\n: b\n", []string{"yaml 1:3: : mapping keys must be plain names"}},
		// the budget runs out while expanding *a, whose values are at line 1
		{"aliases expanding too far", laughs, []string{"yaml 1:23: : the document expands to too many values through aliases"}},
		// found by FuzzCompilePolicy: an alias inside its own anchor recursed until the budget ran out (1.4 s)
		{"an alias inside its own anchor", "a: &a [x, x]\nb: &b [\na, *b]\n", []string{"yaml 3:4: : alias *b is used inside the value it names"}},
		{"an alias inside its own anchor, deeper", "a: &a {b: [1, {c: *a}]}\n", []string{"yaml 1:19: : alias *a is used inside the value it names"}},
		{"merging a scalar", head + "tests:\n  - name: x\n    order: {<<: 5}\n    expect: {}\n", []string{"yaml 9:17: : << merges a mapping, not a !!int"}},
		{"a test order with a non-JSON number", head + "tests:\n  - name: x\n    order: {amount: .inf}\n    expect: {qualified: true}\n",
			[]string{`invalid 9:21: test x: order: ".inf" is not a JSON number; quote it`}},
		{"a test without order and expect", head + "tests:\n  - name: x\n", []string{`missing 8:5: test x: missing key "order"`}},
		{"a test without expect", head + "tests:\n  - name: x\n    order: {}\n", []string{`missing 8:5: test x: missing key "expect"`}},
		{"a test name used twice", head + "tests:\n  - {name: x, order: {}, expect: {}}\n  - {name: x, order: {}, expect: {}}\n",
			[]string{`duplicate 9:12: tests: test name "x" is used twice`}},
		{"an unknown expectation", head + "tests:\n  - name: x\n    order: {}\n    expect: {commision: \"1.00\", qualified: maybe}\n",
			[]string{`unknown_key 10:25: test x: unknown key "commision"`, `invalid 10:44: test x: qualified must be true or false`}},
		{"tests not a list", head + "tests: {name: x}\n", []string{"type 7:8: tests: tests must be a list"}},
		{"failed_rules not a list", head + "tests:\n  - name: x\n    order: {}\n    expect: {failed_rules: completed}\n",
			[]string{"type 10:28: test x: failed_rules must be a list of rule ids"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, ps := rules.Compile("p.yaml", []byte(c.src))
			if p != nil {
				t.Errorf("got a policy, want problems")
			}
			got := problemLines(ps)
			for i, p := range ps {
				got[i] = p.Code + " " + got[i]
			}
			if len(got) != len(c.want) {
				t.Fatalf("got problems\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], c.want[i]) {
					t.Errorf("got %s, want %s…", got[i], c.want[i])
				}
			}
		})
	}
}

// TestMergeKeys checks that test orders can share a base through << merge keys, with the keys
// written in the case winning, and that the order reaches the decoder as JSON, numbers as written.
func TestMergeKeys(t *testing.T) {
	src := "program: p\nversion: 1\neffective_from: 2025-01-01T00:00:00Z\nrounding: half_up\nqualify: []\n" +
		"rates: [{id: r, when: \"true\", rate: \"1%\"}]\n" +
		"tests:\n" +
		"  - name: base\n    order: &base {order_id: a, amount: 99999999999999999999.99, buyer: {id: b, new: true}, n: null, t: 2025-01-01T00:00:00Z}\n    expect: {}\n" +
		"  - name: merged\n    order: {<<: *base, order_id: b, extra: [1, \"2\"]}\n    expect: {failed_rules: [], error: x}\n" +
		"  - name: merged list\n    order: {<<: [{a: 1}, {a: 2, b: 2}], b: 3}\n    expect: {qualified: false}\n"
	p, ps := rules.Compile("p.yaml", []byte(src))
	if p == nil {
		t.Fatalf("got problems %v", ps)
	}
	want := []string{
		`{"amount":99999999999999999999.99,"buyer":{"id":"b","new":true},"n":null,"order_id":"a","t":"2025-01-01T00:00:00Z"}`,
		`{"amount":99999999999999999999.99,"buyer":{"id":"b","new":true},"extra":[1,"2"],"n":null,"order_id":"b","t":"2025-01-01T00:00:00Z"}`,
		`{"a":1,"b":3}`,
	}
	if len(p.Tests) != len(want) {
		t.Fatalf("got %d tests, want %d", len(p.Tests), len(want))
	}
	for i, tc := range p.Tests {
		if string(tc.Order) != want[i] {
			t.Errorf("test %q: got order %s, want %s", tc.Name, tc.Order, want[i])
		}
	}
	e := p.Tests[1].Expect
	if !e.HasFailed || len(e.FailedRules) != 0 || e.Error == nil || *e.Error != "x" || e.Qualified != nil || e.Commission != nil {
		t.Errorf("got expectation %+v, want failed_rules [] and error x only", e)
	}
	if q := p.Tests[2].Expect.Qualified; q == nil || *q {
		t.Errorf("got qualified %v, want false", q)
	}
}
