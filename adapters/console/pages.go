package console

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/commissioner/commissioner/adapters/replayreport"
	"github.com/commissioner/commissioner/engine/audit"
)

// page is what every template renders: the layout's fields and the page's own Data.
type page struct {
	Title    string
	CSRF     string // the hidden csrf field of the page's forms
	SignedIn bool   // show the navigation and the sign-out button
	Role     string // the session's: "reader" or "operator"
	Shadows  bool   // the console has the shadow pages (Options.Shadows): the navigation links them
	Data     any
}

// parsePages parses each page template with the layout. A broken template panics at start.
func parsePages() map[string]*template.Template {
	funcs := template.FuncMap{"join": strings.Join}
	layout := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html"))
	pages := map[string]*template.Template{}
	for _, name := range []string{"login", "error", "search", "order", "health", "policies", "policy", "diff", "payouts", "whatif", "shadows", "shadowversion"} {
		pages[name] = template.Must(template.Must(layout.Clone()).ParseFS(templateFS, "templates/"+name+".html"))
	}
	// the what-if result is the replay report's body, the one `replay --format html` writes; the
	// shadow version's, the shadow report's that `shadow report --format html` writes
	pages["whatif"] = template.Must(replayreport.ParseTemplates(pages["whatif"]))
	pages["shadowversion"] = template.Must(replayreport.ParseTemplates(pages["shadowversion"]))
	return pages
}

// render writes a page; the template runs into a buffer first, so a failure is a clean 500.
func (c *Console) render(w http.ResponseWriter, status int, name string, p page) {
	p.Shadows = c.opts.Shadows != nil
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		c.opts.Log.Error("console: rendering", "page", name, "err", err)
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// orderPath is the decision page of an order.
func orderPath(orderID string) string { return "/ui/orders/" + url.PathEscape(orderID) }

// --- search ---

type searchData struct {
	Q, Program, Qualified, RateRule, From, To string
	Limit                                     int    // rows a page shows (?limit=, PageSize when absent)
	MaxLimit                                  int    // MaxPageSize, for the form
	NotFound                                  string // the query that found nothing
	Rows                                      []recentRow
	Next                                      string // the next page's URL; "" on the last
}

// MaxPageSize is the most rows a search page shows (?limit=, 1 to MaxPageSize; PageSize when
// absent).
const MaxPageSize = 500

type recentRow struct {
	ID                         int64
	OrderID, OrderURL, Program string
	AffiliateID, DecidedAt     string
	Version                    int
	Qualified                  bool
	Outcome                    string // "rate rule" or "failed: rules"
	Commission                 string
}

func (c *Console) search(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	q := r.URL.Query()
	d := searchData{Q: strings.TrimSpace(q.Get("q")), Program: q.Get("program"), Qualified: q.Get("qualified"),
		RateRule: q.Get("rate_rule"), From: q.Get("from"), To: q.Get("to"), Limit: PageSize, MaxLimit: MaxPageSize}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPageSize {
			return pageError{http.StatusBadRequest, fmt.Sprintf("limit must be a number of rows from 1 to %d.", MaxPageSize)}
		}
		d.Limit = n
	}
	status := http.StatusOK
	if d.Q != "" {
		orderID, err := c.find(r, d.Q)
		if err != nil {
			return err
		}
		if orderID != "" {
			http.Redirect(w, r, orderPath(orderID), http.StatusSeeOther)
			return nil
		}
		d.NotFound, status = d.Q, http.StatusNotFound
	}
	f := DecisionFilter{Program: d.Program, RateRule: d.RateRule}
	switch d.Qualified {
	case "":
	case "yes", "no":
		f.Qualified = new(d.Qualified == "yes")
	default:
		return pageError{http.StatusBadRequest, "qualified must be yes or no."}
	}
	var err error
	if f.From, f.To, err = parseDays(d.From, d.To); err != nil {
		return err
	}
	before, err := parseCursor(q.Get("before"))
	if err != nil {
		return err
	}
	ds, err := c.st.RecentDecisions(ctx, f, before, d.Limit+1)
	if err != nil {
		return err
	}
	if len(ds) > d.Limit {
		ds = ds[:d.Limit]
		next := url.Values{}
		for k, v := range map[string]string{"program": d.Program, "qualified": d.Qualified, "rate_rule": d.RateRule, "from": d.From, "to": d.To} {
			if v != "" {
				next.Set(k, v)
			}
		}
		if d.Limit != PageSize {
			next.Set("limit", strconv.Itoa(d.Limit))
		}
		next.Set("before", strconv.FormatInt(ds[len(ds)-1].ID, 10))
		d.Next = "/ui/?" + next.Encode()
	}
	d.Rows = make([]recentRow, 0, len(ds))
	for _, x := range ds {
		row := recentRow{ID: x.ID, OrderID: x.OrderID, OrderURL: orderPath(x.OrderID), Program: x.Program, AffiliateID: x.AffiliateID,
			DecidedAt: x.DecidedAt.UTC().Format(time.RFC3339), Version: x.PolicyVersion, Qualified: x.Qualified,
			Commission: x.Currency + " " + x.Commission.Text('f')}
		if x.Qualified {
			row.Outcome = x.RateRule
		} else {
			row.Outcome = "failed: " + strings.Join(x.FailedRules, ", ")
		}
		d.Rows = append(d.Rows, row)
	}
	c.render(w, status, "search", s.page("Search", d))
	return nil
}

// find resolves a search to an order id ("" when nothing matches): an order id first, then an
// event id, then (a number) a decision id.
func (c *Console) find(r *http.Request, q string) (string, error) {
	ctx := r.Context()
	ds, err := c.st.DecisionsByOrder(ctx, "", q)
	if err != nil {
		return "", err
	}
	if len(ds) > 0 {
		return q, nil
	}
	dead, err := c.st.DeadLetters(ctx, audit.DeadLetterFilter{OrderID: q, Limit: 1})
	if err != nil {
		return "", err
	}
	if len(dead) > 0 && dead[0].OrderID != "" {
		return q, nil
	}
	ev, err := c.st.Event(ctx, q)
	switch {
	case err == nil:
		return ev.OrderID, nil
	case !errors.Is(err, audit.ErrNotFound):
		return "", err
	}
	if id, perr := strconv.ParseInt(q, 10, 64); perr == nil && id > 0 {
		d, err := c.st.Decision(ctx, id)
		switch {
		case err == nil:
			return d.OrderID, nil
		case !errors.Is(err, audit.ErrNotFound):
			return "", err
		}
	}
	return "", nil
}

func parseDay(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return t, pageError{http.StatusBadRequest, fmt.Sprintf("%s must be a date, YYYY-MM-DD.", name)}
	}
	return t, nil
}

// parseDays reads a range of days, from and to both inclusive, as [from, the day after to):
// either may be "" (no bound).
func parseDays(from, to string) (time.Time, time.Time, error) {
	f, err := parseDay("from", from)
	if err != nil {
		return f, f, err
	}
	t, err := parseDay("to", to)
	if err != nil {
		return f, t, err
	}
	if !t.IsZero() {
		t = t.AddDate(0, 0, 1) // to is inclusive: the whole day
	}
	return f, t, nil
}

func parseCursor(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, pageError{http.StatusBadRequest, "before must be a decision id."}
	}
	return n, nil
}

// --- the decision page ---

type orderData struct {
	OrderID     string
	Decisions   []decisionView
	DeadLetters []deadLetterRow
}

func (c *Console) order(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	orderID := r.PathValue("order_id")
	ds, err := c.st.DecisionsByOrder(ctx, "", orderID)
	if err != nil {
		return err
	}
	dead, err := c.st.DeadLetters(ctx, audit.DeadLetterFilter{OrderID: orderID})
	if err != nil {
		return err
	}
	if len(ds) == 0 && len(dead) == 0 {
		return pageError{http.StatusNotFound, fmt.Sprintf("Order %s has no stored decision and no dead-lettered event.", orderID)}
	}
	ds, current := audit.InStreamOrder(ds)
	d := orderData{OrderID: orderID}
	for _, sd := range ds {
		x, err := c.auditor.Explain(ctx, sd)
		if err != nil {
			return fmt.Errorf("explaining decision %d of order %s: %w", sd.ID, orderID, err)
		}
		d.Decisions = append(d.Decisions, newDecisionView(x, current[sd.ID]))
	}
	for _, dl := range dead {
		d.DeadLetters = append(d.DeadLetters, newDeadLetterRow(dl))
	}
	c.render(w, http.StatusOK, "order", s.page("Order "+orderID, d))
	return nil
}

// --- health ---

type healthData struct {
	Kind                   string
	Kinds                  []string
	Decisions, DeadLetters int64
	Rows                   []deadLetterRow
	Next                   string
	Ops                    *opsView // the service's side; nil without Options.Ops
	Verify                 verifyView
}

// deadLetterKinds are engine.ErrorKind's values, offered by the health page's filter.
var deadLetterKinds = []string{"invalid", "unknown_program", "no_policy", "pin_missing", "rule_error"}

func (c *Console) health(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	q := r.URL.Query()
	d := healthData{Kind: q.Get("kind"), Kinds: deadLetterKinds}
	before, err := parseCursor(q.Get("before"))
	if err != nil {
		return err
	}
	if d.Decisions, d.DeadLetters, err = c.st.Counts(ctx); err != nil {
		return err
	}
	dead, err := c.st.RecentDeadLetters(ctx, d.Kind, before, PageSize+1)
	if err != nil {
		return err
	}
	if len(dead) > PageSize {
		dead = dead[:PageSize]
		next := url.Values{"before": {strconv.FormatInt(dead[len(dead)-1].ID, 10)}}
		if d.Kind != "" {
			next.Set("kind", d.Kind)
		}
		d.Next = "/ui/health?" + next.Encode()
	}
	for _, dl := range dead {
		d.Rows = append(d.Rows, newDeadLetterRow(dl))
	}
	if d.Verify, err = c.verifyView(ctx); err != nil {
		return err
	}
	d.Ops = c.opsView(ctx)
	c.render(w, http.StatusOK, "health", s.page("Health", d))
	return nil
}
