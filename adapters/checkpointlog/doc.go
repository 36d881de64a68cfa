// Package checkpointlog keeps signed checkpoints in an append-only file: one JSON line each
// (audit.AppendLogRecord). Point it at a volume the database's administrator cannot write, and
// it holds the partitions' heads where rewriting the database cannot reach them.
//
// What it owns: the file — appending a checkpoint as audit.AppendLogRecord shapes it, syncing it,
// and reading every line back (Read) for audit verify and explain --proof. It implements
// audit.CheckpointSink.
//
// What it must not do: sign, verify or choose what to sign (engine/audit does; serve decides
// when), rewrite or truncate the log, or depend on another adapter or on the store: the log's
// worth is that it lives apart from the database.
package checkpointlog
