package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/commissioner/commissioner/engine"
)

// ShadowReader is what GET /v1/shadow/report reads (adapters/store implements it). Both methods
// must be safe for concurrent use and give up when ctx ends.
type ShadowReader interface {
	// ShadowVersions lists the shadow versions with outcomes stored, of program ("": every one).
	ShadowVersions(ctx context.Context, program string) ([]engine.StoredShadowVersion, error)
	// ShadowHistory is the stored shadow outcomes a filter selects, with their live decisions.
	ShadowHistory(f engine.ShadowFilter) engine.ShadowHistory
}

// DefaultShadowReportTimeout bounds one GET /v1/shadow/report.
const DefaultShadowReportTimeout = 30 * time.Second

// NewShadowReportHandler serves GET /v1/shadow/report?program=&version=&from=&to=&orders= (mount it
// with Server.Handle at that pattern, beside the audit API): the shadow report document
// (ShadowDocument). Like every /v1 route but the OpenAPI document it needs a reader's or an
// operator's bearer token (opts.Tokens, opts.OperatorTokens). from and to bound the orders'
// placed_at ([from, to): RFC 3339, a date 2025-10-01 or a month 2025-10, UTC); program and
// version may be left out when only one has shadow outcomes; orders bounds the diverging orders
// listed (default 20, at most 1000).
func NewShadowReportHandler(st ShadowReader, opts AuditOptions) http.Handler {
	opts.defaults()
	a := &auditAPI{opts: opts}
	a.tokens = NewTokens(opts.Tokens, opts.OperatorTokens)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.authorized(r) {
			a.unauthorized(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), DefaultShadowReportTimeout)
		defer cancel()
		r = r.WithContext(ctx)
		if err := shadowReport(w, r, st); err != nil {
			a.fail(w, r, err)
		}
	})
}

func shadowReport(w http.ResponseWriter, r *http.Request, st ShadowReader) error {
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "program", "version", "from", "to", "orders":
		default:
			return badRequest("unknown parameter %q (program, version, from, to, orders)", k)
		}
	}
	f := engine.ShadowFilter{Program: q.Get("program")}
	if v := q.Get("version"); v != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(v, "v"))
		if err != nil || n < 1 {
			return badRequest("version must be a positive whole number, got %q", v)
		}
		f.Version = n
	}
	var err error
	if f.From, err = ReportTime("from", q.Get("from")); err != nil {
		return badRequest("%v", err)
	}
	if f.To, err = ReportTime("to", q.Get("to")); err != nil {
		return badRequest("%v", err)
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return badRequest("from (%s) must be before to (%s)", f.From.Format(time.RFC3339), f.To.Format(time.RFC3339))
	}
	opts := engine.ShadowReportOptions{MaxOrders: 20}
	if s := q.Get("orders"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return badRequest("orders must be a whole number from 1 to 1000, got %q", s)
		}
		opts.MaxOrders = n
	}
	stored, err := st.ShadowVersions(r.Context(), f.Program)
	if err != nil {
		return err
	}
	if f, err = engine.ResolveShadow(stored, f); err != nil {
		switch {
		case errors.Is(err, engine.ErrNoShadowOutcomes):
			return apiError{http.StatusNotFound, "not_found", err.Error()}
		case errors.Is(err, engine.ErrShadowAmbiguous):
			return badRequest("%v", err)
		}
		return err
	}
	rep, err := engine.ShadowReportOf(r.Context(), st.ShadowHistory(f), opts)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, NewShadowDocument(rep, f))
	return nil
}

// ReportTime reads a report's time bound: RFC 3339, a date (2025-10-01) or a month (2025-10),
// in UTC; "" is no bound.
func ReportTime(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02", "2006-01"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errors.New(name + " must be an RFC 3339 time, a date (2025-10-01) or a month (2025-10), got " + strconv.Quote(v))
}
