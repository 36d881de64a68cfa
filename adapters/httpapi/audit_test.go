package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun/driver/pgdriver"
	"golang.org/x/mod/sumdb/note"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/audit"
	"github.com/commissioner/commissioner/rules"
)

const testToken = "test-token-0123456789abcdef"

var _ AuditStore = (*store.Store)(nil)

// backends are the databases the API is tested on.
var backends = []struct {
	name  string
	fresh func(t *testing.T) store.Config
}{
	{"sqlite", func(t *testing.T) store.Config {
		return store.Config{DSN: "sqlite://" + t.TempDir() + "/commissioner.db"}
	}},
	{"postgres", freshPostgres},
}

// freshPostgres makes an empty schema on the local server (dropped at the end), skipping the test
// when there is no server unless COMMISSIONER_INTEGRATION=1.
func freshPostgres(t *testing.T) store.Config {
	t.Helper()
	base := os.Getenv("COMMISSIONER_TEST_POSTGRES")
	if base == "" {
		base = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	admin := sql.OpenDB(pgdriver.NewConnector(pgdriver.WithDSN(base), pgdriver.WithDialTimeout(3*time.Second)))
	t.Cleanup(func() { admin.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		msg := fmt.Sprintf("PostgreSQL at %s is not reachable: %v", store.Config{DSN: base}, err)
		if os.Getenv("COMMISSIONER_INTEGRATION") == "1" {
			t.Fatalf("%s (COMMISSIONER_INTEGRATION=1)", msg)
		}
		t.Skipf("%s; set COMMISSIONER_INTEGRATION=1 to make this a failure", msg)
	}
	var b [6]byte
	rand.Read(b[:])
	schema := "httpapitest_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("creating schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	u, _ := url.Parse(base)
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return store.Config{DSN: u.String()}
}

// filledStore opens a store and saves n realistic orders decided by the real engine with the
// repository's policies, plus two more events of order o-0 (three decisions in all).
func filledStore(t *testing.T, cfg store.Config, n int) *store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	set, err := rules.LoadDir("../../policies")
	if err != nil {
		t.Fatal(err)
	}
	countries := []struct{ country, currency, amount string }{
		{"US", "USD", "2941.00"}, {"GB", "GBP", "123.45"}, {"BR", "BRL", "333.33"}, {"JP", "JPY", "12345"},
		{"DE", "EUR", "99.99"}, {"KW", "KWD", "10.000"}, {"ZA", "ZAR", "1000.10"},
	}
	var events []engine.Event
	add := func(orderID string, i int, amount string) {
		c := countries[i%len(countries)]
		if amount == "" {
			amount = c.amount
		}
		traffic := c.country
		if i%11 == 5 {
			traffic = "CN" // disqualified
		}
		raw := fmt.Sprintf(`{"order_id":%q,"program":"alibaba","affiliate_id":"aff-%d","status":"completed",`+
			`"placed_at":"2025-10-%02dT12:00:00Z","click_at":"2025-10-01T00:00:00Z","buyer":{"id":"b-%d","country":%q,"new":%t},`+
			`"traffic_country":%q,"currency":%q,"amount":%q}`,
			orderID, i%5, 2+i%27, i, c.country, i%3 == 0, traffic, c.currency, amount)
		seq := uint64(len(events) + 1)
		events = append(events, engine.Event{ID: fmt.Sprintf("ev-%d", seq), Subject: "orders.alibaba", StreamSeq: seq, Raw: []byte(raw)})
	}
	for i := range n {
		add(fmt.Sprintf("o-%d", i), i, "")
	}
	add("o-0", 0, "100.00")
	add("o-0", 0, "200.00")
	w, err := engine.ClaimPartition(ctx, st, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := w.Write(ctx, engine.New(set), events)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Dead) > 0 {
		t.Fatalf("dead letters: %+v", b.Dead)
	}
	return st
}

// apiServer serves the real server (health, metrics) with the audit API mounted.
func apiServer(t *testing.T, st *store.Store, opts AuditOptions) *httptest.Server {
	t.Helper()
	if opts.Tokens == nil {
		opts.Tokens = []string{"another-token-abcdefghijkl", testToken}
	}
	m := NewMetrics()
	srv := New(Config{Addr: "127.0.0.1:0"}, m.Registry, func(context.Context) error { return nil })
	srv.MountAuditAPI(NewAuditAPI(st, opts))
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func call(t *testing.T, ts *httptest.Server, method, path, token string, body io.Reader) response {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{res.StatusCode, res.Header, b}
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
	return v
}

func wantStatus(t *testing.T, r response, status int, what string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: got status %d, want %d; body %s", what, r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: got Content-Type %q, want application/json", what, ct)
	}
}

func TestAuditAPI(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st := filledStore(t, b.fresh(t), 120)
			ts := apiServer(t, st, AuditOptions{})
			testAuth(t, ts)
			testOrderDecisions(t, ts)
			testDecision(t, ts)
			testPolicy(t, ts)
			testReplay(t, ts)
		})
	}
}

func testAuth(t *testing.T, ts *httptest.Server) {
	t.Run("auth", func(t *testing.T) {
		cases := []struct {
			name, path, header string
			status             int
			challenge          string // a regexp the WWW-Authenticate header must match; "" none
		}{
			{"no token", "/v1/decisions/1", "", 401, `^Bearer realm="commissioner"$`},
			{"a wrong token", "/v1/decisions/1", "Bearer not-the-token-at-all-xx", 401, `error="invalid_token"`},
			{"a prefix of the token", "/v1/decisions/1", "Bearer " + testToken[:10], 401, `error="invalid_token"`},
			{"another scheme", "/v1/decisions/1", "Basic " + testToken, 401, `error="invalid_token"`},
			{"a valid token", "/v1/decisions/1", "Bearer " + testToken, 200, ""},
			{"the scheme in any case", "/v1/decisions/1", "bearer " + testToken, 200, ""},
			{"unknown routes need a token", "/v1/nosuch", "", 401, `^Bearer`},
			{"unknown routes with a token", "/v1/nosuch", "Bearer " + testToken, 404, ""},
			{"health is open", "/healthz", "", 200, ""},
			{"readiness is open", "/readyz", "", 200, ""},
			{"the OpenAPI document is open", "/v1/openapi.json", "", 200, ""},
		}
		for _, tc := range cases {
			req, _ := http.NewRequest("GET", ts.URL+tc.path, nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			res, err := ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tc.status {
				t.Errorf("%s: GET %s got %d, want %d (%s)", tc.name, tc.path, res.StatusCode, tc.status, body)
			}
			ch := res.Header.Get("WWW-Authenticate")
			if tc.challenge != "" && !regexp.MustCompile(tc.challenge).MatchString(ch) {
				t.Errorf("%s: WWW-Authenticate %q, want it to match %s", tc.name, ch, tc.challenge)
			}
			if tc.status == 401 {
				if e := decode[ErrorView](t, response{body: body}); e.Error != "unauthorized" {
					t.Errorf("%s: error %q, want unauthorized", tc.name, e.Error)
				}
			}
		}
		res, err := ts.Client().Get(ts.URL + "/metrics")
		if err != nil || res.StatusCode != 200 {
			t.Errorf("GET /metrics without a token: %v %v, want 200", res.StatusCode, err)
		}
		res.Body.Close()
	})
	t.Run("no configured token refuses everything", func(t *testing.T) {
		ts := httptest.NewServer(NewAuditAPI(nil, AuditOptions{Tokens: []string{}}))
		defer ts.Close()
		if r := call(t, ts, "GET", "/v1/decisions/1", "", nil); r.status != 401 {
			t.Errorf("got %d, want 401", r.status)
		}
		if r := call(t, ts, "GET", "/v1/decisions/1", testToken, nil); r.status != 401 {
			t.Errorf("with a token: got %d, want 401", r.status)
		}
	})
}

func testOrderDecisions(t *testing.T, ts *httptest.Server) {
	t.Run("an order's decisions, paged", func(t *testing.T) {
		var ids []int64
		cursor := ""
		for page := 0; ; page++ {
			path := "/v1/orders/o-0/decisions?program=alibaba&limit=2"
			if cursor != "" {
				path += "&cursor=" + cursor
			}
			r := call(t, ts, "GET", path, testToken, nil)
			wantStatus(t, r, 200, path)
			v := decode[OrderDecisionsView](t, r)
			for _, d := range v.Decisions {
				if d.OrderID != "o-0" || d.Program != "alibaba" {
					t.Errorf("page %d: decision %d of order %s/%s, want alibaba/o-0", page, d.ID, d.Program, d.OrderID)
				}
				ids = append(ids, d.ID)
			}
			if v.NextCursor == "" {
				break
			}
			if page > 3 {
				t.Fatal("paging does not end")
			}
			cursor = v.NextCursor
		}
		if len(ids) != 3 || !slices.IsSortedFunc(ids, func(a, b int64) int { return int(b - a) }) {
			t.Errorf("paged ids %v, want 3, newest first", ids)
		}

		r := call(t, ts, "GET", "/v1/orders/o-0/decisions", testToken, nil)
		wantStatus(t, r, 200, "default page")
		v := decode[OrderDecisionsView](t, r)
		if len(v.Decisions) != 3 || v.NextCursor != "" {
			t.Errorf("default page: %d decisions, cursor %q; want 3 and none", len(v.Decisions), v.NextCursor)
		}
		d := v.Decisions[0] // the newest: amount 200.00, a US new buyer: 10%
		if d.Commission != "20.00" || d.Rate != "10" || d.Base != "200.00" || d.Flat != nil || d.Currency != "USD" {
			t.Errorf("newest decision: commission %s rate %s base %s flat %v %s; want 20.00 10 200.00 null USD",
				d.Commission, d.Rate, d.Base, d.Flat, d.Currency)
		}
		if !bytes.Contains(r.body, []byte(`"commission": "20.00"`)) {
			t.Errorf("commission is not an exact decimal string in %s", r.body[:min(len(r.body), 400)])
		}

		for _, bad := range []string{"limit=0", "limit=501", "limit=x", "cursor=abc", "cursor=-1"} {
			r := call(t, ts, "GET", "/v1/orders/o-0/decisions?"+bad, testToken, nil)
			wantStatus(t, r, 400, bad)
		}
		r = call(t, ts, "GET", "/v1/orders/o-0/decisions?limit=500", testToken, nil)
		wantStatus(t, r, 200, "limit=500")
		r = call(t, ts, "GET", "/v1/orders/no-such-order/decisions", testToken, nil)
		wantStatus(t, r, 404, "an unknown order")
		r = call(t, ts, "GET", "/v1/orders/o-0/decisions?program=other", testToken, nil)
		wantStatus(t, r, 404, "another program")
	})
}

func testDecision(t *testing.T, ts *httptest.Server) {
	t.Run("a decision, explained", func(t *testing.T) {
		r := call(t, ts, "GET", "/v1/orders/o-5/decisions", testToken, nil)
		wantStatus(t, r, 200, "o-5")
		id := decode[OrderDecisionsView](t, r).Decisions[0].ID // traffic from CN: disqualified

		r = call(t, ts, "GET", fmt.Sprintf("/v1/decisions/%d", id), testToken, nil)
		wantStatus(t, r, 200, "decision")
		d := decode[DecisionView](t, r)
		if in := d.Chain.Inclusion; in == nil || !in.Verified || len(in.Path) == 0 {
			t.Errorf("chain %+v: want a verified inclusion proof", d.Chain)
		}
		if d.Check == nil || !d.Check.Reproduced || !d.Check.LeafOK || len(d.Check.Drift) != 0 {
			t.Fatalf("check = %+v, want reproduced with its hash", d.Check)
		}
		if d.Qualified || !slices.Equal(d.FailedRules, []string{"traffic_allowed"}) || d.Commission != "0.000" {
			t.Errorf("decision: qualified %t failed %v commission %s; want false [traffic_allowed] 0.000 (KWD)", d.Qualified, d.FailedRules, d.Commission)
		}
		if d.Policy.EffectiveFrom == nil || !d.Policy.EffectiveFrom.Equal(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)) || d.Policy.File == "" {
			t.Errorf("policy = %+v, want effective_from 2025-01-01 and the file", d.Policy)
		}
		var traffic *RuleView
		for i := range d.Trace {
			if d.Trace[i].Rule == "traffic_allowed" {
				traffic = &d.Trace[i]
			}
			if d.Trace[i].Expr == "" {
				t.Errorf("rule %s has no expression", d.Trace[i].Rule)
			}
		}
		if traffic == nil || traffic.Outcome != "fail" || len(traffic.Inputs) != 2 ||
			traffic.Inputs[0] != (InputView{"order.traffic_country", `"CN"`}) {
			t.Errorf("traffic_allowed = %+v, want fail reading order.traffic_country \"CN\" and the banned list", traffic)
		}

		wantStatus(t, call(t, ts, "GET", "/v1/decisions/999999", testToken, nil), 404, "an unknown decision")
		wantStatus(t, call(t, ts, "GET", "/v1/decisions/abc", testToken, nil), 400, "a bad id")
	})
}

func testPolicy(t *testing.T, ts *httptest.Server) {
	t.Run("a stored policy version", func(t *testing.T) {
		r := call(t, ts, "GET", "/v1/policies/alibaba/1", testToken, nil)
		wantStatus(t, r, 200, "policy")
		p := decode[PolicyView](t, r)
		src, err := os.ReadFile("../../policies/alibaba/v1.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if p.Source != string(src) || p.Digest != rules.Digest(src) || !p.DigestOK || p.SourceDigest != p.Digest || p.Version != 1 {
			t.Errorf("policy: version %d digest %s source_digest %s ok %t, source equal %t; want the file's",
				p.Version, p.Digest, p.SourceDigest, p.DigestOK, p.Source == string(src))
		}
		wantStatus(t, call(t, ts, "GET", "/v1/policies/alibaba/9", testToken, nil), 404, "an unknown version")
		wantStatus(t, call(t, ts, "GET", "/v1/policies/nosuch/1", testToken, nil), 404, "an unknown program")
		wantStatus(t, call(t, ts, "GET", "/v1/policies/alibaba/x", testToken, nil), 400, "a bad version")
	})
}

// candidatePolicy is the seed policy as version 2, paying returning buyers in the selected
// markets 5% instead of 6%.
func candidatePolicy(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile("../../policies/alibaba/v1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(src), "version: 1", "version: 2", 1)
	s = strings.Replace(s, "    rate: \"6%\"", "    rate: \"5%\"", 1)
	s = regexp.MustCompile(`(?s)\ntests:.*`).ReplaceAllString(s, "\n")
	return s
}

func testReplay(t *testing.T, ts *httptest.Server) {
	t.Run("replay", func(t *testing.T) {
		body := func(v any) io.Reader {
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			return bytes.NewReader(b)
		}
		r := call(t, ts, "POST", "/v1/replay", testToken, body(ReplayRequest{Policy: candidatePolicy(t), Program: "alibaba"}))
		wantStatus(t, r, 200, "replay")
		// The same document as `commissioner replay --format json`.
		v := decode[ReplayDocument](t, r)
		sum := v.Summary
		if v.Candidate.Source != "request" || sum.Evaluated != 120 || sum.CommissionChanged == 0 || sum.NewlyQualified != 0 || sum.NewlyDisqualified != 0 {
			t.Fatalf("replay: candidate from %q, evaluated %d commission_changed %d newly %d/%d; want the request, 120 (latest per order), some, 0/0",
				v.Candidate.Source, sum.Evaluated, sum.CommissionChanged, sum.NewlyQualified, sum.NewlyDisqualified)
		}
		if v.Parameters.Program != "alibaba" || !v.Parameters.LatestPerOrder || v.Parameters.Source != "store" {
			t.Errorf("parameters %+v, want alibaba, latest per order, from the store", v.Parameters)
		}
		for _, c := range v.Changes {
			if c.Old == nil || c.Old.RateRule != "selected_returning" || c.Old.Rate != "6" || c.New.Rate != "5" ||
				!strings.HasPrefix(c.Diff, "-") || c.Cause.Rule != "selected_returning" {
				t.Errorf("change %s: %+v → %+v (%s, cause %+v), want selected_returning 6%% → 5%%, less paid", c.OrderID, c.Old, c.New, c.Diff, c.Cause)
			}
		}
		for _, g := range v.ByRateRule {
			if g.Old == "" && g.New == "" && g.Changed != 0 {
				t.Errorf("by_rate_rule %+v: orders not qualified before or after cannot change commission", g)
			}
		}
		var gbp *ReplayGroupDoc
		for i := range sum.Totals {
			if sum.Totals[i].Currency == "GBP" {
				gbp = &sum.Totals[i]
			}
		}
		if gbp == nil || !regexp.MustCompile(`^-[0-9]+\.[0-9]{2}$`).MatchString(gbp.Diff) {
			t.Errorf("GBP total %+v, want a negative exact difference", gbp)
		}

		r = call(t, ts, "POST", "/v1/replay", testToken, body(ReplayRequest{Policy: candidatePolicy(t),
			From: ptr(time.Date(2025, 10, 2, 0, 0, 0, 0, time.UTC)), To: ptr(time.Date(2025, 10, 3, 0, 0, 0, 0, time.UTC))}))
		wantStatus(t, r, 200, "replay of one day")
		if v := decode[ReplayDocument](t, r); v.Summary.Evaluated == 0 || v.Summary.Evaluated >= 120 || v.Parameters.From != "2025-10-02T00:00:00Z" {
			t.Errorf("one day: evaluated %d (from %q), want a few", v.Summary.Evaluated, v.Parameters.From)
		}

		big := `{"policy":"` + strings.Repeat("x", DefaultMaxBodyBytes) + `"}`
		wantStatus(t, call(t, ts, "POST", "/v1/replay", testToken, strings.NewReader(big)), 413, "a body over 1 MiB")
		wantStatus(t, call(t, ts, "POST", "/v1/replay", testToken, strings.NewReader(`{"policy":"program: [","nope":1}`)), 400, "an unknown field")
		wantStatus(t, call(t, ts, "POST", "/v1/replay", testToken, body(ReplayRequest{Policy: "program: alibaba\n"})), 422, "a policy that does not compile")
		wantStatus(t, call(t, ts, "POST", "/v1/replay", testToken, body(ReplayRequest{Policy: candidatePolicy(t), Program: "other"})), 400, "another program")
		wantStatus(t, call(t, ts, "POST", "/v1/replay", "", body(ReplayRequest{Policy: candidatePolicy(t)})), 401, "no token")
	})
}

func ptr[T any](v T) *T { return &v }

// TestDecisionProvenAgainstACheckpoint: with the service's checkpoint key, a decision's route
// continues its inclusion proof to the latest stored checkpoint, whose signed note it returns for
// the caller to verify with its own copy of the key; a decision stored after it is not covered.
func TestDecisionProvenAgainstACheckpoint(t *testing.T) {
	ctx := context.Background()
	st := filledStore(t, backends[0].fresh(t), 20)
	skey, vkey, err := note.GenerateKey(rand.Reader, "commissioner-test")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	key, _ := note.NewVerifier(vkey)
	cp := audit.NewCheckpointer(signer, time.Hour, nil, st)
	heads, err := st.PartitionHeads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range heads {
		cp.Update(h)
	}
	if err := cp.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	ts := apiServer(t, st, AuditOptions{CheckpointKey: key})
	r := call(t, ts, "GET", "/v1/decisions/1", testToken, nil)
	wantStatus(t, r, 200, "a decision")
	c := decode[DecisionView](t, r).Chain.Checkpoint
	if c == nil || !c.Verified || !c.Covered || c.HeadSeq != 1 || len(c.Batches) != 1 || c.Batches[0].Root != decode[DecisionView](t, r).Chain.Inclusion.BatchRoot {
		t.Fatalf("chain.checkpoint = %+v, want verified through batch 1, whose root is the inclusion's", c)
	}
	if _, err := audit.OpenCheckpoint([]byte(c.Note), key); err != nil {
		t.Errorf("the returned note does not verify with the key: %v", err)
	}
	// Without the key, no proof is attempted.
	plain := apiServer(t, st, AuditOptions{})
	if c := decode[DecisionView](t, call(t, plain, "GET", "/v1/decisions/1", testToken, nil)).Chain.Checkpoint; c != nil {
		t.Errorf("without a checkpoint key: chain.checkpoint = %+v, want none", c)
	}
}

func TestAuditAPILimits(t *testing.T) {
	st := filledStore(t, backends[0].fresh(t), 30)
	t.Run("a replay over more orders than the limit is refused", func(t *testing.T) {
		ts := apiServer(t, st, AuditOptions{ReplayMaxOrders: 10})
		b, _ := json.Marshal(ReplayRequest{Policy: candidatePolicy(t)})
		r := call(t, ts, "POST", "/v1/replay", testToken, bytes.NewReader(b))
		wantStatus(t, r, 422, "30 orders, limit 10")
		if e := decode[ErrorView](t, r); e.Error != "too_many_orders" {
			t.Errorf("error %q, want too_many_orders", e.Error)
		}
	})
	t.Run("a request past its time limit answers 504", func(t *testing.T) {
		ts := apiServer(t, st, AuditOptions{RequestTimeout: time.Nanosecond, ReplayTimeout: time.Nanosecond})
		wantStatus(t, call(t, ts, "GET", "/v1/orders/o-1/decisions", testToken, nil), 504, "a page")
		b, _ := json.Marshal(ReplayRequest{Policy: candidatePolicy(t)})
		wantStatus(t, call(t, ts, "POST", "/v1/replay", testToken, bytes.NewReader(b)), 504, "a replay")
	})
	t.Run("replays beyond the limit at once answer 429", func(t *testing.T) {
		held := &heldStore{AuditStore: st, entered: make(chan struct{}, 4), release: make(chan struct{})}
		m := NewMetrics()
		srv := New(Config{Addr: "127.0.0.1:0"}, m.Registry, func(context.Context) error { return nil })
		srv.MountAuditAPI(NewAuditAPI(held, AuditOptions{Tokens: []string{testToken}, MaxReplays: 2}))
		ts := httptest.NewServer(srv.Handler())
		t.Cleanup(ts.Close)
		b, _ := json.Marshal(ReplayRequest{Policy: candidatePolicy(t)})
		statuses := make(chan int, 2)
		for range 2 {
			go func() {
				r, err := http.DefaultClient.Do(mustRequest(t, ts, b))
				if err != nil {
					statuses <- 0
					return
				}
				r.Body.Close()
				statuses <- r.StatusCode
			}()
		}
		<-held.entered
		<-held.entered // both replays are walking history
		r := call(t, ts, "POST", "/v1/replay", testToken, bytes.NewReader(b))
		wantStatus(t, r, 429, "a third replay while two run")
		if r.header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
		if e := decode[ErrorView](t, r); e.Error != "too_many_replays" {
			t.Errorf("error %q, want too_many_replays", e.Error)
		}
		close(held.release)
		for range 2 {
			if code := <-statuses; code != 200 {
				t.Errorf("a replay that held a slot answered %d, want 200", code)
			}
		}
		wantStatus(t, call(t, ts, "POST", "/v1/replay", testToken, bytes.NewReader(b)), 200, "a replay once the slots are free")
	})
	t.Run("a smaller body limit", func(t *testing.T) {
		ts := apiServer(t, st, AuditOptions{MaxBodyBytes: 100})
		b, _ := json.Marshal(ReplayRequest{Policy: candidatePolicy(t)})
		wantStatus(t, call(t, ts, "POST", "/v1/replay", testToken, bytes.NewReader(b)), 413, "a policy over 100 bytes")
	})
}

// TestOpenAPIDocument checks that the embedded document is OpenAPI 3, and that it describes
// exactly the routes the API serves, each with its methods.
func TestOpenAPIDocument(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
		Comps   struct {
			SecuritySchemes map[string]json.RawMessage `json:"securitySchemes"`
		} `json:"components"`
	}
	if err := json.Unmarshal(OpenAPIDocument(), &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi = %q, want 3.x", doc.OpenAPI)
	}
	if _, ok := doc.Comps.SecuritySchemes["bearer"]; !ok {
		t.Errorf("no bearer security scheme in %v", doc.Comps.SecuritySchemes)
	}
	want := map[string][]string{
		"/v1/orders/{id}/decisions":        {"get"},
		"/v1/decisions/{id}":               {"get"},
		"/v1/policies/{program}/{version}": {"get"},
		"/v1/replay":                       {"post"},
		"/v1/dead-letters":                 {"get"},
		"/v1/dead-letters/{id}":            {"get"},
		"/v1/dead-letters/redrive":         {"post"},
		"/v1/shadow/report":                {"get"},
		"/v1/openapi.json":                 {"get"},
		"/healthz":                         {"get"},
		"/readyz":                          {"get"},
		"/metrics":                         {"get"},
	}
	for path, methods := range want {
		ops, ok := doc.Paths[path]
		if !ok {
			t.Errorf("the document does not describe %s", path)
			continue
		}
		var got []string
		for m := range ops {
			if m != "parameters" {
				got = append(got, m)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, methods) {
			t.Errorf("%s: got methods %v, want %v", path, got, methods)
		}
	}
	for path := range doc.Paths {
		if _, ok := want[path]; !ok {
			t.Errorf("the document describes %s, which is not served", path)
		}
	}
}

// heldStore holds every replay's walk of history until release is closed, telling entered when
// one starts: replays that stay running.
type heldStore struct {
	AuditStore
	entered chan struct{}
	release chan struct{}
}

func (h *heldStore) ReplayHistory(f engine.EventFilter) engine.History {
	return heldHistory{h.AuditStore.ReplayHistory(f), h}
}

type heldHistory struct {
	engine.History
	h *heldStore
}

func (w heldHistory) Walk(ctx context.Context, fn func([]engine.ReplayEvent) error) error {
	w.h.entered <- struct{}{}
	<-w.h.release
	return w.History.Walk(ctx, fn)
}

func mustRequest(t *testing.T, ts *httptest.Server, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest("POST", ts.URL+"/v1/replay", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	return req
}

// TestReadyzDetailsOnlyWithAToken: /readyz tells anyone whether the service is ready, and why not
// only a caller with a bearer token (the error names hosts and the store).
func TestReadyzDetailsOnlyWithAToken(t *testing.T) {
	m := NewMetrics()
	srv := New(Config{Addr: "127.0.0.1:0", Tokens: []string{testToken}}, m.Registry, func(context.Context) error {
		return fmt.Errorf("store: dial tcp 10.1.2.3:5432: connection refused")
	})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	anon := call(t, ts, "GET", "/readyz", "", nil)
	wantStatus(t, anon, 503, "not ready, anonymous")
	if strings.Contains(string(anon.body), "10.1.2.3") || !strings.Contains(string(anon.body), "not ready") {
		t.Errorf("anonymous /readyz: %s, want not ready without the reason", anon.body)
	}
	authed := call(t, ts, "GET", "/readyz", testToken, nil)
	wantStatus(t, authed, 503, "not ready, with a token")
	if !strings.Contains(string(authed.body), "10.1.2.3:5432: connection refused") {
		t.Errorf("/readyz with a token: %s, want the reason", authed.body)
	}
}
