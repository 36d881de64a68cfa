// Package console serves the Commissioner console: server-rendered HTML pages under /ui/ for
// auditors, program managers and finance, mounted by serve (and so demo) beside the audit API on
// the configured HTTP address. Every page and asset ships in the binary (html/template and
// go:embed); the pages need no JavaScript.
//
// Routes:
//
//	GET  /ui/login              the sign-in form (a field named token)
//	POST /ui/login              signs in: a session cookie, then 303 to /ui/
//	POST /ui/logout             ends the session
//	GET  /ui/                   search (?q= an order id, event id or decision id) and recent decisions: filters
//	                            program=, qualified=yes|no, rate_rule=, from=, to= (days decided, inclusive);
//	                            limit= rows a page (1 to MaxPageSize, 500; PageSize, 50, when absent);
//	                            before= the page's cursor (its next-page link keeps the filters and the limit)
//	GET  /ui/orders/{order_id}  every stored decision of an order, explained and proven, and its dead letters
//	GET  /ui/health             dead letters (?kind=) and the store's counts
//	GET  /ui/policies[/{program}]                 the stored policy versions and their decision counts
//	GET  /ui/policies/{program}/{version}         a stored version: digest check, decisions made, numbered source
//	GET  /ui/policies/{program}/diff?from=&to=    the line diff of two stored versions
//	GET  /ui/payouts/{YYYY-MM}[.csv]              a month's statements, totals and closing runs (CSV: payouts --format csv)
//	GET  /ui/whatif             the what-if form: a candidate (pasted policy or stored version), from, to, affiliate
//	POST /ui/whatif             replays it (bounded as POST /v1/replay) and shows the money per currency, then what changed;
//	                            a shadow version (stage: shadow) is priced as if it were in force, as replay --policy does
//	GET  /ui/shadows            with Options.Shadows: the shadow versions with outcomes stored (program, version, digest,
//	                            events, whether the service runs it and its sample), each linking to its report
//	GET  /ui/shadows/{program}/{version}?from=&to=&orders=
//	                            a shadow version's report on the orders placed from, to (days, inclusive): the
//	                            body `shadow report --format html` writes, its diverging orders linked
//	GET  /ui/assets/…           the stylesheet (open: the sign-in page uses it)
//
// Sign-in. The browser posts one of the bearer tokens the audit API accepts (http.tokens) once;
// it is compared in constant time as a SHA-256 digest, never logged, never put in a URL or a page.
// A session is a random 32-byte cookie (HttpOnly, SameSite=Strict, Path=/ui/, Secure when the
// request came over TLS) naming a server-side session that expires after 8 hours (SessionTTL);
// sessions live in the process's memory, so a restart signs everyone out. Every page but the
// sign-in form and the assets redirects (303) to /ui/login without a session.
//
// CSRF. Every POST carries a CSRF token in a hidden field named csrf: the session's for logout
// and the what-if page; for the sign-in form (no session yet) a random value also set in a
// short-lived cookie on the sign-in path (double submit). A POST without the right one is
// refused with 403.
//
// What-if. POST /ui/whatif compiles and checks the candidate (rules.Compile, rules.Lint: its
// problems are shown with their lines), then runs engine.Replay on the history the Store port
// reads (ReplayHistory), bounded as POST /v1/replay is (Options.ReplayTimeout, ReplayMaxOrders,
// MaxReplays; cmd passes the audit API's): a dry run, nothing is written. The result is the
// replay report of adapters/replayreport — the view and template body `replay --format html`
// writes too, so the two cannot drift — with its stylesheet at /ui/assets/replay-report.css and
// the changed orders linked to their decision pages. replayreport is the one adapter the console
// imports: a pure rendering package that imports no adapter (layering_test.go).
//
// Shadows. With Options.Shadows (a ShadowSource: cmd passes the store and the shadow versions the
// service runs), GET /ui/shadows lists the shadow versions with outcomes stored and
// GET /ui/shadows/{program}/{version} shows one's report — engine.ShadowReportOf over the stored
// outcomes, laid out by replayreport (NewShadow, the template "shadow-report") exactly as
// `commissioner shadow report --format html` writes it, the diverging orders linked to their
// decision pages — bounded by ReplayTimeout; the navigation links them. Without it there is no
// such page and no link. Shadow versions are never stored as policy versions (a batch stores the
// versions its live decisions used), so the policy pages never list one.
//
// Security headers on every response: a Content-Security-Policy allowing only the console's own
// origin (no inline script, no third-party origin, no framing), X-Content-Type-Options: nosniff,
// Referrer-Policy: no-referrer and Cache-Control: no-store. Everything shown goes through
// html/template, so stored text (an order id such as "<script>") renders as text.
//
// Role model (this step): every configured token reads everything, and the console changes
// nothing — no payout close, no dead-letter redrive, no audit run. Roles that may change state
// (and a read-only auditor token that may not) come with the first page that changes anything.
package console
