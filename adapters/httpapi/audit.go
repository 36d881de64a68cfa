package httpapi

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/commissioner/commissioner/engine"
	"golang.org/x/mod/sumdb/note"

	"github.com/commissioner/commissioner/engine/audit"
	"github.com/commissioner/commissioner/rules"
)

// AuditStore is what the audit API reads: its read port (adapters/store implements it). Every method
// must be safe for concurrent use and give up when ctx ends; "not found" errors match
// audit.ErrNotFound.
type AuditStore interface {
	// Decision returns one stored decision by id.
	Decision(ctx context.Context, id int64) (audit.StoredDecision, error)
	// OrderDecisionsPage returns up to limit decisions of an order, newest first (id
	// descending), with ids below before (0: from the newest); "" program matches every program.
	OrderDecisionsPage(ctx context.Context, program, orderID string, before int64, limit int) ([]audit.StoredDecision, error)
	// PolicyVersion returns a stored policy version.
	PolicyVersion(ctx context.Context, program string, version int) (audit.StoredPolicy, error)
	// Event returns a stored order event by its event id.
	Event(ctx context.Context, eventID string) (audit.StoredEvent, error)
	// DecisionInputs returns what a decision was decided with besides its event and policy
	// version (the order's pin, the affiliate.* inputs).
	DecisionInputs(ctx context.Context, decisionID int64) (audit.DecisionInputs, error)
	// DecisionsByOrder returns an order's decisions, newest first (to book them again).
	DecisionsByOrder(ctx context.Context, program, orderID string) ([]audit.StoredDecision, error)
	// BatchLeaves returns a batch and its stored leaf hashes (inclusion proofs).
	BatchLeaves(ctx context.Context, partition int, seq uint64) (audit.StoredBatch, error)
	// BatchRange returns a partition's batch rows from one sequence to another, and
	// RecentCheckpoints the latest n signed checkpoints stored (proofs against a checkpoint).
	BatchRange(ctx context.Context, partition int, from, to uint64) ([]audit.BatchRow, error)
	RecentCheckpoints(ctx context.Context, n int) ([]audit.SignedCheckpoint, error)
	// History returns the stored events a filter selects with their recorded decisions, for
	// POST /v1/replay (engine.Replay reads it; nothing is written).
	// ReplayHistory is the stored events a filter selects, with their recorded decisions.
	ReplayHistory(f engine.EventFilter) engine.History // DeadLetters returns the dead letters a filter selects, oldest first; DeadLetter one by id.
	DeadLetters(ctx context.Context, f audit.DeadLetterFilter) ([]audit.DeadLetter, error)
	DeadLetter(ctx context.Context, id int64) (audit.DeadLetter, error)
}

// Limits of the audit API (AuditOptions' defaults).
const (
	DefaultPageSize        = 50
	MaxPageSize            = 500
	DefaultMaxBodyBytes    = 1 << 20 // request bodies (POST /v1/replay)
	DefaultRequestTimeout  = 10 * time.Second
	DefaultReplayTimeout   = 30 * time.Second
	DefaultReplayMaxOrders = 100_000
	// DefaultMaxReplays is how many POST /v1/replay run at once: each holds a candidate's
	// compiled policy, a walk of history and its report (8 at once took serve from 56 to 413 MB).
	DefaultMaxReplays = 2
)

// AuditOptions configure the audit API. Zero limits take the defaults above.
type AuditOptions struct {
	// Tokens are the readers' bearer tokens: they may call every /v1 route that changes nothing
	// (/v1/openapi.json is open). OperatorTokens may also call the routes that change state
	// (POST /v1/dead-letters/redrive); a reader's token there is refused with 403. With no token
	// at all, every call is refused with 401.
	Tokens, OperatorTokens []string
	MaxBodyBytes           int64         // the largest request body
	RequestTimeout         time.Duration // each request's deadline (replay: ReplayTimeout)
	// ReplayTimeout and ReplayMaxOrders bound POST /v1/replay: a replay that would read more
	// orders, or take longer, is stopped and answered with an error.
	ReplayTimeout   time.Duration
	ReplayMaxOrders int
	// MaxReplays is how many replays run at once; another is answered 429 Too Many Requests.
	MaxReplays int
	// CheckpointKey, when set, is the key the service signs its checkpoints with: a decision's
	// route then proves it against the latest stored checkpoint that covers it.
	CheckpointKey note.Verifier
	// Redriver, when set, serves POST /v1/dead-letters/redrive (it publishes to the order stream).
	Redriver Redriver
	// Log receives one line per request that failed on the server's side; nil: discarded.
	Log *slog.Logger
}

func (o *AuditOptions) defaults() {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.ReplayTimeout <= 0 {
		o.ReplayTimeout = DefaultReplayTimeout
	}
	if o.ReplayMaxOrders <= 0 {
		o.ReplayMaxOrders = DefaultReplayMaxOrders
	}
	if o.MaxReplays <= 0 {
		o.MaxReplays = DefaultMaxReplays
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

//go:embed openapi.json
var openAPIDocument []byte

// OpenAPIDocument returns the OpenAPI 3 description of the audit API served at /v1/openapi.json.
func OpenAPIDocument() []byte { return openAPIDocument }

// auditAPI serves /v1.
type auditAPI struct {
	st     AuditStore
	opts   AuditOptions
	tokens *Tokens
	// auditor re-runs decisions for GET /v1/decisions/{id}; it caches compiled stored policies.
	auditor *audit.Auditor
	// replays holds a slot per replay running (MaxReplays).
	replays chan struct{}
}

// NewAuditAPI returns the read-only audit API, to be mounted at /v1/ (Server.MountAuditAPI).
// Every route but /v1/openapi.json requires "Authorization: Bearer <token>" with one of
// opts.Tokens; every response is JSON; money and rates are exact decimal strings.
func NewAuditAPI(st AuditStore, opts AuditOptions) http.Handler {
	opts.defaults()
	a := &auditAPI{st: st, opts: opts, auditor: audit.NewAuditor(st), replays: make(chan struct{}, opts.MaxReplays)}
	a.tokens = NewTokens(opts.Tokens, opts.OperatorTokens)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(openAPIDocument)
	})
	authAs := func(operator bool, timeout time.Duration, h func(http.ResponseWriter, *http.Request) error) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ok, isOperator := a.tokens.Bearer(r)
			if !ok {
				a.unauthorized(w, r)
				return
			}
			if operator && !isOperator {
				writeJSON(w, http.StatusForbidden, ErrorView{Error: "forbidden",
					Message: "this route changes state: it needs an operator's token (http.operator_tokens); this one reads only"})
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), timeout)
			defer cancel()
			r = r.WithContext(ctx)
			if r.Body != nil {
				r.Body = http.MaxBytesReader(w, r.Body, a.opts.MaxBodyBytes)
			}
			if err := h(w, r); err != nil {
				a.fail(w, r, err)
			}
		})
	}
	auth := func(timeout time.Duration, h func(http.ResponseWriter, *http.Request) error) http.Handler {
		return authAs(false, timeout, h)
	}
	mux.Handle("GET /v1/orders/{id}/decisions", auth(opts.RequestTimeout, a.orderDecisions))
	mux.Handle("GET /v1/decisions/{id}", auth(opts.RequestTimeout, a.decision))
	mux.Handle("GET /v1/policies/{program}/{version}", auth(opts.RequestTimeout, a.policy))
	mux.Handle("POST /v1/replay", auth(opts.ReplayTimeout, a.replay))
	mux.Handle("GET /v1/dead-letters", auth(opts.RequestTimeout, a.deadLetters))
	mux.Handle("GET /v1/dead-letters/{id}", auth(opts.RequestTimeout, a.deadLetter))
	mux.Handle("POST /v1/dead-letters/redrive", authAs(true, MaxRedriveWait*time.Second+opts.RequestTimeout, a.redrive))
	mux.Handle("/v1/", auth(opts.RequestTimeout, func(w http.ResponseWriter, r *http.Request) error {
		return apiError{http.StatusNotFound, "not_found", fmt.Sprintf("no route %s %s (see /v1/openapi.json)", r.Method, r.URL.Path)}
	}))
	return mux
}

// MountAuditAPI serves the audit API under /v1/ on the server. Health, readiness and metrics
// stay open.
func (s *Server) MountAuditAPI(h http.Handler) { s.mux.Handle("/v1/", h) }

// authorized reports whether the request carries a reader's or an operator's bearer token.
func (a *auditAPI) authorized(r *http.Request) bool {
	ok, _ := a.tokens.Bearer(r)
	return ok
}

func (a *auditAPI) unauthorized(w http.ResponseWriter, r *http.Request) {
	challenge := `Bearer realm="commissioner"`
	msg := "a bearer token is required: Authorization: Bearer TOKEN"
	if r.Header.Get("Authorization") != "" {
		challenge += `, error="invalid_token"`
		msg = "the bearer token is not valid"
	}
	w.Header().Set("WWW-Authenticate", challenge)
	writeJSON(w, http.StatusUnauthorized, ErrorView{Error: "unauthorized", Message: msg})
}

// apiError is an error with the status and code it answers with.
type apiError struct {
	status  int
	code    string
	message string
}

func (e apiError) Error() string { return e.message }

func badRequest(format string, args ...any) error {
	return apiError{http.StatusBadRequest, "bad_request", fmt.Sprintf(format, args...)}
}

// fail answers with the error: its own status, 404 for audit.ErrNotFound, 413 for a body over
// the limit, 504 when the request's deadline passed, else 500 (logged, not shown).
func (a *auditAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae apiError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &tooLarge):
		ae = apiError{http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the request body is larger than %d bytes", tooLarge.Limit)}
	case errors.Is(err, audit.ErrNotFound):
		ae = apiError{http.StatusNotFound, "not_found", err.Error()}
	case errors.Is(err, context.DeadlineExceeded) && r.Context().Err() != nil:
		ae = apiError{http.StatusGatewayTimeout, "timeout", "the request took longer than its limit"}
	case r.Context().Err() != nil && errors.Is(err, r.Context().Err()):
		return // the client went away
	default:
		a.opts.Log.Error("audit API request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		ae = apiError{http.StatusInternalServerError, "internal", "the request failed on the server; see its log"}
	}
	writeJSON(w, ae.status, ErrorView{Error: ae.code, Message: ae.message})
}

// GET /v1/orders/{id}/decisions?program=&limit=&cursor=
func (a *auditAPI) orderDecisions(w http.ResponseWriter, r *http.Request) error {
	orderID := r.PathValue("id")
	q := r.URL.Query()
	program := q.Get("program")
	limit := DefaultPageSize
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPageSize {
			return badRequest("limit must be a whole number from 1 to %d, got %q", MaxPageSize, s)
		}
		limit = n
	}
	var before int64
	if c := q.Get("cursor"); c != "" {
		n, err := strconv.ParseInt(c, 10, 64)
		if err != nil || n < 1 {
			return badRequest("cursor %q is not one this API gave out (use next_cursor)", c)
		}
		before = n
	}
	ds, err := a.st.OrderDecisionsPage(r.Context(), program, orderID, before, limit+1)
	if err != nil {
		return err
	}
	if len(ds) == 0 && before == 0 {
		return apiError{http.StatusNotFound, "not_found", fmt.Sprintf("order %s has no stored decision%s", orderID, inProgram(program))}
	}
	out := OrderDecisionsView{OrderID: orderID, Program: program, Decisions: []DecisionView{}}
	if len(ds) > limit {
		ds = ds[:limit]
		out.NextCursor = strconv.FormatInt(ds[len(ds)-1].ID, 10)
	}
	for _, d := range ds {
		out.Decisions = append(out.Decisions, NewDecisionView(d))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func inProgram(p string) string {
	if p == "" {
		return ""
	}
	return " in program " + p
}

// GET /v1/decisions/{id}: the decision explained — decided again with its recorded policy
// version, each rule with its expression and inputs, and whether it reproduces.
func (a *auditAPI) decision(w http.ResponseWriter, r *http.Request) error {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		return badRequest("decision id %q is not a positive whole number", r.PathValue("id"))
	}
	d, err := a.st.Decision(r.Context(), id)
	if err != nil {
		return err
	}
	x, err := a.auditor.Explain(r.Context(), d)
	if err != nil {
		return err
	}
	if a.opts.CheckpointKey != nil {
		signed, err := a.st.RecentCheckpoints(r.Context(), recentCheckpoints)
		if err != nil {
			return err
		}
		cps, _ := audit.OpenCheckpoints(signed, a.opts.CheckpointKey)
		if x.Checkpoint, err = audit.ProveInCheckpoint(r.Context(), a.st, &x.Decision, cps); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, NewExplainedView(x))
	return nil
}

// recentCheckpoints is how many of the latest stored checkpoints a decision's proof looks in:
// with several processes each signing its own partitions, the latest few cover them all.
const recentCheckpoints = 64

// GET /v1/policies/{program}/{version}: the stored source and its digest, checked.
func (a *auditAPI) policy(w http.ResponseWriter, r *http.Request) error {
	program := r.PathValue("program")
	version, err := strconv.Atoi(strings.TrimPrefix(r.PathValue("version"), "v"))
	if err != nil || version < 1 {
		return badRequest("policy version %q is not a positive whole number", r.PathValue("version"))
	}
	p, err := a.st.PolicyVersion(r.Context(), program, version)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, NewPolicyView(p, rules.Digest(p.Source)))
	return nil
}

// decodeJSON reads a JSON request body into v, refusing unknown fields and trailing data.
func decodeJSON(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return apiError{http.StatusUnsupportedMediaType, "unsupported_media_type", "the request body must be application/json"}
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return err
		}
		return badRequest("reading the request body: %v", err)
	}
	if dec.More() {
		return badRequest("the request body holds more than one JSON value")
	}
	return nil
}

// ReplayRequest is POST /v1/replay's body: a candidate policy and the stored orders to replay it
// on. Nothing is written: a replay through the API is always a dry run.
type ReplayRequest struct {
	// Policy is the candidate policy file's text (YAML), one version of one program.
	Policy string `json:"policy"`
	// Program, when set, must be the candidate's program (a check; the candidate names it).
	Program string `json:"program,omitempty"`
	// From and To bound the orders' placed_at: [From, To). Absent: unbounded.
	From *time.Time `json:"from,omitempty"`
	To   *time.Time `json:"to,omitempty"`
	// Affiliate keeps only one affiliate's orders.
	Affiliate string `json:"affiliate,omitempty"`
	// AllEvents replays every stored event; by default only the latest event of each order.
	AllEvents bool `json:"all_events,omitempty"`
	// MaxChanges bounds the per-order changes listed (default 100, at most 1000); every change
	// is counted in changes_total.
	MaxChanges int `json:"max_changes,omitempty"`
}

// POST /v1/replay: a bounded dry-run replay of a candidate policy on stored orders; at most
// MaxReplays at once.
func (a *auditAPI) replay(w http.ResponseWriter, r *http.Request) error {
	select {
	case a.replays <- struct{}{}:
		defer func() { <-a.replays }()
	default:
		w.Header().Set("Retry-After", "5")
		return apiError{http.StatusTooManyRequests, "too_many_replays",
			fmt.Sprintf("%d replays are running, the most at once: try again shortly", a.opts.MaxReplays)}
	}
	var req ReplayRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Policy) == "" {
		return badRequest("policy is required: the candidate policy file's text")
	}
	switch {
	case req.MaxChanges == 0:
		req.MaxChanges = 100
	case req.MaxChanges < 0 || req.MaxChanges > 1000:
		return badRequest("max_changes must be from 1 to 1000, got %d", req.MaxChanges)
	}
	if req.From != nil && req.To != nil && !req.From.Before(*req.To) {
		return badRequest("from (%s) must be before to (%s)", req.From.Format(time.RFC3339), req.To.Format(time.RFC3339))
	}
	p, problems := rules.Compile("candidate.yaml", []byte(req.Policy))
	if p == nil {
		return apiError{http.StatusUnprocessableEntity, "invalid_policy", "the candidate policy does not compile:\n" + problems.Error()}
	}
	if lint := rules.Lint(p); lint.HasErrors() {
		return apiError{http.StatusUnprocessableEntity, "invalid_policy", "the candidate policy fails its check:\n" + lint.Error()}
	}
	if req.Program != "" && req.Program != p.Program {
		return badRequest("program %q is not the candidate policy's program %q", req.Program, p.Program)
	}
	set, dup := rules.NewSet([]*rules.Policy{p})
	if set == nil {
		return badRequest("%v", dup)
	}
	set = set.WithShadowsLive() // a shadow version's text is priced as if it were in force
	f := engine.EventFilter{Program: p.Program, Affiliate: req.Affiliate, LatestPerOrder: !req.AllEvents}
	if req.From != nil {
		f.From = req.From.UTC()
	}
	if req.To != nil {
		f.To = req.To.UTC()
	}
	rep, err := engine.Replay(r.Context(), set, engine.LimitHistory(a.st.ReplayHistory(f), a.opts.ReplayMaxOrders),
		engine.ReplayOptions{MaxChanges: req.MaxChanges})
	switch {
	case errors.Is(err, engine.ErrTooManyEvents):
		return apiError{http.StatusUnprocessableEntity, "too_many_orders", fmt.Sprintf(
			"the range holds more than %d orders, the most one API replay reads: narrow it (from, to, affiliate), or run `commissioner replay`",
			a.opts.ReplayMaxOrders)}
	case err != nil:
		return err
	}
	params := ReplayParamsDoc{Program: p.Program, Affiliate: req.Affiliate, LatestPerOrder: !req.AllEvents, Source: "store"}
	if req.From != nil {
		params.From = req.From.UTC().Format(time.RFC3339Nano)
	}
	if req.To != nil {
		params.To = req.To.UTC().Format(time.RFC3339Nano)
	}
	writeJSON(w, http.StatusOK, NewReplayDocument(rep, "request", params, rep.Changes, nil))
	return nil
}
