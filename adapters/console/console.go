package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/audit"
)

// Store is what the console reads (adapters/store implements it, wired in cmd). Every method must
// be safe for concurrent use and give up when ctx ends; "not found" errors match audit.ErrNotFound.
type Store interface {
	audit.Source // re-running and proving a decision (audit.Auditor)
	// Decision returns one stored decision by id.
	Decision(ctx context.Context, id int64) (audit.StoredDecision, error)
	// RecentDecisions returns up to limit decisions f selects, newest first (id descending), with
	// ids below before (0: from the newest).
	RecentDecisions(ctx context.Context, f DecisionFilter, before int64, limit int) ([]audit.StoredDecision, error)
	// DeadLetters returns the dead letters a filter selects, oldest first (an order's).
	DeadLetters(ctx context.Context, f audit.DeadLetterFilter) ([]audit.DeadLetter, error)
	// RecentDeadLetters returns up to limit dead letters of a kind ("": all), newest first, with
	// ids below before (0: from the newest).
	RecentDeadLetters(ctx context.Context, kind string, before int64, limit int) ([]audit.DeadLetter, error)
	// Counts returns how many decisions and dead letters are stored.
	Counts(ctx context.Context) (decisions, deadLetters int64, err error)
	// PolicyVersions returns every stored policy version of a program ("": every program), by
	// program and version.
	PolicyVersions(ctx context.Context, program string) ([]audit.StoredPolicy, error)
	// PolicyDecisionCounts returns how many stored decisions each version of a program made, by
	// version (absent: none).
	PolicyDecisionCounts(ctx context.Context, program string) (map[int]int64, error)
	// PayoutMonth returns a month's payout statements as `commissioner payouts --month` (without
	// --close) builds them: month is valid (engine.MonthBounds).
	PayoutMonth(ctx context.Context, month string) (PayoutMonth, error)
	// LastVerifyRun returns the latest recorded run of audit verify (the CLI's or the console's);
	// audit.ErrNotFound when none was recorded.
	LastVerifyRun(ctx context.Context) (audit.VerifyRun, error)
	// ReplayHistory returns the stored events a filter selects with their recorded decisions,
	// for the what-if page (engine.Replay reads it; nothing is written).
	ReplayHistory(f engine.EventFilter) engine.History
}

// PayoutMonth is a month's payout statements: those payable now (not paid yet) and, per program
// whose month a run closed, the run and what it paid.
type PayoutMonth struct {
	Month      string    // "2026-10"
	AsOf       time.Time // entries approved before it are in the month
	Statements []engine.Statement
	Runs       []PayoutRun // the runs that closed the month, by program
}

// PayoutRun is the run that closed a program's month, and the statements it paid.
type PayoutRun struct {
	ID               int64
	Program          string
	ClosedAt         time.Time
	Payouts, Entries int64 // statements and ledger entries paid
	Paid             []engine.Statement
}

// DecisionFilter selects recent decisions; zero fields select all.
type DecisionFilter struct {
	Program   string
	Qualified *bool  // nil: both
	RateRule  string // the rate rule that matched
	// From and To bound the decision time: [From, To).
	From, To time.Time
}

// Defaults of Options.
const (
	DefaultSessionTTL     = 8 * time.Hour
	DefaultRequestTimeout = 10 * time.Second
	PageSize              = 50 // rows of a list page
	maxFormBytes          = 64 << 10
	// The what-if page's bounds, those of POST /v1/replay (the audit API's defaults): a replay
	// reads at most DefaultReplayMaxOrders orders within DefaultReplayTimeout, at most
	// DefaultMaxReplays at once, of a candidate posted in at most maxWhatIfBytes.
	DefaultReplayTimeout   = 30 * time.Second
	DefaultReplayMaxOrders = 100_000
	DefaultMaxReplays      = 2
	maxWhatIfBytes         = 1 << 20
)

// PayoutCloser closes payout months: what `commissioner payouts --month M --close` does (without
// a bank file), for an operator's session (cmd implements it with the payouts command's steps).
type PayoutCloser interface {
	// ClosePayoutMonth closes the month of every program with payable entries, paying their
	// statements, and returns the runs that closed it now (none: it was closed before, or
	// nothing was payable). month is valid (engine.MonthBounds) and has ended.
	ClosePayoutMonth(ctx context.Context, month string) ([]PayoutRun, error)
}

// Operations is what the health page shows of the running service beyond the store, and the
// audit verify it starts there (cmd implements it over the service).
type Operations interface {
	// PolicyLoads returns the policy loads since the service started — the first at start, then
	// each reload, applied or refused — newest first.
	PolicyLoads() []PolicyLoad
	// Lag returns each partition's backlog in the order stream.
	Lag(ctx context.Context) ([]PartitionLag, error)
	// StartVerify starts `audit verify` over the whole store in the background, to be recorded
	// as run by `by` (Store.LastVerifyRun then returns it); false when one is running already.
	StartVerify(by string) bool
	// VerifyRunning returns when the audit verify running now started (zero: none is running).
	VerifyRunning() time.Time
}

// PolicyLoad is one load of the policy directory: the versions it put in force, or why it was
// refused (the running set then stayed in force).
type PolicyLoad struct {
	At       time.Time
	Applied  bool
	Versions []string // "alibaba v2"
	Err      string
}

// PartitionLag is one partition's backlog: events in the stream not delivered to its consumer
// yet, and delivered but not acknowledged (deciding or waiting to be redelivered).
type PartitionLag struct {
	Partition           int
	Pending, AckPending uint64
	Consumer            string // the partition's durable consumer; "" when it has none yet
}

// Options configure the console.
type Options struct {
	// Authenticate checks a sign-in's token: ok for a reader's or an operator's, operator for an
	// operator's. A reader reads every page and runs what-ifs and audit verify (which change
	// nothing); an operator may also change state: close a payout month. cmd gives the audit
	// API's check (httpapi.Tokens.Check) over http.tokens and http.operator_tokens, so both
	// compare tokens one way. Nil refuses every sign-in.
	Authenticate func(token string) (ok, operator bool)
	// Payouts, when set, lets an operator close a payout month from its page.
	Payouts PayoutCloser
	// Ops, when set, adds the service's policy loads, stream lag and an audit verify button to
	// the health page.
	Ops Operations
	// Shadows, when set, adds the shadow pages (/ui/shadows) and their link in the navigation:
	// the shadow versions with outcomes stored and each one's report. Nil: no page, no link.
	Shadows ShadowSource
	// SessionTTL is how long a session lasts after sign-in (0: DefaultSessionTTL).
	SessionTTL time.Duration
	// RequestTimeout is each request's deadline (0: DefaultRequestTimeout).
	RequestTimeout time.Duration
	// Now is the clock of sessions (nil: time.Now).
	Now func() time.Time
	// ReplayTimeout, ReplayMaxOrders and MaxReplays bound the what-if page's replays as
	// POST /v1/replay's (0: the Default… values, the audit API's): a replay that would read more
	// orders, or take longer, stops with an error page; another beyond MaxReplays at once is
	// refused with a "busy" page (429).
	ReplayTimeout   time.Duration
	ReplayMaxOrders int
	MaxReplays      int
	// Log receives one line per request that failed on the server's side (never a token); nil:
	// discarded.
	Log *slog.Logger
}

// The Content-Security-Policy of every response: only the console's own origin.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Cookie names.
const (
	sessionCookie = "commissioner_session"
	loginCookie   = "commissioner_login_csrf" // the sign-in form's CSRF value (double submit)
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// Console serves /ui/. Build it with New; it is an http.Handler, safe for concurrent use.
type Console struct {
	st      Store
	opts    Options
	auditor *audit.Auditor
	pages   map[string]*template.Template
	handler http.Handler
	replays chan struct{} // a slot per what-if replay running (MaxReplays)

	mu       sync.Mutex
	sessions map[[sha256.Size]byte]session // by the SHA-256 of the cookie's value
}

type session struct {
	csrf     string
	expires  time.Time
	operator bool // signed in with an operator's token
}

// Roles, as a page shows them.
const (
	roleReader   = "reader"
	roleOperator = "operator"
)

func (s *session) role() string {
	if s.operator {
		return roleOperator
	}
	return roleReader
}

// page is a signed-in page of the session.
func (s *session) page(title string, data any) page {
	return page{Title: title, CSRF: s.csrf, SignedIn: true, Role: s.role(), Data: data}
}

// needOperator refuses a reader's session the pages that change state.
func needOperator(s *session, what string) error {
	if s.operator {
		return nil
	}
	return pageError{http.StatusForbidden, "Your token reads only: " + what + " needs an operator's token (http.operator_tokens). Sign in with one."}
}

// New returns the console reading st. Mount it at /ui/ (http.ServeMux.Handle("/ui/", c)).
func New(st Store, opts Options) *Console {
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = DefaultSessionTTL
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ReplayTimeout <= 0 {
		opts.ReplayTimeout = DefaultReplayTimeout
	}
	if opts.ReplayMaxOrders <= 0 {
		opts.ReplayMaxOrders = DefaultReplayMaxOrders
	}
	if opts.MaxReplays <= 0 {
		opts.MaxReplays = DefaultMaxReplays
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Authenticate == nil {
		opts.Authenticate = func(string) (bool, bool) { return false, false }
	}
	c := &Console{st: st, opts: opts, auditor: audit.NewAuditor(st),
		pages: parsePages(), sessions: map[[sha256.Size]byte]session{}, replays: make(chan struct{}, opts.MaxReplays)}
	mux := http.NewServeMux()
	assets, _ := fs.Sub(assetFS, "assets")
	mux.Handle("GET /ui/assets/", http.StripPrefix("/ui/assets/", http.FileServerFS(assets)))
	mux.HandleFunc("GET /ui/assets/replay-report.css", replayReportCSS)
	mux.HandleFunc("GET /ui/login", c.loginForm)
	mux.HandleFunc("POST /ui/login", c.login)
	mux.Handle("POST /ui/logout", c.signedIn(c.logout))
	mux.Handle("GET /ui/{$}", c.signedIn(c.search))
	mux.Handle("GET /ui/orders/{order_id}", c.signedIn(c.order))
	mux.Handle("GET /ui/health", c.signedIn(c.health))
	mux.Handle("GET /ui/policies", c.signedIn(c.policies))
	mux.Handle("GET /ui/policies/{program}", c.signedIn(c.policies))
	mux.Handle("GET /ui/policies/{program}/diff", c.signedIn(c.policyDiff))
	mux.Handle("GET /ui/policies/{program}/{version}", c.signedIn(c.policy))
	mux.Handle("GET /ui/payouts", c.signedIn(c.payoutsIndex))
	mux.Handle("GET /ui/payouts/{month}", c.signedIn(c.payouts))
	mux.Handle("POST /ui/payouts/{month}/close", c.signedIn(c.closePayouts))
	mux.Handle("POST /ui/health/verify", c.signedIn(c.startVerify))
	mux.Handle("GET /ui/whatif", c.signedIn(c.whatIfForm))
	mux.Handle("POST /ui/whatif", c.signedInWith(maxWhatIfBytes, opts.ReplayTimeout, c.whatIf))
	c.mountShadows(mux)
	mux.Handle("/ui/", c.signedIn(func(w http.ResponseWriter, r *http.Request, _ *session) error {
		return pageError{http.StatusNotFound, "There is no page at " + r.URL.Path + "."}
	}))
	c.handler = securityHeaders(mux)
	return c
}

// ServeHTTP serves the console's routes, every response with the security headers.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.handler.ServeHTTP(w, r) }

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// pageError is an error shown to the user with its status (anything else is a 500 and logged).
type pageError struct {
	status int
	msg    string
}

func (e pageError) Error() string { return e.msg }

// signedIn wraps a page that needs a session: without one it redirects to the sign-in form;
// a POST must carry the session's CSRF token. The page's error is rendered as an error page.
func (c *Console) signedIn(h func(http.ResponseWriter, *http.Request, *session) error) http.Handler {
	return c.signedInWith(maxFormBytes, c.opts.RequestTimeout, h)
}

// signedInWith is signedIn with a POST's largest form and the request's deadline.
func (c *Console) signedInWith(maxBytes int64, timeout time.Duration, h func(http.ResponseWriter, *http.Request, *session) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := c.session(r)
		if !ok {
			http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxBytes)
			if err := r.ParseForm(); err != nil || !equalSecret(r.PostForm.Get("csrf"), s.csrf) {
				c.render(w, http.StatusForbidden, "error", s.page("Refused",
					"The request was refused: its CSRF token is missing or wrong. Reload the page and try again."))
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		if err := h(w, r.WithContext(ctx), &s); err != nil {
			status, msg := http.StatusInternalServerError, "Something went wrong on the server's side; it has been logged."
			if pe, ok := err.(pageError); ok {
				status, msg = pe.status, pe.msg
			} else {
				c.opts.Log.Error("console", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			c.render(w, status, "error", s.page(http.StatusText(status), msg))
		}
	})
}

// --- sessions ---

// session returns the request's live session.
func (c *Console) session(r *http.Request) (session, bool) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return session{}, false
	}
	key := sha256.Sum256([]byte(ck.Value))
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.sessions[key]
	if !ok {
		return session{}, false
	}
	if !c.opts.Now().Before(s.expires) {
		delete(c.sessions, key)
		return session{}, false
	}
	return s, true
}

// newSession starts a session and returns the cookie's value. Expired sessions are dropped.
func (c *Console) newSession(operator bool) (string, session) {
	value, csrf := randomToken(), randomToken()
	now := c.opts.Now()
	s := session{csrf: csrf, expires: now.Add(c.opts.SessionTTL), operator: operator}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, old := range c.sessions {
		if !now.Before(old.expires) {
			delete(c.sessions, k)
		}
	}
	c.sessions[sha256.Sum256([]byte(value))] = s
	return value, s
}

func (c *Console) endSession(r *http.Request) {
	if ck, err := r.Cookie(sessionCookie); err == nil {
		c.mu.Lock()
		delete(c.sessions, sha256.Sum256([]byte(ck.Value)))
		c.mu.Unlock()
	}
}

// equalSecret compares two secrets in constant time; an empty one never matches.
func equalSecret(got, want string) bool {
	return got != "" && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// randomToken is 32 random bytes, hex.
func randomToken() string {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// --- sign-in ---

func (c *Console) loginForm(w http.ResponseWriter, r *http.Request) {
	if _, ok := c.session(r); ok {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	c.showLogin(w, r, http.StatusOK, "")
}

// showLogin renders the sign-in form with a fresh CSRF value, also set as a cookie.
func (c *Console) showLogin(w http.ResponseWriter, r *http.Request, status int, errMsg string) {
	csrf := randomToken()
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: csrf, Path: "/ui/login", MaxAge: 3600,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	c.render(w, status, "login", page{Title: "Sign in", CSRF: csrf, Data: errMsg})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	ck, err := r.Cookie(loginCookie)
	if perr := r.ParseForm(); perr != nil || err != nil || !equalSecret(r.PostForm.Get("csrf"), ck.Value) {
		c.render(w, http.StatusForbidden, "error", page{Title: "Refused",
			Data: "The sign-in was refused: its CSRF token is missing or wrong. Open the sign-in page again."})
		return
	}
	ok, operator := c.opts.Authenticate(r.PostForm.Get("token"))
	if !ok {
		c.showLogin(w, r, http.StatusUnauthorized, "the token is not valid")
		return
	}
	value, _ := c.newSession(operator)
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: "/ui/login", MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: value, Path: "/ui/", MaxAge: int(c.opts.SessionTTL / time.Second),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, _ *session) error {
	c.endSession(r)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/ui/", MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
	return nil
}
