// Package rules owns the policy files: a program's commission terms, one YAML file per version,
// with CEL expressions for its qualification and rate rules.
//
// It parses a policy file keeping every value's position (source.go, decode.go), decodes its
// in-file example orders (tests.go), and compiles its expressions (compile.go) against the order
// schema rules see — the order, its buyer and items, the affiliate's month figures — and the
// policy's constants (schema.go), bounding each rule's estimated cost (cost.go). Compile reports
// every problem at once, each a Problem with file:line:col and a Code; a compiled Policy is
// immutable and safe for concurrent use. A Set holds the loaded versions and chooses the one in
// force. Lint and LintLayout check what compiles but cannot be meant: a qualified order no rate
// rule matches, an unreachable or overlapping rule, a file not where its content says it belongs.
//
// What rules must not do: no I/O beyond reading policy files, no wall clock (an order's
// times are given, never read from the machine), no knowledge of how orders are stored or
// transported. It imports nothing of engine or adapters; they import it.
package rules
