package rules

import (
	"sort"
	"strings"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/traits"
)

// Compile parses and compiles one policy file. It reports every problem it finds, not just the
// first: the returned Problems (possibly only warnings) name file:line:col for each. The policy is
// nil when any problem is an error.
//
// The steps run in a fixed order: the document, its header (program, version, terms), the
// constants and the CEL environment they extend, the qualification and rate rules (each
// expression compiled as it is read), the tests. Problems are then sorted by position; among
// problems at one position, that order is kept.
func Compile(file string, source []byte) (*Policy, Problems) {
	ps := &problems{file: file}
	tree, ok := parseTree(ps, source)
	if !ok {
		return nil, ps.list
	}
	p := &Policy{File: file, Source: source, Digest: Digest(source)}
	decodeHeader(ps, tree, p)
	p.Constants = decodeConstants(ps, tree["constants"])
	exprs, ok := newExprCompiler(ps, tree["constants"], p.Constants, source)
	if !ok {
		return nil, ps.list
	}
	ids := &ruleIDs{ps: ps, seen: map[string]int{}}
	p.Qualify = decodeQualify(ps, tree, ids, exprs.compile)
	p.Rates = decodeRates(ps, tree, ids, exprs.compile)
	p.Tests = decodeTests(ps, tree["tests"])
	p.readsAffiliate = policyReadsAffiliate(p)

	ps.list.Sort()
	if ps.list.HasErrors() {
		return nil, ps.list
	}
	return p, ps.list
}

// exprCompiler compiles one policy's rule expressions: in the CEL environment extended with the
// policy's constants, with the constants' sizes for the cost estimate.
type exprCompiler struct {
	ps     *problems
	env    *cel.Env
	sizes  sizeEstimator
	source []byte // the file, for positions inside an expression
}

// newExprCompiler extends the base environment with the policy's constants; it reports (at the
// constants section, constantsAt) an environment CEL refuses, and then returns false.
func newExprCompiler(ps *problems, constantsAt any, constants []Constant, source []byte) (*exprCompiler, bool) {
	env := baseEnv()
	if len(constants) > 0 {
		opts := make([]cel.EnvOption, 0, len(constants))
		for _, c := range constants {
			opts = append(opts, cel.Constant(c.Name, c.Type, c.Value))
		}
		var err error
		if env, err = env.Extend(opts...); err != nil {
			ps.at(constantsAt, CodeCEL, "constants", "%v", err)
			return nil, false
		}
	}
	return &exprCompiler{ps: ps, env: env, sizes: constantSizes(constants), source: source}, true
}

// constantSizes gives the cost estimator each constant's size as written: a list's length, 1 for
// any other value.
func constantSizes(constants []Constant) sizeEstimator {
	sizes := sizeEstimator{constants: map[string]uint64{}}
	for _, c := range constants {
		if l, ok := c.Value.(traits.Sizer); ok {
			sizes.constants[c.Name] = uint64(l.Size().(types.Int))
		} else {
			sizes.constants[c.Name] = 1
		}
	}
	return sizes
}

// policyReadsAffiliate reports whether any of p's rules reads an affiliate.* input.
func policyReadsAffiliate(p *Policy) bool {
	reads := false
	for _, r := range p.Qualify {
		reads = reads || readsAffiliate(r.names)
	}
	for _, r := range p.Rates {
		reads = reads || readsAffiliate(r.names)
	}
	return reads
}

// compile type-checks a rule expression (v, as written in the file) against the order schema and
// the policy's constants, checks that it is boolean and that its estimated cost is bounded, and
// plans it. It reports what is wrong under rule id and then returns an empty compiled.
func (c *exprCompiler) compile(v Scalar, id string) compiled {
	// Parse, then Check: what env.Compile does, in two steps so that each failure has its code.
	parsed, iss := c.env.Parse(v.Value)
	if iss.Err() != nil {
		c.reportIssues(v, id, CodeCELSyntax, iss)
		return compiled{}
	}
	ast, iss := c.env.Check(parsed)
	if iss.Err() != nil {
		c.reportIssues(v, id, CodeCELType, iss)
		return compiled{}
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		c.ps.at(v, CodeCELType, id, "the expression must be a bool, it is %s", ast.OutputType())
		return compiled{}
	}
	est, err := c.env.EstimateCost(ast, c.sizes)
	if err != nil {
		c.ps.at(v, CodeCost, id, "estimating cost: %v", err)
		return compiled{}
	}
	if est.Max > MaxEstimatedCost {
		c.ps.at(v, CodeCost, id, "estimated cost up to %d exceeds the limit %d: simplify the expression", est.Max, MaxEstimatedCost)
		return compiled{}
	}
	prg, err := c.env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(RuntimeCostLimit))
	if err != nil {
		c.ps.at(v, CodeCEL, id, "planning: %v", err)
		return compiled{}
	}
	fast, err := c.env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		c.ps.at(v, CodeCEL, id, "planning: %v", err)
		return compiled{}
	}
	names, consts := referencedNames(ast, c.sizes.constants)
	return compiled{prg: prg, fast: fast, names: names, constants: consts, literals: stringLiterals(ast)}
}

// reportIssues reports CEL's errors about an expression (v, as written) under rule id, each at
// its position in the file.
func (c *exprCompiler) reportIssues(v Scalar, id, code string, iss *cel.Issues) {
	for _, e := range iss.Errors() {
		line, col := exprPosition(c.source, v, e.Location.Line(), e.Location.Column())
		msg := e.Message
		if strings.Contains(msg, "(commissioner.Decimal, int)") && strings.Contains(msg, "_==_") {
			msg += ": amounts are exact decimals, compare with decimal(0) or decimal(\"12.50\")"
		}
		c.ps.atPos(line, col, code, id, "%s", msg)
	}
}

// stringLiterals lists the string literals an expression mentions, for lint's probe values.
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

// referencedNames lists the schema names an expression reads, in schema order, and the policy
// constants it refers to, sorted.
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

func readsAffiliate(names []string) bool {
	for _, n := range names {
		if strings.HasPrefix(n, "affiliate.") {
			return true
		}
	}
	return false
}
