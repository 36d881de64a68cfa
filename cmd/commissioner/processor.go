package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine"
)

// processor is the stream consumer's Processor: for each partition this process owns, an
// engine.PartitionWriter that decides its batches with the current engine and stores each in one
// fenced transaction.
type processor struct {
	svc *service

	mu      sync.Mutex
	writers map[int]*engine.PartitionWriter // by partition, for the epoch that claimed it
}

var _ stream.Processor = (*processor)(nil)

func newProcessor(svc *service) *processor {
	return &processor{svc: svc, writers: map[int]*engine.PartitionWriter{}}
}

// storeTimeout bounds one batch's (or one claim's) work in the store. A batch takes about a
// tenth of a second; a store call still waiting after this is on a connection that died without a
// word (a cut network, a proxy that stopped forwarding), where the driver would wait minutes for
// its read timeout while the partition stands still. The call fails instead and the consumer tries
// the batch again, on a fresh connection.
const storeTimeout = 30 * time.Second

// notOwner gives the store's and the engine's errors the kinds the consumer acts on: a fenced
// error is its ErrNotOwner (give the partition up), a permanent one its ErrNeedsOperator (keep the
// batch, alert); any other is transient (retry).
func notOwner(err error) error {
	switch {
	case errors.Is(err, engine.ErrFenced):
		return fmt.Errorf("%w: %w", stream.ErrNotOwner, err)
	case errors.Is(err, engine.ErrPermanent):
		return fmt.Errorf("%w: %w", stream.ErrNeedsOperator, err)
	}
	return err
}

// Acquire claims the partition in the store for the lease's epoch (an older owner's writes fail
// from now on) and returns the stream sequence its chain reached: the consumer resumes after it.
func (p *processor) Acquire(ctx context.Context, part stream.Partition) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	w, err := engine.ClaimPartition(ctx, p.svc.store, part.Index, part.Epoch)
	if err != nil {
		return 0, notOwner(err)
	}
	w.Check = p.routedHere
	p.mu.Lock()
	p.writers[part.Index] = w
	p.mu.Unlock()
	head := w.Head()
	p.svc.checkpointHead(head)
	if head.Source == p.svc.streamSource {
		return head.LastStreamSeq, nil
	}
	// The partition's position was recorded in another stream (deleted and made again, or a new
	// embedded server beside this database), or none yet: read this stream from its start.
	// Events stored already are recognised by their ids and not decided again.
	if head.Source != "" {
		p.svc.log.Warn("the partition's stream position was recorded in another stream: reading this one from its start",
			"partition", part.Index, "epoch", part.Epoch, "recorded", head.Source, "stream", p.svc.streamSource, "recorded_seq", head.LastStreamSeq)
	}
	if err := p.svc.store.SetPartitionSource(ctx, part.Index, part.Epoch, p.svc.streamSource); err != nil {
		return 0, notOwner(err)
	}
	return 0, nil
}

// Process decides and stores one batch of the partition's events: one history read, one pass
// through the engine, one write.
func (p *processor) Process(ctx context.Context, part stream.Partition, batch []engine.Event) (stream.BatchOutcome, error) {
	p.mu.Lock()
	w := p.writers[part.Index]
	p.mu.Unlock()
	if w == nil || w.Head().Epoch != part.Epoch {
		return stream.BatchOutcome{}, fmt.Errorf("%w: partition %d epoch %d was not acquired here", stream.ErrNotOwner, part.Index, part.Epoch)
	}
	m := p.svc.metrics
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	b, err := w.Write(ctx, p.svc.engine.Load(), batch)
	if err != nil {
		return stream.BatchOutcome{}, notOwner(err)
	}
	m.Stored(time.Since(start))
	p.svc.checkpointHead(w.Head())
	p.svc.shadows.count(b.Shadows) // metrics: the outcomes were stored with the batch
	var out stream.BatchOutcome
	for _, d := range b.Dead {
		out.Dead = append(out.Dead, stream.DeadLetter{Index: d.Result, Reason: d.Reason})
		m.DeadLettered(d.Kind, 1)
	}
	if n := len(b.Dead); n >= deadBurstMin && n*10 >= len(batch) {
		kinds := map[string]int{}
		for _, d := range b.Dead {
			kinds[d.Kind]++
		}
		p.svc.log.Warn("dead-letter burst: many events of a batch got no decision", "partition", part.Index, "dead", n, "events", len(batch),
			"by_kind", kinds, "first_reason", b.Dead[0].Reason)
	}
	decided := map[[2]string]int{}
	for _, d := range b.Decisions {
		decided[[2]string{d.Program, fmt.Sprint(d.Qualified)}]++
	}
	for k, n := range decided {
		m.Decided(k[0], k[1] == "true", n)
	}
	return out, nil
}

// deadBurstMin: a batch that dead-letters at least this many events, and at least a tenth of
// them, is logged as a burst (a publisher sending malformed events, a policy gap).
const deadBurstMin = 10

// routedHere refuses an event whose body names another program or affiliate than the subject it
// was published on: the subject chose its partition, so deciding it here could let two owners
// write one affiliate's orders. (An order whose later events name another affiliate is fine:
// each event is published on its own affiliate's subject.)
func (p *processor) routedHere(ev *engine.Event, o *engine.Order) error {
	_, program, affiliate, err := p.svc.cfg.NATS.ParseSubject(ev.Subject)
	switch {
	case err != nil:
		return fmt.Errorf("subject %q: %v", ev.Subject, err)
	case program != o.Program || affiliate != o.AffiliateID:
		return fmt.Errorf("the event was published on %s (program %q, affiliate %q) but names program %q, affiliate %q: "+
			"publish each order event on %s", ev.Subject, program, affiliate, o.Program, o.AffiliateID,
			p.svc.cfg.NATS.OrderSubject(o.Program, o.AffiliateID))
	}
	return nil
}

// Release forgets the partition's writer (a later Acquire claims it again).
func (p *processor) Release(part stream.Partition) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w := p.writers[part.Index]; w != nil && w.Head().Epoch == part.Epoch {
		delete(p.writers, part.Index)
	}
}
