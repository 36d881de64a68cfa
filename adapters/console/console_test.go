package console

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun/driver/pgdriver"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/audit"
	"github.com/commissioner/commissioner/rules"
)

const testToken = "console-token-0123456789abcdef"

// xssOrder is an order id that would run as script if it were not escaped.
const xssOrder = "<script>x</script>"

// testStore is the store as cmd wires it for the console: the console's filter converted.
type testStore struct{ *store.Store }

func (s testStore) RecentDecisions(ctx context.Context, f DecisionFilter, before int64, limit int) ([]audit.StoredDecision, error) {
	return s.Store.RecentDecisions(ctx, store.DecisionFilter(f), before, limit)
}

var _ Store = testStore{}

// testAuth signs in with testToken (a reader's) and operatorToken (an operator's), checked as
// cmd checks them: the audit API's tokens (a test may use another adapter; the console may not).
var testAuth = httpapi.NewTokens([]string{testToken}, []string{operatorToken}).Check

// backends are the databases the console is tested on.
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
	schema := "consoletest_" + hex.EncodeToString(b[:])
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

// filledStore opens a store and saves n orders decided by the real engine with the repository's
// policies (o-5 is disqualified: banned traffic), an order whose id is xssOrder, and two dead
// letters: one of order o-1 (a bad amount), one of an unknown program.
func filledStore(t *testing.T, cfg store.Config, n int) *store.Store {
	t.Helper()
	return filledStoreFrom(t, cfg, n, "../../policies")
}

// filledStoreFrom is filledStore deciding with the policies of dir.
func filledStoreFrom(t *testing.T, cfg store.Config, n int, dir string) *store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	set, err := rules.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var events []engine.Event
	add := func(orderID, program string, i int, amount string) {
		traffic := "US"
		if i%11 == 5 {
			traffic = "CN" // disqualified
		}
		raw := fmt.Sprintf(`{"order_id":%q,"program":%q,"affiliate_id":"aff-%d","status":"completed",`+
			`"placed_at":"2025-10-%02dT12:00:00Z","click_at":"2025-10-01T00:00:00Z","buyer":{"id":"b-%d","country":"US","new":%t},`+
			`"traffic_country":%q,"currency":"USD","amount":%q}`,
			orderID, program, i%5, 2+i%27, i, i%3 == 0, traffic, amount)
		seq := uint64(len(events) + 1)
		events = append(events, engine.Event{ID: fmt.Sprintf("ev-%d", seq), Subject: "orders." + program, StreamSeq: seq, Raw: []byte(raw)})
	}
	for i := range n {
		add(fmt.Sprintf("o-%d", i), "alibaba", i, "2941.00")
	}
	add(xssOrder, "alibaba", 1, "10.00")
	add("o-1", "alibaba", 1, "not-a-number")
	add("o-x", "nosuch", 2, "10.00")
	w, err := engine.ClaimPartition(ctx, st, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := w.Write(ctx, engine.New(set), events)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Dead) != 2 {
		t.Fatalf("got %d dead letters, want 2: %+v", len(b.Dead), b.Dead)
	}
	return st
}

// client is a browser: a cookie jar, no redirects followed (the tests look at them).
type client struct {
	t   *testing.T
	ts  *httptest.Server
	hc  *http.Client
	jar http.CookieJar
}

func newClient(t *testing.T, ts *httptest.Server) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, ts: ts, jar: jar, hc: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

type response struct {
	status int
	header http.Header
	body   string
}

func (c *client) do(method, path string, form url.Values) response {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.ts.URL+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return response{res.StatusCode, res.Header, string(b)}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// csrf is the CSRF token in a page's form.
func csrf(t *testing.T, r response) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("no csrf field in the page:\n%s", r.body)
	}
	return m[1]
}

// signIn signs the client in with token and returns the POST's response.
func (c *client) signIn(token string) response {
	c.t.Helper()
	form := c.do("GET", "/ui/login", nil)
	return c.do("POST", "/ui/login", url.Values{"csrf": {csrf(c.t, form)}, "token": {token}})
}

func wantStatus(t *testing.T, r response, status int, what string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: got status %d, want %d; body:\n%s", what, r.status, status, r.body)
	}
}

func wantBody(t *testing.T, r response, what string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(r.body, s) {
			t.Errorf("%s: the page lacks %q; body:\n%s", what, s, r.body)
		}
	}
}

func TestConsole(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st := filledStore(t, b.fresh(t), 12)
			ts := httptest.NewServer(New(testStore{st}, Options{Authenticate: testAuth}))
			t.Cleanup(ts.Close)
			t.Run("sign-in", func(t *testing.T) { testSignIn(t, ts) })
			t.Run("pages", func(t *testing.T) { testPages(t, ts, st) })
		})
	}
}

func testSignIn(t *testing.T, ts *httptest.Server) {
	t.Run("a wrong token is refused", func(t *testing.T) {
		c := newClient(t, ts)
		r := c.signIn("not-the-token-0123456789")
		wantStatus(t, r, http.StatusUnauthorized, "a wrong token")
		wantBody(t, r, "a wrong token", `<p class="error" id="login-error">the token is not valid</p>`, `<form id="login" method="post" action="/ui/login">`)
		if strings.Contains(r.body, "not-the-token") {
			t.Errorf("the refused token is echoed in the page")
		}
		for _, ck := range r.header.Values("Set-Cookie") {
			if strings.HasPrefix(ck, sessionCookie+"=") {
				t.Errorf("a wrong token got a session cookie: %s", ck)
			}
		}
	})
	t.Run("a token signs in", func(t *testing.T) {
		c := newClient(t, ts)
		r := c.signIn(testToken)
		wantStatus(t, r, http.StatusSeeOther, "sign-in")
		if loc := r.header.Get("Location"); loc != "/ui/" {
			t.Errorf("sign-in redirects to %q, want /ui/", loc)
		}
		var session string
		for _, ck := range r.header.Values("Set-Cookie") {
			if strings.HasPrefix(ck, sessionCookie+"=") {
				session = ck
			}
		}
		for _, attr := range []string{"HttpOnly", "SameSite=Strict", "Path=/ui/"} {
			if !strings.Contains(session, attr) {
				t.Errorf("the session cookie %q lacks %s", session, attr)
			}
		}
		if strings.Contains(session, "Secure") {
			t.Errorf("the session cookie %q is Secure over plain HTTP", session)
		}
		if v, _, _ := strings.Cut(strings.TrimPrefix(session, sessionCookie+"="), ";"); len(v) != 64 {
			t.Errorf("the session cookie's value %q is not 32 random bytes in hex", v)
		}
		if strings.Contains(session, testToken) || strings.Contains(r.header.Get("Location"), testToken) {
			t.Errorf("the token leaks into the cookie or the redirect")
		}
		wantStatus(t, c.do("GET", "/ui/", nil), http.StatusOK, "the search page once signed in")
		// Sign out: without the CSRF token refused, with it the session ends.
		page := c.do("GET", "/ui/", nil)
		wantStatus(t, c.do("POST", "/ui/logout", url.Values{}), http.StatusForbidden, "sign-out without CSRF")
		wantStatus(t, c.do("POST", "/ui/logout", url.Values{"csrf": {"00"}}), http.StatusForbidden, "sign-out with a wrong CSRF")
		wantStatus(t, c.do("GET", "/ui/", nil), http.StatusOK, "the session after refused sign-outs")
		wantStatus(t, c.do("POST", "/ui/logout", url.Values{"csrf": {csrf(t, page)}}), http.StatusSeeOther, "sign-out")
		wantStatus(t, c.do("GET", "/ui/", nil), http.StatusSeeOther, "the search page after sign-out")
	})
	t.Run("sign-in without CSRF is refused", func(t *testing.T) {
		c := newClient(t, ts)
		wantStatus(t, c.do("POST", "/ui/login", url.Values{"token": {testToken}}), http.StatusForbidden, "sign-in without CSRF")
		c.do("GET", "/ui/login", nil) // the cookie, but not the field
		wantStatus(t, c.do("POST", "/ui/login", url.Values{"token": {testToken}, "csrf": {"00"}}), http.StatusForbidden, "sign-in with a wrong CSRF")
	})
	t.Run("no session redirects to sign-in", func(t *testing.T) {
		c := newClient(t, ts)
		for _, path := range []string{"/ui/", "/ui/orders/o-1", "/ui/health", "/ui/?q=o-1", "/ui/nosuch"} {
			r := c.do("GET", path, nil)
			wantStatus(t, r, http.StatusSeeOther, path)
			if loc := r.header.Get("Location"); loc != "/ui/login" {
				t.Errorf("%s redirects to %q, want /ui/login", path, loc)
			}
		}
		r := c.do("POST", "/ui/logout", url.Values{})
		wantStatus(t, r, http.StatusSeeOther, "sign-out without a session")
	})
	t.Run("an expired session redirects to sign-in", func(t *testing.T) {
		now := time.Now()
		st := New(nil, Options{Authenticate: testAuth, Now: func() time.Time { return now }})
		value, _ := st.newSession(false)
		r := httptest.NewRequest("GET", "/ui/", nil)
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: value})
		if _, ok := st.session(r); !ok {
			t.Fatal("a new session is not found")
		}
		now = now.Add(DefaultSessionTTL)
		if _, ok := st.session(r); ok {
			t.Error("a session is live after its 8 hours")
		}
	})
}

func testPages(t *testing.T, ts *httptest.Server, st *store.Store) {
	c := newClient(t, ts)
	wantStatus(t, c.signIn(testToken), http.StatusSeeOther, "sign-in")
	ctx := context.Background()
	ds, err := st.DecisionsByOrder(ctx, "", "o-3")
	if err != nil || len(ds) != 1 {
		t.Fatalf("decisions of o-3: %v, %v", ds, err)
	}
	xss, err := st.DecisionsByOrder(ctx, "", xssOrder)
	if err != nil || len(xss) != 1 {
		t.Fatalf("decisions of %s: %v, %v", xssOrder, xss, err)
	}

	t.Run("security headers on every response", func(t *testing.T) {
		anon := newClient(t, ts)
		paths := []struct {
			c    *client
			path string
		}{
			{anon, "/ui/login"}, {anon, "/ui/"}, {anon, "/ui/assets/console.css"},
			{c, "/ui/"}, {c, "/ui/orders/o-5"}, {c, "/ui/orders/nosuch"}, {c, "/ui/health"}, {c, "/ui/nosuch"}, {c, "/ui/?q=nosuch"},
		}
		for _, p := range paths {
			r := p.c.do("GET", p.path, nil)
			for k, want := range map[string]string{"Content-Security-Policy": contentSecurityPolicy, "X-Content-Type-Options": "nosniff",
				"Referrer-Policy": "no-referrer"} {
				if got := r.header.Get(k); got != want {
					t.Errorf("GET %s: %s is %q, want %q", p.path, k, got, want)
				}
			}
		}
		if !strings.Contains(contentSecurityPolicy, "script-src 'self'") || strings.Contains(contentSecurityPolicy, "unsafe-inline") {
			t.Errorf("the CSP allows inline script: %s", contentSecurityPolicy)
		}
	})

	t.Run("search", func(t *testing.T) {
		for _, tc := range []struct {
			name, q, want string
		}{
			{"by order id", "o-3", "/ui/orders/o-3"},
			{"by event id", ds[0].EventID, "/ui/orders/o-3"},
			{"by decision id", fmt.Sprint(ds[0].ID), "/ui/orders/o-3"},
			{"an order with only a dead letter", "o-x", "/ui/orders/o-x"},
			{"an xss order id", xssOrder, "/ui/orders/" + url.PathEscape(xssOrder)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := c.do("GET", "/ui/?q="+url.QueryEscape(tc.q), nil)
				wantStatus(t, r, http.StatusSeeOther, tc.q)
				if loc := r.header.Get("Location"); loc != tc.want {
					t.Errorf("q=%s redirects to %q, want %q", tc.q, loc, tc.want)
				}
			})
		}
		r := c.do("GET", "/ui/?q=nothing-like-it", nil)
		wantStatus(t, r, http.StatusNotFound, "a search that finds nothing")
		wantBody(t, r, "a search that finds nothing", `id="search-error"`)
	})

	t.Run("recent decisions", func(t *testing.T) {
		rows := regexp.MustCompile(`<tr class="decision-row" data-decision="(\d+)">`)
		for _, tc := range []struct {
			query string
			want  int
		}{
			{"", 13},
			{"?qualified=no", 1}, // o-5
			{"?qualified=yes", 12},
			{"?program=nosuch", 0},
			{"?from=2000-01-01&to=2999-12-31", 13},
			{"?to=2000-01-01", 0},
		} {
			r := c.do("GET", "/ui/"+tc.query, nil)
			wantStatus(t, r, http.StatusOK, tc.query)
			wantBody(t, r, tc.query, `<table id="recent">`)
			if got := len(rows.FindAllString(r.body, -1)); got != tc.want {
				t.Errorf("GET /ui/%s: got %d rows, want %d", tc.query, got, tc.want)
			}
		}
		r := c.do("GET", "/ui/", nil)
		ids := rows.FindAllStringSubmatch(r.body, -1)
		for i := 1; i < len(ids); i++ {
			prev, _ := strconv.Atoi(ids[i-1][1])
			id, _ := strconv.Atoi(ids[i][1])
			if id >= prev {
				t.Errorf("recent decisions are not newest first: %d after %d", id, prev)
			}
		}
		wantBody(t, r, "recent decisions", `href="/ui/orders/o-3"`)
		wantStatus(t, c.do("GET", "/ui/?qualified=maybe", nil), http.StatusBadRequest, "a bad filter")
		wantStatus(t, c.do("GET", "/ui/?from=yesterday", nil), http.StatusBadRequest, "a bad date")
	})

	t.Run("decision page of a disqualified order", func(t *testing.T) {
		r := c.do("GET", "/ui/orders/o-5", nil)
		wantStatus(t, r, http.StatusOK, "o-5")
		d, _ := st.DecisionsByOrder(ctx, "", "o-5")
		wantBody(t, r, "o-5",
			fmt.Sprintf(`<section class="decision" id="decision-%d">`, d[0].ID),
			`<tr class="rule" data-rule="traffic_allowed" data-outcome="fail">`,
			`<td class="reason">The referring traffic came from a banned country (China Mainland, India or Nigeria).</td>`,
			`data-rule="completed" data-outcome="pass"`,
			fmt.Sprintf(`<p class="verdict" id="verdict-%d">reproduced and included in batch 1 of partition 0</p>`, d[0].ID))
	})

	t.Run("decision page of a qualified order", func(t *testing.T) {
		r := c.do("GET", "/ui/orders/o-3", nil)
		wantStatus(t, r, http.StatusOK, "o-3")
		wantBody(t, r, "o-3", `data-outcome="match"`, "USD 2941.00 × ", `class="arithmetic"`,
			fmt.Sprintf(`id="verdict-%d">reproduced and included in batch 1 of partition 0<`, ds[0].ID))
	})

	t.Run("an order's dead letters", func(t *testing.T) {
		r := c.do("GET", "/ui/orders/o-1", nil)
		wantStatus(t, r, http.StatusOK, "o-1")
		wantBody(t, r, "o-1", `<li class="dead-letter"`, `<span class="reason">`)
	})

	t.Run("an unknown order is 404", func(t *testing.T) {
		r := c.do("GET", "/ui/orders/nosuch", nil)
		wantStatus(t, r, http.StatusNotFound, "an unknown order")
		wantBody(t, r, "an unknown order", "Order nosuch has no stored decision and no dead-lettered event.")
	})

	t.Run("an xss order id renders as text", func(t *testing.T) {
		for _, path := range []string{"/ui/orders/" + url.PathEscape(xssOrder), "/ui/"} {
			r := c.do("GET", path, nil)
			wantStatus(t, r, http.StatusOK, path)
			if strings.Contains(r.body, "<script>") {
				t.Errorf("GET %s: the order id is not escaped:\n%s", path, r.body)
			}
			wantBody(t, r, path, "&lt;script&gt;x&lt;/script&gt;")
		}
	})

	t.Run("health", func(t *testing.T) {
		r := c.do("GET", "/ui/health", nil)
		wantStatus(t, r, http.StatusOK, "health")
		wantBody(t, r, "health", `<table id="dead-letters">`, `<dd id="count-decisions">13</dd>`, `<dd id="count-dead-letters">2</dd>`,
			`<td class="reason">`, "unknown_program")
		if n := strings.Count(r.body, `<td class="reason">`); n != 2 {
			t.Errorf("health lists %d dead letters, want 2", n)
		}
		r = c.do("GET", "/ui/health?kind=unknown_program", nil)
		if n := strings.Count(r.body, `<td class="reason">`); n != 1 {
			t.Errorf("health?kind=unknown_program lists %d dead letters, want 1", n)
		}
		r = c.do("GET", "/ui/health?kind=rule_error", nil)
		if n := strings.Count(r.body, `<td class="reason">`); n != 0 {
			t.Errorf("health?kind=rule_error lists %d dead letters, want 0", n)
		}
	})
}
