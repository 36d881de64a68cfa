package stream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publisher publishes order events (one JSON object each) to the stream. It is safe for
// concurrent use.
//
// Each event goes to <prefix>.<program> with the header
//
//	Nats-Msg-Id: <program>:<order_id>:<first 16 hex digits of SHA-256(raw)>
//
// so the stream drops an identical event published again within Config.DuplicateWindow, while
// a changed event of the same order (a new status, a refund) is a new event. Only program and
// order_id are read from the JSON, cheaply; nothing is validated here. A line whose program
// cannot be read (malformed JSON, no program, an escaped or non-token program, or the reserved
// "dead") still goes to the stream, on <prefix>.unknown, so the consumer reads it and
// dead-letters it with the engine's reason: nothing a publisher accepted is silently dropped.
type Publisher struct {
	js  jetstream.JetStream
	cfg Config
}

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
	program, orderID := identify(raw)
	sum := sha256.Sum256(raw)
	var id []byte
	id = append(id, program...)
	id = append(id, ':')
	id = append(id, orderID...)
	id = append(id, ':')
	id = hex.AppendEncode(id, sum[:8])
	return &nats.Msg{
		Subject: p.cfg.prefix() + "." + programToken(program),
		Data:    raw,
		Header:  nats.Header{jetstream.MsgIDHeader: []string{string(id)}},
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

// PublishStats counts what PublishLines did. Lines = Accepted + Duplicates + Failed.
type PublishStats struct {
	Lines      int // non-blank lines read
	Accepted   int // stored by the stream
	Duplicates int // dropped by the stream as already published
	Failed     int // not confirmed stored (an error, a timeout, or ctx cancelled)
	// LastSeq is the highest stream sequence among the events stored (0 when none): a consumer
	// has settled all of them once Settled(its info, LastSeq).
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
	type inflight struct {
		fut  jetstream.PubAckFuture
		line int
	}
	window := make(chan inflight, concurrency-1)
	var acked PublishStats // owned by the collector until done is closed
	var ackErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		var timer *time.Timer
		for f := range window {
			var (
				ack *jetstream.PubAck
				err error
			)
			select {
			case ack = <-f.fut.Ok():
			case err = <-f.fut.Err():
			default:
				if timer == nil {
					timer = time.NewTimer(asyncAckTimeout)
				} else {
					timer.Reset(asyncAckTimeout)
				}
				select {
				case ack = <-f.fut.Ok():
				case err = <-f.fut.Err():
				case <-timer.C:
					err = fmt.Errorf("no ack after %v", asyncAckTimeout)
				case <-ctx.Done():
					err = ctx.Err()
				}
				timer.Stop()
			}
			switch {
			case err != nil:
				acked.Failed++
				if ackErr == nil {
					ackErr = fmt.Errorf("publishing line %d: %w", f.line, err)
				}
			case ack.Duplicate:
				acked.Duplicates++
			default:
				acked.Accepted++
				acked.LastSeq = max(acked.LastSeq, ack.Sequence)
			}
		}
	}()

	var st PublishStats
	var firstErr error
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	lineNo := 0
read:
	for sc.Scan() {
		lineNo++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		st.Lines++
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
	if err := sc.Err(); err != nil && firstErr == nil {
		firstErr = fmt.Errorf("reading order lines after line %d: %w", lineNo, err)
	}
	close(window)
	<-done
	st.Accepted, st.Duplicates, st.LastSeq = acked.Accepted, acked.Duplicates, acked.LastSeq
	st.Failed += acked.Failed
	if firstErr == nil {
		firstErr = ackErr
	}
	if err := ctx.Err(); err != nil && firstErr == nil {
		firstErr = fmt.Errorf("publishing order lines: %w", err)
	}
	return st, firstErr
}

// identify reads the top-level "program" and "order_id" string values of a JSON object,
// stopping as soon as it has both. A value that is missing, not a plain string, or written with
// escapes or control characters comes back "". It never fails: malformed input just yields
// what was read before the problem.
func identify(b []byte) (program, orderID string) {
	s := &lite{b: b}
	if s.ws(); !s.eat('{') {
		return "", ""
	}
	haveP, haveO := false, false
	for !(haveP && haveO) {
		s.ws()
		key, ok := s.rawString()
		if !ok {
			return
		}
		if s.ws(); !s.eat(':') {
			return
		}
		s.ws()
		switch {
		case !haveP && string(key) == "program":
			program, haveP = s.plainString(), true
		case !haveO && string(key) == "order_id":
			orderID, haveO = s.plainString(), true
		}
		if !s.skipValue() {
			return
		}
		if s.ws(); !s.eat(',') {
			return
		}
	}
	return
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

// plainString returns the string value at the cursor without consuming it, or "" when the
// value is not a string free of escapes and control characters.
func (s *lite) plainString() string {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return ""
	}
	for j := s.i + 1; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			return string(s.b[s.i+1 : j])
		case c == '\\' || c < 0x20:
			return ""
		}
	}
	return ""
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
