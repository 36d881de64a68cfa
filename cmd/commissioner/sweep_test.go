package main

// replay --sweep and --budget on a store of decided sample orders (seeded as the pipeline
// stores them, without NATS). Each point of a sweep is held to a separate replay of the file a
// program manager would write by hand for it: the same digest and, digit for digit, the same
// summary.

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
)

// sweepStore is a data directory holding a SQLite store of n decided sample orders placed in
// October 2025, and the configuration that reads it.
func sweepStore(t *testing.T, n int) (Config, string) {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{DSN: "sqlite://" + filepath.Join(dir, "commissioner.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := seedDecided(ctx, st, repoPolicies(t), n, 7, "2025-10", 0); err != nil {
		st.Close()
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig()
	cfg.DataDir = dir
	if err := cfg.complete(); err != nil {
		t.Fatal(err)
	}
	return cfg, dir
}

// sweepReport runs replay --sweep and decodes its JSON document; it returns the exit error too.
func sweepReport(t *testing.T, cfg Config, p replayParams, sweeps, budgets []string) (httpapi.SweepDocument, string, error) {
	t.Helper()
	p.Format, p.Source, p.Changes, p.Workers = "json", "store", -1, runtime.GOMAXPROCS(0)
	if err := p.parseSweep(sweeps, budgets); err != nil {
		t.Fatal(err)
	}
	if err := p.validate(); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := runSweep(ctx, cfg, p, &out, &errOut)
	var doc httpapi.SweepDocument
	if jerr := json.Unmarshal(out.Bytes(), &doc); jerr != nil {
		t.Fatalf("the sweep's JSON does not decode: %v\n%s\n%s", jerr, out.String(), errOut.String())
	}
	return doc, errOut.String(), err
}

const otherNewRate9 = "when: '!(order.buyer.country in selected_markets) && order.buyer.new'\n    rate: \"9%\""

// TestSweepPointsEqualSeparateReplays: every point of a 3 × 2 grid is the candidate file edited
// by hand for it — the same digest — and its summary is, digit for digit, what `replay --format
// json` of that file says.
func TestSweepPointsEqualSeparateReplays(t *testing.T) {
	cfg, _ := sweepStore(t, 1200)
	base := writeCandidate(t, t.TempDir(), "5%")
	oct, nov := time.Date(2025, 10, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC)
	doc, errOut, err := sweepReport(t, cfg, replayParams{Policy: base, From: oct, To: nov},
		[]string{"selected_returning.rate=4%..6%/1%", "other_new.rate=8.5%,9%"}, []string{"USD:-100"})
	if err != nil {
		t.Fatalf("sweep: %v\n%s", err, errOut)
	}
	if len(doc.Points) != 6 || len(doc.Sweep) != 2 || doc.Candidate.Source != base {
		t.Fatalf("%d points, %d ranges, candidate %q; want 6, 2, %s", len(doc.Points), len(doc.Sweep), doc.Candidate.Source, base)
	}
	if !strings.Contains(errOut, "swept 6 points over 1200 events (") {
		t.Errorf("standard error does not say what was swept:\n%s", errOut)
	}
	i := 0
	for _, r1 := range []string{"4%", "5%", "6%"} {
		for _, r2 := range []string{"8.5%", "9%"} {
			pt := doc.Points[i]
			i++
			if want := map[string]string{"selected_returning.rate": r1, "other_new.rate": r2}; !equalMaps(pt.Params, want) {
				t.Fatalf("point %d: params %v, want %v (the first range varies slowest)", pt.Point, pt.Params, want)
			}
			// the file a program manager would write for this point
			file := candidateFile(t, t.TempDir(), "v2.yaml", 2, "2025-11-01T00:00:00Z",
				returningRate6, strings.Replace(returningRate6, `"6%"`, `"`+r1+`"`, 1),
				otherNewRate9, strings.Replace(otherNewRate9, `"9%"`, `"`+r2+`"`, 1))
			one, _, err := replayReport(t, cfg, replayParams{Policy: file, From: oct, To: nov})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := pt.Candidate.Digest, one.Candidate.Versions[0].Digest; got != want {
				t.Errorf("point %d (%v): digest %s, the hand-written file's %s", pt.Point, pt.Params, got, want)
			}
			got, _ := json.MarshalIndent(pt.Summary, "", " ")
			want, _ := json.MarshalIndent(one.Summary, "", " ")
			if !bytes.Equal(got, want) {
				t.Errorf("point %d (%v): the sweep's summary is not the replay's:\n got %s\nwant %s", pt.Point, pt.Params, got, want)
			}
			if pt.Summary.Evaluated != 1200 || (r1 != "6%" || r2 != "9%") && pt.Summary.CommissionChanged == 0 {
				t.Errorf("point %d (%v): evaluated %d, changed %d; want 1200 and some changed", pt.Point, pt.Params, pt.Summary.Evaluated, pt.Summary.CommissionChanged)
			}
		}
	}
	// the budget: of the points that save at least 100 USD, the one that saves the least
	if len(doc.Budgets) != 1 {
		t.Fatalf("budgets %+v, want one", doc.Budgets)
	}
	b := doc.Budgets[0]
	var best *httpapi.SweepPointDoc
	keeping := 0
	for k := range doc.Points {
		d := usdDifference(t, &doc.Points[k])
		if d.Cmp(decimalOf(t, "-100")) > 0 {
			continue
		}
		keeping++
		if best == nil || d.Cmp(usdDifference(t, best)) > 0 {
			best = &doc.Points[k]
		}
	}
	if best == nil || b.Point != best.Point || !b.Keeps || b.Keeping != keeping || b.Difference != httpapi.SignedDecimal(usdDifference(t, best)) {
		t.Errorf("budget %+v; want point %v, keeping %d", b, best, keeping)
	}
	for _, pt := range doc.Points {
		if pt.Keeps["USD"] != (usdDifference(t, &pt).Cmp(decimalOf(t, "-100")) <= 0) {
			t.Errorf("point %d: keeps_budget %v, difference %s", pt.Point, pt.Keeps, usdDifference(t, &pt).Text('f'))
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func usdDifference(t *testing.T, pt *httpapi.SweepPointDoc) *apd.Decimal {
	t.Helper()
	for _, g := range pt.Summary.Totals {
		if g.Currency == "USD" {
			return decimalOf(t, g.Diff)
		}
	}
	t.Fatalf("point %d has no USD total", pt.Point)
	return nil
}

// runArgs runs the command line in-process and returns its exit status and outputs.
func runArgs(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := run(ctx, args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestReplayBudgetExitStatus: a candidate that does not keep to a budget exits with status 4
// after its report, saying why; one that keeps to it exits 0; so does a sweep with a point that
// keeps to it, and one with none exits 4.
func TestReplayBudgetExitStatus(t *testing.T) {
	_, dir := sweepStore(t, 600)
	cand := writeCandidate(t, t.TempDir(), "5%") // a cut: USD difference < 0
	common := []string{"replay", "--data-dir", dir, "--policy", cand, "--from", "2025-10", "--to", "2025-11"}
	for _, c := range []struct {
		name   string
		args   []string
		code   int
		stderr []string // patterns
		stdout string
	}{
		{"a saving reached", []string{"--changes", "0", "--budget", "USD:-1"}, 0,
			[]string{`(?m)^budget USD:-1 \(save at least 1 USD\): kept: the USD difference is -[0-9]+\.[0-9]{2}$`}, `(?m)^Commission by currency$`},
		{"a saving not reached", []string{"--changes", "0", "--budget", "USD:-99999999", "--budget", "EUR:0"}, exitBudget,
			[]string{`(?m)^budget USD:-99999999 \(save at least 99999999 USD\): not kept: the USD difference is -[0-9]+\.[0-9]{2}, [0-9]+\.[0-9]{2} short$`,
				`(?m)^budget EUR:0 \(cost nothing more in EUR\): kept: the EUR difference is -[0-9]+\.[0-9]{2}$`}, `(?m)^Commission by currency$`},
		{"a currency with no orders", []string{"--format", "json", "--budget", "CHF:-1"}, exitBudget,
			[]string{`(?m)^budget CHF:-1 \(save at least 1 CHF\): not kept: the CHF difference is 0\.00, 1\.00 short \(no CHF orders were replayed\)$`}, `"summary"`},
		{"a cost ceiling kept", []string{"--format", "csv", "--budget", "USD:0"}, 0, []string{`(?m)^budget USD:0 .*: kept`}, `(?m)^order_id,`},
		{"a sweep with a point that keeps", []string{"--sweep", "selected_returning.rate=4%..7%/1%", "--budget", "USD:-1"}, 0, nil,
			`(?m)^  USD:-1 \(save at least 1 USD\): crossed at point 2 \(selected_returning.rate=5%\), difference -[0-9.]+; 2 of 4 points keep to it$`},
		{"a sweep with none", []string{"--sweep", "selected_returning.rate=6%..7%/1%", "--budget", "USD:-1", "--format", "json"}, exitBudget,
			[]string{`(?m)^budget USD:-1 \(save at least 1 USD\): no point keeps to it; the closest is point 1 \(selected_returning.rate=6%\), difference 0\.00, 1\.00 short$`,
				`(?m)^budget USD:-1: no point of the sweep keeps to it \(save at least 1 USD\)$`}, `"points_keeping_budget": 0`},
		{"bad syntax", []string{"--sweep", "selected_returning.rate=4%-7%", "--budget", "USD=-5000"}, 2,
			[]string{`--sweep "selected_returning.rate=4%-7%": "4%-7%" is not a percentage such as 5% or 5.5%`,
				`--budget "USD=-5000": want CUR:AMOUNT, e.g. USD:-5000`}, ``},
		{"two budgets in one currency", []string{"--budget", "USD:-1", "--budget", "USD:-2"}, 2,
			[]string{`--budget USD:-2: USD has a budget already \(--budget USD:-1\): give one per currency`}, ``},
		{"options of one candidate", []string{"--sweep", "selected_returning.rate=5%", "--record", "--changes", "3"}, 2,
			[]string{`--record stores one candidate's run`, `--changes lists one candidate's changed orders`}, ``},
		{"an unknown rule", []string{"--sweep", "returning.rate=5%"}, 2,
			[]string{`--sweep returning.rate=5%: .*v2.yaml: no rate rule "returning" \(the rate rules: selected_new, selected_returning, other_new, other_returning\)`}, ``},
		{"too many points", []string{"--sweep", "selected_returning.rate=1%..8%/1%", "--sweep", "other_new.rate=1%..9%/1%"}, 2,
			[]string{`the sweep has 8 × 9 = 72 points; at most 64 in one sweep`}, ``},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := runArgs(t, append(append([]string{}, common...), c.args...)...)
			if code != c.code {
				t.Errorf("exit status %d, want %d\n%s", code, c.code, errOut)
			}
			for _, p := range c.stderr {
				if !regexp.MustCompile(p).MatchString(errOut) {
					t.Errorf("standard error does not match %s:\n%s", p, errOut)
				}
			}
			if c.stdout != "" && !regexp.MustCompile(c.stdout).MatchString(out) {
				t.Errorf("standard output does not match %s:\n%s", c.stdout, out)
			}
		})
	}
	// a directory is no one policy to vary
	code, _, errOut := runArgs(t, "replay", "--data-dir", dir, "--policy", repoPolicies(t), "--sweep", "selected_returning.rate=5%")
	if code != 2 || !strings.Contains(errOut, "is a directory; give one of its files (--policy DIR/vN.yaml) or --version N") {
		t.Errorf("a directory: exit %d, %s", code, errOut)
	}
	// a stored version can be varied like a file
	code, out, errOut := runArgs(t, "replay", "--data-dir", dir, "--version", "1", "--sweep", "selected_returning.rate=5%,6%")
	if code != 0 || !strings.Contains(out, "Sweep of stored alibaba v1: selected_returning.rate = 5%,6%, 2 points") {
		t.Errorf("a stored version: exit %d\n%s\n%s", code, out, errOut)
	}
}

// TestSweepHTMLIsSelfContained: one page, an SVG line chart per changed currency with the budget
// drawn, no script, nothing fetched.
func TestSweepHTMLIsSelfContained(t *testing.T) {
	_, dir := sweepStore(t, 400)
	cand := writeCandidate(t, t.TempDir(), "5%")
	page := filepath.Join(t.TempDir(), "sweep.html")
	code, _, errOut := runArgs(t, "replay", "--data-dir", dir, "--policy", cand, "--sweep", "selected_returning.rate=4%..7%/0.5%",
		"--budget", "USD:-50", "--format", "html", "--out", page)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	html := string(b)
	for _, want := range []string{"<svg", "<polyline class=\"curve\"", "class=\"budget\"", "budget -50</text>", "Cost curve in USD", "<tr class=hot>", "keeps ← crosses"} {
		if !strings.Contains(html, want) {
			t.Errorf("the page has no %q", want)
		}
	}
	for _, bad := range []string{"<script", "src=", "href=\"http", "url("} {
		if strings.Contains(html, bad) {
			t.Errorf("the page has %q: it must be self-contained", bad)
		}
	}
	if strings.Index(html, "Cost curve in USD") > strings.Index(html, "Cost curve in EUR") {
		t.Errorf("the budget's currency comes first")
	}
}

// TestDocsSweepOutputShapes holds the sweep the program manager's page shows to the shapes
// sweep.txtar asserts of the real output (made general: the script runs 300 orders, the page
// 5 000), and its crossing point to the single replay the page shows above it: the same 5%
// candidate, the same USD figures.
func TestDocsSweepOutputShapes(t *testing.T) {
	page := readDoc(t, "docs/program-manager.md")
	for _, p := range []string{
		`(?m)^Sweep of /tmp/candidate/v2.yaml: selected_returning.rate = 4%\.\.7%/0\.5%, 7 points$`,
		`(?m)^  candidate  alibaba v2 sha256:[0-9a-f]{64}, /tmp/candidate/v2.yaml, applied to every order \(effective_from 2025-11-01T00:00:00Z not applied\); each point is this file with its values written in, with its own digest$`,
		`(?m)^  POINT +selected_returning.rate +DIGEST +EVALUATED +NOT DECIDABLE +NEWLY QUALIFIED +NEWLY DISQUALIFIED +COMMISSION CHANGED$`,
		`(?m)^  5 +6% +sha256:[0-9a-f]{12}… +4980 +0 +0 +0 +0$`,
		`(?m)^  POINT +selected_returning.rate +ORDERS +CHANGED +BEFORE +AFTER +DIFFERENCE +BUDGET -5000$`,
		`(?m)^  3 +5% +2207 +700 +104332\.39 +97303\.25 +-7029\.14 +keeps ← crosses$`, // the replay's USD row above
		`(?m)^  USD +2207 +700 +104332\.39 +97303\.25 +-7029\.14$`,
		`(?m)^  5 +6% +2207 +0 +104332\.39 +104332\.39 +0\.00 +over$`,
		`(?m)^Unchanged at every point: [A-Z]{3}(, [A-Z]{3})*$`,
		`(?m)^  USD:-5000 \(save at least 5000 USD\): crossed at point 3 \(selected_returning.rate=5%\), difference -7029\.14; 3 of 7 points keep to it$`,
		`(?m)^budget USD:-5000 \(save at least 5000 USD\): kept: the USD difference is -7029\.14$`,
		`(?m)^budget EUR:-5000 \(save at least 5000 EUR\): not kept: the EUR difference is -3226\.32, 1773\.68 short$`,
	} {
		if !regexp.MustCompile(p).MatchString(page) {
			t.Errorf("docs/program-manager.md has no line matching %s", p)
		}
	}
}
