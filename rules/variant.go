package rules

// Variants of a policy: the same file with some rate rules' terms — a rate, or a flat amount in
// one currency — set to other values (a rate sweep's points). A variant is made on the file's
// text, each value written where the old one was, so that it is a policy file like any other:
// its own bytes and digest, compiled and checked as one, and what `replay --policy` of that file
// would decide with, byte for byte.

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cockroachdb/apd/v3"
	"gopkg.in/yaml.v3"
)

// TermKind is which of a rate rule's terms a Term names.
type TermKind string

const (
	TermRate TermKind = "rate" // the percentage ("6%")
	TermFlat TermKind = "flat" // the flat amount per order, in one currency
)

// Term names one term of a rate rule: "selected_returning.rate", "new_buyer.flat.USD".
type Term struct {
	Rule     string
	Kind     TermKind
	Currency string // TermFlat: the currency; "" until resolved when the rule pays only one
}

// ParseTerm reads RULE.rate, RULE.flat.CUR or RULE.flat (the rule's only flat currency).
func ParseTerm(s string) (Term, error) {
	rule, rest, ok := strings.Cut(s, ".")
	if !ok || rule == "" {
		return Term{}, fmt.Errorf("%q: want RULE.rate, RULE.flat or RULE.flat.CUR (a rate rule's id, then its term)", s)
	}
	if !idPattern.MatchString(rule) {
		return Term{}, fmt.Errorf("%q: %q is not a rule id (lower-case letters, digits and '_', starting with a letter)", s, rule)
	}
	kind, cur, _ := strings.Cut(rest, ".")
	switch {
	case kind == string(TermRate) && cur == "" && !strings.HasSuffix(rest, "."):
		return Term{Rule: rule, Kind: TermRate}, nil
	case kind == string(TermFlat) && rest == "flat":
		return Term{Rule: rule, Kind: TermFlat}, nil
	case kind == string(TermFlat) && currencyCode.MatchString(cur):
		return Term{Rule: rule, Kind: TermFlat, Currency: cur}, nil
	case kind == string(TermFlat):
		return Term{}, fmt.Errorf("%q: %q is not a currency code (three capital letters, e.g. USD)", s, cur)
	}
	return Term{}, fmt.Errorf("%q: a rate rule's terms are %s.rate and %s.flat (%s.flat.CUR for one currency), not %q", s, rule, rule, rule, rest)
}

func (t Term) String() string {
	if t.Kind == TermFlat && t.Currency != "" {
		return t.Rule + ".flat." + t.Currency
	}
	return t.Rule + "." + string(t.Kind)
}

// Format writes a value of the term as a policy file does: "5.5%" for a rate, "2.50" for a flat
// amount.
func (t Term) Format(v *apd.Decimal) string {
	if t.Kind == TermRate {
		return v.Text('f') + "%"
	}
	return v.Text('f')
}

// ResolveTerm checks that the policy has the term: a rate rule t.Rule that pays a rate, or a flat
// amount in t.Currency. A flat amount named without a currency is the rule's only one, which the
// returned term names. The error names the rule and the file.
func (p *Policy) ResolveTerm(t Term) (Term, error) {
	var r *RateRule
	ids := make([]string, 0, len(p.Rates))
	for _, x := range p.Rates {
		ids = append(ids, x.ID)
		if x.ID == t.Rule {
			r = x
		}
	}
	if r == nil {
		for _, q := range p.Qualify {
			if q.ID == t.Rule {
				return t, fmt.Errorf("%s:%d: %s is a qualification rule, which has no rate or flat amount to vary (the rate rules: %s)",
					p.File, q.Line, t.Rule, strings.Join(ids, ", "))
			}
		}
		return t, fmt.Errorf("%s: no rate rule %q (the rate rules: %s)", p.File, t.Rule, strings.Join(ids, ", "))
	}
	switch t.Kind {
	case TermRate:
		if r.Rate == nil {
			return t, fmt.Errorf("%s:%d: rule %s pays no rate, only a flat amount (%s): nothing for %s to vary",
				p.File, r.Line, r.ID, flatCurrencies(r), t)
		}
	case TermFlat:
		if r.Flat == nil {
			return t, fmt.Errorf("%s:%d: rule %s pays no flat amount, only a rate: nothing for %s to vary (%s.rate would)", p.File, r.Line, r.ID, t, r.ID)
		}
		curs := flatCurrencies(r)
		if t.Currency == "" {
			if len(r.Flat) != 1 {
				return t, fmt.Errorf("%s:%d: rule %s pays flat amounts in %s: name one, e.g. %s.flat.%s", p.File, r.Line, r.ID, curs, r.ID, strings.Split(curs, ", ")[0])
			}
			t.Currency = curs
		} else if r.Flat[t.Currency] == nil {
			return t, fmt.Errorf("%s:%d: rule %s pays no flat amount in %s (it pays one in %s)", p.File, r.Line, r.ID, t.Currency, curs)
		}
	default:
		return t, fmt.Errorf("%s: %s: unknown term %q", p.File, t.Rule, t.Kind)
	}
	return t, nil
}

// flatCurrencies lists the currencies a rule's flat amount names, sorted and comma-separated.
func flatCurrencies(r *RateRule) string {
	curs := make([]string, 0, len(r.Flat))
	for c := range r.Flat {
		curs = append(curs, c)
	}
	slices.Sort(curs)
	return strings.Join(curs, ", ")
}

// TermValue is a value for one term of a variant.
type TermValue struct {
	Term  Term
	Value *apd.Decimal
}

func (v TermValue) String() string { return v.Term.String() + "=" + v.Term.Format(v.Value) }

// WithTerms returns the variant of p with the terms set to the values: p's source with each new
// value written in place of the old one (in the same quoting), compiled. It has p's program and
// version and its own digest. A term p does not have, a term given twice, a value the policy
// format refuses (a rate above 100%) or a term written in a way that cannot be edited in place (an
// alias, a block scalar, inherited through <<) is an error naming the rule and the file.
func (p *Policy) WithTerms(values ...TermValue) (*Policy, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(p.Source, &doc); err != nil || len(doc.Content) == 0 {
		return nil, fmt.Errorf("%s: reading the policy again: %v", p.File, err)
	}
	lines := lineOffsets(p.Source)
	type splice struct {
		start, end int
		text       string
		term       Term
	}
	var splices []splice
	for _, v := range values {
		t, err := p.ResolveTerm(v.Term)
		if err != nil {
			return nil, err
		}
		if v.Value == nil || v.Value.Form != apd.Finite || v.Value.Negative && !v.Value.IsZero() {
			return nil, fmt.Errorf("%s: %s: the value must be a decimal ≥ 0", p.File, t)
		}
		n, err := termNode(doc.Content[0], t)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.File, err)
		}
		start, end, err := scalarSpan(p.Source, lines, n)
		if err != nil {
			return nil, fmt.Errorf("%s:%d:%d: rule %s: %s %w", p.File, n.Line, n.Column, t.Rule, t.Kind, err)
		}
		text := t.Format(v.Value)
		switch n.Style {
		case yaml.DoubleQuotedStyle:
			text = `"` + text + `"`
		case yaml.SingleQuotedStyle:
			text = `'` + text + `'`
		}
		splices = append(splices, splice{start, end, text, t})
	}
	slices.SortFunc(splices, func(a, b splice) int { return b.start - a.start })
	src := bytes.Clone(p.Source)
	for i, s := range splices {
		if i > 0 && splices[i-1].start == s.start {
			return nil, fmt.Errorf("%s: %s is given two values", p.File, s.term)
		}
		src = slices.Concat(src[:s.start], []byte(s.text), src[s.end:])
	}
	q, problems := Compile(p.File, src)
	if q == nil {
		var errs []string
		for _, pr := range problems {
			if pr.Severity == SeverityError {
				errs = append(errs, pr.String())
			}
		}
		return nil, fmt.Errorf("the variant with %s does not compile:\n%s", joinValues(values), strings.Join(errs, "\n"))
	}
	for _, v := range values { // the edit landed where it should: each term now says its value
		if err := q.checkTerm(v); err != nil {
			return nil, err
		}
	}
	return q, nil
}

func joinValues(values []TermValue) string {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = v.String()
	}
	return strings.Join(parts, ", ")
}

// checkTerm reports whether the compiled variant's term holds the value it was given.
func (p *Policy) checkTerm(v TermValue) error {
	t, err := p.ResolveTerm(v.Term)
	if err != nil {
		return err
	}
	for _, r := range p.Rates {
		if r.ID != t.Rule {
			continue
		}
		got := r.Rate
		if t.Kind == TermFlat {
			got = r.Flat[t.Currency]
		}
		if got == nil || got.Cmp(v.Value) != 0 {
			return fmt.Errorf("%s: the variant's %s is not %s: the file could not be edited in place", p.File, t, t.Format(v.Value))
		}
	}
	return nil
}

// termNode finds the scalar that writes the term in the document's root mapping: under rates, the
// item whose id is the rule, its rate or flat.CUR, written there (not merged in, not an alias).
func termNode(root *yaml.Node, t Term) (*yaml.Node, error) {
	rates := mappingValue(root, "rates")
	if rates == nil || rates.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("rule %s: no rates list written in the file to edit", t.Rule)
	}
	for _, item := range rates.Content {
		if item.Kind != yaml.MappingNode {
			continue
		}
		if id := mappingValue(item, "id"); id == nil || id.Kind != yaml.ScalarNode || id.Value != t.Rule {
			continue
		}
		key := string(t.Kind)
		n := mappingValue(item, key)
		if n != nil && t.Kind == TermFlat {
			if n.Kind != yaml.MappingNode {
				return nil, fmt.Errorf("%d:%d: rule %s: its flat amounts are not written as a mapping in the rule (an alias?): write them out to vary them", n.Line, n.Column, t.Rule)
			}
			key = "flat." + t.Currency
			n = mappingValue(n, t.Currency)
		}
		switch {
		case n == nil:
			return nil, fmt.Errorf("%d:%d: rule %s: its %s is not written in the rule (merged in with <<?): write it in the rule to vary it", item.Line, item.Column, t.Rule, key)
		case n.Kind == yaml.AliasNode:
			return nil, fmt.Errorf("%d:%d: rule %s: its %s is an alias (*%s): write the value to vary it", n.Line, n.Column, t.Rule, key, n.Value)
		case n.Kind != yaml.ScalarNode:
			return nil, fmt.Errorf("%d:%d: rule %s: its %s is not a single value", n.Line, n.Column, t.Rule, key)
		}
		return n, nil
	}
	return nil, fmt.Errorf("rule %s: not written in the file's rates list (merged in with <<?)", t.Rule)
}

// mappingValue is the value of key written in the mapping m (nil when it has none).
func mappingValue(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if k := m.Content[i]; k.Kind == yaml.ScalarNode && k.Value == key && k.ShortTag() != "!!merge" {
			return m.Content[i+1]
		}
	}
	return nil
}

// lineOffsets are the byte offsets at which each line of src starts.
func lineOffsets(src []byte) []int {
	offs := []int{0}
	for i, c := range src {
		if c == '\n' {
			offs = append(offs, i+1)
		}
	}
	return offs
}

var errNotInPlace = errors.New("cannot be edited in place")

// scalarSpan is where a one-line scalar (plain, 'single' or "double" quoted) is written in src:
// the byte offsets of its first character (an opening quote) and just after its last.
func scalarSpan(src []byte, lines []int, n *yaml.Node) (start, end int, err error) {
	if n.Line < 1 || n.Line > len(lines) || n.Column < 1 {
		return 0, 0, fmt.Errorf("has no position: %w", errNotInPlace)
	}
	lineEnd := len(src)
	if n.Line < len(lines) {
		lineEnd = lines[n.Line] - 1
	}
	line := string(src[lines[n.Line-1]:lineEnd])
	start = lines[n.Line-1] + byteIndex(line, n.Column-1)
	rest := string(src[start:lineEnd])
	switch n.Style {
	case yaml.DoubleQuotedStyle:
		for i := 1; i < len(rest); i++ {
			switch rest[i] {
			case '\\':
				i++
			case '"':
				if rest[0] == '"' {
					return start, start + i + 1, nil
				}
			}
		}
	case yaml.SingleQuotedStyle:
		for i := 1; i < len(rest); i++ {
			if rest[i] == '\'' {
				if i+1 < len(rest) && rest[i+1] == '\'' {
					i++
					continue
				}
				if rest[0] == '\'' {
					return start, start + i + 1, nil
				}
			}
		}
	case 0: // plain
		if strings.HasPrefix(rest, n.Value) {
			return start, start + len(n.Value), nil
		}
	}
	return 0, 0, fmt.Errorf("is not written as one quoted or plain value on one line: %w", errNotInPlace)
}
