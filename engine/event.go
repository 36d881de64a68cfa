package engine

import (
	"context"
	"time"
)

// Event is one order event as it arrived, before decoding: the bytes and where they came from.
// Its identity, with the order's program and id, is ID: the publisher's Nats-Msg-Id, or the
// stream sequence when the publisher set none. A redelivered event has the same ID.
type Event struct {
	ID         string    // event identity: Nats-Msg-Id, or "seq:<stream sequence>"
	Subject    string    // e.g. orders.alibaba
	StreamSeq  uint64    // the stream sequence (0 when not from a stream)
	Raw        []byte    // the order JSON exactly as received
	ReceivedAt time.Time // when the adapter received it; never read by rules
}

// Result is the engine's answer for one event: a decision, or the error that kept it from one.
type Result struct {
	Event    Event
	Order    *Order    // nil when the event did not decode
	Decision *Decision // nil when Err is set
	// Err is why no decision was made. Every such error is permanent for this event and
	// policy set (retrying gives the same answer): an *InputError, rules.ErrUnknownProgram,
	// rules.ErrNoPolicyInForce, ErrNoRateRule, ErrNoFlatAmount, or a rule's evaluation error.
	Err error
}

// OrderID returns the order id when the event could be read that far, else "".
func (r *Result) OrderID() string {
	if r.Order != nil {
		return r.Order.OrderID
	}
	if ie, ok := r.Err.(*InputError); ok {
		return ie.OrderID
	}
	return ""
}

// DecideEvents decodes and decides a batch of events, appending one Result per event, in order,
// to out. It never fails as a whole: each event's problem is in its Result.
func (e *Engine) DecideEvents(ctx context.Context, events []Event, out []Result) []Result {
	for _, ev := range events {
		r := Result{Event: ev}
		r.Order, r.Err = DecodeOrder(ev.Raw)
		if r.Err == nil {
			r.Decision, r.Err = e.Decide(ctx, r.Order)
		}
		out = append(out, r)
	}
	return out
}
