// Package store persists Commissioner's order events, policy versions, decisions and dead letters
// with bun, on SQLite (the embedded default, through the pure-Go modernc.org/sqlite driver) or
// PostgreSQL (through bun's pgdriver). One code path serves both; the few dialect differences
// (column types, row locks, JSON and exact decimal aggregation) are handled inside.
//
// The write side is WriteBatch (write.go): one transaction per batch, writing the rows the engine
// computed (engine.BatchWrite) as they are, fenced by the partition's owner epoch and chain head.
// Rows go in with prepared multi-row INSERTs on SQLite and with COPY on PostgreSQL (see bulk.go).
// The read side serves replay, explain, audit and the demo summary.
//
// A *Store is safe for concurrent use by several goroutines, and several processes (several
// *Store values) may write to one database at once: each partition has one owner, and a batch
// of a partition's stale owner is refused.
//
// What it owns: persistence only — the bun models, the one migration and the schema's indexes
// (schema.go says which read each serves), the transaction per batch and its fencing, the
// ledger, payout runs and payee details as rows, and the reads (history, replay, audit, payouts,
// dead letters) as plain values.
//
// What it must not do: make a domain decision. The engine decides, books, builds the leaves and
// the Merkle root, and checks; the store writes the rows it is handed exactly as they are and
// reads them back, and never calls the engine to decide, book, chain, encode or verify
// (layering_test.go: TestStoreNeverCallsTheEngine). It implements ports the engine and
// engine/audit declare (engine.Store, engine.PartitionedHistory, audit.Source,
// audit.VerifySource, each with a var _ guard) and imports no other adapter.
package store
