package rules

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"github.com/cockroachdb/apd/v3"
)

// Limits on what one rule may cost. The estimate is checked when a policy is compiled (with
// order.items bounded by MaxItems); the runtime limit stops any evaluation that goes beyond it.
const (
	MaxItems         = 1000
	MaxEstimatedCost = 1_000_000
	RuntimeCostLimit = 1_000_000
)

// Policy is one compiled, immutable version of a program's terms. It is safe for concurrent use.
type Policy struct {
	Program       string
	Version       int
	EffectiveFrom time.Time
	Description   string
	Rounding      apd.Rounder
	Payout        Payout
	Lifecycle     Lifecycle

	File   string // the path it was loaded from
	Source []byte // the file's bytes, exactly
	Digest string // "sha256:" + hex SHA-256 of Source

	Constants []Constant
	Qualify   []*Rule     // all must pass
	Rates     []*RateRule // first match wins
	Tests     []TestCase

	readsAffiliate bool // some rule reads an affiliate.* input
}

// ReadsAffiliate reports whether any rule reads the affiliate's month figures (affiliate.*): only
// then does deciding an order need them, and does its decision record them.
func (p *Policy) ReadsAffiliate() bool { return p.readsAffiliate }

// Payout holds the program's payout terms.
type Payout struct {
	Schedule string // "monthly"
	Method   string // "wire_transfer"
	// Minimum per currency; a currency not listed has no minimum.
	Minimum map[string]*apd.Decimal
	// HoldDays is how long a commission stays pending after the order completes.
	HoldDays int
}

// Lifecycle says how an order's later events are decided.
type Lifecycle struct {
	// Terms is TermsFirstQualifying (the default) or TermsInForce.
	Terms string
}

// The lifecycle terms a policy may set (lifecycle: {terms: …}).
const (
	// TermsFirstQualifying: every event of an order after its first qualifying one is decided
	// with the version that decided that event (the terms in force at the sale).
	TermsFirstQualifying = "first_qualifying"
	// TermsInForce: every event is decided with the version in force at its placed_at, as
	// loaded when it is decided.
	TermsInForce = "in_force"
)

// Constant is a named value rules refer to, so a manager edits a list, not an expression.
type Constant struct {
	Name  string
	Type  *cel.Type
	Value ref.Val
	Text  string // as written, for explanations
	Line  int
}

// Rule is a qualification rule: the order qualifies only if every rule's expression is true.
type Rule struct {
	ID     string
	Expr   string
	Reason string // said when the rule fails
	Line   int
	compiled
}

// RateRule is a rate rule: the first whose condition is true sets the rate and/or flat amount.
type RateRule struct {
	ID          string
	When        string
	Description string
	// Rate is a percentage of the commissionable amount (10 means 10%); nil when the rule pays only a flat amount.
	Rate *apd.Decimal
	// Flat is a fixed amount per order, by currency; nil when the rule pays only a rate.
	Flat map[string]*apd.Decimal
	Line int
	compiled
}

// compiled is a rule's planned program and what static analysis learnt about it.
type compiled struct {
	prg cel.Program // with the runtime cost limit
	// fast is the same program without cost tracking, for orders inside the sizes the cost
	// estimate assumed: for them the estimate, which Compile held to RuntimeCostLimit, bounds
	// the actual cost, so the limit cannot be reached and tracking it only costs time.
	fast      cel.Program
	names     []string // schema names the expression reads, in schema order
	constants []string // the policy constants it refers to, sorted
	literals  []string // string literals it mentions, for lint probes
}

// TestCase is an example order with its expected decision, kept in the policy file.
type TestCase struct {
	Name  string
	Line  int
	Order []byte // the order as JSON, numbers as written
	// Affiliate gives the affiliate.* inputs the example is decided with (nil: zero).
	Affiliate *AffiliateGiven
	Expect    Expectation
}

// AffiliateGiven is a test case's affiliate.* inputs: what the pipeline would compute from the
// affiliate's earlier orders of the month.
type AffiliateGiven struct {
	MonthQualifiedOrders int64
	MonthQualifiedSales  *apd.Decimal
}

// Expectation is what a test case expects; nil fields are not checked.
type Expectation struct {
	Qualified   *bool
	FailedRules []string // checked when HasFailed
	HasFailed   bool
	RateRule    *string
	Rate        *string
	Commission  *string
	Error       *string // a substring of the expected rejection
}

// Eval evaluates the rule against an activation. An evaluation error (cost limit, a function error)
// is returned with the rule id; it is never taken as pass or fail.
func (r *Rule) Eval(ctx context.Context, act *Activation) (bool, error) {
	return evalBool(ctx, &r.compiled, act, r.ID)
}

// Names returns the order fields the rule reads, in schema order.
func (r *Rule) Names() []string { return r.names }

// Constants returns the policy constants the rule refers to, sorted.
func (r *Rule) Constants() []string { return r.constants }

// Eval evaluates the rate rule's condition.
func (r *RateRule) Eval(ctx context.Context, act *Activation) (bool, error) {
	return evalBool(ctx, &r.compiled, act, r.ID)
}

// Names returns the order fields the rule reads, in schema order.
func (r *RateRule) Names() []string { return r.names }

// Constants returns the policy constants the rule refers to, sorted.
func (r *RateRule) Constants() []string { return r.constants }

func evalBool(ctx context.Context, c *compiled, act *Activation, id string) (bool, error) {
	// The programs are planned without an interrupt check frequency, so ContextEval would never
	// look at ctx; it would only set up a cancellable context per evaluation (three allocations).
	// The context is checked here instead, once per rule.
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("rule %s: %w", id, err)
	}
	var out ref.Val
	var err error
	if act.withinEstimate() {
		out, _, err = c.fast.Eval(act.frame)
	} else {
		// The cost-limited program sets up its own frame, with a cost tracker.
		out, _, err = c.prg.Eval(act)
	}
	if err != nil {
		return false, fmt.Errorf("rule %s: %w", id, err)
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("rule %s: evaluated to %s, not bool", id, out.Type())
	}
	return bool(b), nil
}

// ResolveName resolves a schema name (order.buyer.country) against vars, for explanations.
func ResolveName(v *Vars, name string) (ref.Val, bool) {
	i, ok := schemaIndex(name)
	if !ok {
		return nil, false
	}
	if schema[i].get == nil {
		l := &itemList{}
		l.reset(v.Items)
		return l, true
	}
	return schema[i].get(v), true
}

// Identity is a version's identity: program, version number and content digest.
func (p *Policy) Identity() string {
	return fmt.Sprintf("%s v%d (%s)", p.Program, p.Version, p.Digest)
}

// Digest returns the content digest of a policy file's bytes.
func Digest(source []byte) string {
	sum := sha256.Sum256(source)
	return "sha256:" + hex.EncodeToString(sum[:])
}

var (
	idPattern      = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	programPattern = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
	currencyCode   = regexp.MustCompile(`^[A-Z]{3}$`)
)

var topLevelKeys = map[string]bool{
	"program": true, "version": true, "effective_from": true, "description": true, "rounding": true,
	"payout": true, "lifecycle": true, "constants": true, "qualify": true, "rates": true, "tests": true,
}

var roundings = []apd.Rounder{apd.RoundHalfUp, apd.RoundHalfEven, apd.RoundHalfDown, apd.RoundDown, apd.RoundUp, apd.RoundCeiling, apd.RoundFloor}

// Compile parses and compiles one policy file. It reports every problem it finds, not just the
// first: the returned Problems (possibly only warnings) name file:line:col for each. The policy is
// nil when any problem is an error.
func Compile(file string, source []byte) (*Policy, Problems) {
	ps := &problems{file: file}
	tree, err := parseSource(source)
	if err != nil {
		var se *syntaxError
		if errors.As(err, &se) {
			ps.atPos(se.Line, se.Column, "", "%s", se.Msg)
		} else {
			ps.atPos(0, 0, "", "%v", err)
		}
		return nil, ps.list
	}
	p := &Policy{File: file, Source: source, Digest: Digest(source)}
	for _, k := range sortedKeys(tree) {
		if !topLevelKeys[k] {
			ps.at(tree[k], "", "unknown key %q (known: program, version, effective_from, description, rounding, payout, lifecycle, constants, qualify, rates, tests)", k)
		}
	}

	p.Program = requiredString(ps, tree, "program", "")
	if p.Program != "" && !programPattern.MatchString(p.Program) {
		ps.at(tree["program"], "", "program %q must be lower-case letters, digits, '_' or '-'", p.Program)
	}
	if v, ok := scalarOf(ps, tree, "version", "", true); ok {
		n, err := strconv.Atoi(v.Value)
		if err != nil || n < 1 {
			ps.at(v, "", "version must be a whole number ≥ 1, got %q", v.Value)
		}
		p.Version = n
	}
	if v, ok := scalarOf(ps, tree, "effective_from", "", true); ok {
		t, err := time.Parse(time.RFC3339, v.Value)
		if err != nil {
			ps.at(v, "", "effective_from must be an RFC 3339 timestamp, got %q", v.Value)
		}
		p.EffectiveFrom = t.UTC()
	}
	if v, ok := scalarOf(ps, tree, "description", "", false); ok {
		p.Description = v.Value
	}
	if v, ok := scalarOf(ps, tree, "rounding", "", true); ok {
		for _, r := range roundings {
			if string(r) == v.Value {
				p.Rounding = r
			}
		}
		if p.Rounding == "" {
			names := make([]string, len(roundings))
			for i, r := range roundings {
				names[i] = string(r)
			}
			ps.at(v, "", "rounding %q is not one of %s", v.Value, strings.Join(names, ", "))
		}
	}
	p.Payout = decodePayout(ps, tree["payout"])
	p.Lifecycle = decodeLifecycle(ps, tree["lifecycle"])

	env := baseEnv()
	p.Constants = decodeConstants(ps, tree["constants"])
	if len(p.Constants) > 0 {
		opts := make([]cel.EnvOption, 0, len(p.Constants))
		for _, c := range p.Constants {
			opts = append(opts, cel.Constant(c.Name, c.Type, c.Value))
		}
		var err error
		if env, err = env.Extend(opts...); err != nil {
			ps.at(tree["constants"], "constants", "%v", err)
			return nil, ps.list
		}
	}

	sizes := sizeEstimator{constants: map[string]uint64{}}
	for _, c := range p.Constants {
		if l, ok := c.Value.(traits.Sizer); ok {
			sizes.constants[c.Name] = uint64(l.Size().(types.Int))
		} else {
			sizes.constants[c.Name] = 1
		}
	}
	seen := map[string]int{}
	checkID := func(v any, section string, idv Scalar) string {
		id := idv.Value
		if !idPattern.MatchString(id) {
			ps.at(idv, section, "rule id %q must be lower-case letters, digits and '_', starting with a letter", id)
		}
		if prev, dup := seen[id]; dup {
			ps.at(idv, id, "rule id %q is used already at line %d", id, prev)
		}
		seen[id] = idv.Line
		return id
	}

	for _, item := range listOf(ps, tree, "qualify") {
		m, ok := mapOf(ps, item, "qualify")
		if !ok {
			continue
		}
		idv, ok := scalarOf(ps, m, "id", "qualify", true)
		if !ok {
			continue
		}
		r := &Rule{ID: checkID(item, "qualify", idv), Line: idv.Line}
		knownKeys(ps, m, r.ID, "id", "expr", "reason")
		if v, ok := scalarOf(ps, m, "reason", r.ID, true); ok {
			r.Reason = v.Value
		}
		if v, ok := scalarOf(ps, m, "expr", r.ID, true); ok {
			r.Expr = v.Value
			r.compiled = compileExpr(ps, env, sizes, source, v, r.ID)
		}
		p.Qualify = append(p.Qualify, r)
	}
	if _, ok := tree["qualify"]; !ok {
		ps.atPos(1, 1, "", "missing key \"qualify\": a list of qualification rules (write [] for none)")
	}

	for _, item := range listOf(ps, tree, "rates") {
		m, ok := mapOf(ps, item, "rates")
		if !ok {
			continue
		}
		idv, ok := scalarOf(ps, m, "id", "rates", true)
		if !ok {
			continue
		}
		r := &RateRule{ID: checkID(item, "rates", idv), Line: idv.Line}
		knownKeys(ps, m, r.ID, "id", "when", "rate", "flat", "description")
		if v, ok := scalarOf(ps, m, "description", r.ID, false); ok {
			r.Description = v.Value
		}
		if v, ok := scalarOf(ps, m, "when", r.ID, true); ok {
			r.When = v.Value
			r.compiled = compileExpr(ps, env, sizes, source, v, r.ID)
		}
		if v, ok := scalarOf(ps, m, "rate", r.ID, false); ok {
			r.Rate = parsePercent(ps, v, r.ID)
		}
		if fv, ok := m["flat"]; ok {
			r.Flat = decodeMoneyByCurrency(ps, fv, r.ID, "flat")
		}
		if _, hasRate := m["rate"]; !hasRate {
			if _, hasFlat := m["flat"]; !hasFlat {
				ps.at(m, r.ID, "a rate rule needs a rate (\"10%%\"), a flat amount by currency, or both")
			}
		}
		p.Rates = append(p.Rates, r)
	}
	if len(p.Rates) == 0 {
		ps.at(tree["rates"], "", "a policy needs at least one rate rule under \"rates\"")
	}

	p.Tests = decodeTests(ps, tree["tests"])
	for _, r := range p.Qualify {
		p.readsAffiliate = p.readsAffiliate || readsAffiliate(r.names)
	}
	for _, r := range p.Rates {
		p.readsAffiliate = p.readsAffiliate || readsAffiliate(r.names)
	}

	ps.list.Sort()
	if ps.list.HasErrors() {
		return nil, ps.list
	}
	return p, ps.list
}

// compileExpr type-checks a rule expression against the order schema and the policy's constants,
// checks that it is boolean and that its estimated cost is bounded, and plans it.
func compileExpr(ps *problems, env *cel.Env, sizes sizeEstimator, source []byte, v Scalar, id string) compiled {
	ast, iss := env.Compile(v.Value)
	if iss.Err() != nil {
		for _, e := range iss.Errors() {
			line, col := exprPosition(source, v, e.Location.Line(), e.Location.Column())
			msg := e.Message
			if strings.Contains(msg, "(commissioner.Decimal, int)") && strings.Contains(msg, "_==_") {
				msg += ": amounts are exact decimals, compare with decimal(0) or decimal(\"12.50\")"
			}
			ps.atPos(line, col, id, "%s", msg)
		}
		return compiled{}
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		ps.at(v, id, "the expression must be a bool, it is %s", ast.OutputType())
		return compiled{}
	}
	est, err := env.EstimateCost(ast, sizes)
	if err != nil {
		ps.at(v, id, "estimating cost: %v", err)
		return compiled{}
	}
	if est.Max > MaxEstimatedCost {
		ps.at(v, id, "estimated cost up to %d exceeds the limit %d: simplify the expression", est.Max, MaxEstimatedCost)
		return compiled{}
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(RuntimeCostLimit))
	if err != nil {
		ps.at(v, id, "planning: %v", err)
		return compiled{}
	}
	fast, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		ps.at(v, id, "planning: %v", err)
		return compiled{}
	}
	names, consts := referencedNames(ast, sizes.constants)
	return compiled{prg: prg, fast: fast, names: names, constants: consts, literals: stringLiterals(ast)}
}

func stringLiterals(ast *cel.Ast) []string {
	var out []string
	celast.PreOrderVisit(ast.NativeRep().Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		if e.Kind() == celast.LiteralKind {
			if s, ok := e.AsLiteral().(types.String); ok {
				out = append(out, string(s))
			}
		}
	}))
	return out
}

// referencedNames lists the schema names an expression reads, in schema order.
// and the policy constants it refers to.
func referencedNames(ast *cel.Ast, constants map[string]uint64) (names, consts []string) {
	refs := map[string]bool{}
	for _, r := range ast.NativeRep().ReferenceMap() {
		if r.Name != "" {
			refs[r.Name] = true
		}
	}
	for _, v := range schema {
		if refs[v.name] {
			names = append(names, v.name)
		}
	}
	for name := range refs {
		if _, ok := constants[name]; ok {
			consts = append(consts, name)
		}
	}
	sort.Strings(consts)
	return names, consts
}

func parsePercent(ps *problems, v Scalar, id string) *apd.Decimal {
	s := strings.TrimSpace(v.Value)
	if !strings.HasSuffix(s, "%") {
		ps.at(v, id, "rate %q must be a percentage such as \"10%%\"", v.Value)
		return nil
	}
	d, _, err := apd.NewFromString(strings.TrimSpace(strings.TrimSuffix(s, "%")))
	if err != nil || d.Form != apd.Finite || d.Negative || d.Cmp(apd.New(100, 0)) > 0 {
		ps.at(v, id, "rate %q must be a percentage from 0%% to 100%%", v.Value)
		return nil
	}
	return d
}

func decodeMoneyByCurrency(ps *problems, v any, id, what string) map[string]*apd.Decimal {
	m, ok := v.(map[string]any)
	if !ok {
		ps.at(v, id, "%s must map currency codes to amounts, e.g. {USD: \"5.00\"}", what)
		return nil
	}
	out := map[string]*apd.Decimal{}
	for _, cur := range sortedKeys(m) {
		sv, ok := m[cur].(Scalar)
		if !currencyCode.MatchString(cur) {
			ps.at(m[cur], id, "%s: %q is not an ISO 4217 currency code", what, cur)
			continue
		}
		if !ok {
			ps.at(m[cur], id, "%s.%s must be a decimal amount", what, cur)
			continue
		}
		d, _, err := apd.NewFromString(sv.Value)
		if err != nil || d.Form != apd.Finite || d.Negative {
			ps.at(sv, id, "%s.%s: %q is not a non-negative decimal amount", what, cur, sv.Value)
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
			ps.at(s, "payout", "schedule %q is not supported (monthly)", s.Value)
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
			ps.at(s, "payout", "hold_days must be a whole number ≥ 0, got %q", s.Value)
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
			ps.at(s, "lifecycle", "terms %q is not one of %s, %s", s.Value, TermsFirstQualifying, TermsInForce)
		}
		out.Terms = s.Value
	}
	return out
}

func readsAffiliate(names []string) bool {
	for _, n := range names {
		if strings.HasPrefix(n, "affiliate.") {
			return true
		}
	}
	return false
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
			ps.at(val, "constants", "constant name %q must be lower-case letters, digits and '_'", name)
			continue
		}
		if _, clash := schemaIndex(name); clash || name == "order" || name == "affiliate" {
			ps.at(val, "constants", "constant name %q clashes with the order schema", name)
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
			ps.at(s, "constants", "%s: %q is not a 64-bit integer", name, s.Value)
			return nil, nil, ""
		}
		return cel.IntType, types.Int(n), s.Value
	case "!!bool":
		b, _ := strconv.ParseBool(s.Value)
		return cel.BoolType, types.Bool(b), s.Value
	case "!!str":
		return cel.StringType, types.String(s.Value), strconv.Quote(s.Value)
	case "!!float":
		ps.at(s, "constants", "%s: write a decimal as {decimal: %q}: rules never use floating point", name, s.Value)
	default:
		ps.at(s, "constants", "%s: %s values are not supported; quote a string, or write {timestamp: …}", name, s.Tag)
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
			ps.at(e, "constants", "%s: a list constant holds strings or whole numbers", name)
			return nil, nil, ""
		}
		switch s.Tag {
		case "!!str":
			strs = append(strs, s.Value)
			texts = append(texts, strconv.Quote(s.Value))
		case "!!int":
			n, err := strconv.ParseInt(s.Value, 10, 64)
			if err != nil {
				ps.at(s, "constants", "%s: %q is not a 64-bit integer", name, s.Value)
				return nil, nil, ""
			}
			ints = append(ints, n)
			texts = append(texts, s.Value)
		default:
			ps.at(s, "constants", "%s: list items must be strings or whole numbers (quote %q)", name, s.Value)
			return nil, nil, ""
		}
	}
	text := "[" + strings.Join(texts, ", ") + "]"
	switch {
	case len(strs) > 0 && len(ints) > 0:
		ps.at(l[0], "constants", "%s: a list mixes strings and numbers", name)
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
		ps.at(m, "constants", "%s: a typed constant is one of {duration: …}, {decimal: …}, {timestamp: …}", name)
		return nil, nil, ""
	}
	s, ok := m[keys[0]].(Scalar)
	if !ok {
		ps.at(m, "constants", "%s: %s takes a single value", name, keys[0])
		return nil, nil, ""
	}
	switch keys[0] {
	case "duration":
		d, err := time.ParseDuration(s.Value)
		if err != nil {
			ps.at(s, "constants", "%s: %q is not a duration such as 720h or 30m", name, s.Value)
			return nil, nil, ""
		}
		return cel.DurationType, types.Duration{Duration: d}, fmt.Sprintf("duration(%q)", s.Value)
	case "decimal":
		d, _, err := apd.NewFromString(s.Value)
		if err != nil || d.Form != apd.Finite {
			ps.at(s, "constants", "%s: %q is not a decimal number", name, s.Value)
			return nil, nil, ""
		}
		return DecimalType, Decimal{D: d}, fmt.Sprintf("decimal(%q)", s.Value)
	case "timestamp":
		t, err := time.Parse(time.RFC3339, s.Value)
		if err != nil {
			ps.at(s, "constants", "%s: %q is not an RFC 3339 timestamp", name, s.Value)
			return nil, nil, ""
		}
		return cel.TimestampType, types.Timestamp{Time: t.UTC()}, fmt.Sprintf("timestamp(%q)", s.Value)
	}
	ps.at(s, "constants", "%s: unknown constant type %q (duration, decimal, timestamp)", name, keys[0])
	return nil, nil, ""
}

func decodeTests(ps *problems, v any) []TestCase {
	if v == nil {
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		ps.at(v, "tests", "tests must be a list of {name, order, expect}")
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
			ps.at(nv, "tests", "test name %q is used twice", tc.Name)
		}
		names[tc.Name] = true
		knownKeys(ps, m, "test "+tc.Name, "name", "order", "affiliate", "expect")
		ov, ok := m["order"]
		if !ok {
			ps.at(m, "test "+tc.Name, "missing key \"order\"")
			continue
		}
		var buf bytes.Buffer
		if err := toJSON(&buf, ov); err != nil {
			var se *syntaxError
			if errors.As(err, &se) {
				ps.atPos(se.Line, se.Column, "test "+tc.Name, "order: %s", se.Msg)
			} else {
				ps.at(ov, "test "+tc.Name, "order: %v", err)
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
			ps.at(m, "test "+tc.Name, "missing key \"expect\"")
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
			ps.at(s, where, "affiliate.month_qualified_orders must be a whole number ≥ 0, got %q", s.Value)
		}
		g.MonthQualifiedOrders = n
	}
	if s, ok := scalarOf(ps, m, "month_qualified_sales", where, false); ok {
		d, _, err := apd.NewFromString(s.Value)
		if err != nil || d.Form != apd.Finite || d.Negative {
			ps.at(s, where, "affiliate.month_qualified_sales must be a decimal amount ≥ 0, got %q", s.Value)
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
			ps.at(s, where, "qualified must be true or false")
		}
		e.Qualified = &b
	}
	if fv, ok := m["failed_rules"]; ok {
		e.HasFailed = true
		e.FailedRules = []string{}
		l, ok := fv.([]any)
		if !ok {
			ps.at(fv, where, "failed_rules must be a list of rule ids")
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
			ps.at(m[k], where, "unknown key %q (known: %s)", k, strings.Join(known, ", "))
		}
	}
}

func scalarOf(ps *problems, m map[string]any, key, where string, required bool) (Scalar, bool) {
	v, ok := m[key]
	if !ok {
		if required {
			ps.at(m, where, "missing key %q", key)
		}
		return Scalar{}, false
	}
	s, ok := v.(Scalar)
	if !ok || s.Tag == "!!null" {
		ps.at(v, where, "%s must be a single value", key)
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
		ps.at(v, key, "%s must be a list", key)
		return nil
	}
	return l
}

func mapOf(ps *problems, v any, where string) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		ps.at(v, where, "expected a mapping of keys")
	}
	return m, ok
}
