package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/commissioner/commissioner/engine/audit"
)

// Redriver publishes dead-lettered events again for the service to decide with the policies it
// has loaded now (POST /v1/dead-letters/redrive; commissioner dead-letters redrive). It must give
// up when ctx ends.
type Redriver interface {
	Redrive(ctx context.Context, req RedriveRequest) (RedriveView, error)
}

// RedriveRequest selects the dead letters to redrive: by id, or by a filter as GET
// /v1/dead-letters takes (at least one of them), and how long to wait for their outcomes.
type RedriveRequest struct {
	IDs     []int64    `json:"ids,omitempty"`
	Kind    string     `json:"kind,omitempty"`
	Program string     `json:"program,omitempty"`
	OrderID string     `json:"order_id,omitempty"`
	From    *time.Time `json:"from,omitempty"`
	To      *time.Time `json:"to,omitempty"`
	// WaitSeconds is how long to wait for the service to store the outcomes (0: do not wait).
	WaitSeconds int `json:"wait_seconds"`
}

// Filter is the request's filter, and whether it has one.
func (r RedriveRequest) Filter() (audit.DeadLetterFilter, bool) {
	f := audit.DeadLetterFilter{Kind: r.Kind, Program: r.Program, OrderID: r.OrderID}
	if r.From != nil {
		f.From = *r.From
	}
	if r.To != nil {
		f.To = *r.To
	}
	return f, f != (audit.DeadLetterFilter{})
}

// RedriveView is what a redrive did: each dead letter selected, and the counts.
type RedriveView struct {
	DeadLetters    []RedrivenView `json:"dead_letters"`
	Decided        int            `json:"decided"`
	StillBad       int            `json:"still_bad"`
	Pending        int            `json:"pending"`
	RedrivenBefore int            `json:"redriven_before"`
}

// RedrivenView is one dead letter's redrive. Outcome is "decided" (DecisionID), "still_bad" (the
// event was dead-lettered again: DeadLetterID and Reason) or "pending" (published, not decided
// yet). Via are the dead letters a redrive dead-lettered before, followed to the outcome.
type RedrivenView struct {
	ID             int64   `json:"id"`
	OrderID        string  `json:"order_id,omitempty"`
	Kind           string  `json:"kind"`
	RedriveEventID string  `json:"redrive_event_id"`
	Published      bool    `json:"published"` // by this request (false: redriven before)
	StreamSeq      uint64  `json:"stream_seq,omitempty"`
	Via            []int64 `json:"via,omitempty"`
	Outcome        string  `json:"outcome"`
	DecisionID     int64   `json:"decision_id,omitempty"`
	DeadLetterID   int64   `json:"dead_letter_id,omitempty"`
	Reason         string  `json:"reason,omitempty"`
}

// MaxRedriveWait bounds RedriveRequest.WaitSeconds on the API.
const MaxRedriveWait = 30

// GET /v1/dead-letters?kind=&program=&order=&from=&to=&limit=&cursor=
func (a *auditAPI) deadLetters(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := audit.DeadLetterFilter{Kind: q.Get("kind"), Program: q.Get("program"), OrderID: q.Get("order"), Limit: DefaultPageSize}
	var err error
	if f.From, err = queryTime(q.Get("from"), "from"); err != nil {
		return err
	}
	if f.To, err = queryTime(q.Get("to"), "to"); err != nil {
		return err
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPageSize {
			return badRequest("limit must be a whole number from 1 to %d, got %q", MaxPageSize, s)
		}
		f.Limit = n
	}
	if c := q.Get("cursor"); c != "" {
		n, err := strconv.ParseInt(c, 10, 64)
		if err != nil || n < 1 {
			return badRequest("cursor %q is not one this API gave out (use next_cursor)", c)
		}
		f.AfterID = n
	}
	limit := f.Limit
	f.Limit++
	ds, err := a.st.DeadLetters(r.Context(), f)
	if err != nil {
		return err
	}
	out := struct {
		DeadLettersView
		NextCursor string `json:"next_cursor,omitempty"`
	}{DeadLettersView: DeadLettersView{DeadLetters: make([]DeadLetterView, 0, len(ds))}}
	if len(ds) > limit {
		ds = ds[:limit]
		out.NextCursor = strconv.FormatInt(ds[len(ds)-1].ID, 10)
	}
	for _, d := range ds {
		out.DeadLetters = append(out.DeadLetters, NewDeadLetterView(d, false))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// GET /v1/dead-letters/{id}: one dead letter whole, with its raw event.
func (a *auditAPI) deadLetter(w http.ResponseWriter, r *http.Request) error {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		return badRequest("dead letter id %q is not a positive whole number", r.PathValue("id"))
	}
	d, err := a.st.DeadLetter(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, NewDeadLetterView(d, true))
	return nil
}

// POST /v1/dead-letters/redrive
func (a *auditAPI) redrive(w http.ResponseWriter, r *http.Request) error {
	if a.opts.Redriver == nil {
		return apiError{http.StatusNotImplemented, "not_available", "this server does not publish to the order stream: run commissioner dead-letters redrive"}
	}
	var req RedriveRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return err
		}
		return badRequest("the request body is not a redrive request: %v", err)
	}
	if _, ok := req.Filter(); !ok && len(req.IDs) == 0 {
		return badRequest("name the dead letters to redrive: ids, or kind, program, order_id, from or to")
	}
	if req.WaitSeconds < 0 || req.WaitSeconds > MaxRedriveWait {
		return badRequest("wait_seconds must be from 0 to %d, got %d", MaxRedriveWait, req.WaitSeconds)
	}
	out, err := a.opts.Redriver.Redrive(r.Context(), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// queryTime reads a from/to query parameter (ParseTimeOrDate).
func queryTime(v, name string) (time.Time, error) {
	t, err := ParseTimeOrDate(v)
	if err != nil {
		return t, badRequest("%s %q: %v", name, v, err)
	}
	return t, nil
}

// ParseTimeOrDate reads a bound of a range as the API and the CLI take it: RFC 3339, or a date
// (YYYY-MM-DD, midnight UTC). "" is the zero time: unbounded.
func ParseTimeOrDate(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return t, nil
	}
	return time.Time{}, errors.New("want RFC 3339 (2025-11-01T00:00:00Z) or a date (2025-11-01)")
}
