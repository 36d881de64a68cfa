package console

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/adapters/replayreport"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// signed is a difference as the report prints it: +1.50, -0.25, 0.00.
func signed(d *apd.Decimal) string {
	if d.Sign() > 0 {
		return "+" + d.Text('f')
	}
	return d.Text('f')
}

var idAttr = regexp.MustCompile(` id="([^"]+)"`)

// reportBody is the replay report's body of a page: from <div class="replay-report"> to the end
// of the page's last table of it.
func reportBody(t *testing.T, page string) string {
	t.Helper()
	i := strings.Index(page, `<div class="replay-report">`)
	j := strings.LastIndex(page, `<table id="versions-compared">`)
	if i < 0 || j < i {
		t.Fatalf("no replay report in the page:\n%s", page)
	}
	return page[i:j]
}

// TestWhatIfIsTheReplayReport: the what-if result is the replay report's body that `replay
// --format html` writes (replayreport), with the same sections in the same order and the same
// money, the orders linked; its stylesheet is served beside the console's.
func TestWhatIfIsTheReplayReport(t *testing.T) {
	st := filledStore(t, backends[0].fresh(t), 30)
	ts := newTestServer(t, testStore{st})
	c := newClient(t, ts)
	wantStatus(t, c.signIn(testToken), http.StatusSeeOther, "sign-in")
	token := csrf(t, c.do("GET", "/ui/whatif", nil))
	src := candidate5(t)
	page := c.do("POST", "/ui/whatif", url.Values{"csrf": {token}, "policy": {src}})
	wantStatus(t, page, http.StatusOK, "the what-if result")
	wantBody(t, page, "the what-if result", `<link rel="stylesheet" href="/ui/assets/replay-report.css">`)

	css := c.do("GET", "/ui/assets/replay-report.css", nil)
	wantStatus(t, css, http.StatusOK, "the report's stylesheet")
	if css.body != string(replayreport.CSS()) || !strings.HasPrefix(css.header.Get("Content-Type"), "text/css") {
		t.Errorf("/ui/assets/replay-report.css: %s, %d bytes; want replayreport.CSS() as text/css", css.header.Get("Content-Type"), len(css.body))
	}

	p, problems := rules.Compile("candidate.yaml", []byte(src))
	if p == nil {
		t.Fatal(problems)
	}
	set, _ := rules.NewSet([]*rules.Policy{p})
	rep, err := engine.Replay(context.Background(), set, st.ReplayHistory(engine.EventFilter{Program: "alibaba", LatestPerOrder: true}),
		engine.ReplayOptions{MaxChanges: whatIfMaxChanges})
	if err != nil {
		t.Fatal(err)
	}
	var standalone strings.Builder
	if err := replayreport.WriteHTML(&standalone, rep, replayreport.Options{Candidate: "alibaba v2 (pasted)", Range: "every stored order (the latest event of each)"}); err != nil {
		t.Fatal(err)
	}
	console, file := reportBody(t, page.body), reportBody(t, standalone.String())
	ids := func(s string) []string {
		var out []string
		for _, m := range idAttr.FindAllStringSubmatch(s, -1) {
			out = append(out, m[1])
		}
		return out
	}
	if a, b := ids(console), ids(file); !slices.Equal(a, b) || len(a) < 8 {
		t.Errorf("the what-if page's sections %v, the standalone report's %v: want the same", a, b)
	}
	section := func(s, id string) string {
		i := strings.Index(s, `id="`+id+`"`)
		if i < 0 {
			t.Fatalf("no %s", id)
		}
		return s[i : i+strings.Index(s[i:], "</table>")]
	}
	for _, id := range []string{"totals", "counts", "by-rate-rule", "by-market", "by-buyer"} {
		if a, b := section(console, id), section(file, id); a != b {
			t.Errorf("%s differs between the what-if page and the standalone report:\n%s\n---\n%s", id, a, b)
		}
	}
	// the console links the changed orders; the file, which runs nowhere, names the command instead
	if !strings.Contains(console, `<a href="/ui/orders/`) || strings.Contains(console, "commissioner explain") {
		t.Errorf("the what-if page does not link its changed orders")
	}
	if strings.Contains(file, "<a ") || !strings.Contains(file, "commissioner explain") {
		t.Errorf("the standalone report links its orders, or does not say how to explain one")
	}
}
