package stream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/engine"
)

// Publisher publishes order events (one JSON object each) to the stream. It is safe for
// concurrent use.
//
// Each event goes to its (program, affiliate) subject, Config.OrderSubject —
// <prefix>.<Token(program)>.<Token(affiliate_id)> — with the header
//
//	Nats-Msg-Id: <program>:<order_id>:<first 16 hex digits of SHA-256(raw)>
//
// so the stream drops an identical event published again within Config.DuplicateWindow, while
// a changed event of the same order (a new status, a refund) is a new event. An event that
// carries the publisher's own "event_id" is known by it instead (engine.EventIdentity), so an
// order that goes back to an earlier state byte for byte is a new event when its event_id is new. Only program,
// order_id and affiliate_id are read from the JSON, cheaply; nothing is validated here. They
// are read as the engine reads them (escapes decoded; of a key given twice, the last), so an
// event's subject names the program and affiliate it is decided for. An id that cannot be read
// (malformed JSON before it, no such key, not a string, invalid UTF-8) is the empty id, token
// "~": the event still goes to the stream, the consumer of its partition reads it and the
// engine dead-letters it: nothing a publisher accepted is silently dropped. In the Nats-Msg-Id
// only ids written without escapes or control characters appear ("" otherwise), so the header
// stays one line.
type Publisher struct {
	js  jetstream.JetStream
	cfg Config
	// Check, when set, is asked about every line before it is published: a line it refuses is
	// not published, and counts as Rejected with the reason.
	Check func(line []byte) error
}

// Rejection is a line PublishLines did not publish, and why.
type Rejection struct {
	Line   int
	Reason string
}

// maxRejections bounds the rejections PublishLines lists; all are counted.
const maxRejections = 100

// NewPublisher returns a publisher to cfg's subjects through js.
func NewPublisher(js jetstream.JetStream, cfg Config) (*Publisher, error) {
	cfg, err := cfg.complete()
	if err != nil {
		return nil, err
	}
	return &Publisher{js: js, cfg: cfg}, nil
}

// Message builds the message for an order event: its subject, data and Nats-Msg-Id.
func (p *Publisher) Message(raw []byte) *nats.Msg {
	ids := identify(raw)
	var id string
	if ev := ids.eventID.plain(); ev != "" {
		// The engine gives the event this identity too (engine.EventIdentity): the stream and
		// the store deduplicate by the publisher's key.
		id = engine.EventIdentity(ids.program.plain(), ids.orderID.plain(), ev)
	} else {
		sum := sha256.Sum256(raw)
		b := make([]byte, 0, len(ids.program.value)+len(ids.orderID.value)+18)
		b = append(b, ids.program.plain()...)
		b = append(b, ':')
		b = append(b, ids.orderID.plain()...)
		b = append(b, ':')
		id = string(hex.AppendEncode(b, sum[:8]))
	}
	return &nats.Msg{
		Subject: p.cfg.OrderSubject(ids.program.value, ids.affiliate.value),
		Data:    raw,
		Header:  nats.Header{jetstream.MsgIDHeader: []string{id}},
	}
}

// Publish publishes one order event and waits for the stream's ack. accepted is false when the
// stream dropped it as a duplicate of an event published within the duplicate window.
func (p *Publisher) Publish(ctx context.Context, raw []byte) (accepted bool, err error) {
	m := p.Message(raw)
	ack, err := p.js.PublishMsg(ctx, m)
	if err != nil {
		return false, fmt.Errorf("publishing order event %s to %s: %w", m.Header.Get(jetstream.MsgIDHeader), m.Subject, err)
	}
	return !ack.Duplicate, nil
}

// Redrive publishes a stored event's bytes again, on the subject it was first published on (read
// back from storedSubject, the subject the stream stored it under), with id as its Nats-Msg-Id
// (engine.RedriveIdentity). It returns the stream sequence; accepted is false when the stream
// dropped it as a duplicate of a redrive published within its duplicate window.
func (p *Publisher) Redrive(ctx context.Context, storedSubject string, raw []byte, id string) (seq uint64, accepted bool, err error) {
	_, program, affiliate, err := p.cfg.ParseSubject(storedSubject)
	if err != nil {
		return 0, false, fmt.Errorf("redriving event %s: %w", id, err)
	}
	m := &nats.Msg{Subject: p.cfg.OrderSubject(program, affiliate), Data: raw, Header: nats.Header{jetstream.MsgIDHeader: []string{id}}}
	ack, err := p.js.PublishMsg(ctx, m)
	if err != nil {
		return 0, false, fmt.Errorf("redriving event %s to %s: %w", id, m.Subject, err)
	}
	return ack.Sequence, !ack.Duplicate, nil
}

// PublishStats counts what PublishLines did. Lines = Accepted + Duplicates + Failed.
type PublishStats struct {
	Lines      int // non-blank lines read
	Accepted   int // stored by the stream
	Duplicates int // dropped by the stream as already published
	Failed     int // not confirmed stored (an error, a timeout, or ctx cancelled)
	Rejected   int // refused before publishing: Check said no, or the line is over the server's max payload
	// Rejections are the first rejected lines, with their reasons.
	Rejections []Rejection
	// LastSeq is the highest stream sequence among the events stored (0 when none): the
	// partition consumers have settled all of them once Settled(ctx, js, cfg, LastSeq).
	LastSeq uint64
}

// MaxLine is the longest line PublishLines reads; longer input is an error.
const MaxLine = 8 << 20

// asyncAckTimeout bounds the wait for one asynchronous publish's ack.
const asyncAckTimeout = 10 * time.Second

// PublishLines publishes each non-blank line of r as an order event, with up to concurrency
// publishes awaiting their ack at once (≤ 0 means 1 024; it should not exceed the JetStream
// context's async max pending, 4 000 by default). It reads to the end even when some
// publishes fail, and returns the first failure with the counts. A cancelled ctx stops the
// reading; publishes not yet confirmed then count as Failed.
func (p *Publisher) PublishLines(ctx context.Context, r io.Reader, concurrency int) (PublishStats, error) {
	if concurrency <= 0 {
		concurrency = 1024
	}
	window := make(chan inflight, concurrency-1)
	acks := collectAcks(ctx, window)
	var st PublishStats
	firstErr := p.publishEach(ctx, r, window, &st)
	close(window)
	<-acks.done
	st.Accepted, st.Duplicates, st.LastSeq = acks.acked.Accepted, acks.acked.Duplicates, acks.acked.LastSeq
	st.Failed += acks.acked.Failed
	if firstErr == nil {
		firstErr = acks.err
	}
	if err := ctx.Err(); err != nil && firstErr == nil {
		firstErr = fmt.Errorf("publishing order lines: %w", err)
	}
	return st, firstErr
}

// inflight is a publish awaiting its ack, and the line it published.
type inflight struct {
	fut  jetstream.PubAckFuture
	line int
}

// ackCollector awaits the acks of the publishes sent to its window, in order, on its own
// goroutine, and counts them.
type ackCollector struct {
	acked PublishStats // Accepted, Duplicates, Failed and LastSeq; owned by the collector until done is closed
	err   error        // the first failed ack
	done  chan struct{}
}

// collectAcks starts a collector over window; it is done once window is closed and drained.
func collectAcks(ctx context.Context, window <-chan inflight) *ackCollector {
	c := &ackCollector{done: make(chan struct{})}
	go c.run(ctx, window)
	return c
}

func (c *ackCollector) run(ctx context.Context, window <-chan inflight) {
	defer close(c.done)
	var timer *time.Timer
	for f := range window {
		ack, err := awaitAck(ctx, f.fut, &timer)
		switch {
		case err != nil:
			c.acked.Failed++
			if c.err == nil {
				c.err = fmt.Errorf("publishing line %d: %w", f.line, err)
			}
		case ack.Duplicate:
			c.acked.Duplicates++
		default:
			c.acked.Accepted++
			c.acked.LastSeq = max(c.acked.LastSeq, ack.Sequence)
		}
	}
}

// awaitAck waits up to asyncAckTimeout for fut's ack, or until ctx is done, reusing *timer
// (made on the first wait that needs one).
func awaitAck(ctx context.Context, fut jetstream.PubAckFuture, timer **time.Timer) (ack *jetstream.PubAck, err error) {
	select {
	case ack = <-fut.Ok():
	case err = <-fut.Err():
	default:
		if *timer == nil {
			*timer = time.NewTimer(asyncAckTimeout)
		} else {
			(*timer).Reset(asyncAckTimeout)
		}
		select {
		case ack = <-fut.Ok():
		case err = <-fut.Err():
		case <-(*timer).C:
			err = fmt.Errorf("no ack after %v", asyncAckTimeout)
		case <-ctx.Done():
			err = ctx.Err()
		}
		(*timer).Stop()
	}
	return ack, err
}

// reject counts a line refused before publishing, listing the first maxRejections.
func (st *PublishStats) reject(line int, reason string) {
	st.Rejected++
	if len(st.Rejections) < maxRejections {
		st.Rejections = append(st.Rejections, Rejection{Line: line, Reason: reason})
	}
}

// publishEach reads r's lines and publishes each non-blank one asynchronously into window,
// counting in st what it read, rejected or failed to publish, until the end of r or ctx is
// done. It returns the first publish or read failure.
func (p *Publisher) publishEach(ctx context.Context, r io.Reader, window chan<- inflight, st *PublishStats) error {
	var firstErr error
	limit := min(int64(MaxLine), p.js.Conn().MaxPayload())
	br := bufio.NewReaderSize(r, 64<<10)
	lineNo := 0
	var readErr error
read:
	for {
		raw, size, err := readLine(br, limit)
		if err != nil && size == 0 {
			if err != io.EOF {
				readErr = err
			}
			break
		}
		lineNo++
		line := bytes.TrimSpace(raw)
		if size > limit {
			st.Lines++
			st.reject(lineNo, fmt.Sprintf("%d bytes, over the server's max payload of %d", size, limit))
			continue
		}
		if len(line) == 0 {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		st.Lines++
		if p.Check != nil {
			if err := p.Check(line); err != nil {
				st.reject(lineNo, err.Error())
				continue
			}
		}
		// The future keeps the message for retries: it needs its own copy of the line.
		m := p.Message(bytes.Clone(line))
		fut, err := p.js.PublishMsgAsync(m, jetstream.WithStallWait(asyncAckTimeout))
		if err != nil {
			st.Failed++
			if firstErr == nil {
				firstErr = fmt.Errorf("publishing line %d: %w", lineNo, err)
			}
			continue
		}
		select {
		case window <- inflight{fut, lineNo}:
		case <-ctx.Done():
			st.Failed++ // published, but we stop waiting for its ack
			break read
		}
	}
	if readErr != nil && firstErr == nil {
		firstErr = fmt.Errorf("reading order lines after line %d: %w", lineNo, readErr)
	}
	return firstErr
}

// readLine reads the next line (without its newline) of at most limit bytes; a longer line is
// read to its end and returned empty with its size, so the caller can refuse it and go on.
func readLine(br *bufio.Reader, limit int64) (line []byte, size int64, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		if n := len(chunk); n > 0 && chunk[n-1] == '\n' {
			chunk = chunk[:n-1]
		}
		size += int64(len(chunk))
		if size <= limit {
			line = append(line, chunk...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if size > limit {
			return nil, size, err
		}
		return line, size, err
	}
}

// idField is one string value identify read.
type idField struct {
	value   string // the decoded string; "" when absent, not a string or unreadable
	escaped bool   // written with escapes (or control characters): not for the Nats-Msg-Id
}

// plain is the value as the Nats-Msg-Id shows it: "" when it was written with escapes.
func (f idField) plain() string {
	if f.escaped {
		return ""
	}
	return f.value
}

type identity struct{ program, orderID, affiliate, eventID idField }

// identify reads the top-level "program", "order_id", "affiliate_id" and "event_id" string values of a JSON
// object as encoding/json (and the engine's decoder) would: escapes decoded, the last of keys
// given twice. It never fails: malformed input yields what was read before the problem.
func identify(b []byte) identity {
	var id identity
	s := &lite{b: b}
	if s.ws(); !s.eat('{') {
		return id
	}
	for {
		s.ws()
		rawKey, ok := s.rawString()
		if !ok {
			return id
		}
		if s.ws(); !s.eat(':') {
			return id
		}
		s.ws()
		var f *idField
		switch key := decodeKey(rawKey); key {
		case "program":
			f = &id.program
		case "order_id":
			f = &id.orderID
		case "affiliate_id":
			f = &id.affiliate
		case "event_id":
			f = &id.eventID
		}
		start := s.i
		if !s.skipValue() {
			return id
		}
		if f != nil {
			*f = stringValue(b[start:s.i])
		}
		if s.ws(); !s.eat(',') {
			return id
		}
	}
}

// decodeKey returns a key's text, decoding escapes when there are any.
func decodeKey(raw []byte) string {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw)
	}
	var k string
	if json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &k) != nil {
		return ""
	}
	return k
}

// stringValue reads one JSON value as an id: a string, decoded; anything else, or a string
// encoding/json would not return byte for byte (invalid UTF-8, which the engine refuses), is "".
func stringValue(v []byte) idField {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return idField{}
	}
	inner := v[1 : len(v)-1]
	plain := true
	for _, c := range inner {
		if c == '\\' || c < 0x20 {
			plain = false
			break
		}
	}
	if plain {
		if !utf8.Valid(inner) {
			return idField{escaped: true}
		}
		return idField{value: string(inner)}
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return idField{escaped: true}
	}
	return idField{value: s, escaped: true}
}

// lite is a forgiving JSON walker for identify: it only needs to find top-level keys.
type lite struct {
	b []byte
	i int
}

func (s *lite) ws() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
}

func (s *lite) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// rawString consumes a string and returns its bytes between the quotes, escapes undecoded.
func (s *lite) rawString() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			s.i += 2
		case '"':
			s.i++
			return s.b[start : s.i-1], true
		default:
			s.i++
		}
	}
	return nil, false
}

// skipValue consumes one value of any kind.
func (s *lite) skipValue() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		_, ok := s.rawString()
		return ok
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, ok := s.rawString(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	default: // number, true, false, null
		start := s.i
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return s.i > start
			}
			s.i++
		}
		return s.i > start
	}
}
