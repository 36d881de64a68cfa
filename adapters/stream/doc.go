// Package stream is Commissioner's NATS JetStream adapter: an embedded nats-server for the
// zero-configuration default, the partitioned ORDERS stream, a publisher that follows the subject
// convention and gives every order event a Nats-Msg-Id so the stream drops re-published copies,
// and a Consumer that owns partitions through leases in a KV bucket and hands each owned
// partition's events, in stream order, a batch at a time, to a Processor, acknowledging them
// only after it returned.
//
// Subjects, with the default prefix "orders" (subjects.go has the details):
//
//	orders.<program token>.<affiliate token>        an order event as published (Token escapes ids)
//	orders.p.<n>.<program token>.<affiliate token>  the same event as the stream stores it, in partition n
//	orders.dead.<program token>.<affiliate token>   a dead letter, in the stream <Stream>_DEAD, never read back
//
// Partitions are keyed by (program, affiliate) and computed by the server (a stream subject
// transform with partition()), which needs nats-server 2.10 or later: EnsureStream and
// NewConsumer refuse an older server. The partition count is fixed once the stream exists.
//
// Each partition has one owner at a time: the process holding its lease (a key in the KV bucket
// OwnersBucket, created with kv.Create and renewed with kv.Update before it expires). Processes
// sharing the stream register as members in the same bucket and each takes a fair share of the
// partitions; a dead owner's leases expire after Config.LeaseTTL and the others take its
// partitions over. The KV revision of an acquisition is its epoch, the fencing token a store uses
// to refuse a stale owner's writes.
//
// Delivery is at least once: an event can be processed again after a crash or a lost ack,
// always with the same engine.Event.ID, so a Processor must be idempotent on that identity (the
// store's unique keys make it so).
//
// What it owns, beyond the above: the consumer's side of each message. A batch's events are
// acked only after the Processor returned nil (its outcome durable), and their ack deadlines are
// extended (InProgress) while it works; an event the Processor dead-lettered is published on its
// dead-letter subject and then terminated (TermWithReason); events handed back — of a partition
// given up, or not processed — are nak'ed, with a delay or, so that the next owner has them at
// once, without.
//
// What it must not do: decide anything or touch the database. It hands events to a Processor
// (cmd/commissioner wires the engine and the store behind it) and knows nothing of policies or
// rules; it imports engine and engine/audit for value types and ports only, never another
// adapter.
package stream
