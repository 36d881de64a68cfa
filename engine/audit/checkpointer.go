package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/commissioner/commissioner/engine"
)

// CheckpointSink keeps or exports a signed checkpoint: the store's table, an append-only file,
// a JetStream stream (the adapters implement it).
type CheckpointSink interface {
	WriteCheckpoint(ctx context.Context, c *Checkpoint, signed []byte) error
}

// Checkpointer signs the heads of the partitions this process writes: the owners report each
// head they reach (Update); Run signs a checkpoint every interval when a head moved, and hands it
// to every sink. A process signs only what it wrote: with several processes on one store, each
// signs its own partitions' heads, and verification takes them all.
type Checkpointer struct {
	signer   note.Signer
	interval time.Duration
	sinks    []CheckpointSink
	log      *slog.Logger
	now      func() time.Time

	mu      sync.Mutex
	heads   map[int]Head
	changed bool
	signed  int
}

// NewCheckpointer returns a checkpointer signing with signer (whose name is the checkpoints'
// origin) every interval; log may be nil.
func NewCheckpointer(signer note.Signer, interval time.Duration, log *slog.Logger, sinks ...CheckpointSink) *Checkpointer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Checkpointer{signer: signer, interval: interval, sinks: sinks, log: log, now: time.Now, heads: map[int]Head{}}
}

// Update records a partition's head (a batch written, or the head claimed). A head behind the one
// recorded (an earlier owner's, reported late) is ignored.
func (c *Checkpointer) Update(h engine.PartitionHead) {
	if h.Seq == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.heads[h.Partition]; ok && old.Seq >= h.Seq {
		return
	}
	c.heads[h.Partition] = Head{Partition: h.Partition, Seq: h.Seq, Hash: h.Hash}
	c.changed = true
}

// Run signs a checkpoint every interval while a head moved, until ctx ends. The last heads are
// signed by Checkpoint after the writers stopped (the service does it at shutdown).
func (c *Checkpointer) Run(ctx context.Context) error {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := c.Checkpoint(ctx); err != nil && ctx.Err() == nil {
				c.log.Error("signing a checkpoint", "err", err)
			}
		}
	}
}

// Checkpoint signs the heads now when any moved since the last checkpoint, and writes it to
// every sink; a sink that fails is named in the error, and the heads are signed again next time.
func (c *Checkpointer) Checkpoint(ctx context.Context) error {
	c.mu.Lock()
	if !c.changed {
		c.mu.Unlock()
		return nil
	}
	cp := &Checkpoint{Origin: c.signer.Name(), Time: c.now().UTC()}
	for _, h := range c.heads {
		cp.Heads = append(cp.Heads, h)
	}
	c.changed = false
	c.mu.Unlock()

	signed, err := cp.Sign(c.signer)
	if err != nil {
		c.markChanged()
		return fmt.Errorf("signing: %w", err)
	}
	var errs []error
	for _, s := range c.sinks {
		if err := s.WriteCheckpoint(ctx, cp, signed); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		c.markChanged()
		return err
	}
	c.mu.Lock()
	c.signed++
	c.mu.Unlock()
	return nil
}

// Signed counts the checkpoints written to every sink.
func (c *Checkpointer) Signed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.signed
}

func (c *Checkpointer) markChanged() {
	c.mu.Lock()
	c.changed = true
	c.mu.Unlock()
}
