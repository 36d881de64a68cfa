package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// Event is one order event as it arrived, before decoding: the bytes and where they came from.
// Its identity is ID, the key of deduplication (an event whose ID is stored is not decided
// again): EventIdentity of the order's event_id when the publisher gave one; otherwise the
// publisher's Nats-Msg-Id (the stream publisher derives it from the event's content); otherwise
// the stream sequence. A redelivered event has the same ID.
type Event struct {
	ID         string    // event identity: EventIdentity, Nats-Msg-Id, or "seq:<stream sequence>"
	Subject    string    // e.g. orders.alibaba
	StreamSeq  uint64    // the stream sequence (0 when not from a stream)
	Raw        []byte    // the order JSON exactly as received
	ReceivedAt time.Time // when the adapter received it; never read by rules
}

// EventIdentity is the identity of an order event that carries the publisher's event_id (its
// idempotency key): "<program>:<order_id>:id:<event_id>", or, for an event_id longer than 64
// bytes or holding anything but letters, digits and ._~-+=/@, "<program>:<order_id>:id#<first 16
// hex digits of SHA-256(event_id)>". Two events of one order with the same event_id are one
// event, whatever their content; without event_id an event is known by its content, so an order
// that returns to an earlier state byte for byte needs an event_id to be decided again.
func EventIdentity(program, orderID, eventID string) string {
	b := make([]byte, 0, len(program)+len(orderID)+len(eventID)+5)
	b = append(append(append(b, program...), ':'), orderID...)
	if plainEventID(eventID) {
		return string(append(append(b, ":id:"...), eventID...))
	}
	sum := sha256.Sum256([]byte(eventID))
	return string(hex.AppendEncode(append(b, ":id#"...), sum[:8]))
}

func plainEventID(id string) bool {
	if len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.' || c == '_' || c == '~' || c == '-' || c == '+' || c == '=' || c == '/' || c == '@':
		default:
			return false
		}
	}
	return true
}

// RedriveIdentity is the identity of a dead-lettered event published again to be decided again
// ("commissioner dead-letters redrive"): "redrive:<dead letter id>:<the event's first identity>".
// It is new to the store, so the event is decided (or dead-lettered) once more, and the same for
// every redrive of that dead letter, so redriving it twice decides it once.
func RedriveIdentity(deadLetterID int64, eventID string) string {
	if IsRedrive(eventID) { // a redriven event dead-lettered again: keep its first identity
		if _, rest, ok := strings.Cut(eventID[len(redrivePrefix):], ":"); ok {
			eventID = rest
		}
	}
	return redrivePrefix + strconv.FormatInt(deadLetterID, 10) + ":" + eventID
}

const redrivePrefix = "redrive:"

// IsRedrive reports whether an event identity is a RedriveIdentity.
func IsRedrive(eventID string) bool { return strings.HasPrefix(eventID, redrivePrefix) }

// IdentityOf is the identity of an event that arrived as id (its Nats-Msg-Id, or its stream
// sequence) and decoded to o (nil: it did not decode): EventIdentity when the order carries an
// event_id, else id. A redriven event keeps its RedriveIdentity.
func IdentityOf(id string, o *Order) string {
	if o != nil && o.EventID != "" && !IsRedrive(id) {
		return EventIdentity(o.Program, o.OrderID, o.EventID)
	}
	return id
}

// identify gives a decoded event its identity (IdentityOf).
func (r *Result) identify() { r.Event.ID = IdentityOf(r.Event.ID, r.Order) }

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
			r.identify()
			r.Decision, r.Err = e.Decide(ctx, r.Order)
		}
		out = append(out, r)
	}
	return out
}
