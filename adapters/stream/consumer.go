package stream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/engine"
)

// Processor handles a batch of order events: in Commissioner it decides them with the engine
// and stores events and decisions in one transaction.
//
// Process returns nil only once the batch's outcome is durable; the consumer then acks every
// event except the dead letters, which it publishes to <prefix>.dead.… and terminates. Any
// error means "nothing of this batch is done": every event is redelivered later (nak with
// backoff), so an error must be transient (the store is down) — an event that can never be
// processed belongs in BatchOutcome.Dead instead. Events can be redelivered after a success too
// (a crash before the acks went out), always with the same Event.ID: Process must be idempotent
// on it.
//
// Process must not modify the events or their Raw bytes (it may keep them). ctx is not
// cancelled when the consumer shuts down (the batch in flight is finished), so Process should
// bound its own waits. Process is called concurrently for up to Config.Workers batches (2 by
// default), and events of one order may reach it out of stream order (Event.StreamSeq orders them).
type Processor interface {
	Process(ctx context.Context, batch []engine.Event) (BatchOutcome, error)
}

// BatchOutcome is what a successful Process reports back.
type BatchOutcome struct {
	// Dead lists the events that can never be processed — malformed or invalid, an unknown
	// program, no policy in force — each at most once. Process has already recorded them
	// (the dead-letter table); the consumer publishes and terminates them.
	Dead []DeadLetter
}

// DeadLetter is one event of a batch that cannot be processed, and why.
type DeadLetter struct {
	Index  int    // the event's position in the batch
	Reason string // the engine's error, e.g. "amount: not a decimal"
}

// Headers set on a dead letter, besides Nats-Msg-Id "dead:<event id>".
const (
	HeaderReason    = "Commissioner-Reason"     // why the event was dead-lettered
	HeaderEventID   = "Commissioner-Event-Id"   // the event's engine.Event.ID
	HeaderSubject   = "Commissioner-Subject"    // the subject the event came in on
	HeaderStreamSeq = "Commissioner-Stream-Seq" // its sequence in the stream
)

// Observer receives the consumer's counts and timings, e.g. to feed Prometheus metrics. Its
// methods are called from the consumer's goroutines, possibly concurrently, and must not block.
type Observer interface {
	Consumed(n int)                                 // n events received, about to be processed
	Processed(n int, took time.Duration, err error) // a batch of n returned from Process
	Acked(n int)                                    // n events acknowledged
	Naked(n int)                                    // n events handed back for redelivery
	Termed(n int)                                   // n events dead-lettered and terminated
	SettleFailed(n int, op string, err error)       // n ack/nak/term/dead-letter publishes failed
}

// NopObserver ignores everything; embed it to implement only some of Observer.
type NopObserver struct{}

func (NopObserver) Consumed(int)                        {}
func (NopObserver) Processed(int, time.Duration, error) {}
func (NopObserver) Acked(int)                           {}
func (NopObserver) Naked(int)                           {}
func (NopObserver) Termed(int)                          {}
func (NopObserver) SettleFailed(int, string, error)     {}

var _ Observer = NopObserver{}

// Stats are a consumer's running totals.
type Stats struct {
	Consumed      uint64 // events received and handed to Process
	Batches       uint64 // Process calls
	FailedBatches uint64 // Process calls that returned an error
	Acked         uint64
	Naked         uint64
	Termed        uint64
	SettleErrors  uint64 // acks, naks, terms or dead-letter publishes that failed
}

// ErrProcessorContract: the Processor returned a BatchOutcome that does not fit its batch.
var ErrProcessorContract = errors.New("processor broke its contract")

// Consumer feeds the durable pull consumer's events to a Processor in batches.
type Consumer struct {
	js   jetstream.JetStream
	cons jetstream.Consumer
	cfg  Config
	proc Processor
	obs  Observer

	consumed, batches, failedBatches, acked, naked, termed, settleErrors atomic.Uint64

	fatalOnce sync.Once
	fatal     chan struct{}
	fatalErr  error
	running   atomic.Bool
}

// NewConsumer creates or updates the durable pull consumer cfg.Durable on cfg.Stream (which
// must exist: EnsureStream), filtered to order events, with explicit acks, unlimited
// deliveries and cfg.AckWait. obs may be nil. Every process that consumes the stream creates
// its own Consumer with the same Durable; each event then goes to one of them.
func NewConsumer(ctx context.Context, js jetstream.JetStream, cfg Config, p Processor, obs Observer) (*Consumer, error) {
	cfg, err := cfg.complete()
	if err != nil {
		return nil, err
	}
	if obs == nil {
		obs = NopObserver{}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, consumerConfig(cfg))
	if err != nil {
		return nil, fmt.Errorf("creating consumer %s on stream %s: %w", cfg.Durable, cfg.Stream, err)
	}
	return &Consumer{js: js, cons: cons, cfg: cfg, proc: p, obs: obs, fatal: make(chan struct{})}, nil
}

// Stats returns the running totals. Safe for concurrent use.
func (c *Consumer) Stats() Stats {
	return Stats{
		Consumed: c.consumed.Load(), Batches: c.batches.Load(), FailedBatches: c.failedBatches.Load(),
		Acked: c.acked.Load(), Naked: c.naked.Load(), Termed: c.termed.Load(),
		SettleErrors: c.settleErrors.Load(),
	}
}

// Settled reports whether a consumer, by its info, has settled (acked or terminated) every event
// of its stream up to stream sequence upTo, and has nothing else pending or unacknowledged.
// NumPending and NumAckPending alone are not enough right after a publish: the server counts a
// new message into the consumer's NumPending asynchronously, after the publish is acknowledged,
// so for a moment a consumer that has not seen the new events looks settled. The ack floor
// cannot run ahead that way.
func Settled(ci *jetstream.ConsumerInfo, upTo uint64) bool {
	return ci.NumPending == 0 && ci.NumAckPending == 0 && ci.AckFloor.Stream >= upTo
}

// Info returns the durable consumer's state on the server.
func (c *Consumer) Info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	return c.cons.Info(ctx)
}

// pullExpiry is how long each pull request the consumer keeps open lasts; the server's idle
// heartbeats come at half of it. nats.go's default, 30 s, left a consumer idle for up to 30 s when
// a pull request stopped yielding messages while events were pending (seen once in a full test
// run against the Debian nats-server 2.9.10 at 127.0.0.1:4222: 814 of 2 000 events, then nothing
// for 30 s); a missing heartbeat or an expired request now renews the pull within seconds. An
// idle service sends one pull request per pullExpiry.
const pullExpiry = 5 * time.Second

// Run consumes until ctx is cancelled, then stops fetching, finishes the batches in flight
// (Process, acks), hands back the events it had received but not started (nak, no delay, so
// another process takes them at once), flushes the acks to the server and returns nil.
//
// Every event received is acked, naked or terminated exactly once; a failed ack, nak or term
// is counted (Stats.SettleErrors, Observer.SettleFailed) and the server redelivers that event
// after AckWait. Run returns an error when consuming cannot go on: the consumer was deleted,
// the connection closed, or the Processor broke its contract. Run may be called once.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("consumer: Run called twice")
	}
	msgs := make(chan jetstream.Msg, c.cfg.BatchSize)
	stopping := make(chan struct{})
	var lastErr atomic.Pointer[error]
	cc, err := c.cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-stopping:
			c.nak([]jetstream.Msg{m}, 0)
		}
	},
		jetstream.PullMaxMessages(c.cfg.BatchSize),
		jetstream.PullExpiry(pullExpiry),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { lastErr.Store(&err) }),
	)
	if err != nil {
		return fmt.Errorf("consuming %s/%s: %w", c.cfg.Stream, c.cfg.Durable, err)
	}

	work := context.WithoutCancel(ctx)
	slots := make(chan struct{}, c.cfg.Workers)
	var wg sync.WaitGroup
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	consumeEnded := false
loop:
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			break loop
		case <-c.fatal:
			break loop
		}
		batch, ended := c.collect(ctx, msgs, cc.Closed(), timer)
		if len(batch) > 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				c.handle(work, batch)
			}()
		} else {
			<-slots
		}
		if ended {
			consumeEnded = true
			break
		}
		if ctx.Err() != nil {
			break
		}
	}

	// Stop fetching at once, and hand back what was received but not started (while the
	// batches in flight finish), so that another process can take it.
	close(stopping)
	cc.Drain()
	drained := time.NewTimer(c.cfg.AckWait)
	defer drained.Stop()
	waiting := true
	for waiting {
		select {
		case m := <-msgs:
			c.nak([]jetstream.Msg{m}, 0)
		case <-cc.Closed():
			waiting = false
		case <-drained.C:
			waiting = false // what is left is redelivered after AckWait
		}
	}
	for {
		select {
		case m := <-msgs:
			c.nak([]jetstream.Msg{m}, 0)
			continue
		default:
		}
		break
	}
	wg.Wait()

	var errs []error
	select {
	case <-c.fatal: // closed after fatalErr was written
		errs = append(errs, c.fatalErr)
	default:
	}
	if consumeEnded && ctx.Err() == nil {
		why := errors.New("the server ended the subscription")
		if p := lastErr.Load(); p != nil {
			why = *p
		}
		errs = append(errs, fmt.Errorf("consuming %s/%s stopped: %w", c.cfg.Stream, c.cfg.Durable, why))
	}
	if nc := c.js.Conn(); !nc.IsClosed() {
		if err := nc.FlushTimeout(min(c.cfg.AckWait, 5*time.Second)); err != nil {
			errs = append(errs, fmt.Errorf("flushing acks to the NATS server: %w", err))
		}
	}
	return errors.Join(errs...)
}

// collect waits for a first message, then takes what else is there up to BatchSize, waiting at
// most FetchWait for more. ended reports that the consume subscription is gone.
func (c *Consumer) collect(ctx context.Context, msgs <-chan jetstream.Msg, closed <-chan struct{}, timer *time.Timer) (batch []jetstream.Msg, ended bool) {
	select {
	case m := <-msgs:
		batch = make([]jetstream.Msg, 1, c.cfg.BatchSize)
		batch[0] = m
	case <-ctx.Done():
		return nil, false
	case <-c.fatal:
		return nil, false
	case <-closed:
		return nil, true
	}
	timer.Reset(c.cfg.FetchWait)
	defer timer.Stop()
	for len(batch) < c.cfg.BatchSize {
		select {
		case m := <-msgs:
			batch = append(batch, m)
			continue
		default:
		}
		select {
		case m := <-msgs:
			batch = append(batch, m)
		case <-timer.C:
			return batch, false
		case <-ctx.Done():
			return batch, false
		case <-closed:
			return batch, true
		}
	}
	return batch, false
}

// handle runs one batch through the Processor and settles every message exactly once.
func (c *Consumer) handle(ctx context.Context, batch []jetstream.Msg) {
	events := make([]engine.Event, len(batch))
	now := time.Now()
	for i, m := range batch {
		seq := streamSeq(m)
		id := m.Headers().Get(jetstream.MsgIDHeader)
		if id == "" {
			id = "seq:" + strconv.FormatUint(seq, 10)
		}
		events[i] = engine.Event{ID: id, Subject: m.Subject(), StreamSeq: seq, Raw: m.Data(), ReceivedAt: now}
	}
	n := len(batch)
	c.consumed.Add(uint64(n))
	c.batches.Add(1)
	c.obs.Consumed(n)

	start := time.Now()
	out, err := c.proc.Process(ctx, events)
	c.obs.Processed(n, time.Since(start), err)
	if err != nil {
		c.failedBatches.Add(1)
		c.nakBackoff(batch)
		return
	}

	dead := make([]bool, n)
	for _, d := range out.Dead {
		if d.Index < 0 || d.Index >= n || dead[d.Index] {
			c.setFatal(fmt.Errorf("%w: dead letter index %d in a batch of %d (or listed twice)", ErrProcessorContract, d.Index, n))
			c.nakBackoff(batch)
			return
		}
		dead[d.Index] = true
	}

	// Dead letters first: publish each, then terminate it; one that could not be published is
	// handed back, to be processed (idempotently) and dead-lettered again.
	if len(out.Dead) > 0 {
		published := c.publishDead(ctx, events, out.Dead)
		reasons := termReasons(c.js.Conn())
		var retry []jetstream.Msg
		for i, d := range out.Dead {
			if !published[i] {
				retry = append(retry, batch[d.Index])
				continue
			}
			term := batch[d.Index].Term
			if reasons {
				term = func() error { return batch[d.Index].TermWithReason(oneLine(d.Reason, 200)) }
			}
			if err := term(); err != nil {
				c.settleFailed(1, "term", err)
				continue
			}
			c.termed.Add(1)
			c.obs.Termed(1)
		}
		if len(retry) > 0 {
			c.nakBackoff(retry)
		}
	}

	acked, failed := 0, 0
	var firstErr error
	for i, m := range batch {
		if dead[i] {
			continue
		}
		if err := m.Ack(); err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		acked++
	}
	if acked > 0 {
		c.acked.Add(uint64(acked))
		c.obs.Acked(acked)
	}
	if failed > 0 {
		c.settleFailed(failed, "ack", firstErr)
	}
}

// publishDead publishes the dead letters and reports, per entry of dead, whether the stream
// stored it.
func (c *Consumer) publishDead(ctx context.Context, events []engine.Event, dead []DeadLetter) []bool {
	ok := make([]bool, len(dead))
	futs := make([]jetstream.PubAckFuture, len(dead))
	prefix := c.cfg.prefix()
	for i, d := range dead {
		ev := events[d.Index]
		token, _ := strings.CutPrefix(ev.Subject, prefix+".")
		m := &nats.Msg{
			Subject: c.cfg.DeadSubject(token),
			Data:    ev.Raw,
			Header: nats.Header{
				jetstream.MsgIDHeader: {"dead:" + ev.ID},
				HeaderReason:          {oneLine(d.Reason, 2048)},
				HeaderEventID:         {ev.ID},
				HeaderSubject:         {ev.Subject},
				HeaderStreamSeq:       {strconv.FormatUint(ev.StreamSeq, 10)},
			},
		}
		f, err := c.js.PublishMsgAsync(m, jetstream.WithStallWait(asyncAckTimeout))
		if err != nil {
			c.settleFailed(1, "publish dead letter", err)
			continue
		}
		futs[i] = f
	}
	wait, cancel := context.WithTimeout(ctx, asyncAckTimeout)
	defer cancel()
	for i, f := range futs {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			ok[i] = true
		case err := <-f.Err():
			c.settleFailed(1, "publish dead letter", err)
		case <-wait.Done():
			c.settleFailed(1, "publish dead letter", wait.Err())
		}
	}
	return ok
}

// nakBackoff hands messages back with a delay of NakDelay doubled per earlier delivery, at most
// NakMaxDelay.
func (c *Consumer) nakBackoff(msgs []jetstream.Msg) {
	for _, m := range msgs {
		delay := c.cfg.NakDelay
		if md, err := m.Metadata(); err == nil {
			for d := md.NumDelivered; d > 1 && delay < c.cfg.NakMaxDelay; d-- {
				delay *= 2
			}
		}
		c.nak([]jetstream.Msg{m}, min(delay, c.cfg.NakMaxDelay))
	}
}

func (c *Consumer) nak(msgs []jetstream.Msg, delay time.Duration) {
	naked := 0
	for _, m := range msgs {
		var err error
		if delay > 0 {
			err = m.NakWithDelay(delay)
		} else {
			err = m.Nak()
		}
		if err != nil {
			c.settleFailed(1, "nak", err)
			continue
		}
		naked++
	}
	if naked > 0 {
		c.naked.Add(uint64(naked))
		c.obs.Naked(naked)
	}
}

func (c *Consumer) settleFailed(n int, op string, err error) {
	c.settleErrors.Add(uint64(n))
	c.obs.SettleFailed(n, op, err)
	if errors.Is(err, nats.ErrConnectionClosed) {
		c.setFatal(fmt.Errorf("%s: %w", op, err))
	}
}

func (c *Consumer) setFatal(err error) {
	c.fatalOnce.Do(func() {
		c.fatalErr = err
		close(c.fatal)
	})
}

// streamSeq reads the stream sequence from the message's ack subject; 0 when it has none.
func streamSeq(m jetstream.Msg) uint64 {
	md, err := m.Metadata()
	if err != nil {
		return 0
	}
	return md.Sequence.Stream
}

// termReasons reports whether the connected server honours a term with a reason: a server
// before 2.10.4 ignores "+TERM <reason>" altogether and redelivers the message after AckWait,
// so a dead letter would come back forever. Such servers get a plain Term (the reason is in
// the dead letter's header and the store anyway).
func termReasons(nc *nats.Conn) bool {
	var major, minor, patch int
	fmt.Sscanf(nc.ConnectedServerVersion(), "%d.%d.%d", &major, &minor, &patch)
	return major > 2 || major == 2 && (minor > 10 || minor == 10 && patch >= 4)
}

// oneLine makes s fit a header value or a term reason: no line breaks, at most max bytes.
func oneLine(s string, max int) string {
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
	}
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "")
	}
	return s
}
