// Package payout pays a payout run by wire transfer. It checks bank details (IBAN, BIC), holds
// the statements of affiliates whose bank details are unknown, and builds a run's bank files:
// ISO 20022 pain.001.001.09 customer credit transfer initiations, one per currency, with one
// credit transfer per paid statement.
//
// It is pure — no I/O, no clock — and deterministic: the same run and payments give the same
// bytes. It must not read or write the store or files: the store keeps the payee details and
// what each run paid (with the payee details it was paid to); cmd/commissioner reads them,
// calls Files and writes the files.
package payout
