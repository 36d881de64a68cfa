package console

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine/audit"
)

const operatorToken = "console-test-operator-token-0123456789"

// ClosePayoutMonth closes a month as cmd's port adapter does (there with the payouts command's
// steps): every program with entries, under the repository's payout terms.
func (s testStore) ClosePayoutMonth(ctx context.Context, month string) ([]PayoutRun, error) {
	build, err := testStatements()
	if err != nil {
		return nil, err
	}
	t, err := time.Parse("2006-01", month)
	if err != nil {
		return nil, err
	}
	run, _, err := s.ClosePayouts(ctx, "alibaba", month, t.AddDate(0, 1, 0), time.Now(), build)
	if errors.Is(err, store.ErrAlreadyClosed) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []PayoutRun{{ID: run.ID, Program: run.Program, ClosedAt: run.ClosedAt, Payouts: run.Payouts, Entries: run.Entries}}, nil
}

// testOps is the running service's side of the health page, over a real store: the policy
// loads and the stream's backlog as the service would report them, and audit verify really
// run over the store and recorded (synchronously: the page shows it at once).
type testOps struct {
	st   *store.Store
	mu   sync.Mutex
	runs int
}

func (o *testOps) PolicyLoads() []PolicyLoad {
	at := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	return []PolicyLoad{
		{At: at.Add(time.Hour), Err: `policies in ./policies: alibaba/v2.yaml:12: rule "x": <b>undeclared</b> reference`},
		{At: at, Applied: true, Versions: []string{"alibaba v1"}},
	}
}

func (o *testOps) Lag(context.Context) ([]PartitionLag, error) {
	return []PartitionLag{{Partition: 0, Pending: 7, AckPending: 2, Consumer: "commissioner-p0"}, {Partition: 1}}, nil
}

func (o *testOps) StartVerify(by string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.runs++
	started := time.Now()
	rep, err := audit.Verify(context.Background(), o.st, audit.VerifyOptions{})
	_, rerr := o.st.RecordVerifyRun(context.Background(), audit.NewVerifyRun(by, "", started, time.Now(), rep, err))
	return rerr == nil
}

func (o *testOps) VerifyRunning() time.Time { return time.Time{} }

// TestRoles: a reader reads and runs audit verify; only an operator closes a payout month, a
// month that has ended, after typing it.
func TestRoles(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st := filledStore(t, b.fresh(t), 12)
			ctx := context.Background()
			ts := httptest.NewServer(New(testStore{st}, Options{Authenticate: testAuth,
				Payouts: testStore{st}, Now: func() time.Time { return time.Date(2025, 12, 15, 0, 0, 0, 0, time.UTC) }}))
			t.Cleanup(ts.Close)
			reader, operator := newClient(t, ts), newClient(t, ts)
			wantStatus(t, reader.signIn(testToken), http.StatusSeeOther, "a reader's sign-in")
			wantStatus(t, operator.signIn(operatorToken), http.StatusSeeOther, "an operator's sign-in")

			page := reader.do("GET", "/ui/payouts/2025-11", nil)
			wantBody(t, page, "the reader's payouts page", `<span id="role" class="role"`, `>reader</span>`, `<p id="close-month-role"`)
			if strings.Contains(page.body, `id="close-month"`) {
				t.Errorf("a reader is offered the closing form:\n%s", page.body)
			}
			r := reader.do("POST", "/ui/payouts/2025-11/close", url.Values{"csrf": {csrf(t, page)}, "confirm": {"2025-11"}})
			wantStatus(t, r, http.StatusForbidden, "a reader closing a month")
			wantBody(t, r, "a reader closing a month", "needs an operator&#39;s token")
			if _, err := st.PayoutRun(ctx, "alibaba", "2025-11"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("after a reader's attempt: run %v, want none", err)
			}

			page = operator.do("GET", "/ui/payouts/2025-11", nil)
			wantBody(t, page, "the operator's payouts page", `>operator</span>`, `<form id="close-month" class="danger" method="post" action="/ui/payouts/2025-11/close">`)
			token := csrf(t, page)
			for _, tc := range []struct {
				name, path, confirm string
				status              int
				want                string
			}{
				{"without the confirmation", "/ui/payouts/2025-11/close", "", http.StatusBadRequest, "type the month (2025-11)"},
				{"a month not ended", "/ui/payouts/2025-12/close", "2025-12", http.StatusConflict, "2025-12 has not ended"},
				{"not a month", "/ui/payouts/2025-1/close", "2025-1", http.StatusBadRequest, "is not a month"},
			} {
				r := operator.do("POST", tc.path, url.Values{"csrf": {token}, "confirm": {tc.confirm}})
				wantStatus(t, r, tc.status, tc.name)
				wantBody(t, r, tc.name, tc.want)
			}
			r = operator.do("POST", "/ui/payouts/2025-11/close", url.Values{"confirm": {"2025-11"}})
			wantStatus(t, r, http.StatusForbidden, "closing without the CSRF token")
			if _, err := st.PayoutRun(ctx, "alibaba", "2025-11"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("after refused closes: run %v, want none", err)
			}
			r = operator.do("POST", "/ui/payouts/2025-11/close", url.Values{"csrf": {token}, "confirm": {"2025-11"}})
			if r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/payouts/2025-11" {
				t.Fatalf("an operator closing 2025-11: %d to %q\n%s", r.status, r.header.Get("Location"), r.body)
			}
			run, err := st.PayoutRun(ctx, "alibaba", "2025-11")
			if err != nil {
				t.Fatalf("the operator's close left no run: %v", err)
			}
			closed := reader.do("GET", "/ui/payouts/2025-11", nil)
			wantBody(t, closed, "the closed month", `<p id="closed">2025-11 is closed: alibaba by run `)
			if strings.Contains(closed.body, `id="close-month`) {
				t.Errorf("a closed month with nothing payable still offers closing:\n%s", closed.body)
			}
			if again := operator.do("POST", "/ui/payouts/2025-11/close", url.Values{"csrf": {token}, "confirm": {"2025-11"}}); again.status != http.StatusSeeOther {
				t.Errorf("closing a closed month again: %d", again.status)
			}
			if runs, _ := st.PayoutRuns(ctx, ""); len(runs) != 1 || runs[0].ID != run.ID {
				t.Errorf("payout runs after closing twice: %+v, want the one run %d", runs, run.ID)
			}
		})
	}
}

// TestHealthShowsTheService: the policy loads (a refused one's reason escaped), the stream's
// backlog, and audit verify — none recorded, then run from the page and its verdict shown, then
// a finding after a row is edited.
func TestHealthShowsTheService(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st := filledStore(t, b.fresh(t), 12)
			ops := &testOps{st: st}
			ts := httptest.NewServer(New(testStore{st}, Options{Authenticate: testAuth, Ops: ops}))
			t.Cleanup(ts.Close)
			c := newClient(t, ts)
			wantStatus(t, c.signIn(testToken), http.StatusSeeOther, "sign-in")
			h := c.do("GET", "/ui/health", nil)
			wantStatus(t, h, http.StatusOK, "health")
			wantBody(t, h, "health", `<p id="verify-none">`, `<form id="verify-form" method="post" action="/ui/health/verify">`,
				`<p id="lag-total">7 event(s) waiting to be delivered, 2 delivered and not acknowledged yet.</p>`,
				`<tr class="lag" data-partition="0"><td class="num">0</td><td class="num">7</td><td class="num">2</td><td>commissioner-p0</td></tr>`,
				`<td>none yet</td>`,
				`<tr class="policy-load refused"><td>2026-12-03T10:00:00Z</td><td>refused</td><td class="reason">policies in ./policies: alibaba/v2.yaml:12: rule &#34;x&#34;: &lt;b&gt;undeclared&lt;/b&gt; reference</td></tr>`,
				`<tr class="policy-load applied"><td>2026-12-03T09:00:00Z</td><td>applied</td><td class="reason">alibaba v1</td></tr>`)

			r := c.do("POST", "/ui/health/verify", url.Values{"csrf": {csrf(t, h)}})
			if r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/health#verify" || ops.runs != 1 {
				t.Fatalf("POST /ui/health/verify: %d to %q, %d run(s)", r.status, r.header.Get("Location"), ops.runs)
			}
			h = c.do("GET", "/ui/health", nil)
			wantBody(t, h, "health after a clean verify", `<dl id="verify-last" class="fields verify ok" data-ok="true">`,
				`<dd id="verify-verdict">OK: nothing found</dd>`, `by console reader`,
				`<dd id="verify-decisions">13 (13 reproduced exactly)`)

			// An edited commission is found by the next run, and the page says so.
			if _, err := st.DB().ExecContext(context.Background(), "UPDATE decisions SET commission = '999.00' WHERE order_id = 'o-2'"); err != nil {
				t.Fatal(err)
			}
			c.do("POST", "/ui/health/verify", url.Values{"csrf": {csrf(t, h)}})
			h = c.do("GET", "/ui/health", nil)
			wantBody(t, h, "health after a failed verify", `<dl id="verify-last" class="fields verify bad" data-ok="false">`)
			if !regexp.MustCompile(`<dd id="verify-verdict">FAILED: \d+ finding\(s\)</dd>`).MatchString(h.body) ||
				!regexp.MustCompile(`<dd id="verify-findings">[a-z_]+: \d+`).MatchString(h.body) {
				t.Errorf("health after a failed verify lacks the verdict or the findings by kind:\n%s", h.body)
			}
		})
	}
}
