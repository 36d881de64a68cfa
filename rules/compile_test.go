package rules_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commissioner/commissioner/rules"
)

// seedTerms returns the seed policy up to (not including) its tests.
func seedTerms(t testing.TB) string {
	t.Helper()
	src, err := os.ReadFile("../policies/alibaba/v1.yaml")
	if err != nil {
		t.Fatalf("reading the seed policy: %v", err)
	}
	s := string(src)
	if i := strings.Index(s, "\ntests:"); i >= 0 {
		s = s[:i+1]
	}
	return s
}

// problemLines renders problems as "line:col: rule: message" (no file), one per element.
func problemLines(ps rules.Problems) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		sev := ""
		if p.Severity == rules.SeverityWarning {
			sev = "warning: "
		}
		out[i] = fmt.Sprintf("%d:%d: %s%s: %s", p.Line, p.Column, sev, p.Rule, p.Message)
	}
	return out
}

// knownCodes is every code a Problem may carry: the closed set rules documents.
var knownCodes = map[string]bool{
	rules.CodeYAML: true, rules.CodeUnknownKey: true, rules.CodeMissing: true, rules.CodeType: true,
	rules.CodeInvalid: true, rules.CodeDuplicate: true, rules.CodeCELSyntax: true, rules.CodeCELType: true,
	rules.CodeCEL: true, rules.CodeCost: true, rules.CodeNoRateMatch: true, rules.CodeUnreachable: true,
	rules.CodeOverlap: true, rules.CodeLintSkipped: true, rules.CodeLayout: true,
}

// problemCodes lists the problems' codes, in order.
func problemCodes(ps rules.Problems) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Code
	}
	return out
}

// TestCompileReportsEveryProblem compiles a policy with many problems and expects every one of
// them, at once, each at its exact line and column and with its rule id.
func TestCompileReportsEveryProblem(t *testing.T) {
	src := `# broken on purpose, and missing its program
version: 1
effective_from: 2025-01-01T00:00:00Z
rounding: half_sideways
colour: blue
qualify:
  - id: syntax
    expr: order.status ==
    reason: r
  - id: type_error
    expr: order.amount > "x"
    reason: r
  - id: undeclared
    expr: order.buyer.countr == "US"
    reason: r
  - id: not_bool
    expr: order.status
    reason: r
  - id: syntax
    expr: "true"
    reason: r
    severity: high
  - id: Bad-Id
    expr: order.amount == 0
    reason: r
rates:
  - id: bad_rate
    when: "true"
    rate: "10"
  - id: no_terms
    when: "true"
  - id: bad_flat
    when: "true"
    flat: {usd: "1.00", EUR: "-1"}
  - id: too_much
    when: "true"
    rate: "150%"
`
	// Every position worked out by hand from the text above (columns count from 1; a problem with
	// a value points at the value, e.g. a flat amount's currency at its amount). The code says
	// what kind of problem it is; msg, where given, is wording that matters to the reader (the
	// hint, the names it offers), checked as a substring.
	want := []struct{ pos, code, rule, msg string }{
		{"2:1", rules.CodeMissing, "", `missing key "program"`},                                      // the document's mapping starts at line 2
		{"4:11", rules.CodeInvalid, "", `rounding "half_sideways" is not one of half_up, half_even`}, // the value after "rounding: "
		{"5:9", rules.CodeUnknownKey, "", `unknown key "colour" (known: program, version`},           // the value after "colour: "
		{"8:26", rules.CodeCELSyntax, "syntax", ""},                                                  // col 11 + len("order.status ==")
		{"11:24", rules.CodeCELType, "type_error", ""},                                               // the '>' at 11 + 13
		{"14:22", rules.CodeCELType, "undeclared", "(did you mean 'order.buyer.country'?)"},          // the last '.' at 11 + 11
		{"17:11", rules.CodeCELType, "not_bool", "the expression must be a bool, it is string"},
		{"19:9", rules.CodeDuplicate, "syntax", "used already at line 7"},
		{"22:15", rules.CodeUnknownKey, "syntax", `unknown key "severity" (known: id, expr, reason)`},
		{"23:9", rules.CodeInvalid, "qualify", ""},
		{"24:24", rules.CodeCELType, "Bad-Id", "amounts are exact decimals, compare with decimal(0)"}, // '==' at 11 + 13
		{"29:11", rules.CodeInvalid, "bad_rate", `must be a percentage such as "10%"`},
		{"30:5", rules.CodeMissing, "no_terms", ""}, // the rule's mapping starts at "id"
		{"34:17", rules.CodeInvalid, "bad_flat", ""},
		{"34:30", rules.CodeInvalid, "bad_flat", ""},
		{"37:11", rules.CodeInvalid, "too_much", "from 0% to 100%"},
	}
	p, ps := rules.Compile("broken.yaml", []byte(src))
	if p != nil {
		t.Errorf("got a policy, want nil for a file with errors")
	}
	for i := 0; i < len(ps) || i < len(want); i++ {
		switch {
		case i >= len(ps):
			t.Errorf("problem %d: got none, want %s %s at %s", i, want[i].code, want[i].rule, want[i].pos)
		case i >= len(want):
			t.Errorf("problem %d: got %s, want none", i, problemLines(ps[i : i+1])[0])
		default:
			got, w := ps[i], want[i]
			if pos := fmt.Sprintf("%d:%d", got.Line, got.Column); pos != w.pos || got.Code != w.code || got.Rule != w.rule || !strings.Contains(got.Message, w.msg) {
				t.Errorf("problem %d: got %s %s at %s: %s\n  want %s %s at %s: …%s…", i, got.Code, got.Rule, pos, got.Message, w.code, w.rule, w.pos, w.msg)
			}
		}
	}
	// As an error, every problem is one line naming the file.
	msg := ps.Error()
	if n := strings.Count(msg, "\n") + 1; n != len(want) {
		t.Errorf("got %d lines in the error, want %d:\n%s", n, len(want), msg)
	}
	if !strings.Contains(msg, "broken.yaml:14:22: undeclared: undeclared reference to 'order.buyer.countr'") {
		t.Errorf("got error\n%s\nwant a line broken.yaml:14:22: undeclared: …", msg)
	}
	if !ps.HasErrors() {
		t.Errorf("got HasErrors false, want true")
	}
}

// TestExpressionPositions checks that a problem inside an expression is reported at the character
// it is about, whatever YAML style the expression is written in.
func TestExpressionPositions(t *testing.T) {
	head := "program: p\nversion: 1\neffective_from: 2025-01-01T00:00:00Z\nrounding: half_up\nrates: [{id: r, when: \"true\", rate: \"1%\"}]\nqualify:\n"
	// head is 6 lines; the rule below starts on line 7 and its expr key on line 8.
	cases := []struct {
		name string
		rule string
		want string // line:col of the undeclared 'order.placed_att' (CEL points at its last '.')
		code string
	}{
		{"plain", "  - id: a\n    expr: order.placed_att == order.click_at\n", "8:16", rules.CodeCELType},
		{"single-quoted", "  - id: a\n    expr: 'order.placed_att == order.click_at'\n", "8:17", rules.CodeCELType},
		{"double-quoted", "  - id: a\n    expr: \"order.placed_att == order.click_at\"\n", "8:17", rules.CodeCELType},
		{"plain, later on the line", "  - id: a\n    expr: order.has_click && order.placed_att == order.click_at\n", "8:35", rules.CodeCELType},
		{"folded block, first line", "  - id: a\n    expr: >-\n      order.placed_att == order.click_at\n", "9:12", rules.CodeCELType},
		{"folded block, second line", "  - id: a\n    expr: >-\n      order.has_click &&\n      order.click_at <= order.placed_att\n", "10:30", rules.CodeCELType},
		{"folded block, third line", "  - id: a\n    expr: >-\n      order.has_click\n      && order.click_at <= order.placed_at\n      && order.placed_att - order.click_at <= duration('1h')\n", "11:15", rules.CodeCELType},
		{"folded block, deeper indent", "  - id: a\n    expr: >\n            order.has_click &&\n            order.placed_att == order.click_at\n", "10:18", rules.CodeCELType},
		{"folded block after a blank line", "  - id: a\n    expr: >-\n      order.has_click &&\n\n      order.placed_att == order.click_at\n", "11:12", rules.CodeCELType},
		{"literal block, second line", "  - id: a\n    expr: |\n      order.has_click &&\n      order.click_at <= order.placed_att\n", "10:30", rules.CodeCELType},
		{"literal block, keep", "  - id: a\n    expr: |+\n      order.has_click &&\n        order.placed_att == order.click_at\n\n", "10:14", rules.CodeCELType},
		{"multi-line plain", "  - id: a\n    expr: order.has_click &&\n      order.placed_att == order.click_at\n", "9:12", rules.CodeCELType},
		{"multi-line double-quoted", "  - id: a\n    expr: \"order.has_click &&\n      order.placed_att == order.click_at\"\n", "9:12", rules.CodeCELType},
		{"flow mapping", "  - {id: a, expr: order.placed_att == order.click_at, reason: r}\n", "7:24", rules.CodeCELType},
		{"after non-ASCII text", "  - id: a\n    expr: 'order.buyer.id != \"Zoë—\" && order.placed_att == order.click_at'\n", "8:45", rules.CodeCELType},
		{"syntax error at the end of a block", "  - id: a\n    expr: >-\n      order.has_click &&\n      order.status ==\n", "10:22", rules.CodeCELSyntax},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := head + c.rule
			if !strings.Contains(c.rule, "reason") {
				src += "    reason: r\n"
			}
			_, ps := rules.Compile("p.yaml", []byte(src))
			if len(ps) != 1 {
				t.Fatalf("got problems %v, want exactly one", problemLines(ps))
			}
			if got := fmt.Sprintf("%d:%d", ps[0].Line, ps[0].Column); got != c.want || ps[0].Rule != "a" || ps[0].Code != c.code {
				t.Errorf("got %s %s (rule %q: %s), want %s %s (rule a)", ps[0].Code, got, ps[0].Rule, ps[0].Message, c.code, c.want)
			}
		})
	}
}

func TestCompileSeedPolicy(t *testing.T) {
	src, err := os.ReadFile("../policies/alibaba/v1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, ps := rules.Compile("v1.yaml", src)
	if p == nil || ps.HasErrors() {
		t.Fatalf("got problems %v, want none", ps)
	}
	checks := []struct{ what, got, want string }{
		{"program", p.Program, "alibaba"},
		{"version", fmt.Sprint(p.Version), "1"},
		{"effective_from", p.EffectiveFrom.Format("2006-01-02T15:04:05Z07:00"), "2025-01-01T00:00:00Z"},
		{"rounding", string(p.Rounding), "half_up"},
		{"digest", p.Digest, rules.Digest(src)},
		{"identity", p.Identity(), "alibaba v1 (" + rules.Digest(src) + ")"},
		{"qualify", ruleIDs(p), "completed not_refunded traffic_allowed no_forbidden_items click_in_window"},
		{"rates", rateIDs(p), "selected_new:10 selected_returning:6 other_new:9 other_returning:5"},
		{"payout", fmt.Sprintf("%s %s %d %d", p.Payout.Schedule, p.Payout.Method, len(p.Payout.Minimum), p.Payout.HoldDays), "monthly wire_transfer 0 30"},
		{"click_in_window reads", strings.Join(p.Qualify[4].Names(), " "), "order.placed_at order.has_click order.click_at"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
		}
	}
	if !strings.HasPrefix(p.Digest, "sha256:") || len(p.Digest) != len("sha256:")+64 {
		t.Errorf("digest: got %q, want sha256: and 64 hex digits", p.Digest)
	}
	// One changed byte, even in a comment, is another version identity.
	src2 := append([]byte(nil), src...)
	src2[0] = '#'
	src2 = append([]byte("# x\n"), src2...)
	if p2, _ := rules.Compile("v1.yaml", src2); p2 == nil || p2.Digest == p.Digest {
		t.Errorf("got the same digest for different bytes, want a different one")
	}
}

func ruleIDs(p *rules.Policy) string {
	var ids []string
	for _, r := range p.Qualify {
		ids = append(ids, r.ID)
	}
	return strings.Join(ids, " ")
}

func rateIDs(p *rules.Policy) string {
	var ids []string
	for _, r := range p.Rates {
		ids = append(ids, r.ID+":"+r.Rate.Text('f'))
	}
	return strings.Join(ids, " ")
}

// writePolicies writes files below a temp dir and returns it.
func writePolicies(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func withVersion(src string, version int, effectiveFrom string) string {
	src = strings.Replace(src, "\nversion: 1\n", fmt.Sprintf("\nversion: %d\n", version), 1)
	return strings.Replace(src, "\neffective_from: 2025-01-01T00:00:00Z\n", "\neffective_from: "+effectiveFrom+"\n", 1)
}

func TestLoadDir(t *testing.T) {
	seed := seedTerms(t)
	v2 := withVersion(seed, 2, "2025-06-01T00:00:00Z")
	broken := strings.Replace(seed, "order.status == \"completed\"", "order.status == ", 1)

	t.Run("two versions", func(t *testing.T) {
		dir := writePolicies(t, map[string]string{"alibaba/v1.yaml": seed, "alibaba/v2.yml": v2, ".hidden/v9.yaml": "not: a policy", "alibaba/notes.txt": "ignored"})
		set, err := rules.LoadDir(dir)
		if err != nil {
			t.Fatalf("got %v, want a set", err)
		}
		var got []string
		for _, p := range set.All() {
			got = append(got, fmt.Sprintf("%s v%d %s", p.Program, p.Version, filepath.Base(p.File)))
		}
		if want := "alibaba v1 v1.yaml, alibaba v2 v2.yml"; strings.Join(got, ", ") != want {
			t.Errorf("got %s, want %s", strings.Join(got, ", "), want)
		}
		if got := strings.Join(set.Programs(), ","); got != "alibaba" {
			t.Errorf("programs: got %s, want alibaba", got)
		}
	})
	t.Run("a file over the size limit is refused before it is read", func(t *testing.T) {
		big := seed + "\n# " + strings.Repeat("x", rules.DefaultMaxFileBytes) + "\n"
		dir := writePolicies(t, map[string]string{"alibaba/v1.yaml": seed, "alibaba/v2.yaml": withVersion(big, 2, "2025-06-01T00:00:00Z")})
		set, err := rules.LoadDir(dir)
		if set != nil || err == nil || !strings.Contains(err.Error(), filepath.Join("alibaba", "v2.yaml")+": ") ||
			!strings.Contains(err.Error(), "over the limit of 1048576 for a policy file (policy_max_bytes)") {
			t.Fatalf("got %v, %v; want v2.yaml refused as over the limit", set, err)
		}
		if _, err := rules.LoadDir(dir, rules.MaxFileBytes(int64(len(big))+1)); err != nil {
			t.Errorf("with a limit above its size: %v, want it loaded", err)
		}
		if _, err := rules.LoadFile(filepath.Join(dir, "alibaba", "v2.yaml"), rules.MaxFileBytes(1000)); err == nil || !strings.Contains(err.Error(), "over the limit of 1000") {
			t.Errorf("LoadFile with a 1000-byte limit: %v, want it refused", err)
		}
	})
	t.Run("the same version in two files", func(t *testing.T) {
		dir := writePolicies(t, map[string]string{"alibaba/v1.yaml": seed, "alibaba/v1-copy.yaml": strings.Replace(seed, "Seed terms.", "Other terms.", 1)})
		set, err := rules.LoadDir(dir)
		if set != nil {
			t.Errorf("got a set, want nil")
		}
		var ps rules.Problems
		if !errors.As(err, &ps) || len(ps) != 1 {
			t.Fatalf("got %v, want one problem", err)
		}
		if ps[0].Code != rules.CodeDuplicate || !strings.Contains(ps[0].Message, "program alibaba version 1 is defined twice") ||
			!strings.Contains(err.Error(), "v1-copy.yaml") || !strings.Contains(err.Error(), filepath.Join("alibaba", "v1.yaml")) {
			t.Errorf("got %v, want both files named as defining alibaba version 1", err)
		}
	})
	t.Run("one broken file among good ones", func(t *testing.T) {
		dir := writePolicies(t, map[string]string{"alibaba/v1.yaml": seed, "alibaba/v2.yaml": withVersion(broken, 2, "2025-06-01T00:00:00Z")})
		set, err := rules.LoadDir(dir)
		if set != nil {
			t.Errorf("got a set, want nil: a bad file never yields a set")
		}
		if err == nil || !strings.Contains(err.Error(), filepath.Join("alibaba", "v2.yaml")+":") || !strings.Contains(err.Error(), "completed: Syntax error") {
			t.Errorf("got %v, want the syntax error in v2.yaml", err)
		}
	})
	t.Run("problems from every file at once", func(t *testing.T) {
		dir := writePolicies(t, map[string]string{"a/v1.yaml": broken, "b/v1.yaml": strings.Replace(seed, "program: alibaba", "program: b\ncolour: red", 1)})
		_, err := rules.LoadDir(dir)
		if err == nil || !strings.Contains(err.Error(), "Syntax error") || !strings.Contains(err.Error(), `unknown key "colour"`) {
			t.Errorf("got %v, want the problems of both files", err)
		}
	})
	t.Run("no policy files", func(t *testing.T) {
		set, err := rules.LoadDir(t.TempDir())
		if set != nil || err == nil || !strings.Contains(err.Error(), "no policy files") {
			t.Errorf("got %v, %v, want an error saying there are no policy files", set, err)
		}
	})
	t.Run("a directory that does not exist", func(t *testing.T) {
		set, err := rules.LoadDir(filepath.Join(t.TempDir(), "nope"))
		if set != nil || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("got %v, %v, want an error wrapping os.ErrNotExist", set, err)
		}
	})
	t.Run("LoadFile", func(t *testing.T) {
		dir := writePolicies(t, map[string]string{"v2.yaml": v2, "bad.yaml": broken})
		set, err := rules.LoadFile(filepath.Join(dir, "v2.yaml"))
		if err != nil || len(set.All()) != 1 || set.All()[0].Version != 2 {
			t.Errorf("got %v, %v, want a set of version 2 alone", set, err)
		}
		if set, err := rules.LoadFile(filepath.Join(dir, "bad.yaml")); set != nil || err == nil {
			t.Errorf("got %v, %v, want an error and no set", set, err)
		}
	})
}
