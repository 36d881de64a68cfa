package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/replayreport"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// testShadows is the shadow pages' source as cmd wires it: the store's shadow outcomes, and the
// shadow versions the service runs.
type testShadows struct {
	*store.Store
	loaded []*rules.Policy
}

func (s testShadows) LoadedShadows() []*rules.Policy { return s.loaded }

var _ ShadowSource = testShadows{}

// shadowOf is candidate5 (6% → 5% for a returning buyer of a selected market) as a shadow version.
func shadowOf(t *testing.T) *rules.Policy {
	t.Helper()
	src := strings.Replace(candidate5(t), "version: 2\n", "version: 2\nstage: shadow\n", 1)
	p, problems := rules.Compile("alibaba/v2.yaml", []byte(src))
	if p == nil || !p.IsShadow() {
		t.Fatalf("compiling the shadow: %v", problems)
	}
	return p
}

// shadowedStore opens a store and decides n orders (placed from 2025-10-02, o-5 disqualified),
// and one whose id is xssOrder (a returning buyer), with the repository's policies and the shadow
// beside them, as serve does, then stores the shadow's outcomes. It returns the store and the
// shadow.
func shadowedStore(t *testing.T, cfg store.Config, n int) (*store.Store, *rules.Policy) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	live, err := rules.LoadDir("../../policies")
	if err != nil {
		t.Fatal(err)
	}
	shadow := shadowOf(t)
	set, problems := rules.NewSet(append(live.All(), shadow))
	if set == nil {
		t.Fatal(problems)
	}
	var events []engine.Event
	add := func(orderID string, i int, amount string) {
		traffic := "US"
		if i%11 == 5 {
			traffic = "CN" // disqualified
		}
		raw := fmt.Sprintf(`{"order_id":%q,"program":"alibaba","affiliate_id":"aff-%d","status":"completed",`+
			`"placed_at":"2025-10-%02dT12:00:00Z","click_at":"2025-10-01T00:00:00Z","buyer":{"id":"b-%d","country":"US","new":%t},`+
			`"traffic_country":%q,"currency":"USD","amount":%q}`, orderID, i%5, 2+i%27, i, i%3 == 0, traffic, amount)
		seq := uint64(len(events) + 1)
		events = append(events, engine.Event{ID: fmt.Sprintf("ev-%d", seq), Subject: "orders.alibaba", StreamSeq: seq, Raw: []byte(raw)})
	}
	for i := range n {
		add(fmt.Sprintf("o-%d", i), i, fmt.Sprintf("%d.%02d", 100+i*37, i%100))
	}
	add(xssOrder, 1, "10.00")
	w, err := engine.ClaimPartition(ctx, st, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := w.Write(ctx, engine.New(set), events)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Shadows) != n+1 {
		t.Fatalf("%d shadow outcomes for %d events, want one each", len(b.Shadows), n+1)
	}
	if stored, err := st.WriteShadows(ctx, b.Shadows); err != nil || stored != 0 {
		t.Fatalf("WriteShadows after the batch = %d, %v; want 0: the batch stored them", stored, err)
	}
	return st, shadow
}

var shadowTotalRow = regexp.MustCompile(`<tr class="total" data-currency="([A-Z]{3})">.*?` +
	`<td class="num before">([^<]*)</td><td class="num after">([^<]*)</td><td class="num diff [a-z]+">([^<]*)</td>`)

// v1Shadow asks GET /v1/shadow/report (the audit API's handler on the same store) with query.
func v1Shadow(t *testing.T, st *store.Store, query string) httpapi.ShadowDocument {
	t.Helper()
	api := httptest.NewServer(httpapi.NewShadowReportHandler(st, httpapi.AuditOptions{Tokens: []string{testToken}}))
	defer api.Close()
	req, _ := http.NewRequest("GET", api.URL+"/v1/shadow/report?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var doc httpapi.ShadowDocument
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/shadow/report?%s: status %d", query, res.StatusCode)
	}
	if err := json.NewDecoder(res.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// sameTotals holds a shadow page's totals to a /v1 document's: every currency, live (before),
// shadow (after) and the difference, as exact text.
func sameTotals(t *testing.T, what, body string, doc httpapi.ShadowDocument) {
	t.Helper()
	i := strings.Index(body, `<table id="totals">`)
	if i < 0 {
		t.Fatalf("%s: no totals table:\n%s", what, body)
	}
	table := strings.ReplaceAll(body[i:i+strings.Index(body[i:], "</table>")], "\n", "")
	got := map[string][3]string{}
	for _, m := range shadowTotalRow.FindAllStringSubmatch(table, -1) {
		got[m[1]] = [3]string{m[2], m[3], strings.ReplaceAll(m[4], "&#43;", "+")}
	}
	if len(got) == 0 || len(got) != len(doc.Summary.Totals) {
		t.Fatalf("%s: the page shows %d currencies, /v1 %d: %v", what, len(got), len(doc.Summary.Totals), got)
	}
	for _, tot := range doc.Summary.Totals {
		if want := [3]string{tot.Before, tot.After, tot.Diff}; got[tot.Currency] != want {
			t.Errorf("%s: %s: the page shows %v, /v1/shadow/report %v", what, tot.Currency, got[tot.Currency], want)
		}
	}
	if want := fmt.Sprintf("%d orders compared", doc.Summary.Evaluated); !strings.Contains(body, want) {
		t.Errorf("%s: the page does not say %q", what, want)
	}
	if want := fmt.Sprintf(`<p id="diverging-count">%d order`, doc.DivergingTotal); !strings.Contains(body, want) {
		t.Errorf("%s: the page does not count %d diverging orders", what, doc.DivergingTotal)
	}
}

func TestShadowPages(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st, shadow := shadowedStore(t, b.fresh(t), 40)
			ts := httptestServer(t, New(testStore{st}, Options{Authenticate: testAuth, Shadows: testShadows{st, []*rules.Policy{shadow}}}))
			c := newClient(t, ts)
			wantStatus(t, c.signIn(testToken), http.StatusSeeOther, "sign-in") // a reader's token

			list := c.do("GET", "/ui/shadows", nil)
			wantStatus(t, list, http.StatusOK, "the shadow versions")
			wantBody(t, list, "the shadow versions", `<a href="/ui/shadows">Shadows</a>`,
				`<tr class="shadow-version running" data-program="alibaba" data-version="2">`, `<a href="/ui/shadows/alibaba/2">v2</a>`,
				"<code>"+shadow.Digest+"</code>", `<td class="num">41</td>`, "2025-10-02T12:00:00Z to 2025-10-28T12:00:00Z", "running: every order")

			// the whole store, and a range of days (inclusive), each held to /v1 (to exclusive)
			for _, q := range []struct{ page, v1 string }{
				{"", "program=alibaba&version=2"},
				{"?from=2025-10-05&to=2025-10-20", "program=alibaba&version=2&from=2025-10-05&to=2025-10-21"},
			} {
				r := c.do("GET", "/ui/shadows/alibaba/2"+q.page, nil)
				wantStatus(t, r, http.StatusOK, "the shadow report "+q.page)
				sameTotals(t, "the shadow report "+q.page, r.body, v1Shadow(t, st, q.v1))
				wantBody(t, r, "the shadow report "+q.page, `<link rel="stylesheet" href="/ui/assets/replay-report.css">`,
					"<h1>Shadow alibaba v2 against the live decisions</h1>", `<table id="qualification" class="matrix">`,
					`<td class="label">selected_returning</td>`, `<details class="unchanged" id="by-buyer-unchanged">`,
					`<a href="/ui/policies/alibaba/1">v1</a>`, `<td class="label">every order</td>`,
					"<code>commissioner shadow report --program alibaba --version 2"+strings.ReplaceAll(strings.ReplaceAll(q.v1[len("program=alibaba&version=2"):], "&", " --"), "=", " ")+"</code>")
			}
			r := c.do("GET", "/ui/shadows/alibaba/2?from=2025-10-05&to=2025-10-20", nil)
			wantBody(t, r, "the range", "beside the live decisions of the orders placed from 2025-10-05 to 2025-10-20:",
				`<input type="date" name="from" value="2025-10-05">`, `<input type="date" name="to" value="2025-10-20">`)

			// the money leads; the diverging orders link to their decision pages, escaped
			all := c.do("GET", "/ui/shadows/alibaba/2?orders=100", nil)
			if i, j := strings.Index(all.body, `id="totals"`), strings.Index(all.body, `id="qualification"`); i < 0 || j < i {
				t.Errorf("the totals do not come before the qualification matrix")
			}
			wantBody(t, all, "the diverging orders", `<table id="diverging">`, `href="/ui/orders/o-1"`,
				`<a href="/ui/orders/%3Cscript%3Ex%3C%2Fscript%3E">&lt;script&gt;x&lt;/script&gt;</a>`, "rate selected_returning: 6% → 5%",
				`<input type="hidden" name="orders" value="100">`)
			if strings.Contains(all.body, xssOrder) || strings.Contains(all.body, "commissioner explain") {
				t.Errorf("the page holds %q unescaped, or the explain command beside its links", xssOrder)
			}

			// shadow versions are no stored policy version: the policy pages do not list them
			sps, err := st.PolicyVersions(context.Background(), "alibaba")
			if err != nil || len(sps) != 1 || sps[0].Version != 1 {
				t.Errorf("stored policy versions %+v, %v: want v1 alone (a shadow decides nothing that is stored as a decision)", sps, err)
			}
			pol := c.do("GET", "/ui/policies/alibaba", nil)
			wantStatus(t, pol, http.StatusOK, "the program's policies")
			if strings.Contains(pol.body, `data-version="2"`) {
				t.Errorf("the policies page lists the shadow version")
			}

			for path, status := range map[string]int{
				"/ui/shadows/alibaba/9":                               http.StatusNotFound,
				"/ui/shadows/nosuch/2":                                http.StatusNotFound,
				"/ui/shadows/alibaba/1":                               http.StatusNotFound, // live, not a shadow
				"/ui/shadows/alibaba/two":                             http.StatusBadRequest,
				"/ui/shadows/alibaba/2?from=10/05":                    http.StatusBadRequest,
				"/ui/shadows/alibaba/2?orders=0":                      http.StatusBadRequest,
				"/ui/shadows/alibaba/2?from=2025-10-09&to=2025-10-08": http.StatusBadRequest,
			} {
				if r := c.do("GET", path, nil); r.status != status {
					t.Errorf("%s: got %d, want %d:\n%s", path, r.status, status, r.body)
				}
			}
		})
	}
}

// TestShadowPageIsTheShadowReport: the shadow page's body is the one `shadow report --format html`
// writes (replayreport): the same sections in the same order and the same money.
func TestShadowPageIsTheShadowReport(t *testing.T) {
	st, shadow := shadowedStore(t, backends[0].fresh(t), 40)
	ts := httptestServer(t, New(testStore{st}, Options{Authenticate: testAuth, Shadows: testShadows{st, []*rules.Policy{shadow}}}))
	c := newClient(t, ts)
	wantStatus(t, c.signIn(testToken), http.StatusSeeOther, "sign-in")
	page := c.do("GET", "/ui/shadows/alibaba/2", nil)
	wantStatus(t, page, http.StatusOK, "the shadow report")

	f := engine.ShadowFilter{Program: "alibaba", Version: 2}
	rep, err := engine.ShadowReportOf(context.Background(), st.ShadowHistory(f), engine.ShadowReportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var file strings.Builder
	if err := replayreport.WriteShadowHTML(&file, rep, f, replayreport.ShadowOptions{}); err != nil {
		t.Fatal(err)
	}
	body := func(s string) string {
		i, j := strings.Index(s, `<div class="replay-report shadow-report">`), strings.Index(s, `<h2>Events and versions</h2>`)
		if i < 0 || j < i {
			t.Fatalf("no shadow report:\n%s", s)
		}
		return s[i:j]
	}
	console, standalone := body(page.body), body(file.String())
	ids := func(s string) []string {
		var out []string
		for _, m := range idAttr.FindAllStringSubmatch(s, -1) {
			out = append(out, m[1])
		}
		return out
	}
	if a, b := ids(console), ids(standalone); !slices.Equal(a, b) || len(a) < 8 {
		t.Errorf("the page's sections %v, the standalone report's %v: want the same", a, b)
	}
	for _, id := range []string{"totals", "qualification", "counts", "by-rate-rule", "by-cause", "by-market", "by-buyer"} {
		section := func(s string) string {
			i := strings.Index(s, `id="`+id+`"`)
			if i < 0 {
				t.Fatalf("no %s", id)
			}
			return s[i : i+strings.Index(s[i:], "</table>")]
		}
		if a, b := section(console), section(standalone); a != b {
			t.Errorf("%s differs between the page and the standalone report:\n%s\n---\n%s", id, a, b)
		}
	}
}

// TestShadowPagesNeedASession: without a session the shadow pages redirect to the sign-in form
// and show nothing.
func TestShadowPagesNeedASession(t *testing.T) {
	st, shadow := shadowedStore(t, backends[0].fresh(t), 3)
	ts := httptestServer(t, New(testStore{st}, Options{Authenticate: testAuth, Shadows: testShadows{st, []*rules.Policy{shadow}}}))
	c := newClient(t, ts)
	for _, path := range []string{"/ui/shadows", "/ui/shadows/alibaba/2", "/ui/shadows/alibaba/2?from=2025-10-01&to=2025-10-31"} {
		r := c.do("GET", path, nil)
		if r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/login" {
			t.Errorf("%s without a session: %d to %q, want 303 to /ui/login", path, r.status, r.header.Get("Location"))
		}
		if strings.Contains(r.body, "alibaba") || strings.Contains(r.body, "sha256:") {
			t.Errorf("%s without a session shows data:\n%s", path, r.body)
		}
	}
}

// TestNoShadowPagesWithoutASource: a console without Options.Shadows has no shadow page and no
// link to one.
func TestNoShadowPagesWithoutASource(t *testing.T) {
	st := filledStore(t, backends[0].fresh(t), 3)
	c := signedIn(t, st)
	home := c.do("GET", "/ui/", nil)
	wantStatus(t, home, http.StatusOK, "the search page")
	if strings.Contains(home.body, "/ui/shadows") {
		t.Errorf("the navigation links the shadow pages without a source")
	}
	wantStatus(t, c.do("GET", "/ui/shadows", nil), http.StatusNotFound, "/ui/shadows without a source")
}

// slowShadows is a source whose outcomes take until the request's deadline to read.
type slowShadows struct{ testShadows }

func (s slowShadows) ShadowHistory(engine.ShadowFilter) engine.ShadowHistory { return slowHistory{} }

type slowHistory struct{}

func (slowHistory) Walk(ctx context.Context, _ func([]engine.ShadowEvent) error) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestShadowReportIsBounded: a report that reads longer than the what-if's deadline stops with a
// page saying to narrow the range.
func TestShadowReportIsBounded(t *testing.T) {
	st, shadow := shadowedStore(t, backends[0].fresh(t), 3)
	ts := httptestServer(t, New(testStore{st}, Options{Authenticate: testAuth, ReplayTimeout: 100 * time.Millisecond,
		Shadows: slowShadows{testShadows{st, []*rules.Policy{shadow}}}}))
	c := newClient(t, ts)
	wantStatus(t, c.signIn(testToken), http.StatusSeeOther, "sign-in")
	r := c.do("GET", "/ui/shadows/alibaba/2", nil)
	wantStatus(t, r, http.StatusGatewayTimeout, "a shadow report past its deadline")
	wantBody(t, r, "the timeout page", "The report took longer than 100ms", "commissioner shadow report --program alibaba --version 2")
}
