package store

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// The tests store results as the service does: each *Store is the owner of a partition of its
// own (two Stores on one database are two owners), its batches run through an
// engine.PartitionWriter with the engine that decided the results.
var (
	writersMu sync.Mutex
	writers   = map[*Store]*engine.PartitionWriter{}
	nextPart  atomic.Int64
	nextEpoch atomic.Uint64
)

// saveBatch decides results' events again (with the policies that decided them) and stores them
// as one batch of the Store's partition.
func saveBatch(ctx context.Context, s *Store, results []engine.Result) (Saved, error) {
	return saveBatchWith(ctx, s, nil, results)
}

// saveBatchWith is saveBatch deciding the events with eng (nil: the policies that decided them).
func saveBatchWith(ctx context.Context, s *Store, eng *engine.Engine, results []engine.Result) (Saved, error) {
	writersMu.Lock()
	w := writers[s]
	writersMu.Unlock()
	if w == nil {
		var err error
		if w, err = engine.ClaimPartition(ctx, s, int(nextPart.Add(1)), nextEpoch.Add(1)); err != nil {
			return Saved{}, err
		}
		writersMu.Lock()
		writers[s] = w
		writersMu.Unlock()
	}
	events := make([]engine.Event, len(results))
	seen := map[*rules.Policy]bool{}
	var ps []*rules.Policy
	for i := range results {
		events[i] = results[i].Event
		if d := results[i].Decision; d != nil && d.Policy != nil && !seen[d.Policy] {
			seen[d.Policy] = true
			ps = append(ps, d.Policy)
		}
	}
	if eng == nil {
		var err error
		if eng, err = engineOf(ps); err != nil {
			return Saved{}, err
		}
	}
	b, err := w.Write(ctx, eng, events)
	if err != nil {
		return Saved{}, err
	}
	return SavedOf(b), nil
}

// engineOf is an engine of the given policies; the seed policies' when none.
func engineOf(ps []*rules.Policy) (*engine.Engine, error) {
	if len(ps) == 0 {
		set, err := rules.LoadDir(policiesDir)
		if err != nil {
			return nil, err
		}
		return engine.New(set), nil
	}
	set, err := rules.NewSet(ps)
	if err != nil {
		return nil, err
	}
	return engine.New(set), nil
}
