// Package engine decides affiliate commissions: it validates order events, picks the policy
// version in force at the order's time, evaluates its qualification and rate rules, and computes
// the commission exactly. The same order and policy version always give the same Decision, byte
// for byte.
//
// What it owns: the order and decision types and their validation (DecodeOrder), money and its
// exact arithmetic (Commission, SumContext), choosing and pinning a version and deciding
// (Engine, DecideBatch), the ledger (Book, Statements), the chain of batches (canonical leaves,
// Merkle roots, proofs), the batch pass that turns a partition's events into plain rows (Pass),
// and replay with its diff (Replay). It declares the ports it needs (History, OrderHistory, Store
// and the others in ports.go); adapters implement them.
//
// What it must not do: I/O of any kind (it reads and writes only through the ports it is
// given), read the wall clock inside a decision (times come from the order events and from the
// callers), hold globals that change, or import an adapter or cmd. It formats no CEL values:
// that is rules' (rules.FormatValue).
package engine
