package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine"
)

// newDeadLettersRedriveCmd is "dead-letters redrive": dead-lettered events published again, for
// serve to decide with the policies it has loaded now.
func newDeadLettersRedriveCmd(s streams) *cobra.Command {
	req := httpapi.RedriveRequest{WaitSeconds: 30}
	var from, to string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "redrive [ID…] [--kind K] [--program P] [--order O] [--from T] [--to T]",
		Short: "Publish dead-lettered events again, for serve to decide with the policies loaded now",
		Long: `Publishes each selected dead letter's event again — its bytes as received, on its subject — for a
running serve to decide with the policies it has loaded now: after a missing program or policy
version was added, or a rule that failed at run time was fixed. Select dead letters by id, or by
--kind, --program, --order and when they were received (--from, --to), as 'dead-letters list'.

A redriven event has its own identity, redrive:<dead letter id>:<event id>, so it is decided once
however often it is redriven; the dead letter stays as it was (it is part of the tamper-evident
history). An event still bad is dead-lettered again with its new reason, and that new dead letter
can be redriven in turn; a dead letter redriven before is followed to its latest outcome. The
command waits up to --wait for serve to store the outcomes and prints each; it exits 1 when any
redriven event is not decided (still bad, or not decided yet). The same is POST
/v1/dead-letters/redrive.`,
	}
	cf := addConfigFlags(cmd, storeFlags|natsFlags)
	f := cmd.Flags()
	f.StringVar(&req.Kind, "kind", "", "dead letters of this kind")
	f.StringVar(&req.Program, "program", "", "dead letters of this program")
	f.StringVar(&req.OrderID, "order", "", "dead letters of this order")
	f.StringVar(&from, "from", "", "received at or after (RFC 3339 or YYYY-MM-DD)")
	f.StringVar(&to, "to", "", "received before (RFC 3339 or YYYY-MM-DD)")
	wait := f.Duration("wait", 30*time.Second, "how long to wait for serve to decide the redriven events (0: do not wait)")
	f.BoolVar(&asJSON, "json", false, "JSON for machines (as POST /v1/dead-letters/redrive answers)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := completeRedriveRequest(&req, args, from, to, *wait); err != nil {
			return err
		}
		return runRedrive(cmd.Context(), cf, req, asJSON, s.out)
	}
	return cmd
}

// completeRedriveRequest completes req from the command line: the dead letter ids in args, the
// --from and --to times and the --wait duration (rounded up to whole seconds). It fails when
// nothing selects a dead letter.
func completeRedriveRequest(req *httpapi.RedriveRequest, args []string, from, to string, wait time.Duration) error {
	for _, a := range args {
		id, err := strconv.ParseInt(a, 10, 64)
		if err != nil || id < 1 {
			return usageError{fmt.Errorf("dead letter id %q is not a positive whole number", a)}
		}
		req.IDs = append(req.IDs, id)
	}
	for _, w := range []struct {
		flag, v string
		dst     **time.Time
	}{{"from", from, &req.From}, {"to", to, &req.To}} {
		t, err := parseWhen(w.flag, w.v)
		if err != nil {
			return err
		}
		if !t.IsZero() {
			*w.dst = &t
		}
	}
	if _, ok := req.Filter(); !ok && len(req.IDs) == 0 {
		return usageError{errors.New("name the dead letters to redrive: their ids, or --kind, --program, --order, --from or --to")}
	}
	req.WaitSeconds = int((wait + time.Second - 1) / time.Second)
	return nil
}

// runRedrive redrives what req selects through the configured store and NATS server and prints
// the outcomes (as JSON with asJSON); exitCode(1) when any redriven event is not decided.
func runRedrive(ctx context.Context, cf *configFlags, req httpapi.RedriveRequest, asJSON bool, out io.Writer) error {
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	st, err := cf.openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	nc, js, err := connectRunning(ctx, cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	rd, err := newRedriver(cfg, st, js)
	if err != nil {
		return err
	}
	view, err := rd.Redrive(ctx, req)
	if err != nil {
		return err
	}
	if asJSON {
		err = writeJSONDoc(out, view)
	} else {
		writeRedrive(out, view)
	}
	if err == nil && (view.StillBad > 0 || view.Pending > 0) {
		return exitCode(1)
	}
	return err
}

// redriver publishes dead letters' events again on the order stream and follows their outcomes
// in the store: the CLI's and POST /v1/dead-letters/redrive's (httpapi.Redriver).
type redriver struct {
	st  *store.Store
	pub *stream.Publisher
}

func newRedriver(cfg Config, st *store.Store, js jetstream.JetStream) (*redriver, error) {
	pub, err := stream.NewPublisher(js, cfg.NATS)
	if err != nil {
		return nil, err
	}
	return &redriver{st: st, pub: pub}, nil
}

// Redrive publishes the selected dead letters' events again (those not redriven before) and
// reports, after waiting up to req.WaitSeconds, what the store holds for each.
func (r *redriver) Redrive(ctx context.Context, req httpapi.RedriveRequest) (httpapi.RedriveView, error) {
	var view httpapi.RedriveView
	dls, err := r.selected(ctx, req)
	if err != nil {
		return view, err
	}
	view.DeadLetters = make([]httpapi.RedrivenView, 0, len(dls))
	seen := map[int64]bool{}
	var ids []string
	for _, d := range dls {
		if !seen[d.ID] { // named and selected by a filter: once
			seen[d.ID] = true
			id := engine.RedriveIdentity(d.ID, d.EventID)
			view.DeadLetters = append(view.DeadLetters, httpapi.RedrivenView{ID: d.ID, OrderID: d.OrderID, Kind: d.Kind, RedriveEventID: id})
			ids = append(ids, id)
		}
	}
	// What was redriven before is not published again: its outcome is stored already.
	outcomes, err := r.st.EventOutcomes(ctx, ids)
	if err != nil {
		return view, err
	}
	published, err := r.publish(ctx, &view, dls, outcomes)
	if err != nil {
		return view, err
	}
	deadline := time.Now().Add(time.Duration(req.WaitSeconds) * time.Second)
	for published > 0 && len(outcomes) < len(ids) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return view, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if outcomes, err = r.st.EventOutcomes(ctx, ids); err != nil {
			return view, err
		}
	}
	err = r.settle(ctx, &view, outcomes) // before view is copied out
	return view, err
}

// selected are the dead letters req names by id, then those its filter selects (a dead letter
// may be both).
func (r *redriver) selected(ctx context.Context, req httpapi.RedriveRequest) ([]store.DeadLetter, error) {
	var dls []store.DeadLetter
	for _, id := range req.IDs {
		d, err := r.st.DeadLetter(ctx, id)
		if err != nil {
			return nil, err
		}
		dls = append(dls, d)
	}
	if f, ok := req.Filter(); ok {
		ds, err := r.st.DeadLetters(ctx, f)
		if err != nil {
			return nil, err
		}
		dls = append(dls, ds...)
	}
	return dls, nil
}

// publish publishes again the events of the dead letters in view without an outcome stored
// (those redriven before are counted instead) and returns how many it published.
func (r *redriver) publish(ctx context.Context, view *httpapi.RedriveView, dls []store.DeadLetter, outcomes map[string]store.EventOutcome) (int, error) {
	byID := make(map[int64]store.DeadLetter, len(dls))
	for _, d := range dls {
		byID[d.ID] = d
	}
	published := 0
	for i := range view.DeadLetters {
		v := &view.DeadLetters[i]
		if _, ok := outcomes[v.RedriveEventID]; ok {
			view.RedrivenBefore++
			continue
		}
		d := byID[v.ID]
		seq, _, err := r.pub.Redrive(ctx, d.Subject, d.Raw, v.RedriveEventID)
		if err != nil {
			return published, fmt.Errorf("dead letter %d: %w", d.ID, err)
		}
		v.Published, v.StreamSeq = true, seq
		published++
	}
	return published, nil
}

// settle sets each dead letter's outcome in view from the outcomes stored, following redrives
// dead-lettered again to their latest, and counts them.
func (r *redriver) settle(ctx context.Context, view *httpapi.RedriveView, outcomes map[string]store.EventOutcome) error {
	var err error
	for i := range view.DeadLetters {
		v := &view.DeadLetters[i]
		o, ok := outcomes[v.RedriveEventID]
		if ok {
			if o, v.Via, err = followRedrives(ctx, r.st, v.RedriveEventID, o); err != nil {
				return err
			}
		}
		switch {
		case !ok:
			v.Outcome = "pending"
			view.Pending++
		case o.DecisionID != 0:
			v.Outcome, v.DecisionID = "decided", o.DecisionID
			view.Decided++
		default:
			v.Outcome, v.DeadLetterID, v.Reason = "still_bad", o.DeadLetterID, o.Reason
			view.StillBad++
		}
	}
	return nil
}

// writeRedrive prints a redrive for a person: one line per dead letter, then the counts.
func writeRedrive(out io.Writer, v httpapi.RedriveView) {
	if len(v.DeadLetters) == 0 {
		fmt.Fprintln(out, "redrive: no dead letter selected")
		return
	}
	for _, d := range v.DeadLetters {
		if d.Published {
			fmt.Fprintf(out, "dead letter %d (%s, order %s): published again as %s (stream seq %d)\n", d.ID, d.Kind, orDash(d.OrderID), d.RedriveEventID, d.StreamSeq)
		}
	}
	for _, d := range v.DeadLetters {
		head := fmt.Sprintf("dead letter %d: ", d.ID)
		if !d.Published {
			head += "redriven before: "
		}
		if len(d.Via) > 0 {
			head += fmt.Sprintf("through dead letter(s) %s: ", joinInts(d.Via))
		}
		switch d.Outcome {
		case "decided":
			fmt.Fprintf(out, "%sdecided: decision %d (explain %s)\n", head, d.DecisionID, d.OrderID)
		case "still_bad":
			fmt.Fprintf(out, "%sstill bad: dead letter %d: %s\n", head, d.DeadLetterID, clip(d.Reason, 200))
		default:
			fmt.Fprintf(out, "%snot decided yet (is serve running on this stream?)\n", head)
		}
	}
	fmt.Fprintf(out, "redrive: %d dead letter(s): %d decided, %d still bad, %d not decided yet (%d redriven before)\n",
		len(v.DeadLetters), v.Decided, v.StillBad, v.Pending, v.RedrivenBefore)
}

// followRedrives follows a redrive whose event was dead-lettered again through the redrives of
// those dead letters, to the last outcome stored: a decision, a dead letter not redriven (yet),
// via lists the dead letters passed.
func followRedrives(ctx context.Context, st *store.Store, id string, o store.EventOutcome) (_ store.EventOutcome, via []int64, _ error) {
	for o.DeadLetterID != 0 && len(via) < 100 {
		next := engine.RedriveIdentity(o.DeadLetterID, id)
		got, err := st.EventOutcomes(ctx, []string{next})
		if err != nil {
			return o, via, err
		}
		n, ok := got[next]
		if !ok { // that dead letter was not redriven (or its redrive is not decided yet)
			break
		}
		via = append(via, o.DeadLetterID)
		o, id = n, next
	}
	return o, via, nil
}

func joinInts(xs []int64) string {
	var b []byte
	for i, x := range xs {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = strconv.AppendInt(b, x, 10)
	}
	return string(b)
}
