package rules

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Sentinel errors callers branch on.
var (
	// ErrUnknownProgram: no policy of that program is loaded.
	ErrUnknownProgram = errors.New("unknown program")
	// ErrNoPolicyInForce: the program has no version whose effective_from is at or before the order's time.
	ErrNoPolicyInForce = errors.New("no policy version in force")
	// ErrUnknownVersion: the program has no version with that number.
	ErrUnknownVersion = errors.New("unknown policy version")
)

// Severity says whether a problem fails a check.
type Severity int

const (
	SeverityError Severity = iota
	SeverityWarning
)

// Problem is one thing wrong with a policy file, at a position: "file:line:col: rule id: message".
// Code says what kind of problem it is, for programs; Message says it for people.
type Problem struct {
	File     string
	Line     int
	Column   int
	Rule     string // the rule id or section the problem is in; may be empty
	Code     string // one of the Code… constants: what kind of problem; never empty
	Message  string
	Severity Severity
}

// The codes a Problem carries: a closed set, one per kind of problem, stable across releases so
// that programs branch on them rather than on a message's wording (which may change). A new kind
// of problem gets a new code here; a code is never reused for another kind.
const (
	// CodeYAML: the file is not a policy document that can be read: a YAML syntax error, an
	// empty file, a document that is not a mapping, a key written twice, an alias that expands too
	// far or into itself, a merge (<<) of something other than a mapping.
	CodeYAML = "yaml"
	// CodeUnknownKey: a mapping has a key the policy format does not know (often a misspelling).
	CodeUnknownKey = "unknown_key"
	// CodeMissing: something required is absent: a required key (program, qualify, a rule's id or
	// expr, a test's order…), a rate rule's terms (a rate, a flat amount or both), any rate rule.
	CodeMissing = "missing"
	// CodeType: a value has the wrong YAML shape: a mapping or list where one value belongs, a
	// single value where a list or a mapping belongs.
	CodeType = "type"
	// CodeInvalid: a value of the right shape that is not allowed: a malformed name or rule id, a
	// version, timestamp, rounding, rate, currency, amount, duration or constant that does not
	// parse or is out of range, a test order that is not JSON, a stage other than "shadow", a
	// sample outside (0, 1] or on a version that is not a shadow.
	CodeInvalid = "invalid"
	// CodeDuplicate: what must be unique is used twice: a rule id in a policy, a test name in a
	// policy, a program's version number across files.
	CodeDuplicate = "duplicate"
	// CodeCELSyntax: a rule's expression does not parse as CEL.
	CodeCELSyntax = "cel_syntax"
	// CodeCELType: a rule's expression parses but does not type-check against the order schema
	// and the policy's constants (an undeclared name, no matching overload), or is not a bool.
	CodeCELType = "cel_type"
	// CodeCEL: CEL refused something else: the policy's constants as declarations, or planning a
	// checked expression. Not expected of a policy that type-checks; worth reporting as a bug.
	CodeCEL = "cel"
	// CodeCost: a rule's estimated cost cannot be bounded or exceeds MaxEstimatedCost.
	CodeCost = "cost"
	// CodeNoRateMatch (lint, an error): a qualified order matches no rate rule.
	CodeNoRateMatch = "no_rate_match"
	// CodeUnreachable (lint, an error): a rate rule is never the first match.
	CodeUnreachable = "unreachable"
	// CodeOverlap (lint, a warning): two rate rules with different terms match one order; the
	// earlier wins.
	CodeOverlap = "overlap"
	// CodeLintSkipped (lint, a warning): no order passing qualification could be built from the
	// values the policy names, so rate rule coverage was not checked.
	CodeLintSkipped = "lint_skipped"
	// CodeLayout (a warning): a file is not where its content says it belongs (its name, its
	// directory), has no tests, or looks like a version but is not loaded.
	CodeLayout = "layout"
)

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
		if p.Column > 0 {
			fmt.Fprintf(&b, ":%d", p.Column)
		}
	}
	b.WriteString(": ")
	if p.Severity == SeverityWarning {
		b.WriteString("warning: ")
	}
	if p.Rule != "" {
		fmt.Fprintf(&b, "%s: ", p.Rule)
	}
	b.WriteString(p.Message)
	return b.String()
}

// Problems is every problem found in a policy set, in file and line order. As an error it lists
// them one a line; it is returned only when at least one is an error (not just a warning).
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// HasErrors reports whether any problem is an error.
func (ps Problems) HasErrors() bool {
	for _, p := range ps {
		if p.Severity == SeverityError {
			return true
		}
	}
	return false
}

// Sort orders problems by file, line and column.
func (ps Problems) Sort() {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
}

// problems collects problems for one file.
type problems struct {
	file string
	list Problems
}

func (p *problems) at(v any, code, rule, format string, args ...any) {
	line, col := position(v)
	p.atPos(line, col, code, rule, format, args...)
}

func (p *problems) atPos(line, col int, code, rule, format string, args ...any) {
	p.list = append(p.list, Problem{File: p.file, Line: line, Column: col, Rule: rule, Code: code, Message: fmt.Sprintf(format, args...)})
}

func (p *problems) warnAt(line, col int, code, rule, format string, args ...any) {
	p.list = append(p.list, Problem{File: p.file, Line: line, Column: col, Rule: rule, Code: code, Message: fmt.Sprintf(format, args...), Severity: SeverityWarning})
}
