package engine

// The ports: what the engine needs from the outside, declared here, implemented by adapters
// (adapters/store). A partition's owner runs its batches through a PartitionWriter: one read of
// the history, one pass through the engine, one write.

import (
	"context"
	"errors"
	"fmt"
)

// ErrFenced: the partition has another owner now (a later epoch claimed it), or its chain moved
// on without this owner: the batch was not stored, and this owner must give the partition up.
var ErrFenced = errors.New("the partition is fenced: another owner claimed it")

// ErrEventsStored: some of the batch's events have an outcome stored already (an event
// re-published after the stream's duplicate window): nothing was stored; pass the batch again
// leaving them out.
var ErrEventsStored = errors.New("some of the batch's events are stored already")

// ErrPermanent marks an error that retrying the same batch gives again until an operator acts
// (errors.Is): a policy file changed under a version number that stored decisions used, say. The
// stream consumer keeps the batch, retries it at its longest delay and alerts (ERROR) instead of
// warning; it never dead-letters its events, which are not at fault. Errors of no kind are
// transient (the store or the network failed for now).
var ErrPermanent = errors.New("retrying does not help until an operator acts")

// HistoryReader reads what deciding a batch needs to know about earlier events.
type HistoryReader interface {
	// LoadHistory reads the orders' states and the affiliate months (HistoryKeys) at once.
	LoadHistory(ctx context.Context, orders []OrderKey, months []MonthKey) (*Snapshot, error)
	// StoredEvents returns which of the event ids have an outcome (decision or dead letter) stored.
	StoredEvents(ctx context.Context, eventIDs []string) (map[string]bool, error)
}

// BatchWriter stores a batch: every row of a BatchWrite in one transaction, only as the next batch
// of its partition by the owner of its epoch (else an error matching ErrFenced); an order state
// changed meanwhile by another writer gives ErrStaleHistory; an event stored already gives
// ErrEventsStored. On any error nothing of the batch is stored.
type BatchWriter interface {
	WriteBatch(ctx context.Context, b *BatchWrite) error
	// ClaimPartition makes epoch the partition's owner in the store (refused with ErrFenced when
	// a later epoch holds it) and returns its head.
	ClaimPartition(ctx context.Context, partition int, epoch uint64) (PartitionHead, error)
}

// Store is both ports, as one adapter implements them.
type Store interface {
	HistoryReader
	BatchWriter
}

// staleAttempts bounds how often a batch is passed again because another partition's owner
// changed one of its orders meanwhile (an order whose events name several affiliates); then the
// error is returned and the batch is retried later.
const staleAttempts = 8

// PartitionWriter runs one owned partition's batches: it continues the partition's chain from
// the head it claimed. It is used by one goroutine at a time.
type PartitionWriter struct {
	store Store
	head  PartitionHead
	// Check, when set, is asked about every decoded event before it is decided: an error makes
	// the event a dead letter (kind invalid) with that reason. The stream adapter's owner uses it
	// to refuse an event whose body names another program or affiliate than its subject (the
	// partition it was routed to).
	Check func(ev *Event, o *Order) error
}

// ClaimPartition claims the partition in the store for the owner's epoch and returns its writer.
func ClaimPartition(ctx context.Context, s Store, partition int, epoch uint64) (*PartitionWriter, error) {
	head, err := s.ClaimPartition(ctx, partition, epoch)
	if err != nil {
		return nil, err
	}
	return &PartitionWriter{store: s, head: head}, nil
}

// Head is the partition's head as this writer continues it.
func (p *PartitionWriter) Head() PartitionHead { return p.head }

// Write decides and stores one batch of the partition's events, in stream order, with engine e:
// decode, read the history (once), pass, write (once). A batch whose orders another writer
// changed meanwhile is passed again with a fresh history; one holding events stored already is
// passed again without them. It returns what was written; on error nothing was.
func (p *PartitionWriter) Write(ctx context.Context, e *Engine, events []Event) (*BatchWrite, error) {
	var stored map[string]bool
	for attempt := 1; ; attempt++ {
		results := DecodeEvents(events, make([]Result, 0, len(events)))
		if p.Check != nil {
			for i := range results {
				r := &results[i]
				if r.Order == nil {
					continue
				}
				if err := p.Check(&r.Event, r.Order); err != nil {
					r.Err = &InputError{OrderID: r.Order.OrderID, Msg: err.Error()}
					r.Order = nil
				}
			}
		}
		orders, months := e.HistoryKeys(results)
		hist, err := p.store.LoadHistory(ctx, orders, months)
		if err != nil {
			return nil, err
		}
		w, err := e.Pass(ctx, p.head, results, hist, func(id string) bool { return stored[id] })
		if err != nil {
			return nil, err
		}
		err = p.store.WriteBatch(ctx, w)
		switch {
		case err == nil:
			p.head.Seq, p.head.Hash = w.Header.Seq, w.Hash
			p.head.LastStreamSeq = max(p.head.LastStreamSeq, w.Header.LastStreamSeq)
			return w, nil
		case errors.Is(err, ErrEventsStored) && attempt < staleAttempts:
			ids := make([]string, len(events))
			for i := range events {
				ids[i] = events[i].ID
			}
			if stored, err = p.store.StoredEvents(ctx, ids); err != nil {
				return nil, err
			}
		case errors.Is(err, ErrStaleHistory) && attempt < staleAttempts:
		default:
			return nil, fmt.Errorf("partition %d batch %d: %w", p.head.Partition, p.head.Seq+1, err)
		}
	}
}
