package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/engine"
)

// Partition is one partition of the stream as its current owner holds it.
type Partition struct {
	Index int    // 0 … partitions-1
	Epoch uint64 // the fencing token of this ownership: larger for every later acquisition of any partition
}

// Processor handles the events of the partitions this process owns: in Commissioner it decides
// them with the engine and stores each batch in one transaction, fenced by the epoch.
//
// For every ownership of a partition the consumer calls Acquire once, then Process for its
// batches one at a time, then Release once. Calls for different partitions run concurrently:
// a Processor must be safe for concurrent use across partitions.
type Processor interface {
	// Acquire is called when this process has become p's owner, before any batch of p. It returns the stream
	// sequence of the last event of p that is durably processed (0: none); the consumer then delivers p's events
	// from the next sequence on, in stream order (re-creating or resetting the partition's durable consumer to
	// start there unless its ack floor already is there and nothing is pending). An error gives p up (it is tried again later).
	//
	// ctx is cancelled when p is given up meanwhile (lease lost, shutdown). A store that fences
	// writes by epoch records p.Epoch here, so that a batch of an earlier ownership fails from
	// now on.
	Acquire(ctx context.Context, p Partition) (lastSeq uint64, err error)
	// Process handles one batch of p's events in stream order; at most one call per partition at a time.
	// Returns nil only once the batch's outcome is durable (then the consumer acks, and publishes+terms dead letters as today).
	// An error matching ErrNotOwner means the store fenced this owner out: give p up at once.
	//
	// Any other error means "nothing of this batch is done": the consumer calls Process again
	// with the same batch, after NakDelay doubling up to NakMaxDelay, for as long as it holds p
	// (it extends the events' ack deadlines meanwhile), so p stays in order; an error must
	// therefore be transient (the store is down), and an event that can never be processed
	// belongs in BatchOutcome.Dead instead. Within one ownership no event is delivered twice,
	// but a new owner starts after Acquire's lastSeq, so an event can come again after a crash
	// (always with the same Event.ID): Process must be idempotent on it.
	//
	// Process must not modify the events or their Raw bytes (it may keep them). ctx is not
	// cancelled when the consumer shuts down or loses p: the batch in flight is finished (a
	// stale owner's write is the store's to refuse), so Process should bound its own waits.
	Process(ctx context.Context, p Partition, batch []engine.Event) (BatchOutcome, error)
	// Release is called after p was given up (rebalance, shutdown, lease lost), after its last Process returned.
	//
	// It is called exactly once after every Acquire, a failed one too, before p can be
	// acquired again by this process.
	Release(p Partition)
}

// ErrNotOwner is what a Processor returns (wrapped or not) when the store refused a batch
// because a later owner of the partition (a larger epoch) has acquired it.
var ErrNotOwner = errors.New("not the partition's owner any more: a later owner holds it")

// ErrNeedsOperator is what a Processor returns (wrapped) when retrying the batch gives the same
// error until an operator acts (a policy file changed under a used version number, say). The
// consumer keeps the batch — its events are not at fault, so they are never dead-lettered —
// retries it at the longest delay (NakMaxDelay), and logs ERROR, not WARN. Any other error is
// transient: retried with a doubling delay.
var ErrNeedsOperator = errors.New("the batch is refused until an operator acts")

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
	HeaderSubject   = "Commissioner-Subject"    // the subject the event was stored on
	HeaderStreamSeq = "Commissioner-Stream-Seq" // its sequence in the stream
)

// Observer receives the consumer's counts and timings, e.g. to feed Prometheus metrics. Its
// methods are called from the consumer's goroutines, possibly concurrently, and must not block.
type Observer interface {
	Consumed(n int)                                 // n events received, about to be processed
	Processed(n int, took time.Duration, err error) // a batch of n returned from Process (each attempt)
	Acked(n int)                                    // n events acknowledged
	Naked(n int)                                    // n events handed back for redelivery
	Termed(n int)                                   // n events dead-lettered and terminated
	SettleFailed(n int, op string, err error)       // n ack/nak/term/dead-letter publishes failed
	Owned(n int)                                    // this process owns n partitions now (after every change)
	Acquired(p Partition)                           // this process became p's owner
	Lost(p Partition, err error)                    // p's lease was lost or the store fenced this owner out
}

// NopObserver ignores everything; embed it to implement only some of Observer.
type NopObserver struct{}

func (NopObserver) Consumed(int)                        {}
func (NopObserver) Processed(int, time.Duration, error) {}
func (NopObserver) Acked(int)                           {}
func (NopObserver) Naked(int)                           {}
func (NopObserver) Termed(int)                          {}
func (NopObserver) SettleFailed(int, string, error)     {}
func (NopObserver) Owned(int)                           {}
func (NopObserver) Acquired(Partition)                  {}
func (NopObserver) Lost(Partition, error)               {}

var _ Observer = NopObserver{}

// Stats are a consumer's running totals.
type Stats struct {
	Consumed      uint64 // events received and handed to Process
	Batches       uint64 // Process calls (a retried batch counts once per call)
	FailedBatches uint64 // Process calls that returned an error
	Acked         uint64
	Naked         uint64
	Termed        uint64
	SettleErrors  uint64 // acks, naks, terms or dead-letter publishes that failed
	Skipped       uint64 // events delivered again after they were processed: acked, not processed again
	Acquired      uint64 // partitions acquired
	Released      uint64 // partitions given up on purpose (rebalance, shutdown) or after an error
	Lost          uint64 // partitions lost: a renewal failed or came too late, or the store fenced this owner
}

// ErrProcessorContract: the Processor returned a BatchOutcome that does not fit its batch.
var ErrProcessorContract = errors.New("processor broke its contract")

// pullExpiry is how long a pull request waiting for a partition's next event lasts. nats.go's
// default, 30 s, once left a consumer idle that long with events pending (a pull that stopped
// yielding); an idle partition now sends one pull request per pullExpiry.
const pullExpiry = 5 * time.Second

// Consumer owns a fair share of the stream's partitions (leases in the owners bucket) and feeds
// each owned partition's events, in stream order and a batch at a time, to a Processor. Every
// process that consumes the stream runs one Consumer with the same configuration.
type Consumer struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	kv     jetstream.KeyValue
	// epochBase is added to a lease's KV revision to make its epoch: see epochBase.
	epochBase uint64
	cfg       Config
	proc      Processor
	obs       Observer
	log       *slog.Logger
	member    string

	consumed, batches, failedBatches, acked, naked, termed, settleErrors, skipped atomic.Uint64
	acquired, released, lost                                                      atomic.Uint64

	fatalOnce sync.Once
	fatal     chan struct{}
	fatalErr  error
	running   atomic.Bool

	// The coordinator (Run's goroutine) owns runs, cooldown and freeSince; owned is its
	// snapshot for Owned.
	runs      map[int]*run
	exited    chan *run
	cooldown  map[int]time.Time // a partition given up after an error is not taken again before this
	failures  map[int]int       // consecutive ownerships of a partition that ended in an error
	freeSince map[int]time.Time // when a poll first saw a partition free (for orphans: see rebalance)
	mu        sync.Mutex
	owned     []Partition
	logLimit  map[string]time.Time

	// outage tracks batches failing to be processed (a store outage, mostly): logged once when the
	// first partition starts failing and once when none fails any more.
	outage outage
}

// outage is a spell of failing batches, across partitions.
type outage struct {
	mu       sync.Mutex
	since    time.Time
	failing  map[int]bool
	attempts uint64 // failed Process calls during the spell
	held     map[int]int
}

// batchFailed records a failed attempt at partition n's batch of events: the first of a spell
// is logged as an error.
func (c *Consumer) batchFailed(n, events int, err error) {
	o := &c.outage
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failing == nil {
		o.failing, o.held = map[int]bool{}, map[int]int{}
	}
	if len(o.failing) == 0 {
		o.since, o.attempts = time.Now(), 0
		clear(o.held)
		c.log.Error("batches are failing: each partition retries its batch, nothing is acked until it is stored", "partition", n, "err", err)
	}
	o.failing[n] = true
	o.held[n] = events
	o.attempts++
}

// batchStored records that partition n stored a batch; when no partition fails any more, the
// spell's end is logged with its length and what was held.
func (c *Consumer) batchStored(n int) { c.batchesEnded(n, "stored again") }

// batchesEnded ends partition n's part in a spell of failures (why: how).
func (c *Consumer) batchesEnded(n int, why string) {
	o := &c.outage
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.failing[n] {
		return
	}
	delete(o.failing, n)
	if len(o.failing) > 0 {
		return
	}
	events := 0
	for _, k := range o.held {
		events += k
	}
	c.log.Warn("batches are "+why, "after", time.Since(o.since).Round(time.Millisecond), "failed_attempts", o.attempts,
		"partitions", len(o.held), "events_held", events)
}

// endOutage logs a spell still going on when the consumer stops.
func (c *Consumer) endOutage() {
	o := &c.outage
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.failing) > 0 {
		c.log.Error("stopping while batches still fail", "for", time.Since(o.since).Round(time.Millisecond), "failed_attempts", o.attempts,
			"partitions", len(o.failing))
	}
}

// NewConsumer prepares a consumer of cfg.Stream (which must exist: EnsureStream): it checks the
// server's version and opens (or creates) the owners bucket. It takes no partition before Run.
// obs and log may be nil. The connection behind js is the caller's to close, after Run returned.
func NewConsumer(ctx context.Context, js jetstream.JetStream, cfg Config, p Processor, obs Observer, log *slog.Logger) (*Consumer, error) {
	cfg, err := cfg.complete()
	if err != nil {
		return nil, err
	}
	if err := CheckServerVersion(js.Conn()); err != nil {
		return nil, fmt.Errorf("consuming %s: %w", cfg.Stream, err)
	}
	if obs == nil {
		obs = NopObserver{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("consuming %s: %w", cfg.Stream, err)
	}
	kv, err := ensureOwnersBucket(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	base, err := epochBase(ctx, kv)
	if err != nil {
		return nil, err
	}
	member := newMemberID()
	return &Consumer{
		js: js, stream: s, kv: kv, epochBase: base, cfg: cfg, proc: p, obs: obs, member: member,
		log:   log.With("member", member),
		fatal: make(chan struct{}),
		runs:  map[int]*run{}, exited: make(chan *run, cfg.Partitions),
		cooldown: map[int]time.Time{}, failures: map[int]int{}, freeSince: map[int]time.Time{},
		logLimit: map[string]time.Time{},
	}, nil
}

// MemberID is this consumer's id in the owners bucket (the value of the leases it holds).
func (c *Consumer) MemberID() string { return c.member }

// Owned returns the partitions this consumer holds the leases of now, by index. Safe for
// concurrent use.
func (c *Consumer) Owned() []Partition {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.owned)
}

// Stats returns the running totals. Safe for concurrent use.
func (c *Consumer) Stats() Stats {
	return Stats{
		Consumed: c.consumed.Load(), Batches: c.batches.Load(), FailedBatches: c.failedBatches.Load(),
		Acked: c.acked.Load(), Naked: c.naked.Load(), Termed: c.termed.Load(),
		SettleErrors: c.settleErrors.Load(), Skipped: c.skipped.Load(),
		Acquired: c.acquired.Load(), Released: c.released.Load(), Lost: c.lost.Load(),
	}
}

// pollInterval is how often the consumer reads the owners bucket to take or give up partitions.
func (c *Consumer) pollInterval() time.Duration { return min(time.Second, c.cfg.LeaseTTL/2) }

// opTimeout bounds one request to the owners bucket, so that renewals stay on time.
func (c *Consumer) opTimeout() time.Duration { return c.cfg.LeaseTTL / 4 }

// leaseMargin: an owner stops LeaseTTL − leaseMargin after it sent its last successful
// renewal, before the server can expire the lease (TTL after it stored the renewal).
func (c *Consumer) leaseMargin() time.Duration { return c.cfg.LeaseTTL / 10 }

// Run registers this process as a member, takes its share of the partitions and processes
// them until ctx is cancelled; meanwhile it renews its leases every LeaseTTL/3, and every
// second takes free partitions up to its share or gives up the ones beyond it. On cancellation
// it stops fetching, finishes each partition's batch in flight (Process, acks), hands back
// (nak) what it held but had not started, releases its leases so others take over at once,
// leaves the member list, flushes the acks to the server and returns nil.
//
// Every event received is acked, naked or terminated exactly once; a failed ack, nak or term is
// counted (Stats.SettleErrors, Observer.SettleFailed) and the server redelivers that event after
// AckWait. Run returns an error when consuming cannot go on: the connection closed, or the
// Processor broke its contract. Run may be called once.
//
// It is long on purpose: joining, the select loop that alone owns c.runs and stopping, and the
// shutdown that follows it are one lifecycle whose steps must run in this order, on this
// goroutine; read top to bottom it is the sequence above.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("consumer: Run called twice")
	}
	member := memberKeyPrefix + c.member
	// Joining waits out a broker that is away (it reconnects by itself) rather than failing the
	// service; only ctx, or a connection closed for good, ends it.
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		err := c.kvOp(ctx, func(ctx context.Context) error {
			_, err := c.kv.Put(ctx, member, memberValue(c.member))
			return err
		})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil // stopped before it started
		}
		if errors.Is(err, nats.ErrConnectionClosed) {
			return fmt.Errorf("joining the members of %s: %w", c.cfg.OwnersBucket(), err)
		}
		c.warnLimited("join", "joining the members of the owners bucket failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
	c.log.Info("consumer started", "stream", c.cfg.Stream, "partitions", c.cfg.Partitions, "lease_ttl", c.cfg.LeaseTTL)

	renew := time.NewTicker(c.cfg.LeaseTTL / 3)
	defer renew.Stop()
	poll := time.NewTicker(c.pollInterval())
	defer poll.Stop()
	c.rebalance(ctx)
	done, fatal := ctx.Done(), (<-chan struct{})(c.fatal)
	stopping := false
	stopAll := func(reason string) {
		stopping = true
		for _, r := range c.runs {
			r.requestStop(reason)
		}
	}
	for !stopping || len(c.runs) > 0 {
		select {
		case <-done:
			done = nil
			stopAll("shutdown")
		case <-fatal:
			fatal = nil
			stopAll("error")
		case r := <-c.exited:
			c.finish(r)
		case <-renew.C:
			c.renew(member)
		case <-poll.C:
			if !stopping {
				c.rebalance(ctx)
			}
		}
	}

	var errs []error
	bg := context.WithoutCancel(ctx)
	if err := c.kvOp(bg, func(ctx context.Context) error { return c.kv.Delete(ctx, member) }); err != nil && !c.js.Conn().IsClosed() {
		c.log.Warn("leaving the members of the owners bucket", "err", err) // the key expires after LeaseTTL anyway
	}
	select {
	case <-c.fatal: // closed after fatalErr was written
		errs = append(errs, c.fatalErr)
	default:
	}
	if nc := c.js.Conn(); !nc.IsClosed() {
		if err := nc.FlushTimeout(min(c.cfg.AckWait, 5*time.Second)); err != nil {
			errs = append(errs, fmt.Errorf("flushing acks to the NATS server: %w", err))
		}
	}
	c.endOutage()
	st := c.Stats()
	c.log.Info("consumer stopped", "consumed", st.Consumed, "batches", st.Batches, "failed_batches", st.FailedBatches,
		"acked", st.Acked, "dead_lettered", st.Termed, "handed_back", st.Naked)
	return errors.Join(errs...)
}

// kvOp runs one request to the owners bucket with opTimeout. A closed connection is fatal.
func (c *Consumer) kvOp(ctx context.Context, op func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.opTimeout())
	defer cancel()
	err := op(ctx)
	if errors.Is(err, nats.ErrConnectionClosed) {
		c.setFatal(fmt.Errorf("owners bucket: %w", err))
	}
	return err
}

// renew renews the member key and every held lease, at once. A lease whose renewal fails is
// lost: its worker stops at once.
func (c *Consumer) renew(member string) {
	var wg sync.WaitGroup
	type result struct {
		r    *run
		rev  uint64
		sent time.Duration
		err  error
	}
	var results []*result
	for _, r := range c.runs {
		if r.isLost() {
			continue
		}
		res := &result{r: r, sent: clock()}
		results = append(results, res)
		wg.Add(1)
		go func() {
			defer wg.Done()
			res.err = c.kvOp(context.Background(), func(ctx context.Context) error {
				var err error
				res.rev, err = c.kv.Update(ctx, r.key, []byte(c.member), r.rev)
				return err
			})
		}()
	}
	// The member key first in time would be nicer, but its expiry only shapes the fair share.
	if err := c.kvOp(context.Background(), func(ctx context.Context) error {
		_, err := c.kv.Put(ctx, member, memberValue(c.member))
		return err
	}); err != nil {
		c.warnLimited("member", "renewing the member key failed", "err", err)
	}
	wg.Wait()
	for _, res := range results {
		if res.err != nil {
			c.loseRun(res.r, fmt.Errorf("renewing the lease: %w", res.err))
			continue
		}
		res.r.rev = res.rev
		res.r.renewed(res.sent + c.cfg.LeaseTTL - c.leaseMargin())
	}
}

// loseRun marks a run's lease lost (once): its worker stops at once.
func (c *Consumer) loseRun(r *run, err error) {
	if !r.markLost() {
		return
	}
	c.lost.Add(1)
	c.obs.Lost(r.part, err)
	c.log.Warn("partition lost", "partition", r.part.Index, "epoch", r.part.Epoch, "err", err)
	c.snapshot()
}

// rebalance reads the owners bucket and takes free partitions up to this process's fair share,
// or gives up (after their batch in flight) those beyond it, preferring by rendezvous score. A
// partition that has stayed free for two lease TTLs (its share's member cannot take it) is
// taken whatever the share, so that no partition waits for a process that cannot work.
func (c *Consumer) rebalance(ctx context.Context) {
	var view ownersView
	err := c.kvOp(ctx, func(ctx context.Context) error {
		var err error
		view, err = readOwners(ctx, c.kv, c.member, c.cfg.Partitions)
		return err
	})
	if err != nil {
		if ctx.Err() == nil {
			c.warnLimited("poll", "reading the owners bucket failed", "err", err)
		}
		return
	}
	share := fairShare(c.cfg.Partitions, view.members)
	now := time.Now()

	var active []int
	for n, r := range c.runs {
		if !r.isStopping() && !r.isLost() {
			active = append(active, n)
		}
	}
	if extra := len(active) - share; extra > 0 {
		slices.SortFunc(active, func(a, b int) int { return cmpScore(rendezvous(c.member, a), rendezvous(c.member, b)) })
		for _, n := range active[:extra] {
			c.runs[n].requestStop("rebalance")
		}
	}

	var free []int
	for n := range c.cfg.Partitions {
		if view.held[n] || c.runs[n] != nil {
			delete(c.freeSince, n)
			continue
		}
		if _, ok := c.freeSince[n]; !ok {
			c.freeSince[n] = now
		}
		if now.Before(c.cooldown[n]) {
			continue
		}
		free = append(free, n)
	}
	slices.SortFunc(free, func(a, b int) int { return cmpScore(rendezvous(c.member, b), rendezvous(c.member, a)) })
	for _, n := range free {
		orphan := now.Sub(c.freeSince[n]) >= 2*c.cfg.LeaseTTL
		if len(c.runs) >= share && !orphan {
			continue
		}
		if ctx.Err() != nil {
			return
		}
		c.take(n)
	}
}

func cmpScore(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// take creates partition n's lease and starts its worker.
func (c *Consumer) take(n int) {
	sent := clock()
	var rev uint64
	err := c.kvOp(context.Background(), func(ctx context.Context) error {
		var err error
		rev, err = c.kv.Create(ctx, leaseKey(n), []byte(c.member))
		return err
	})
	if errors.Is(err, jetstream.ErrKeyExists) {
		return // another process was quicker
	}
	if err != nil {
		c.warnLimited("take", "taking a partition's lease failed", "partition", n, "err", err)
		return
	}
	r := newRun(Partition{Index: n, Epoch: c.epochBase + rev}, leaseKey(n), rev, sent+c.cfg.LeaseTTL-c.leaseMargin())
	c.runs[n] = r
	delete(c.freeSince, n)
	c.acquired.Add(1)
	c.obs.Acquired(r.part)
	c.snapshot()
	go c.work(r)
}

// finish handles a worker's exit: the lease is deleted (at the revision held, so never someone
// else's) so that another process can take the partition at once.
func (c *Consumer) finish(r *run) {
	delete(c.runs, r.part.Index)
	n := r.part.Index
	if !r.isStopping() {
		c.batchesEnded(n, "no longer failing here: the partition was given up")
	}
	switch {
	case r.outcome == outcomeLost || r.outcome == outcomeFenced:
		c.loseRun(r, r.err)
		c.backoff(n, r.outcome == outcomeFenced)
	case r.outcome == outcomeFailed && !r.isStopping():
		c.released.Add(1)
		c.log.Warn("partition given up after an error", "partition", n, "epoch", r.part.Epoch, "err", r.err)
		c.backoff(n, true)
	default:
		c.released.Add(1)
		c.log.Info("partition released", "partition", n, "epoch", r.part.Epoch, "reason", r.stopReason())
		delete(c.failures, n)
	}
	c.snapshot() // before the lease goes: no moment when two processes list the partition
	if !c.js.Conn().IsClosed() {
		_ = c.kvOp(context.Background(), func(ctx context.Context) error {
			return c.kv.Delete(ctx, r.key, jetstream.LastRevision(r.rev))
		}) // fails when the lease is not ours any more: then there is nothing to give up
	}
}

// backoff keeps this process from taking partition n again for a while after an error.
func (c *Consumer) backoff(n int, failed bool) {
	if !failed {
		delete(c.failures, n)
		return
	}
	c.failures[n]++
	d := c.cfg.NakDelay
	for i := 1; i < c.failures[n] && d < c.cfg.NakMaxDelay; i++ {
		d *= 2
	}
	c.cooldown[n] = time.Now().Add(min(d, c.cfg.NakMaxDelay))
}

// snapshot publishes the owned partitions for Owned and the observer.
func (c *Consumer) snapshot() {
	owned := make([]Partition, 0, len(c.runs))
	for _, r := range c.runs {
		if !r.isLost() {
			owned = append(owned, r.part)
		}
	}
	slices.SortFunc(owned, func(a, b Partition) int { return a.Index - b.Index })
	c.mu.Lock()
	c.owned = owned
	c.mu.Unlock()
	c.obs.Owned(len(owned))
}

// warnLimited logs at WARN at most once per logEvery for a key.
func (c *Consumer) warnLimited(key, msg string, args ...any) {
	c.mu.Lock()
	last, seen := c.logLimit[key]
	ok := !seen || time.Since(last) >= logEvery
	if ok {
		c.logLimit[key] = time.Now()
	}
	c.mu.Unlock()
	if ok {
		c.log.Warn(msg, args...)
	}
}

// logEvery bounds repeated warnings of one kind (a batch that keeps failing, a bucket that
// cannot be read) to one per interval.
const logEvery = 30 * time.Second

func (c *Consumer) setFatal(err error) {
	c.fatalOnce.Do(func() {
		c.fatalErr = err
		close(c.fatal)
	})
}

// clock is a monotonic reading: lease deadlines are compared with it, never with wall time.
func clock() time.Duration { return time.Since(clockBase) }

var clockBase = time.Now()
