package engine

// Replay: decide stored order events again with a candidate policy and compare with the
// decisions that were recorded for them. Like the rest of the engine it does no I/O: the events
// and their recorded decisions come through History, which an adapter implements (the store, or
// the stream's history with the store's decisions).

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commissioner/commissioner/rules"
)

// History is the order events a replay reads, each with the decision recorded for it.
type History interface {
	// Walk calls fn with successive batches of events, from one goroutine, until every event
	// was passed or fn returns an error, which Walk then returns (unwrapped). A batch belongs to
	// fn once passed: Walk never reads or reuses it again. A cancelled ctx stops the walk with an
	// error wrapping ctx's. Walk closes nothing it was given.
	Walk(ctx context.Context, fn func(batch []ReplayEvent) error) error
}

// PartitionedHistory is a History that can split itself into parts walked at once, so that
// reading the history also runs on every core (a database read by several connections).
type PartitionedHistory interface {
	History
	// Partitions splits the history for n walkers: histories that, walked together, give
	// exactly the events of this one, each once. There may be more parts than walkers (each
	// walker takes the next part when done with one, so uneven parts even out), or fewer; it
	// may return the history itself.
	Partitions(ctx context.Context, n int) ([]History, error)
}

// ReplayEvent is one stored order event and the decision recorded for it.
type ReplayEvent struct {
	Event Event
	// Recorded is the latest decision recorded for the event; nil when none was (the event was
	// dead-lettered: no policy was in force, or none of its program was loaded).
	Recorded *RecordedDecision
}

// ReplayOptions tune a replay. The zero value is ready to use.
type ReplayOptions struct {
	// AsDeployed decides each event as the service would have from the candidate set (a policy
	// directory): with the version its order was pinned to when the recorded decision was
	// pinned (its digest must match, else the event is not decidable, ErrorKindPinMissing),
	// else with the version in force at its placed_at. Without it, that holds only for programs
	// of which the candidate has several versions: when it has one (a single policy file, a
	// stored version), that version decides every order of the program, whatever its
	// effective_from or the order's pin — the replay asks "what if these terms had applied".
	AsDeployed bool
	// Workers decide events in parallel; ≤ 0 means GOMAXPROCS.
	Workers int
	// MaxChanges bounds the per-order changes kept in the report (and, separately, the drifted
	// orders): the first by placed_at, program, order id and event id. ≤ 0 keeps all.
	MaxChanges int
	// MaxErrors bounds the events the candidate could not decide that the report lists; ≤ 0
	// means 20. Every one is counted.
	MaxErrors int
	// TopAffiliates is how many affiliates with the largest changes the report lists per
	// currency; ≤ 0 means 10.
	TopAffiliates int
}

// candidatePolicy returns the candidate version that decides an event (see
// ReplayOptions.AsDeployed).
func candidatePolicy(set *rules.Set, o *Order, rec *RecordedDecision, asDeployed bool) (*rules.Policy, error) {
	if vs := set.Versions(o.Program); !asDeployed && len(vs) == 1 {
		return vs[0], nil
	}
	if rec != nil && rec.Pinned && rec.Pin != nil {
		p, err := set.Version(o.Program, rec.Pin.Version)
		if err != nil || p.Digest != rec.Pin.Digest {
			return nil, fmt.Errorf("%w: order %s of program %s was first qualified by version %d (%s), which the candidate does not hold",
				ErrPinnedPolicyMissing, o.OrderID, o.Program, rec.Pin.Version, rec.Pin.Digest)
		}
		if p.Lifecycle.Terms != rules.TermsInForce {
			return p, nil
		}
	}
	return set.InForce(o.Program, o.PlacedAt)
}

// setDefaults fills the options left zero (20 errors kept, 10 top affiliates) and returns how
// many workers to run (Workers, or GOMAXPROCS). Replay and ReplaySweep read their options alike.
func (opts *ReplayOptions) setDefaults() (workers int) {
	if opts.MaxErrors <= 0 {
		opts.MaxErrors = 20
	}
	if opts.TopAffiliates <= 0 {
		opts.TopAffiliates = 10
	}
	if opts.Workers > 0 {
		return opts.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// Replay decides every event of the history with the candidate policy set and compares each
// decision with the one recorded for the event. Which candidate version decides an order:
// see ReplayOptions.AsDeployed.
//
// Events are decided in parallel; each worker aggregates on its own and the results are merged,
// so memory stays bounded by the options (kept changes and errors), not by the history. It
// writes nothing anywhere. It fails only when the history cannot be read, ctx ends, or a total
// cannot be summed exactly; every event's own problem is counted in the report.
func Replay(ctx context.Context, candidate *rules.Set, h History, opts ReplayOptions) (*ReplayReport, error) {
	if candidate == nil {
		return nil, errors.New("replaying: no candidate policy set")
	}
	workers := opts.setDefaults()
	eng := New(candidate)
	aggs := make([]*replayAgg, workers)
	for w := range aggs {
		aggs[w] = newReplayAgg(eng, opts)
	}
	if err := walkReplay(ctx, h, aggs); err != nil {
		return nil, err
	}
	return mergeReplay(candidate, aggs, opts)
}

// replayWorker is one worker's share of a replay (a replayAgg, or a sweep's aggregates of every
// point): it decides the batches it is given, from one goroutine at a time.
type replayWorker interface {
	addBatch(ctx context.Context, batch []ReplayEvent)
	// failure is what stopped the worker (a total that could not be summed exactly), or nil.
	failure() error
}

// walkReplay walks the history once — in parts when it can split itself, one per worker — and
// has the workers decide every batch. It returns the error that ended the replay, if any.
func walkReplay[W replayWorker](ctx context.Context, h History, aggs []W) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	parts := []History{h}
	if ph, ok := h.(PartitionedHistory); ok && len(aggs) > 1 {
		ps, err := ph.Partitions(ctx, len(aggs))
		if err != nil {
			return fmt.Errorf("replaying: reading the history: %w", err)
		}
		parts = ps
	}
	var walkErrs []error
	if len(parts) > 1 && len(parts) >= len(aggs) {
		walkErrs = walkEach(ctx, cancel, parts, aggs)
	} else {
		walkErrs = walkToPool(ctx, cancel, parts, aggs)
	}
	return replayFailure(ctx, aggs, walkErrs)
}

// walkEach replays when there are at least as many parts as workers: each worker walks parts
// and decides what it reads, in its own goroutine, while the rows are still in its core's cache
// (no hand-over), taking the next part when done with one. It returns each worker's walk error;
// the first to fail cancels the others.
func walkEach[W replayWorker](ctx context.Context, cancel context.CancelFunc, parts []History, aggs []W) []error {
	walkErrs := make([]error, len(aggs))
	var next atomic.Int64
	var walkers sync.WaitGroup
	for w, a := range aggs {
		walkers.Add(1)
		go func() {
			defer walkers.Done()
			decide := func(batch []ReplayEvent) error {
				a.addBatch(ctx, batch)
				if err := a.failure(); err != nil {
					return err
				}
				return ctx.Err()
			}
			for i := next.Add(1) - 1; i < int64(len(parts)); i = next.Add(1) - 1 {
				if walkErrs[w] = parts[i].Walk(ctx, decide); walkErrs[w] != nil {
					cancel() // the other walkers stop too
					return
				}
			}
		}()
	}
	walkers.Wait()
	return walkErrs
}

// walkToPool replays when there are fewer parts than workers: each part's walker hands batches
// to the pool of workers. It returns each part's walk error; a failed walk, or a worker's
// failure, cancels the rest.
func walkToPool[W replayWorker](ctx context.Context, cancel context.CancelFunc, parts []History, aggs []W) []error {
	jobs := make(chan []ReplayEvent, len(aggs)*2)
	var workers sync.WaitGroup
	for _, a := range aggs {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for batch := range jobs {
				if a.failure() != nil || ctx.Err() != nil {
					continue // drain, so the walk never blocks
				}
				a.addBatch(ctx, batch)
				if a.failure() != nil {
					cancel()
				}
			}
		}()
	}
	send := func(batch []ReplayEvent) error {
		select {
		case jobs <- batch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	walkErrs := make([]error, len(parts))
	var walkers sync.WaitGroup
	for i, part := range parts {
		walkers.Add(1)
		go func() {
			defer walkers.Done()
			if walkErrs[i] = part.Walk(ctx, send); walkErrs[i] != nil {
				cancel() // the other parts stop too
			}
		}()
	}
	walkers.Wait()
	close(jobs)
	workers.Wait()
	return walkErrs
}

// replayFailure is the error that ended a replay, if any: a worker's own (a total that could
// not be summed exactly) first, then the walks' (the first that is not a cancellation the
// others caused), then ctx's.
func replayFailure[W replayWorker](ctx context.Context, aggs []W, walkErrs []error) error {
	var walkErr error
	for _, err := range walkErrs {
		if err != nil && (walkErr == nil || errors.Is(walkErr, context.Canceled)) {
			walkErr = err
		}
	}
	for _, a := range aggs {
		if err := a.failure(); err != nil {
			return fmt.Errorf("replaying: %w", err)
		}
	}
	if walkErr != nil {
		return fmt.Errorf("replaying: reading the history: %w", walkErr)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("replaying: %w", err)
	}
	return nil
}

// EventFilter selects stored events for a replay (a History). Zero fields select everything.
type EventFilter struct {
	Program   string
	From, To  time.Time // placed_at in [From, To); a zero time is unbounded
	Affiliate string
	// LatestPerOrder keeps only the latest event of each (program, order): the highest stream
	// sequence, then the latest stored.
	LatestPerOrder bool
}

// ErrTooManyEvents is what a LimitHistory walk ends with when the history holds more events
// than its bound.
var ErrTooManyEvents = errors.New("the history holds more events than the replay may read")

// LimitHistory is h, stopped with ErrTooManyEvents once more than max events were read: a
// replay bounded for an interactive caller (POST /v1/replay, the console's what-if page).
func LimitHistory(h History, max int) History { return limitedHistory{h, max} }

type limitedHistory struct {
	h   History
	max int
}

func (l limitedHistory) Walk(ctx context.Context, fn func([]ReplayEvent) error) error {
	n := 0
	return l.h.Walk(ctx, func(batch []ReplayEvent) error {
		if n += len(batch); n > l.max {
			return ErrTooManyEvents
		}
		return fn(batch)
	})
}
