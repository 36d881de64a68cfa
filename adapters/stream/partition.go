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

// run is one ownership of a partition: its lease and the worker that processes it.
type run struct {
	part Partition
	key  string
	rev  uint64 // the lease's current revision; the coordinator's only

	valid     atomic.Int64 // the lease is believed held until clock() reaches this
	ctx       context.Context
	cancel    context.CancelFunc // on stop and on loss: ends a waiting fetch or Acquire
	stopCh    chan struct{}      // closed: finish the batch in flight, then give the partition up
	lostCh    chan struct{}      // closed: the lease is lost, stop at once
	stopOnce  sync.Once
	lostOnce  sync.Once
	reason    atomic.Pointer[string]
	stopping  atomic.Bool
	lostState atomic.Bool

	// Written by the worker before it reports its exit.
	outcome runOutcome
	err     error
}

type runOutcome int

const (
	outcomeReleased runOutcome = iota // stopped on request (rebalance, shutdown)
	outcomeLost                       // the lease was lost, or the partition's consumer was reset by another owner
	outcomeFenced                     // Process returned ErrNotOwner
	outcomeFailed                     // Acquire or the partition's consumer failed
)

func newRun(p Partition, key string, rev uint64, validUntil time.Duration) *run {
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{part: p, key: key, rev: rev, ctx: ctx, cancel: cancel, stopCh: make(chan struct{}), lostCh: make(chan struct{})}
	r.valid.Store(int64(validUntil))
	return r
}

func (r *run) requestStop(reason string) {
	r.stopOnce.Do(func() {
		r.reason.Store(&reason)
		r.stopping.Store(true)
		close(r.stopCh)
		r.cancel()
	})
}

func (r *run) stopReason() string {
	if p := r.reason.Load(); p != nil {
		return *p
	}
	return "error"
}

// markLost reports whether this call marked the lease lost (false: it already was).
func (r *run) markLost() bool {
	marked := false
	r.lostOnce.Do(func() {
		marked = true
		r.lostState.Store(true)
		close(r.lostCh)
		r.cancel()
	})
	return marked
}

func (r *run) isStopping() bool { return r.stopping.Load() }
func (r *run) isLost() bool     { return r.lostState.Load() }

func (r *run) renewed(validUntil time.Duration) { r.valid.Store(int64(validUntil)) }

// held reports whether the worker may go on: the lease is neither lost nor past its deadline,
// and no stop was requested.
func (r *run) held() bool {
	return !r.isLost() && !r.isStopping() && clock() < time.Duration(r.valid.Load())
}

// exitReason is why a worker stopped, from the run's state.
func (r *run) exitReason() (runOutcome, error) {
	switch {
	case r.isLost():
		return outcomeLost, errors.New("the lease was lost")
	case r.isStopping():
		return outcomeReleased, nil
	case clock() >= time.Duration(r.valid.Load()):
		return outcomeLost, errors.New("the lease was not renewed in time")
	}
	return outcomeReleased, nil
}

// work is one ownership's worker: Acquire, prepare the partition's consumer, then fetch and
// process one batch at a time until the partition is given up; then Release, and report the
// exit to the coordinator.
func (c *Consumer) work(r *run) {
	defer func() { c.exited <- r }()
	w := &worker{c: c, r: r}
	r.outcome, r.err = w.run()
}

type worker struct {
	c        *Consumer
	r        *run
	cons     jetstream.Consumer
	lastDone uint64 // the stream sequence of the last event of the partition known to be durably processed
	busy     bool   // the last fetch returned events: try a short fetch first
}

func (w *worker) run() (runOutcome, error) {
	c, r := w.c, w.r
	lastSeq, err := c.proc.Acquire(r.ctx, r.part)
	defer c.proc.Release(r.part)
	if !r.held() {
		return r.exitReason()
	}
	if err != nil {
		if errors.Is(err, ErrNotOwner) {
			return outcomeFenced, fmt.Errorf("acquiring: %w", err)
		}
		return outcomeFailed, fmt.Errorf("acquiring: %w", err)
	}
	w.lastDone = lastSeq
	reset, err := w.prepareConsumer(lastSeq)
	if err != nil {
		if !r.held() {
			return r.exitReason()
		}
		return outcomeFailed, err
	}
	c.log.Info("partition acquired", "partition", r.part.Index, "epoch", r.part.Epoch, "last_seq", lastSeq, "consumer_reset", reset)

	for {
		if !r.held() {
			return r.exitReason()
		}
		msgs, err := w.fetch()
		if !r.held() {
			c.nak(msgs, 0)
			return r.exitReason()
		}
		if err != nil {
			if errors.Is(err, nats.ErrConnectionClosed) {
				c.nak(msgs, 0)
				c.setFatal(fmt.Errorf("fetching partition %d: %w", r.part.Index, err))
				return outcomeFailed, err
			}
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				c.nak(msgs, 0)
				return outcomeLost, fmt.Errorf("the partition's consumer was deleted (another owner reset it): %w", err)
			}
			c.warnLimited("fetch"+strconv.Itoa(r.part.Index), "fetching a partition's events failed", "partition", r.part.Index, "err", err)
			if len(msgs) == 0 {
				if !w.pause(c.cfg.NakDelay, nil) {
					return r.exitReason()
				}
				continue
			}
		}
		if len(msgs) == 0 {
			continue
		}
		if goOn, out, err := w.handle(msgs); !goOn {
			return out, err
		}
	}
}

// prepareConsumer makes the partition's durable consumer deliver from lastSeq+1: it keeps the
// existing one when it would do exactly that — nothing delivered and unacknowledged, no pull
// waiting (an earlier owner's), the same configuration, and no event of the partition between
// lastSeq and its ack floor — and otherwise deletes it and creates it anew at lastSeq+1. The
// deletion also ends an earlier owner's pulls on it. reset reports whether it did.
func (w *worker) prepareConsumer(lastSeq uint64) (reset bool, err error) {
	c, n := w.c, w.r.part.Index
	ctx, cancel := context.WithTimeout(w.r.ctx, 30*time.Second)
	defer cancel()
	want := partitionConsumerConfig(c.cfg, n, lastSeq+1)
	cons, err := c.stream.Consumer(ctx, want.Durable)
	switch {
	case err == nil:
		if w.keep(ctx, cons.CachedInfo(), want, lastSeq) {
			w.cons = cons
			return false, nil
		}
		if err := c.stream.DeleteConsumer(ctx, want.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return false, fmt.Errorf("resetting consumer %s: %w", want.Durable, err)
		}
		reset = true
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return false, fmt.Errorf("reading consumer %s: %w", want.Durable, err)
	}
	if w.cons, err = c.stream.CreateConsumer(ctx, want); err != nil {
		return reset, fmt.Errorf("creating consumer %s at stream sequence %d: %w", want.Durable, lastSeq+1, err)
	}
	return reset, nil
}

// keep reports whether an existing partition consumer already delivers from lastSeq+1.
func (w *worker) keep(ctx context.Context, ci *jetstream.ConsumerInfo, want jetstream.ConsumerConfig, lastSeq uint64) bool {
	have := ci.Config
	if ci.NumAckPending != 0 || ci.NumRedelivered != 0 || ci.NumWaiting != 0 ||
		have.AckWait != want.AckWait || have.MaxAckPending != want.MaxAckPending || have.FilterSubject != want.FilterSubject ||
		have.AckPolicy != want.AckPolicy || have.MaxDeliver != want.MaxDeliver {
		return false
	}
	floor := ci.AckFloor.Stream
	if floor == lastSeq {
		return true
	}
	if floor < lastSeq {
		return false // it would deliver events already processed
	}
	// The floor is ahead: keep it only when the partition has no event in (lastSeq, floor].
	m, err := w.c.stream.GetMsg(ctx, lastSeq+1, jetstream.WithGetMsgSubject(want.FilterSubject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true
	}
	return err == nil && m.Sequence > floor
}

// fetch returns the partition's next events in stream order, at most BatchSize: after a batch
// it asks for what is there (waiting FetchWait to fill up); when that is nothing it waits up to
// pullExpiry for a first event, then FetchWait for the rest. No events and no error: nothing
// came (or the run was stopped).
func (w *worker) fetch() ([]jetstream.Msg, error) {
	size := w.c.cfg.BatchSize
	if w.busy {
		msgs, err := pull(w.cons, size, jetstream.FetchMaxWait(w.c.cfg.FetchWait))
		if err != nil || len(msgs) > 0 {
			return msgs, err
		}
		w.busy = false
	}
	ctx, cancel := context.WithTimeout(w.r.ctx, pullExpiry)
	first, err := pull(w.cons, 1, jetstream.FetchContext(ctx))
	cancel()
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		err = nil
	}
	if err != nil || len(first) == 0 || size == 1 {
		return first, err
	}
	w.busy = true
	rest, err := pull(w.cons, size-1, jetstream.FetchMaxWait(w.c.cfg.FetchWait))
	return append(first, rest...), err
}

// pull sends one pull request and collects what it delivers.
func pull(cons jetstream.Consumer, n int, opt jetstream.FetchOpt) ([]jetstream.Msg, error) {
	b, err := cons.Fetch(n, opt)
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	return msgs, b.Error()
}

// handle processes one fetched batch: events at or below lastDone (delivered again after they
// were processed: a lost ack) are acked and skipped; the rest go to Process, again and again
// while it fails and the lease is held. goOn false: the run ends with out and err.
//
// It is long on purpose: the retry loop's exits (lease lost, fenced, paused out, stored) each
// settle every message of the batch exactly once, and keeping them in one function keeps all of
// them, and the order of the lease check, the in-progress acks and Process, in view at once.
func (w *worker) handle(msgs []jetstream.Msg) (goOn bool, out runOutcome, err error) {
	c, r := w.c, w.r
	batch := msgs[:0:0]
	for _, m := range msgs {
		if seq := streamSeq(m); seq != 0 && seq <= w.lastDone {
			if err := m.Ack(); err != nil {
				c.settleFailed(1, "ack", err)
			} else {
				c.acked.Add(1)
				c.obs.Acked(1)
			}
			c.skipped.Add(1)
			continue
		}
		batch = append(batch, m)
	}
	if len(batch) == 0 {
		return true, 0, nil
	}
	events := make([]engine.Event, len(batch))
	now := time.Now()
	for i, m := range batch {
		seq := streamSeq(m)
		events[i] = engine.Event{ID: messageEventID(m, seq), Subject: m.Subject(), StreamSeq: seq, Raw: m.Data(), ReceivedAt: now}
	}
	n := len(batch)
	c.consumed.Add(uint64(n))
	c.obs.Consumed(n)

	work := context.WithoutCancel(r.ctx)
	delay := c.cfg.NakDelay
	var lastWarn time.Time
	for attempt := 1; ; attempt++ {
		if !r.held() {
			c.nak(batch, 0)
			out, err := r.exitReason()
			return false, out, err
		}
		stop := w.holdAcks(batch)
		start := time.Now()
		out, err := c.proc.Process(work, r.part, events)
		stop()
		c.batches.Add(1)
		c.obs.Processed(n, time.Since(start), err)
		if err == nil {
			if err := w.settle(batch, events, out); err != nil {
				return false, outcomeFailed, err
			}
			w.lastDone = events[n-1].StreamSeq
			if attempt > 1 {
				c.log.Info("batch stored after failures", "partition", r.part.Index, "epoch", r.part.Epoch, "attempts", attempt)
				c.batchStored(r.part.Index)
			}
			return true, 0, nil
		}
		c.failedBatches.Add(1)
		if !errors.Is(err, ErrNotOwner) {
			c.batchFailed(r.part.Index, n, err)
		}
		if errors.Is(err, ErrNotOwner) {
			c.nak(batch, 0)
			return false, outcomeFenced, fmt.Errorf("processing a batch: %w", err)
		}
		needsOperator := errors.Is(err, ErrNeedsOperator)
		if needsOperator {
			delay = c.cfg.NakMaxDelay // the same answer until someone acts: no point in hurrying
		}
		if lastWarn.IsZero() || time.Since(lastWarn) >= logEvery {
			lastWarn = time.Now()
			args := []any{"partition", r.part.Index, "epoch", r.part.Epoch, "events", n,
				"first_seq", events[0].StreamSeq, "last_seq", events[n-1].StreamSeq, "attempt", attempt, "retry_in", delay, "err", err}
			if needsOperator {
				c.log.Error("batch refused until an operator acts; the partition waits (its events are kept)", args...)
			} else {
				c.log.Warn("batch failed; retrying it", args...)
			}
		}
		if !w.pause(delay, batch) {
			c.nak(batch, 0)
			out, err := r.exitReason()
			return false, out, err
		}
		delay = min(2*delay, c.cfg.NakMaxDelay)
	}
}

// holdAcks extends the messages' ack deadlines (in-progress acks every AckWait/3) until stop is
// called, so that the server does not redeliver a batch that is being processed.
func (w *worker) holdAcks(msgs []jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(w.c.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				for _, m := range msgs {
					_ = m.InProgress() // a failure shows in the batch's ack
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// pause waits d while holding msgs' ack deadlines; false when the run must stop instead.
func (w *worker) pause(d time.Duration, msgs []jetstream.Msg) bool {
	stop := w.holdAcks(msgs)
	defer stop()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return w.r.held()
	case <-w.r.stopCh:
		return false
	case <-w.r.lostCh:
		return false
	}
}

// settle acks a processed batch, and publishes and terminates its dead letters. A dead letter
// the stream did not store is published again (with the same backoff as a failed batch) while
// the lease is held: its event is durable already, so it is never processed again; when the
// partition is given up first, its event is naked, and only the store's dead-letter table has
// it. An error: the Processor broke its contract (the batch is naked and Run stops).
func (w *worker) settle(batch []jetstream.Msg, events []engine.Event, out BatchOutcome) error {
	c := w.c
	n := len(batch)
	dead := make([]bool, n)
	for _, d := range out.Dead {
		if d.Index < 0 || d.Index >= n || dead[d.Index] {
			err := fmt.Errorf("%w: dead letter index %d in a batch of %d (or listed twice)", ErrProcessorContract, d.Index, n)
			c.setFatal(err)
			c.nak(batch, 0)
			return err
		}
		dead[d.Index] = true
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

	// Then the dead letters: publish each, then terminate it.
	pending := out.Dead
	delay := c.cfg.NakDelay
	for len(pending) > 0 {
		published := c.publishDead(events, pending)
		reasons := termReasons(c.js.Conn())
		var again []DeadLetter
		for i, d := range pending {
			if !published[i] {
				again = append(again, d)
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
		if pending = again; len(pending) == 0 {
			break
		}
		var held []jetstream.Msg
		for _, d := range pending {
			held = append(held, batch[d.Index])
		}
		if !w.pause(delay, held) {
			c.nak(held, 0)
			break
		}
		delay = min(2*delay, c.cfg.NakMaxDelay)
	}
	return nil
}

// publishDead publishes the dead letters, each on <prefix>.dead.<program token>.<affiliate
// token>, and reports, per entry of dead, whether the stream stored it.
func (c *Consumer) publishDead(events []engine.Event, dead []DeadLetter) []bool {
	ok := make([]bool, len(dead))
	futs := make([]jetstream.PubAckFuture, len(dead))
	for i, d := range dead {
		ev := events[d.Index]
		m := &nats.Msg{
			Subject: c.cfg.deadSubjectFor(ev.Subject),
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
	wait := time.NewTimer(asyncAckTimeout)
	defer wait.Stop()
	for i, f := range futs {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			ok[i] = true
		case err := <-f.Err():
			c.settleFailed(1, "publish dead letter", err)
		case <-wait.C:
			c.settleFailed(1, "publish dead letter", errors.New("no ack from the stream"))
		}
	}
	return ok
}

// nak hands messages back (with a delay, or none so that the next owner has them at once).
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
	v, ok := parseVersion(nc.ConnectedServerVersion())
	return ok && (v[0] > 2 || v[0] == 2 && (v[1] > 10 || v[1] == 10 && v[2] >= 4))
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

// messageEventID is the identity a message gives its event before decoding: its Nats-Msg-Id, or
// its stream sequence (the engine then prefers the order's event_id: engine.Event).
func messageEventID(m jetstream.Msg, seq uint64) string {
	if id := m.Headers().Get(jetstream.MsgIDHeader); id != "" {
		return id
	}
	return "seq:" + strconv.FormatUint(seq, 10)
}
