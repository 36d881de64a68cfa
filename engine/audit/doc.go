// Package audit checks what the store holds against the sources of truth: it decides stored
// order events again with their stored policy versions, books each order's decisions again,
// recomputes the Merkle leaves and roots of the partitions' chains of batches (engine/chain.go),
// and names every row that differs. It owns verification (Verify), explanation of stored
// decisions, reconciliation with the stream (Reconcile), inclusion proofs, and signed
// checkpoints of the partitions' heads (Checkpoint, Checkpointer).
//
// It reads only through the small ports it declares (Source, VerifySource, BatchRanger) and
// writes checkpoints only through CheckpointSink; adapters/store and the other adapters
// implement them and never decide, book or chain themselves. It must not open a database, a
// stream or a file itself, nor import an adapter or cmd. The one part with a clock is the
// Checkpointer's Run loop, which signs heads every interval; every check is a pure function of
// what its ports return.
package audit
