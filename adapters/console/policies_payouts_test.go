package console

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// PayoutMonth builds a month's statements as cmd's port adapter does (there with the payouts
// command's own steps): the entries payable at the end of the month under the repository's
// payout terms, and what each run that closed the month paid.
func (s testStore) PayoutMonth(ctx context.Context, month string) (PayoutMonth, error) {
	m, asOf, err := engine.MonthBounds(month)
	if err != nil {
		return PayoutMonth{}, err
	}
	build, err := testStatements()
	if err != nil {
		return PayoutMonth{}, err
	}
	entries, err := s.Payable(ctx, "", asOf)
	if err != nil {
		return PayoutMonth{}, err
	}
	out := PayoutMonth{Month: m, AsOf: asOf}
	if out.Statements, err = build(entries); err != nil {
		return PayoutMonth{}, err
	}
	runs, err := s.PayoutRuns(ctx, "")
	if err != nil {
		return PayoutMonth{}, err
	}
	for _, run := range runs {
		if run.Month != m {
			continue
		}
		paid, err := s.PaidEntries(ctx, run.ID)
		if err != nil {
			return PayoutMonth{}, err
		}
		pr := PayoutRun{ID: run.ID, Program: run.Program, ClosedAt: run.ClosedAt, Payouts: run.Payouts, Entries: run.Entries}
		if pr.Paid, err = build(paid); err != nil {
			return PayoutMonth{}, err
		}
		out.Runs = append(out.Runs, pr)
	}
	return out, nil
}

// testStatements builds statements under the repository's payout terms.
func testStatements() (func([]engine.LedgerEntry) ([]engine.Statement, error), error) {
	set, err := rules.LoadDir("../../policies")
	if err != nil {
		return nil, err
	}
	return func(entries []engine.LedgerEntry) ([]engine.Statement, error) {
		return engine.Statements(entries, func(program string) (rules.Payout, bool) {
			vs := set.Versions(program)
			if len(vs) == 0 {
				return rules.Payout{}, false
			}
			return vs[0].Payout, true
		})
	}, nil
}

// twoVersions writes a policy directory with alibaba v1 and a v2 from 2025-10-15 that pays 5%
// instead of 6% to a returning buyer of a selected market, and whose description holds markup.
func twoVersions(t *testing.T) string {
	t.Helper()
	v1, err := os.ReadFile("../../policies/alibaba/v1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src := string(v1)
	if i := strings.Index(src, "\ntests:"); i > 0 {
		src = src[:i+1] // v2 has no examples: v1's expect 6%
	}
	for _, r := range [][2]string{
		{"version: 1\n", "version: 2\n"},
		{"effective_from: 2025-01-01T00:00:00Z", "effective_from: 2025-10-15T00:00:00Z"},
		{"description: >\n", "description: >\n  v2 <script>alert(1)</script>.\n"},
		{"when: order.buyer.country in selected_markets && !order.buyer.new\n    rate: \"6%\"", "when: order.buyer.country in selected_markets && !order.buyer.new\n    rate: \"5%\""},
	} {
		if !strings.Contains(src, r[0]) {
			t.Fatalf("v1.yaml no longer has %q", r[0])
		}
		src = strings.Replace(src, r[0], r[1], 1)
	}
	dir := filepath.Join(t.TempDir(), "alibaba")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"v1.yaml": v1, "v2.yaml": []byte(src)} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Dir(dir)
}

func signedIn(t *testing.T, st *store.Store) *client {
	t.Helper()
	ts := httptest.NewServer(New(testStore{st}, Options{Authenticate: testAuth}))
	t.Cleanup(ts.Close)
	c := newClient(t, ts)
	wantStatus(t, c.signIn(testToken), http.StatusSeeOther, "sign-in")
	return c
}

func TestPolicyPages(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st := filledStoreFrom(t, b.fresh(t), 30, twoVersions(t))
			c := signedIn(t, st)
			ds, err := st.RecentDecisions(context.Background(), store.DecisionFilter{Program: "alibaba"}, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			count := map[int]int{}
			for _, d := range ds {
				count[d.PolicyVersion]++
			}
			if count[1] == 0 || count[2] == 0 {
				t.Fatalf("decisions per version %v: want both versions used", count)
			}
			v1, _ := os.ReadFile("../../policies/alibaba/v1.yaml")
			lines := strings.Count(string(v1), "\n")
			for _, tc := range []struct {
				name, path string
				status     int
				want       []string
				wantNot    []string
			}{
				{"version 1", "/ui/policies/alibaba/1", http.StatusOK, []string{
					`<dd id="decision-count">` + strconv.Itoa(count[1]) + `</dd>`,
					`<pre id="source"><span class="line" id="L1"><a class="ln" href="#L1">1</a># Alibaba.com marketplace`,
					`<span class="line" id="L` + strconv.Itoa(lines) + `">`,
					`<dd id="digest-check" class="verdict">the stored source still has this digest</dd>`,
					`<dd id="policy-file">`, `<dd id="policy-effective">2025-01-01T00:00:00Z</dd>`,
					`<a href="/ui/policies/alibaba/2">v2</a>`, `data-version="1"`,
				}, []string{`id="L` + strconv.Itoa(lines+1) + `"`, `id="diff-previous"`}},
				{"version 2, v-prefixed, escaped", "/ui/policies/alibaba/v2", http.StatusOK, []string{
					`<dd id="decision-count">` + strconv.Itoa(count[2]) + `</dd>`,
					`&lt;script&gt;alert(1)&lt;/script&gt;`,
					`<a id="diff-previous" href="/ui/policies/alibaba/diff?from=1&amp;to=2">`,
				}, []string{"<script>"}},
				{"the program's versions", "/ui/policies/alibaba", http.StatusOK, []string{
					`<table id="versions">`, `<a href="/ui/policies/alibaba/1">v1</a>`, `<a href="/ui/policies/alibaba/2">v2</a>`,
				}, nil},
				{"every program", "/ui/policies", http.StatusOK, []string{`<a href="/ui/policies/alibaba/2">v2</a>`}, nil},
				{"diff", "/ui/policies/alibaba/diff?from=1&to=2", http.StatusOK, []string{
					`<pre id="diff">`,
					`<del class="diff-line" data-old="4"><span class="ln">4</span><span class="ln"></span>- version: 1</del>`,
					`<ins class="diff-line" data-new="4"><span class="ln"></span><span class="ln">4</span>+ version: 2</ins>`,
					`+ effective_from: 2025-10-15T00:00:00Z</ins>`, `- effective_from: 2025-01-01T00:00:00Z</del>`,
					`+   v2 &lt;script&gt;alert(1)&lt;/script&gt;.</ins>`,
					`+     rate: &#34;5%&#34;</ins>`, `-     rate: &#34;6%&#34;</del>`,
					`<span class="diff-line same"><span class="ln">1</span><span class="ln">1</span>  # Alibaba.com`,
				}, []string{"<script>"}},
				{"diff of a version with itself", "/ui/policies/alibaba/diff?from=2&to=2", http.StatusOK,
					[]string{`<p id="diff-summary">0 line(s) added, 0 removed.</p>`}, []string{"<ins", "<del"}},
				{"a version not stored", "/ui/policies/alibaba/9", http.StatusNotFound, []string{"Policy alibaba v9 is not stored"}, nil},
				{"a program not stored", "/ui/policies/nosuch", http.StatusNotFound, []string{"Program nosuch has no stored policy version"}, nil},
				{"a bad version", "/ui/policies/alibaba/x", http.StatusBadRequest, []string{"must be a policy version"}, nil},
				{"a bad diff", "/ui/policies/alibaba/diff?from=1", http.StatusBadRequest, []string{"to must be a policy version"}, nil},
				{"a markup program", "/ui/policies/%3Cscript%3E", http.StatusNotFound, []string{"Program &lt;script&gt; has"}, []string{"<script>"}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					r := c.do("GET", tc.path, nil)
					wantStatus(t, r, tc.status, tc.path)
					wantBody(t, r, tc.path, tc.want...)
					for _, s := range tc.wantNot {
						if strings.Contains(r.body, s) {
							t.Errorf("%s: the page has %q", tc.path, s)
						}
					}
					if csp := r.header.Get("Content-Security-Policy"); csp != contentSecurityPolicy {
						t.Errorf("%s: Content-Security-Policy %q", tc.path, csp)
					}
				})
			}
			t.Run("the decision page links its policy version", func(t *testing.T) {
				r := c.do("GET", "/ui/orders/o-20", nil)
				wantStatus(t, r, http.StatusOK, "o-20")
				wantBody(t, r, "o-20", `<a class="policy-link" href="/ui/policies/alibaba/2">alibaba v2</a>`)
			})
		})
	}
}

func TestDiffLines(t *testing.T) {
	ops := func(ls []diffLine) string {
		var b strings.Builder
		for _, l := range ls {
			b.WriteString(map[string]string{"same": " ", "ins": "+", "del": "-"}[l.Op] + l.Text + ";")
		}
		return b.String()
	}
	for _, tc := range []struct{ a, b, want string }{
		{"", "", ""},
		{"a", "a", " a;"},
		{"", "a b", "+a;+b;"},
		{"a b", "", "-a;-b;"},
		{"a b c", "a x c", " a;-b;+x; c;"},
		{"a b c d", "a c d e", " a;-b; c; d;+e;"},
		{"x a b", "a b y", "-x; a; b;+y;"},
	} {
		got, ok := diffLines(strings.Fields(tc.a), strings.Fields(tc.b))
		if !ok || ops(got) != tc.want {
			t.Errorf("diff %q → %q: got %q (ok %v), want %q", tc.a, tc.b, ops(got), ok, tc.want)
		}
	}
}

func TestPayoutPages(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st := filledStore(t, b.fresh(t), 12)
			c := signedIn(t, st)
			ctx := context.Background()
			statement := regexp.MustCompile(`<tr class="statement" data-program="alibaba" data-affiliate="aff-\d" data-currency="USD">`)
			open := c.do("GET", "/ui/payouts/2025-11", nil)
			wantStatus(t, open, http.StatusOK, "2025-11 open")
			// aff-0 … aff-4, qualified orders of 2941.00 and the 10.00 one of aff-1 (xssOrder).
			if n := len(statement.FindAllString(open.body, -1)); n != 5 {
				t.Errorf("2025-11 lists %d statements, want 5:\n%s", n, open.body)
			}
			wantBody(t, open, "2025-11 open", `<table id="statements" class="statements">`, `<table id="totals" class="totals">`,
				`<tr class="total" data-currency="USD"><td>USD</td>`, `&lt;script&gt;x&lt;/script&gt;`, `<a id="csv" href="/ui/payouts/2025-11.csv" download>`)
			if strings.Contains(open.body, `id="closed"`) || strings.Contains(open.body, xssOrder) {
				t.Errorf("2025-11 before closing: a closed notice or an unescaped order id:\n%s", open.body)
			}
			build, err := testStatements()
			if err != nil {
				t.Fatal(err)
			}
			run, paid, err := st.ClosePayouts(ctx, "alibaba", "2025-11", time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC), time.Now(), build)
			if err != nil {
				t.Fatal(err)
			}
			totals, _ := engine.StatementTotals(paid)
			for _, tc := range []struct {
				name, path  string
				status      int
				contentType string
				want        []string
			}{
				{"a closed month names its run", "/ui/payouts/2025-11", http.StatusOK, "text/html; charset=utf-8", []string{
					`<p id="closed">2025-11 is closed: alibaba by run ` + strconv.FormatInt(run.ID, 10) + ` at `,
					`<section class="run" id="run-` + strconv.FormatInt(run.ID, 10) + `"`,
					`<table id="paid-` + strconv.FormatInt(run.ID, 10) + `" class="statements paid">`,
					`<td class="num paid">` + totals[0].Paid.Text('f') + `</td>`,
					`<tr class="statement" data-program="alibaba" data-affiliate="aff-0" data-currency="USD">`,
				}},
				{"the CSV", "/ui/payouts/2025-11.csv", http.StatusOK, "text/csv; charset=utf-8", []string{
					"month,program,affiliate_id,currency,lines,accruals,adjustments,reversals,total,payable,method,carried_forward,paid_by_run\n",
					"2025-11,alibaba,aff-0,USD,", ",true,wire_transfer,," + strconv.FormatInt(run.ID, 10) + "\n",
				}},
				{"an empty month", "/ui/payouts/2025-10", http.StatusOK, "text/html; charset=utf-8", []string{`<td colspan="8">No statement.</td>`}},
				{"a wrong month", "/ui/payouts/2025-13", http.StatusBadRequest, "text/html; charset=utf-8", []string{`<p class="error" id="page-error">&#34;2025-13&#34; is not a month`}},
				{"a markup month", "/ui/payouts/%3Cb%3E", http.StatusBadRequest, "text/html; charset=utf-8", []string{`&#34;&lt;b&gt;&#34; is not a month`}},
				{"a wrong CSV month", "/ui/payouts/2025-1.csv", http.StatusBadRequest, "text/html; charset=utf-8", nil},
			} {
				t.Run(tc.name, func(t *testing.T) {
					r := c.do("GET", tc.path, nil)
					wantStatus(t, r, tc.status, tc.path)
					wantBody(t, r, tc.path, tc.want...)
					if ct := r.header.Get("Content-Type"); ct != tc.contentType {
						t.Errorf("%s: Content-Type %q, want %q", tc.path, ct, tc.contentType)
					}
					if csp := r.header.Get("Content-Security-Policy"); csp != contentSecurityPolicy {
						t.Errorf("%s: Content-Security-Policy %q", tc.path, csp)
					}
				})
			}
			r := c.do("GET", "/ui/payouts?month=2025-11", nil)
			if r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/payouts/2025-11" {
				t.Errorf("/ui/payouts?month=2025-11: %d to %q", r.status, r.header.Get("Location"))
			}
			if _, err := st.PayoutRun(ctx, "alibaba", "2025-11"); errors.Is(err, store.ErrNotFound) {
				t.Error("the run is gone")
			}
		})
	}
}

// TestNewPagesNeedASession: without a session every new page redirects to the sign-in form.
func TestNewPagesNeedASession(t *testing.T) {
	st := filledStore(t, backends[0].fresh(t), 3)
	ts := httptest.NewServer(New(testStore{st}, Options{Authenticate: testAuth}))
	t.Cleanup(ts.Close)
	c := newClient(t, ts)
	for _, path := range []string{"/ui/policies", "/ui/policies/alibaba", "/ui/policies/alibaba/1", "/ui/policies/alibaba/diff?from=1&to=1",
		"/ui/payouts", "/ui/payouts/2025-11", "/ui/payouts/2025-11.csv"} {
		r := c.do("GET", path, nil)
		if r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/login" {
			t.Errorf("%s without a session: %d to %q, want 303 to /ui/login", path, r.status, r.header.Get("Location"))
		}
		if strings.Contains(r.body, "alibaba") || strings.Contains(r.body, "aff-") {
			t.Errorf("%s without a session shows data:\n%s", path, r.body)
		}
	}
}
