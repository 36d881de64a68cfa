package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine"
)

// processor is the stream consumer's Processor: it decides a partition's batches with the
// current engine and stores each in one transaction.
//
// For now the store knows nothing of partitions: Acquire reports no event as processed (so a
// new owner reads its partition from the start, and the store's unique keys drop what it had
// stored), Process ignores the partition, and nothing fences a stale owner. The store's write
// path replaces these bodies: Acquire records the epoch and returns the partition's last stored
// stream sequence, Process writes fenced by the epoch and returns an error matching
// stream.ErrNotOwner when fenced out, Release drops what was kept for the partition.
type processor struct{ svc *service }

var _ stream.Processor = (*processor)(nil)

// Acquire: this process became p's owner.
func (p *processor) Acquire(ctx context.Context, part stream.Partition) (uint64, error) {
	return 0, nil
}

// Process decides and stores one batch of the partition's events.
func (p *processor) Process(ctx context.Context, part stream.Partition, batch []engine.Event) (stream.BatchOutcome, error) {
	return p.decideAndStore(ctx, batch)
}

// Release: p was given up.
func (p *processor) Release(part stream.Partition) {}

// staleAttempts bounds how often a batch is decided again because another batch changed its
// orders' history meanwhile; then Process fails and the consumer tries the batch again later.
const staleAttempts = 8

// decideAndStore decodes the batch, loads its orders' history (pins, affiliate months) in one
// read, decides it with the current engine (engine.DecideBatch) and stores it, booking the
// ledger, in one transaction. When another batch changed that history before this one was
// stored, it decides the batch again with a fresh history.
func (p *processor) decideAndStore(ctx context.Context, batch []engine.Event) (stream.BatchOutcome, error) {
	m := p.svc.metrics
	eng := p.svc.engine.Load()
	results := engine.DecodeEvents(batch, make([]engine.Result, 0, len(batch)))
	orders, months := eng.HistoryKeys(results)
	var saved store.Saved
	for attempt := 1; ; attempt++ {
		start := time.Now()
		hist, err := p.svc.store.LoadHistory(ctx, orders, months)
		if err != nil {
			return stream.BatchOutcome{}, err
		}
		eng.DecideBatch(ctx, results, hist)
		m.Evaluated(time.Since(start))
		start = time.Now()
		saved, err = p.svc.store.SaveBatch(ctx, results)
		if errors.Is(err, engine.ErrStaleHistory) && attempt < staleAttempts {
			continue
		}
		if err != nil {
			return stream.BatchOutcome{}, err
		}
		m.Stored(time.Since(start))
		break
	}
	var out stream.BatchOutcome
	decided := map[[2]string]int{}
	for i, r := range results {
		if r.Err != nil {
			out.Dead = append(out.Dead, stream.DeadLetter{Index: i, Reason: r.Err.Error()})
			m.DeadLettered(store.DeadLetterKind(r.Err), 1)
			continue
		}
		decided[[2]string{r.Decision.Program, fmt.Sprint(r.Decision.Qualified)}]++
	}
	if saved.Duplicates == 0 {
		for k, n := range decided {
			m.Decided(k[0], k[1] == "true", n)
		}
	}
	return out, nil
}
