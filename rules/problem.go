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
type Problem struct {
	File     string
	Line     int
	Column   int
	Rule     string // the rule id or section the problem is in; may be empty
	Message  string
	Severity Severity
}

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

func (p *problems) at(v any, rule, format string, args ...any) {
	line, col := position(v)
	p.list = append(p.list, Problem{File: p.file, Line: line, Column: col, Rule: rule, Message: fmt.Sprintf(format, args...)})
}

func (p *problems) atPos(line, col int, rule, format string, args ...any) {
	p.list = append(p.list, Problem{File: p.file, Line: line, Column: col, Rule: rule, Message: fmt.Sprintf(format, args...)})
}

func (p *problems) warnAt(line, col int, rule, format string, args ...any) {
	p.list = append(p.list, Problem{File: p.file, Line: line, Column: col, Rule: rule, Message: fmt.Sprintf(format, args...), Severity: SeverityWarning})
}
