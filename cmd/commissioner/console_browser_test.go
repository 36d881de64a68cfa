package main

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine/payout"
)

// browserRequired reports whether the browser tests must run: in CI (.ci/run sets
// COMMISSIONER_BROWSER=1 and installs Debian's chromium) they never skip.
func browserRequired() bool { return os.Getenv("COMMISSIONER_BROWSER") != "" }

// chromiumPath finds the browser: $COMMISSIONER_CHROMIUM, Debian's chromium, or one on PATH.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("COMMISSIONER_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if browserRequired() {
		t.Fatal("COMMISSIONER_BROWSER is set but no chromium was found (apt-get install chromium, or set COMMISSIONER_CHROMIUM)")
	}
	t.Skip("no chromium: set COMMISSIONER_BROWSER=1 with Debian's chromium installed to run the console's browser tests")
	return ""
}

// browser starts a headless Chromium for the test; it fails the test on any JavaScript dialog
// (an alert() that escaped escaping).
func browser(t *testing.T) context.Context {
	t.Helper()
	if !browserRequired() {
		t.Skip("set COMMISSIONER_BROWSER=1 to run the console's browser tests (CI does)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromiumPath(t)), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.WindowSize(1280, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	err := chromedp.Listen(ctx, func(ev any) {
		if d, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			t.Errorf("the page opened a JavaScript dialog %q: something was not escaped", d.Message)
			go chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true}) // not from the listener: it must return fast
		}
	})
	if err != nil {
		t.Fatalf("listening to the page: %v", err)
	}
	return ctx
}

// TestConsoleInABrowser drives the console in a real headless Chromium against a running service
// on demo-like data: a wrong token is refused, sign-in works, an order is found and its
// decision page shows a failed rule's reason, its policy version opens with its numbered source
// and a diff, a payout month lists its statements, a reader is not offered closing it and an
// operator closes it (the closed month then shows its run), the README's 6% → 5% what-if gives the same
// money as `commissioner replay`, an XSS-looking order id renders as text, and the health page
// shows a dead letter's reason.
func TestConsoleInABrowser(t *testing.T) {
	bctx := browser(t)
	const token, operatorToken = "console-browser-test-token-0123456789", "console-browser-operator-token-0123456789"
	cfg := pipelineConfig(t)
	cfg.HTTP.Addr, cfg.HTTP.Tokens, cfg.HTTP.OperatorTokens = "127.0.0.1:0", []string{token}, []string{operatorToken}
	cfg.Policies = filepath.Join("..", "..", "policies") // relative: the pages (and screenshots) show no path of this machine
	svc := startRunning(t, cfg)

	xssID := `<script>alert("x")</script>`
	xss := `{"order_id":` + jsonString(xssID) + `,"program":"alibaba","affiliate_id":"aff-x","status":"completed",` +
		`"placed_at":"2025-10-10T12:00:00Z","click_at":"2025-10-01T12:00:00Z","buyer":{"id":"b","country":"US","new":true},` +
		`"traffic_country":"US","currency":"USD","amount":"100.00"}`
	lines := append(sampleLines(t, 60, 7, "2025-10"), []byte(xss))
	lines = append(lines, badOrderLines(6)...)
	natsCfg := svc.cfg.NATS // the embedded server's, as the service started it
	js := connectJS(t, natsCfg)
	if _, err := stream.EnsureStream(context.Background(), js, natsCfg); err != nil {
		t.Fatal(err)
	}
	last := publishAll(t, js, natsCfg, lines)
	waitSettledService(t, svc, last, time.Minute)

	// A disqualified order of the sample, and the rule it failed.
	var disqualified, failedRule string
	for i := 1; i <= 60 && disqualified == ""; i++ {
		id := "alibaba-" + strconv.Itoa(i)
		ds, err := svc.store.DecisionsByOrder(context.Background(), "alibaba", id)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 1 && !ds[0].Qualified && len(ds[0].FailedRules) > 0 {
			disqualified, failedRule = id, ds[0].FailedRules[0]
		}
	}
	if disqualified == "" {
		t.Fatal("the sample has no disqualified order")
	}

	// Every affiliate has payee details, so a month can be closed and paid.
	entries, err := svc.store.Payable(context.Background(), "", time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC))
	if err != nil || len(entries) == 0 {
		t.Fatalf("payable entries of 2025-11: %d, %v", len(entries), err)
	}
	var payees []payout.Payee
	for _, e := range entries {
		if !slices.ContainsFunc(payees, func(p payout.Payee) bool { return p.AffiliateID == e.AffiliateID }) {
			payees = append(payees, payout.Payee{Program: "alibaba", AffiliateID: e.AffiliateID,
				Party: payout.Party{Name: "Affiliate " + e.AffiliateID, IBAN: "DE89370400440532013000"}})
		}
	}
	setPayees(t, svc.store, payees...)

	base := "http://" + svc.httpAddr
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	get := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		v, err := chromedp.Run(ctx, a)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}

	// Not signed in: every page sends the browser to the sign-in form.
	do("opening the console unsigned", chromedp.Navigate(base+"/ui/health"), chromedp.WaitVisible(chromedp.CSS(`#login`)))
	if loc := get("reading the location", chromedp.Location()); !strings.HasSuffix(loc, "/ui/login") {
		t.Errorf("unsigned, /ui/health went to %s, want /ui/login", loc)
	}
	// A wrong token is refused.
	do("signing in with a wrong token", chromedp.SendKeys(chromedp.CSS(`#login input[name="token"]`), "not-the-token"),
		chromedp.Submit(chromedp.CSS(`#login`)), chromedp.WaitVisible(chromedp.CSS(`#login-error`)))
	if text := get("reading the error", chromedp.Text(chromedp.CSS(`#login-error`))); !strings.Contains(text, "not valid") {
		t.Errorf("a wrong token: the page says %q", text)
	}
	// The right one signs in; the token is in no URL.
	do("signing in", chromedp.SetValue(chromedp.CSS(`#login input[name="token"]`), token),
		chromedp.Submit(chromedp.CSS(`#login`)), chromedp.WaitVisible(chromedp.CSS(`#recent`)))
	if loc := get("reading the location", chromedp.Location()); strings.Contains(loc, token) {
		t.Errorf("the token is in the URL %s", loc)
	}
	// Find the disqualified order and read why.
	do("searching for an order", chromedp.SetValue(chromedp.CSS(`input[name="q"]`), disqualified),
		chromedp.Submit(chromedp.CSS(`input[name="q"]`)), chromedp.WaitVisible(chromedp.CSS(`section.decision`)))
	if loc := get("reading the location", chromedp.Location()); !strings.HasSuffix(loc, "/ui/orders/"+disqualified) {
		t.Errorf("the search went to %s, want the order's page", loc)
	}
	reason := get("reading the failed rule's reason",
		chromedp.Text(chromedp.CSS(`tr.rule[data-rule="`+failedRule+`"][data-outcome="fail"] td.reason`)))
	if strings.TrimSpace(reason) == "" {
		t.Errorf("the failed rule %s shows no reason", failedRule)
	}
	if verdict := get("reading the tamper evidence", chromedp.Text(chromedp.CSS(`p.verdict`))); !strings.Contains(verdict, "reproduced") {
		t.Errorf("the decision's verdict says %q, want it reproduced", verdict)
	}
	screenshot(t, bctx, "console-decision.png")
	// The decision's policy version, its numbered source, and a diff.
	do("opening the policy version", chromedp.Click(chromedp.CSS(`a.policy-link`)), chromedp.WaitVisible(chromedp.CSS(`pre#source`)))
	if n := get("reading the decision count", chromedp.Text(chromedp.CSS(`#decision-count`))); !strings.ContainsAny(n, "123456789") {
		t.Errorf("the policy page counts %q decisions, want some", n)
	}
	if line := get("reading line 1", chromedp.Text(chromedp.CSS(`pre#source span.line#L1`))); !strings.Contains(line, "program") {
		t.Errorf("line 1 of the source reads %q", line)
	}
	do("opening a diff", chromedp.Navigate(base+"/ui/policies/alibaba/diff?from=1&to=1"), chromedp.WaitVisible(chromedp.CSS(`#diff-summary`)))
	if sum := get("reading the diff", chromedp.Text(chromedp.CSS(`#diff-summary`))); !strings.Contains(sum, "0 line(s) added, 0 removed") {
		t.Errorf("a version against itself: %q", sum)
	}
	// The month's payouts: the statements and their totals.
	do("opening a payout month", chromedp.Navigate(base+"/ui/payouts/2025-11"), chromedp.WaitVisible(chromedp.CSS(`table#statements`)))
	if tot := get("reading the totals", chromedp.Text(chromedp.CSS(`table#totals`))); !strings.Contains(tot, "USD") {
		t.Errorf("the month's totals: %q", tot)
	}
	// A reader (an auditor) cannot close the month: no form, and the page says who can.
	if n, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("#close-month").length`)); err != nil || n != 0 {
		t.Errorf("a reader's payouts page has %d closing forms (%v), want none", n, err)
	}
	if text := get("reading who may close", chromedp.Text(chromedp.CSS(`#close-month-role`))); !strings.Contains(text, "operator") {
		t.Errorf("a reader's payouts page says %q about closing", text)
	}
	// An operator closes it, and the closed month shows what its run paid.
	signInAs := func(tok string) {
		t.Helper()
		do("signing out", chromedp.Click(chromedp.CSS(`#logout button`)), chromedp.WaitVisible(chromedp.CSS(`#login`)))
		do("signing in again", chromedp.SetValue(chromedp.CSS(`#login input[name="token"]`), tok),
			chromedp.Submit(chromedp.CSS(`#login`)), chromedp.WaitVisible(chromedp.CSS(`#recent`)))
	}
	signInAs(operatorToken)
	do("closing the month", chromedp.Navigate(base+"/ui/payouts/2025-11"), chromedp.WaitVisible(chromedp.CSS(`form#close-month`)),
		chromedp.SetValue(chromedp.CSS(`form#close-month input[name="confirm"]`), "2025-11"),
		chromedp.Submit(chromedp.CSS(`form#close-month`)), chromedp.WaitVisible(chromedp.CSS(`#closed`)))
	if text := get("reading the closed month", chromedp.Text(chromedp.CSS(`#closed`))); !strings.Contains(text, "2025-11 is closed: alibaba by run") {
		t.Errorf("the closed month says %q", text)
	}
	if paid := get("reading what the run paid", chromedp.Text(chromedp.CSS(`section.run table.totals`))); !strings.Contains(paid, "USD") {
		t.Errorf("the closing run paid %q", paid)
	}
	signInAs(token)
	// The 6% → 5% what-if reads the same money as `commissioner replay`.
	candidate := candidateFile(t, t.TempDir(), "v2.yaml", 2, "2025-01-01T00:00:00Z", returningRate6,
		strings.Replace(returningRate6, `"6%"`, `"5%"`, 1))
	src, err := os.ReadFile(candidate)
	if err != nil {
		t.Fatal(err)
	}
	do("running the what-if", chromedp.Navigate(base+"/ui/whatif"), chromedp.WaitVisible(chromedp.CSS(`form#whatif`)),
		chromedp.SetValue(chromedp.CSS(`textarea#policy`), string(src)), chromedp.Submit(chromedp.CSS(`form#whatif`)),
		chromedp.WaitVisible(chromedp.CSS(`table#totals`)))
	page := get("reading the USD difference", chromedp.Text(chromedp.CSS(`table#totals tr.total[data-currency="USD"] td.diff`)))
	screenshot(t, bctx, "console-whatif.png")
	checkReportLayout(t, bctx, "the what-if page") // the replay report's body: nothing clipped, the money first
	doc, _, err := replayReport(t, svc.cfg, replayParams{Policy: candidate})
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	var cli string
	for _, tot := range doc.Summary.Totals {
		if tot.Currency == "USD" {
			cli = tot.Diff
		}
	}
	if cli == "" || !strings.HasPrefix(cli, "-") || strings.TrimSpace(page) != cli {
		t.Errorf("what-if USD difference %q, replay --format json %q: want the same, negative", page, cli)
	}
	// An order id that looks like a script is text.
	do("opening the XSS-looking order", chromedp.Navigate(base+"/ui/orders/"+url.PathEscape(xssID)),
		chromedp.WaitVisible(chromedp.CSS(`section.decision`)))
	heading := get("reading the heading", chromedp.Text(chromedp.CSS(`h1`)))
	scripts, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("script").length`))
	if err != nil || !strings.Contains(heading, xssID) || scripts != 0 {
		t.Errorf("the XSS-looking order: heading %q, %d script elements (%v); want the id as text and no script", heading, scripts, err)
	}
	// A shadow version's report, from the navigation, reads the money `shadow report` prints.
	storeShadowOutcomes(t, svc.store)
	checkShadowPage(t, bctx, base, svc.cfg)
	// The health page lists the dead letters with their reasons.
	do("opening the health page", chromedp.Navigate(base+"/ui/health"), chromedp.WaitVisible(chromedp.CSS(`#dead-letters`)))
	if text := get("reading the dead letters", chromedp.Text(chromedp.CSS(`#dead-letters`))); !strings.Contains(text, "negative") {
		t.Errorf("the dead letters table does not show the invalid amount's reason:\n%s", text)
	}
}

// screenshot saves the page as it is to $COMMISSIONER_SCREENSHOTS/name (docs/ holds the ones the
// docs show: COMMISSIONER_SCREENSHOTS=$PWD/docs COMMISSIONER_BROWSER=1 go test -run
// TestConsoleInABrowser ./cmd/commissioner); nothing when the variable is unset.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("COMMISSIONER_SCREENSHOTS")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// jsonString is s as a JSON string.
func jsonString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}
