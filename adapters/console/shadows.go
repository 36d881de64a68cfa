package console

// The shadow pages: the shadow versions (stage: shadow) with outcomes stored, and the report of
// one — the shadow against the live decisions of the same orders — laid out by adapters/replayreport
// exactly as `commissioner shadow report --format html` lays it out.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/commissioner/commissioner/adapters/replayreport"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// ShadowSource is what the shadow pages read (cmd implements it over the store and the policies
// the service runs). Every method must be safe for concurrent use; those given a ctx give up when
// it ends.
type ShadowSource interface {
	// ShadowVersions lists the shadow versions with outcomes stored, of program ("": every
	// program), by program, version and digest.
	ShadowVersions(ctx context.Context, program string) ([]engine.StoredShadowVersion, error)
	// ShadowHistory is the stored shadow outcomes a filter selects, each with its event's live
	// decision: what engine.ShadowReportOf reads (nothing is written).
	ShadowHistory(f engine.ShadowFilter) engine.ShadowHistory
	// LoadedShadows returns the shadow versions the service decides with now (reloads
	// included), by program and version; none when it runs none.
	LoadedShadows() []*rules.Policy
}

// Bounds of the shadow report page: the diverging orders it lists (?orders=, as GET
// /v1/shadow/report's).
const (
	shadowOrders    = 20
	maxShadowOrders = 1000
)

// shadowsPath is the list of shadow versions; shadowPath the report of one.
const shadowsPath = "/ui/shadows"

func shadowPath(program string, version int) string {
	return shadowsPath + "/" + url.PathEscape(program) + "/" + strconv.Itoa(version)
}

// mountShadows adds the shadow pages to mux when the console has a ShadowSource. A report reads
// every stored outcome of its range: it is bounded by the what-if's deadline (ReplayTimeout).
func (c *Console) mountShadows(mux *http.ServeMux) {
	if c.opts.Shadows == nil {
		return
	}
	mux.Handle("GET "+shadowsPath, c.signedIn(c.shadows))
	mux.Handle("GET "+shadowsPath+"/{program}/{version}", c.signedInWith(maxFormBytes, c.opts.ReplayTimeout, c.shadowReport))
}

// shadowRow is one shadow version (and digest) of the list.
type shadowRow struct {
	Program      string
	Version      int
	URL          string // its report; "" when no outcome is stored
	Digest       string
	Events       int64
	First, Last  string // placed_at of the first and the last order, RFC 3339
	Now          string // "running: every order", "running: 10% of the orders (sample: 0.1)", "not loaded now"
	Running      bool
	NoOutcomeYet bool // loaded, nothing stored yet
}

type shadowsData struct {
	Rows []shadowRow
}

// GET /ui/shadows: the shadow versions with outcomes stored, by program, version and digest, each
// linking to its report, and those the service runs that have none stored yet.
func (c *Console) shadows(w http.ResponseWriter, r *http.Request, s *session) error {
	src := c.opts.Shadows
	stored, err := src.ShadowVersions(r.Context(), "")
	if err != nil {
		return err
	}
	loaded := src.LoadedShadows()
	running := func(program string, version int, digest string) *rules.Policy {
		for _, p := range loaded {
			if p.Program == program && p.Version == version && p.Digest == digest {
				return p
			}
		}
		return nil
	}
	var d shadowsData
	for _, v := range stored {
		row := shadowRow{Program: v.Program, Version: v.Version, URL: shadowPath(v.Program, v.Version), Digest: v.Digest, Events: v.Events,
			First: v.First.UTC().Format(time.RFC3339), Last: v.Last.UTC().Format(time.RFC3339), Now: "not loaded now"}
		if p := running(v.Program, v.Version, v.Digest); p != nil {
			row.Running, row.Now = true, "running: "+replayreport.Sample(p)
		}
		d.Rows = append(d.Rows, row)
	}
	for _, p := range loaded {
		found := false
		for _, v := range stored {
			found = found || v.Program == p.Program && v.Version == p.Version && v.Digest == p.Digest
		}
		if !found {
			d.Rows = append(d.Rows, shadowRow{Program: p.Program, Version: p.Version, Digest: p.Digest, Running: true, NoOutcomeYet: true,
				Now: "running: " + replayreport.Sample(p)})
		}
	}
	c.render(w, http.StatusOK, "shadows", s.page("Shadow versions", d))
	return nil
}

// shadowReportData is the report page: the range asked (days, inclusive) and the report.
type shadowReportData struct {
	Program        string
	Version        int
	From, To       string // YYYY-MM-DD, inclusive; "" unbounded
	Orders         int    // diverging orders listed
	KeepOrders     bool   // orders was asked for: the range form keeps it
	Path           string // the page's, without its query
	Command, API   string // the same report from the CLI and from /v1
	Result         *replayreport.ShadowView
	ListURL, Title string
}

// GET /ui/shadows/{program}/{version}?from=&to=&orders=: the shadow version's report on the orders
// placed from from to to (days, inclusive), as `commissioner shadow report` prints it.
func (c *Console) shadowReport(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	src := c.opts.Shadows
	program := r.PathValue("program")
	version, err := parseVersion("The version", r.PathValue("version"))
	if err != nil {
		return err
	}
	q := r.URL.Query()
	d := shadowReportData{Program: program, Version: version, From: q.Get("from"), To: q.Get("to"), Orders: shadowOrders, ListURL: shadowsPath,
		Path: shadowPath(program, version)}
	if o := q.Get("orders"); o != "" {
		n, err := strconv.Atoi(o)
		if err != nil || n < 1 || n > maxShadowOrders {
			return pageError{http.StatusBadRequest, fmt.Sprintf("orders must be a number of orders from 1 to %d.", maxShadowOrders)}
		}
		d.Orders, d.KeepOrders = n, true
	}
	f := engine.ShadowFilter{Program: program, Version: version}
	if f.From, f.To, err = parseDays(d.From, d.To); err != nil {
		return err
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return pageError{http.StatusBadRequest, "from must not be after to."}
	}
	stored, err := src.ShadowVersions(ctx, program)
	if err != nil {
		return err
	}
	if f, err = engine.ResolveShadow(stored, f); errors.Is(err, engine.ErrNoShadowOutcomes) {
		return pageError{http.StatusNotFound, fmt.Sprintf("Shadow version %s v%d has no stored outcome: it has decided nothing yet, or it is not a shadow version.", program, version)}
	} else if err != nil {
		return err
	}
	rep, err := engine.ShadowReportOf(ctx, src.ShadowHistory(f), engine.ShadowReportOptions{MaxOrders: d.Orders})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return pageError{http.StatusGatewayTimeout, fmt.Sprintf(
				"The report took longer than %s, the most one page reads: narrow the range (from, to), or run `%s`.", c.opts.ReplayTimeout, shadowCommand(f))}
		}
		return err
	}
	d.Command, d.API = shadowCommand(f), shadowAPI(f, d.Orders)
	d.Result = replayreport.NewShadow(rep, f, replayreport.ShadowOptions{
		Range:      dayRange(d.From, d.To),
		OrderURL:   orderPath,
		PolicyURL:  policyPath,
		MoreOrders: "orders=N in the address lists more, up to " + strconv.Itoa(maxShadowOrders),
		Loaded:     src.LoadedShadows(),
	})
	d.Title = d.Result.Title
	c.render(w, http.StatusOK, "shadowversion", s.page(d.Title, d))
	return nil
}

// dayRange says which orders days select (inclusive, YYYY-MM-DD; "" unbounded).
func dayRange(from, to string) string {
	switch {
	case from != "" && to != "":
		return "the orders placed from " + from + " to " + to
	case from != "":
		return "the orders placed from " + from
	case to != "":
		return "the orders placed up to " + to
	}
	return "every stored order"
}

// shadowCommand is the command that prints the same report (its --to exclusive).
func shadowCommand(f engine.ShadowFilter) string {
	cmd := "commissioner shadow report --program " + f.Program + " --version " + strconv.Itoa(f.Version)
	if !f.From.IsZero() {
		cmd += " --from " + f.From.UTC().Format(time.DateOnly)
	}
	if !f.To.IsZero() {
		cmd += " --to " + f.To.UTC().Format(time.DateOnly)
	}
	return cmd
}

// shadowAPI is the /v1 request that answers the same report as JSON.
func shadowAPI(f engine.ShadowFilter, orders int) string {
	v := url.Values{"program": {f.Program}, "version": {strconv.Itoa(f.Version)}}
	if !f.From.IsZero() {
		v.Set("from", f.From.UTC().Format(time.DateOnly))
	}
	if !f.To.IsZero() {
		v.Set("to", f.To.UTC().Format(time.DateOnly))
	}
	if orders != shadowOrders {
		v.Set("orders", strconv.Itoa(orders))
	}
	return "/v1/shadow/report?" + v.Encode()
}
