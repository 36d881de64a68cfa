package rules

import (
	"errors"
	"fmt"
	"iter"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"github.com/cockroachdb/apd/v3"
)

var (
	idPattern      = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	programPattern = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
	currencyCode   = regexp.MustCompile(`^[A-Z]{3}$`)
)

var topLevelKeys = map[string]bool{
	"program": true, "version": true, "effective_from": true, "description": true, "rounding": true,
	"payout": true, "lifecycle": true, "constants": true, "qualify": true, "rates": true, "tests": true,
	"stage": true, "sample": true,
}

var roundings = []apd.Rounder{apd.RoundHalfUp, apd.RoundHalfEven, apd.RoundHalfDown, apd.RoundDown, apd.RoundUp, apd.RoundCeiling, apd.RoundFloor}

// parseTree parses the YAML document into a tree of positioned values; it reports a document it
// cannot read, at the position of the fault, and then returns false.
func parseTree(ps *problems, source []byte) (map[string]any, bool) {
	tree, err := parseSource(source)
	if err != nil {
		var se *syntaxError
		if errors.As(err, &se) {
			ps.atPos(se.Line, se.Column, CodeYAML, "", "%s", se.Msg)
		} else {
			ps.atPos(0, 0, CodeYAML, "", "%v", err)
		}
		return nil, false
	}
	return tree, true
}

// decodeHeader reads the policy's top-level keys other than its constants, rules and tests:
// program, version, effective_from, description, rounding, payout, lifecycle, stage and sample. It also reports
// any top-level key that is not known.
func decodeHeader(ps *problems, tree map[string]any, p *Policy) {
	for _, k := range sortedKeys(tree) {
		if !topLevelKeys[k] {
			ps.at(tree[k], CodeUnknownKey, "", "unknown key %q (known: program, version, effective_from, description, rounding, payout, lifecycle, stage, sample, constants, qualify, rates, tests)", k)
		}
	}

	p.Program = requiredString(ps, tree, "program", "")
	if p.Program != "" && !programPattern.MatchString(p.Program) {
		ps.at(tree["program"], CodeInvalid, "", "program %q must be lower-case letters, digits, '_' or '-'", p.Program)
	}
	if v, ok := scalarOf(ps, tree, "version", "", true); ok {
		n, err := strconv.Atoi(v.Value)
		if err != nil || n < 1 {
			ps.at(v, CodeInvalid, "", "version must be a whole number ≥ 1, got %q", v.Value)
		}
		p.Version = n
	}
	if v, ok := scalarOf(ps, tree, "effective_from", "", true); ok {
		t, err := time.Parse(time.RFC3339, v.Value)
		if err != nil {
			ps.at(v, CodeInvalid, "", "effective_from must be an RFC 3339 timestamp, got %q", v.Value)
		}
		p.EffectiveFrom = t.UTC()
	}
	if v, ok := scalarOf(ps, tree, "description", "", false); ok {
		p.Description = v.Value
	}
	if v, ok := scalarOf(ps, tree, "rounding", "", true); ok {
		p.Rounding = decodeRounding(ps, v)
	}
	p.Payout = decodePayout(ps, tree["payout"])
	p.Lifecycle = decodeLifecycle(ps, tree["lifecycle"])
	decodeStage(ps, tree, p)
}

// decodeRounding reads a rounding mode by its apd name; it reports (and returns "" for) one that
// is not in roundings.
func decodeRounding(ps *problems, v Scalar) apd.Rounder {
	for _, r := range roundings {
		if string(r) == v.Value {
			return r
		}
	}
	names := make([]string, len(roundings))
	for i, r := range roundings {
		names[i] = string(r)
	}
	ps.at(v, CodeInvalid, "", "rounding %q is not one of %s", v.Value, strings.Join(names, ", "))
	return ""
}

// compileFunc compiles a rule's expression, v as written in the file, for the rule id.
type compileFunc func(v Scalar, id string) compiled

// ruleIDs checks the rules' ids as they are read: their form, and that the qualification and rate
// rules together use each id once.
type ruleIDs struct {
	ps   *problems
	seen map[string]int // id → the line it was first used at
}

// check reports an id (idv, in section qualify or rates) that is malformed or used already, and
// returns it.
func (ids *ruleIDs) check(section string, idv Scalar) string {
	id := idv.Value
	if !idPattern.MatchString(id) {
		ids.ps.at(idv, CodeInvalid, section, "rule id %q must be lower-case letters, digits and '_', starting with a letter", id)
	}
	if prev, dup := ids.seen[id]; dup {
		ids.ps.at(idv, CodeDuplicate, id, "rule id %q is used already at line %d", id, prev)
	}
	ids.seen[id] = idv.Line
	return id
}

// ruleItems yields each rule of a section (qualify or rates) with its id, as the section's
// mappings are read; an item that is not a mapping, or has no id, is reported and skipped. It is
// lazy, so that each rule's problems are found in file order.
func ruleItems(ps *problems, tree map[string]any, section string) iter.Seq2[map[string]any, Scalar] {
	return func(yield func(map[string]any, Scalar) bool) {
		for _, item := range listOf(ps, tree, section) {
			m, ok := mapOf(ps, item, section)
			if !ok {
				continue
			}
			idv, ok := scalarOf(ps, m, "id", section, true)
			if !ok {
				continue
			}
			if !yield(m, idv) {
				return
			}
		}
	}
}

// decodeQualify reads the qualification rules, compiling each expression; the section is
// required, though it may be empty.
func decodeQualify(ps *problems, tree map[string]any, ids *ruleIDs, compile compileFunc) []*Rule {
	var out []*Rule
	for m, idv := range ruleItems(ps, tree, "qualify") {
		r := &Rule{ID: ids.check("qualify", idv), Line: idv.Line}
		knownKeys(ps, m, r.ID, "id", "expr", "reason")
		if v, ok := scalarOf(ps, m, "reason", r.ID, true); ok {
			r.Reason = v.Value
		}
		if v, ok := scalarOf(ps, m, "expr", r.ID, true); ok {
			r.Expr = v.Value
			r.compiled = compile(v, r.ID)
		}
		out = append(out, r)
	}
	if _, ok := tree["qualify"]; !ok {
		ps.atPos(1, 1, CodeMissing, "", "missing key \"qualify\": a list of qualification rules (write [] for none)")
	}
	return out
}

// decodeRates reads the rate rules, compiling each condition; a policy needs at least one, and
// each needs a rate, a flat amount or both.
func decodeRates(ps *problems, tree map[string]any, ids *ruleIDs, compile compileFunc) []*RateRule {
	var out []*RateRule
	for m, idv := range ruleItems(ps, tree, "rates") {
		r := &RateRule{ID: ids.check("rates", idv), Line: idv.Line}
		knownKeys(ps, m, r.ID, "id", "when", "rate", "flat", "description")
		if v, ok := scalarOf(ps, m, "description", r.ID, false); ok {
			r.Description = v.Value
		}
		if v, ok := scalarOf(ps, m, "when", r.ID, true); ok {
			r.When = v.Value
			r.compiled = compile(v, r.ID)
		}
		if v, ok := scalarOf(ps, m, "rate", r.ID, false); ok {
			r.Rate = parsePercent(ps, v, r.ID)
		}
		if fv, ok := m["flat"]; ok {
			r.Flat = decodeMoneyByCurrency(ps, fv, r.ID, "flat")
		}
		if _, hasRate := m["rate"]; !hasRate {
			if _, hasFlat := m["flat"]; !hasFlat {
				ps.at(m, CodeMissing, r.ID, "a rate rule needs a rate (\"10%%\"), a flat amount by currency, or both")
			}
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		ps.at(tree["rates"], CodeMissing, "", "a policy needs at least one rate rule under \"rates\"")
	}
	return out
}

func parsePercent(ps *problems, v Scalar, id string) *apd.Decimal {
	s := strings.TrimSpace(v.Value)
	if !strings.HasSuffix(s, "%") {
		ps.at(v, CodeInvalid, id, "rate %q must be a percentage such as \"10%%\"", v.Value)
		return nil
	}
	d, _, err := apd.NewFromString(strings.TrimSpace(strings.TrimSuffix(s, "%")))
	if err != nil || d.Form != apd.Finite || d.Negative || d.Cmp(apd.New(100, 0)) > 0 {
		ps.at(v, CodeInvalid, id, "rate %q must be a percentage from 0%% to 100%%", v.Value)
		return nil
	}
	return d
}

func decodeMoneyByCurrency(ps *problems, v any, id, what string) map[string]*apd.Decimal {
	m, ok := v.(map[string]any)
	if !ok {
		ps.at(v, CodeType, id, "%s must map currency codes to amounts, e.g. {USD: \"5.00\"}", what)
		return nil
	}
	out := map[string]*apd.Decimal{}
	for _, cur := range sortedKeys(m) {
		sv, ok := m[cur].(Scalar)
		if !currencyCode.MatchString(cur) {
			ps.at(m[cur], CodeInvalid, id, "%s: %q is not an ISO 4217 currency code", what, cur)
			continue
		}
		if !ok {
			ps.at(m[cur], CodeType, id, "%s.%s must be a decimal amount", what, cur)
			continue
		}
		d, _, err := apd.NewFromString(sv.Value)
		if err != nil || d.Form != apd.Finite || d.Negative {
			ps.at(sv, CodeInvalid, id, "%s.%s: %q is not a non-negative decimal amount", what, cur, sv.Value)
			continue
		}
		out[cur] = d
	}
	return out
}

func decodePayout(ps *problems, v any) Payout {
	out := Payout{Schedule: "monthly", Method: "wire_transfer"}
	if v == nil {
		return out
	}
	m, ok := mapOf(ps, v, "payout")
	if !ok {
		return out
	}
	knownKeys(ps, m, "payout", "schedule", "method", "minimum", "hold_days")
	if s, ok := scalarOf(ps, m, "schedule", "payout", false); ok {
		if s.Value != "monthly" {
			ps.at(s, CodeInvalid, "payout", "schedule %q is not supported (monthly)", s.Value)
		}
		out.Schedule = s.Value
	}
	if s, ok := scalarOf(ps, m, "method", "payout", false); ok {
		out.Method = s.Value
	}
	if mv, ok := m["minimum"]; ok {
		out.Minimum = decodeMoneyByCurrency(ps, mv, "payout", "minimum")
	}
	if s, ok := scalarOf(ps, m, "hold_days", "payout", false); ok {
		n, err := strconv.Atoi(s.Value)
		if err != nil || n < 0 {
			ps.at(s, CodeInvalid, "payout", "hold_days must be a whole number ≥ 0, got %q", s.Value)
		}
		out.HoldDays = n
	}
	return out
}

func decodeLifecycle(ps *problems, v any) Lifecycle {
	out := Lifecycle{Terms: TermsFirstQualifying}
	if v == nil {
		return out
	}
	m, ok := mapOf(ps, v, "lifecycle")
	if !ok {
		return out
	}
	knownKeys(ps, m, "lifecycle", "terms")
	if s, ok := scalarOf(ps, m, "terms", "lifecycle", false); ok {
		if s.Value != TermsFirstQualifying && s.Value != TermsInForce {
			ps.at(s, CodeInvalid, "lifecycle", "terms %q is not one of %s, %s", s.Value, TermsFirstQualifying, TermsInForce)
		}
		out.Terms = s.Value
	}
	return out
}

// decodeConstants reads the constants section. A scalar or a list is typed by what it holds
// (string, int, bool; a list of strings or of ints); a one-key mapping names its type:
// {duration: 720h}, {decimal: "100.00"}, {timestamp: 2025-01-01T00:00:00Z}.
func decodeConstants(ps *problems, v any) []Constant {
	if v == nil {
		return nil
	}
	m, ok := mapOf(ps, v, "constants")
	if !ok {
		return nil
	}
	var out []Constant
	for _, name := range sortedKeys(m) {
		val := m[name]
		line, _ := position(val)
		if !idPattern.MatchString(name) {
			ps.at(val, CodeInvalid, "constants", "constant name %q must be lower-case letters, digits and '_'", name)
			continue
		}
		if _, clash := schemaIndex(name); clash || name == "order" || name == "affiliate" {
			ps.at(val, CodeInvalid, "constants", "constant name %q clashes with the order schema", name)
			continue
		}
		c := Constant{Name: name, Line: line}
		switch x := val.(type) {
		case Scalar:
			c.Type, c.Value, c.Text = scalarConstant(ps, x, name)
		case []any:
			c.Type, c.Value, c.Text = listConstant(ps, x, name)
		case map[string]any:
			c.Type, c.Value, c.Text = typedConstant(ps, x, name)
		}
		if c.Type != nil {
			out = append(out, c)
		}
	}
	return out
}

func scalarConstant(ps *problems, s Scalar, name string) (*cel.Type, ref.Val, string) {
	switch s.Tag {
	case "!!int":
		n, err := strconv.ParseInt(s.Value, 10, 64)
		if err != nil {
			ps.at(s, CodeInvalid, "constants", "%s: %q is not a 64-bit integer", name, s.Value)
			return nil, nil, ""
		}
		return cel.IntType, types.Int(n), s.Value
	case "!!bool":
		b, _ := strconv.ParseBool(s.Value)
		return cel.BoolType, types.Bool(b), s.Value
	case "!!str":
		return cel.StringType, types.String(s.Value), strconv.Quote(s.Value)
	case "!!float":
		ps.at(s, CodeInvalid, "constants", "%s: write a decimal as {decimal: %q}: rules never use floating point", name, s.Value)
	default:
		ps.at(s, CodeInvalid, "constants", "%s: %s values are not supported; quote a string, or write {timestamp: …}", name, s.Tag)
	}
	return nil, nil, ""
}

func listConstant(ps *problems, l []any, name string) (*cel.Type, ref.Val, string) {
	var strs []string
	var ints []int64
	var texts []string
	for _, e := range l {
		s, ok := e.(Scalar)
		if !ok {
			ps.at(e, CodeType, "constants", "%s: a list constant holds strings or whole numbers", name)
			return nil, nil, ""
		}
		switch s.Tag {
		case "!!str":
			strs = append(strs, s.Value)
			texts = append(texts, strconv.Quote(s.Value))
		case "!!int":
			n, err := strconv.ParseInt(s.Value, 10, 64)
			if err != nil {
				ps.at(s, CodeInvalid, "constants", "%s: %q is not a 64-bit integer", name, s.Value)
				return nil, nil, ""
			}
			ints = append(ints, n)
			texts = append(texts, s.Value)
		default:
			ps.at(s, CodeInvalid, "constants", "%s: list items must be strings or whole numbers (quote %q)", name, s.Value)
			return nil, nil, ""
		}
	}
	text := "[" + strings.Join(texts, ", ") + "]"
	switch {
	case len(strs) > 0 && len(ints) > 0:
		ps.at(l[0], CodeInvalid, "constants", "%s: a list mixes strings and numbers", name)
		return nil, nil, ""
	case len(ints) > 0:
		return cel.ListType(cel.IntType), types.NewDynamicList(types.DefaultTypeAdapter, ints), text
	default:
		if strs == nil {
			strs = []string{}
		}
		return cel.ListType(cel.StringType), types.NewStringList(types.DefaultTypeAdapter, strs), text
	}
}

func typedConstant(ps *problems, m map[string]any, name string) (*cel.Type, ref.Val, string) {
	keys := sortedKeys(m)
	if len(keys) != 1 {
		ps.at(m, CodeType, "constants", "%s: a typed constant is one of {duration: …}, {decimal: …}, {timestamp: …}", name)
		return nil, nil, ""
	}
	s, ok := m[keys[0]].(Scalar)
	if !ok {
		ps.at(m, CodeType, "constants", "%s: %s takes a single value", name, keys[0])
		return nil, nil, ""
	}
	switch keys[0] {
	case "duration":
		d, err := time.ParseDuration(s.Value)
		if err != nil {
			ps.at(s, CodeInvalid, "constants", "%s: %q is not a duration such as 720h or 30m", name, s.Value)
			return nil, nil, ""
		}
		return cel.DurationType, types.Duration{Duration: d}, fmt.Sprintf("duration(%q)", s.Value)
	case "decimal":
		d, _, err := apd.NewFromString(s.Value)
		if err != nil || d.Form != apd.Finite {
			ps.at(s, CodeInvalid, "constants", "%s: %q is not a decimal number", name, s.Value)
			return nil, nil, ""
		}
		return DecimalType, Decimal{D: d}, fmt.Sprintf("decimal(%q)", s.Value)
	case "timestamp":
		t, err := time.Parse(time.RFC3339, s.Value)
		if err != nil {
			ps.at(s, CodeInvalid, "constants", "%s: %q is not an RFC 3339 timestamp", name, s.Value)
			return nil, nil, ""
		}
		return cel.TimestampType, types.Timestamp{Time: t.UTC()}, fmt.Sprintf("timestamp(%q)", s.Value)
	}
	ps.at(s, CodeUnknownKey, "constants", "%s: unknown constant type %q (duration, decimal, timestamp)", name, keys[0])
	return nil, nil, ""
}

// --- small readers over the parsed tree, each reporting what it finds wrong ---

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != posKey {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func knownKeys(ps *problems, m map[string]any, where string, known ...string) {
	for _, k := range sortedKeys(m) {
		found := false
		for _, n := range known {
			found = found || n == k
		}
		if !found {
			ps.at(m[k], CodeUnknownKey, where, "unknown key %q (known: %s)", k, strings.Join(known, ", "))
		}
	}
}

func scalarOf(ps *problems, m map[string]any, key, where string, required bool) (Scalar, bool) {
	v, ok := m[key]
	if !ok {
		if required {
			ps.at(m, CodeMissing, where, "missing key %q", key)
		}
		return Scalar{}, false
	}
	s, ok := v.(Scalar)
	if !ok || s.Tag == "!!null" {
		ps.at(v, CodeType, where, "%s must be a single value", key)
		return Scalar{}, false
	}
	return s, true
}

func requiredString(ps *problems, m map[string]any, key, where string) string {
	s, ok := scalarOf(ps, m, key, where, true)
	if !ok {
		return ""
	}
	return s.Value
}

func listOf(ps *problems, m map[string]any, key string) []any {
	v, ok := m[key]
	if !ok {
		return nil
	}
	if s, ok := v.(Scalar); ok && s.Tag == "!!null" {
		return nil
	}
	l, ok := v.([]any)
	if !ok {
		ps.at(v, CodeType, key, "%s must be a list", key)
		return nil
	}
	return l
}

func mapOf(ps *problems, v any, where string) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		ps.at(v, CodeType, where, "expected a mapping of keys")
	}
	return m, ok
}
