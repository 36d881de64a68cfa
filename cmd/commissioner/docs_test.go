package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/spf13/cobra"
)

// The documentation — README.md and docs/*.md — is held to the program here:
//
//   - TestDocsCommands: every command line in a fenced code block that runs this command
//     (`commissioner …`, `$ commissioner …`, `./commissioner …`, `go run ./cmd/commissioner …`,
//     also after a pipe, `&&`, environment assignments or /usr/bin/time) names a command of the
//     real cobra tree (newRootCmd) and only flags that command has;
//   - TestDocsLinks: every relative link between the pages leads to an existing file and, with a
//     #anchor, to an existing heading of it;
//   - TestDocsOutputShapes: where a page shows a command's output that a txtar script checks on
//     the real output, the page's lines have the shape the script asserts (the patterns below are
//     the scripts', named with each);
//   - TestDocsCheckerCatchesBadFlags: the checker itself refuses a flag that does not exist.
//
// (audit.txtar also greps README.md itself for the tour's `audit verify` output.)

// docFiles are the pages, relative to the repository root.
func docFiles(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pages) == 0 {
		t.Fatal("no docs/*.md")
	}
	files := []string{"README.md"}
	for _, p := range pages {
		rel, _ := filepath.Rel(repoRoot, p)
		files = append(files, filepath.ToSlash(rel))
	}
	return files
}

const repoRoot = "../.."

func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// docLine is one line of a page, with where it is.
type docLine struct {
	file string
	line int // 1-based; the first line of a continued command
	text string
}

// fencedLines returns the logical lines inside the fenced code blocks of a page: a line ending
// in a backslash is joined with the next, as the shell would.
func fencedLines(file, text string) []docLine {
	var out []docLine
	in := false
	var cont *docLine
	for i, l := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "```") {
			in = !in
			cont = nil
			continue
		}
		if !in {
			continue
		}
		if cont != nil {
			cont.text += " " + trimmed
		} else {
			out = append(out, docLine{file: file, line: i + 1, text: trimmed})
			cont = &out[len(out)-1]
		}
		if strings.HasSuffix(cont.text, "\\") {
			cont.text = strings.TrimSuffix(cont.text, "\\")
		} else {
			cont = nil
		}
	}
	return out
}

// shellWords splits a line into words and operators as sh would, well enough for the docs:
// quotes group, an unquoted # starts a comment, and |, ||, &&, ; and redirections are operators
// (a redirection's target is dropped). An unbalanced quote takes the rest of the line.
func shellWords(s string) [][]string {
	var segs [][]string
	var words []string
	var cur strings.Builder
	inWord, skipNext := false, false
	flush := func() {
		if inWord {
			if skipNext {
				skipNext = false
			} else {
				words = append(words, cur.String())
			}
		}
		cur.Reset()
		inWord = false
	}
	endSeg := func() {
		flush()
		if len(words) > 0 {
			segs = append(segs, words)
		}
		words = nil
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'' || c == '"':
			inWord = true
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				cur.WriteString(s[i+1:])
				i = len(s)
				continue
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
		case c == ' ' || c == '\t':
			flush()
		case c == '#' && !inWord:
			endSeg()
			return segs
		case c == '|' || c == ';' || (c == '&' && i+1 < len(s) && s[i+1] == '&'):
			if i+1 < len(s) && (s[i+1] == '|' || s[i+1] == '&') {
				i++
			}
			endSeg()
		case c == '>' || c == '<':
			// 2> or &> : the digit or & before belongs to the operator
			if inWord && (cur.String() == "2" || cur.String() == "1" || cur.String() == "&") {
				cur.Reset()
				inWord = false
			}
			flush()
			if i+1 < len(s) && s[i+1] == '>' {
				i++
			}
			skipNext = true
		default:
			inWord = true
			cur.WriteByte(c)
		}
	}
	endSeg()
	return segs
}

var envAssign = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// commissionerArgs returns the arguments of a segment that runs this command, or nil.
func commissionerArgs(words []string) []string {
	for len(words) > 0 && envAssign.MatchString(words[0]) {
		words = words[1:]
	}
	if len(words) > 0 && (words[0] == "/usr/bin/time" || words[0] == "time") {
		words = words[1:]
		for len(words) > 0 && strings.HasPrefix(words[0], "-") {
			words = words[1:]
		}
	}
	switch {
	case len(words) > 1 && (words[0] == "commissioner" || words[0] == "./commissioner"):
		return words[1:]
	case len(words) > 3 && words[0] == "go" && words[1] == "run" && words[2] == "./cmd/commissioner":
		return words[3:]
	}
	return nil
}

// docCommands returns every command line of the pages that runs this command.
func docCommands(lines []docLine) []struct {
	docLine
	args []string
} {
	var out []struct {
		docLine
		args []string
	}
	for _, l := range lines {
		text := strings.TrimPrefix(l.text, "$ ")
		for _, seg := range shellWords(text) {
			if args := commissionerArgs(seg); args != nil {
				out = append(out, struct {
					docLine
					args []string
				}{l, args})
			}
		}
	}
	return out
}

// placeholder is an upper-case stand-in such as FILE, ORDER_ID or N.
var placeholder = regexp.MustCompile(`^[A-Z][A-Z0-9_]*(…|\.\.\.)?$`)

// checkCommandLine checks one documented command line against the real command tree: the
// (sub)command exists, every flag is one it has, a flag's value parses (placeholders aside), and
// the positional arguments are as many as it takes.
func checkCommandLine(args []string) error {
	root := newRootCmd(streams{in: strings.NewReader(""), out: io.Discard, err: io.Discard})
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	if cmd == root {
		return fmt.Errorf("no command named")
	}
	if cmd.HasSubCommands() {
		for _, a := range rest {
			if !strings.HasPrefix(a, "-") {
				return fmt.Errorf("unknown command %q for %q", a, cmd.CommandPath())
			}
		}
	}
	rest = fillPlaceholders(cmd, rest)
	if err := cmd.ParseFlags(rest); err != nil {
		return fmt.Errorf("%s: %w", cmd.CommandPath(), err)
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		return fmt.Errorf("%s: %w", cmd.CommandPath(), err)
	}
	return nil
}

// fillPlaceholders puts the default value in place of a placeholder given to a flag that is not
// a string (--version N, --n N), so that the flag itself is still checked.
func fillPlaceholders(cmd *cobra.Command, args []string) []string {
	out := append([]string(nil), args...)
	fs := cmd.Flags()
	for i := 0; i < len(out); i++ {
		a := out[i]
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, value, hasValue := strings.Cut(a[2:], "=")
		f := fs.Lookup(name)
		if f == nil || f.Value.Type() == "string" || f.Value.Type() == "bool" {
			continue
		}
		if hasValue {
			if placeholder.MatchString(value) {
				out[i] = "--" + name + "=" + f.DefValue
			}
			continue
		}
		if i+1 < len(out) && placeholder.MatchString(out[i+1]) {
			out[i+1] = f.DefValue
		}
	}
	return out
}

func TestDocsCommands(t *testing.T) {
	total := 0
	for _, file := range docFiles(t) {
		cmds := docCommands(fencedLines(file, readDoc(t, file)))
		if len(cmds) == 0 {
			t.Errorf("%s: no command line in a fenced block: each page shows what it describes", file)
		}
		total += len(cmds)
		for _, c := range cmds {
			if err := checkCommandLine(c.args); err != nil {
				t.Errorf("%s:%d: %s\n\t%v", c.file, c.line, c.text, err)
			}
		}
	}
	t.Logf("%d command lines checked", total)
	if total < 40 {
		t.Errorf("only %d command lines found in the docs: is the parser still finding them?", total)
	}
}

// TestDocsCheckerCatchesBadFlags proves the checker would fail a page that names a flag, a
// command or a value that does not exist.
func TestDocsCheckerCatchesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		line string
		ok   bool
	}{
		{"$ commissioner replay --policy /tmp/candidate/v2.yaml --from 2025-10 --changes 5", true},
		{"commissioner sample --n N | ./commissioner eval --version N --trace  # placeholders", true},
		{"go run ./cmd/commissioner demo --exit", true},
		{"commissioner replay --polcy /tmp/candidate/v2.yaml", false},                   // misspelt flag
		{"commissioner publish --store-dsn sqlite:///x.db orders.jsonl", false},         // a flag publish does not take
		{"commissioner sample --n 3 | commissioner eval --verbose", false},              // after a pipe
		{"COMMISSIONER_X=1 /usr/bin/time -v commissioner audit verify --strict", false}, // behind env and time
		{"commissioner audit verfy", false},                                             // no such subcommand
		{"commissioner explian alibaba-4", false},                                       // no such command
		{"commissioner replay --changes many", false},                                   // not a number
		{"commissioner publish a.jsonl b.jsonl", false},                                 // too many arguments
	} {
		cmds := docCommands(fencedLines("t.md", "```sh\n"+tc.line+"\n```\n"))
		if len(cmds) == 0 {
			t.Errorf("%s: no command found", tc.line)
			continue
		}
		var err error
		for _, c := range cmds {
			if e := checkCommandLine(c.args); e != nil && err == nil {
				err = e
			}
		}
		if (err == nil) != tc.ok {
			t.Errorf("%s: ok=%v, want %v (err %v)", tc.line, err == nil, tc.ok, err)
		}
	}
}

// slug is GitHub's anchor for a heading: lower case; letters, digits, marks, - and _ kept;
// spaces become -; everything else (punctuation, backticks) dropped.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.IsMark(r) || r == '_' || r == '-':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

var headingRe = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)

// anchors returns the anchors of a page's headings (outside code blocks), with GitHub's -1, -2
// for repeats.
func anchors(text string) map[string]bool {
	seen := map[string]int{}
	out := map[string]bool{}
	in := false
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			in = !in
			continue
		}
		m := headingRe.FindStringSubmatch(l)
		if in || m == nil {
			continue
		}
		s := slug(m[1])
		if n := seen[s]; n > 0 {
			out[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

var (
	fenceBlockRe = regexp.MustCompile("(?ms)^\\s*```.*?^\\s*```[^\\n]*$")
	codeSpanRe   = regexp.MustCompile("`[^`]*`")
	linkRe       = regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)
)

func TestDocsLinks(t *testing.T) {
	checked := 0
	for _, file := range docFiles(t) {
		text := readDoc(t, file)
		prose := codeSpanRe.ReplaceAllString(fenceBlockRe.ReplaceAllString(text, ""), "``")
		for _, m := range linkRe.FindAllStringSubmatch(prose, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			path, anchor, _ := strings.Cut(target, "#")
			dest := file
			if path != "" {
				dest = filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(file), path)))
			}
			st, err := os.Stat(filepath.Join(repoRoot, dest))
			if err != nil {
				t.Errorf("%s: link %s: %s does not exist", file, target, dest)
				continue
			}
			if anchor == "" {
				continue
			}
			if st.IsDir() || !strings.HasSuffix(dest, ".md") {
				t.Errorf("%s: link %s: an anchor into %s, which is not a page", file, target, dest)
				continue
			}
			if !anchors(readDoc(t, dest))[anchor] {
				t.Errorf("%s: link %s: %s has no heading with the anchor #%s", file, target, dest, anchor)
			}
		}
	}
	t.Logf("%d relative links checked", checked)
	if checked < 20 {
		t.Errorf("only %d relative links checked: is the parser still finding them?", checked)
	}
}

// TestDocsOutputShapes holds the outputs the pages show to the shapes the txtar scripts assert
// of the real commands' output (each pattern is the script's, with the script's own counts —
// it runs fewer orders than the pages' 5 000 — made general).
func TestDocsOutputShapes(t *testing.T) {
	shapes := []struct {
		file, script string
		patterns     []string
	}{
		{"README.md", "demo.txtar", []string{
			`^published [0-9]+ sample orders: [0-9]+ accepted, 0 already published before$`,
			`^all decided in [0-9.]+(ms|s)$`,
			`^orders decided:   [0-9]+ \([0-9]+ qualified, [0-9]+ not\)$`,
			`^dead letters:     [0-9]+ \(malformed or undecidable events, with their reasons in the store\)$`,
			`^stored now: [0-9]+ decisions, [0-9]+ dead letters$`,
			`^commission by currency:$`,
			`^  USD [0-9]+\.[0-9]{2}$`,
			`^decisions by rate rule:$`,
			`^  selected_new +[0-9]+$`,
			`^disqualified by rule \(an order can fail several\):$`,
			`^  click_in_window +[0-9]+$`,
		}},
		{"README.md", "audit.txtar", auditVerifyShapes},
		{"docs/auditor.md", "audit.txtar", auditVerifyShapes},
		{"README.md", "audit.txtar", []string{
			`^order alibaba-4: 1 decision, in stream order; current: decision [0-9]+$`,
			`^  policy          version 1, digest sha256:[0-9a-f]{64}$`,
			`^  effective from  2025-01-01T00:00:00Z `,
			`^  check           reproduced: `,
		}},
		{"docs/auditor.md", "audit.txtar", []string{
			`^order alibaba-4: 1 decision, in stream order; current: decision [0-9]+$`,
			`^  policy          version 1, digest sha256:[0-9a-f]{64}$`,
			`^  effective from  2025-01-01T00:00:00Z `,
			`^  check           reproduced: `,
			`^  chain           partition [0-9]+ batch [0-9]+ leaf [0-9]+, leaf hash [0-9a-f]{64}$`,
			`^  inclusion       verified: `,
			`^  qualification: every rule must pass$`,
			`^    completed                pass$`,
			`^      read   order.status = "completed"$`,
			`^  rates: the first rule that matches sets the rate$`,
		}},
		{"README.md", "replay.txtar", []string{
			`^Newly qualified +0$`,
			`^Newly disqualified +0$`,
			`^Commission changed +[1-9][0-9]*$`,
			`^  USD +[0-9]+ +[1-9][0-9]* +[0-9]+\.[0-9]{2} +[0-9]+\.[0-9]{2} +-[0-9]+\.[0-9]{2}$`,
			`^  dry run: nothing was written to decisions$`,
		}},
		{"docs/program-manager.md", "replay.txtar", []string{
			`^  candidate  alibaba v2 sha256:[0-9a-f]{64}, .*v2.yaml, applied to every order \(effective_from 2025-11-01T00:00:00Z not applied\): [0-9]+ orders$`,
			`^  recorded   alibaba v1 sha256:[0-9a-f]{64}: [0-9]+ orders$`,
			`^  orders     placed in \[2025-10-01T00:00:00Z, 2025-11-01T00:00:00Z\), program alibaba, the latest event of each order, read from the store$`,
			`^Newly qualified +0$`,
			`^Newly disqualified +0$`,
			`^Commission changed +[1-9][0-9]*$`,
			`^  USD +[0-9]+ +[1-9][0-9]* +[0-9]+\.[0-9]{2} +[0-9]+\.[0-9]{2} +-[0-9]+\.[0-9]{2}$`,
			`^  selected_returning +selected_returning +USD `,
			`^  returning +USD +[0-9]+ +[1-9]`,
			`^  new +USD +[0-9]+ +0 `,
			`^Per-order changes \(the first [0-9]+ of [0-9]+ by placed_at; --changes N or --format csv for more\)$`,
			` v1 selected_returning 6% +v2 selected_returning 5% .* rate selected_returning: 6% → 5%$`,
			`^  dry run: nothing was written to decisions$`,
			`Replayed with their recorded version +[0-9]+ +drift: 0`,
		}},
		{"docs/program-manager.md", "eval.txtar", []string{
			`^\{"order_id":"o-1","program":"alibaba","policy_version":1,"policy_digest":"sha256:[^"]+","qualified":true,"failed_rules":\[\],"rate_rule":"selected_new","rate":"10","commission":"294.10","currency":"USD"\}$`,
			`^\{"line":2,"order_id":"o-9","error":"placed_at: required; currency: \\"XXX\\" is not an ISO 4217 currency code","errors":\[\{"field":"placed_at","message":"required"\},\{"field":"currency","message":"\\"XXX\\" is not an ISO 4217 currency code"\}\]\}$`,
		}},
		{"README.md", "payouts.txtar", []string{
			`^payouts 2025-11: entries approved before 2025-12-01T00:00:00Z and not paid yet: [1-9][0-9]* statement\(s\)$`,
			`not closed by this run \(preview; --close pays\)`,
			`^PROGRAM +AFFILIATE +CURRENCY +LINES +ACCRUALS +ADJUSTMENTS +REVERSALS +TOTAL +PAYOUT`,
			`^alibaba +aff-0000 +USD +[1-9][0-9]* +[0-9]+\.[0-9]{2} +0\.00 +0\.00 +[0-9]+\.[0-9]{2} +wire_transfer$`,
			`^alibaba +aff-0001 +[A-Z]{3} +[1-9][0-9]* .* held: no payee details$`,
			`^total USD: payable [0-9]+\.[0-9]{2}, [0-9]+\.[0-9]{2} carried forward$`,
			`^held: [1-9][0-9]* statement\(s\) of affiliates without payee details, not paid, carried forward`,
			`^  alibaba aff-0001 [A-Z]{3} [0-9.]+$`,
		}},
	}
	for _, s := range shapes {
		text := readDoc(t, s.file)
		for _, p := range s.patterns {
			if !regexp.MustCompile("(?m)" + p).MatchString(text) {
				t.Errorf("%s shows no line like %s, which %s asserts of the real output", s.file, p, s.script)
			}
		}
	}

	// The tour's audit verify output is the auditor's page's, word for word.
	readme, auditor := readDoc(t, "README.md"), readDoc(t, "docs/auditor.md")
	block := regexp.MustCompile("(?s)```\n\\$ \\./commissioner audit verify\n(audit verify: sqlite.*?)```").FindStringSubmatch(readme)
	if block == nil {
		t.Fatal("README.md: the tour shows no `$ ./commissioner audit verify` output")
	}
	if !strings.Contains(auditor, "$ commissioner audit verify\n"+block[1]) {
		t.Errorf("README.md's audit verify output differs from docs/auditor.md's:\n%s", block[1])
	}
}

// auditVerifyShapes are audit.txtar's patterns for a clean `audit verify`.
var auditVerifyShapes = []string{
	`^audit verify: sqlite `,
	`^policy versions: 1 checked; every stored source has the digest recorded when it was first used$`,
	`^decisions: [0-9]+ of [0-9]+ \([0-9]+ orders\) re-run with their recorded policy versions reproduce exactly, leaf hash, ledger entries and order state included$`,
	`^partition [0-7]: [0-9]+ batches, [0-9]+ leaves, head [0-9]+ [0-9a-f]{64}$`,
	`^chains: in every partition each batch links to the one before, its leaves hash to its root, nothing beyond the head$`,
	`^OK: [0-9]+ decisions verified in `,
	`so your run prints its own head$`,
}
