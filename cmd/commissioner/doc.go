// Command commissioner decides affiliate commissions with versioned CEL policies: it evaluates
// order events (from files or NATS JetStream), stores every decision with the policy version
// that made it, and checks, tests and replays policies.
//
// Usage:
//
//	commissioner <command> [flags]
//
// The commands, as root.go lists them: the pipeline (serve, publish, demo), deciding and pricing
// (eval, policy check, policy test, replay), auditing and paying (explain, audit verify, audit
// pubkey, dead-letters, payouts, affiliates), and the tools (load, sample, config). `commissioner
// <command> --help` lists a command's flags; README.md has the set-up and a tour, and docs/ one
// page per reader (program managers, auditors, operators, finance) and the speed figures —
// docs_test.go holds every command line in them to this command tree.
//
// What this package owns: parsing flags, reading the configuration (koanf: defaults, file,
// environment, flags; each command takes only the flags of the settings it reads), wiring the
// parts — rules and engine, the NATS adapter, the store, the checkpoint log, the HTTP API — and
// their lifecycles (start, reload on SIGHUP or a policy change, drain and stop on
// SIGINT/SIGTERM), and printing what the engine and the adapters return.
//
// What it must not do: business logic. Deciding, booking, chaining and checking belong to the
// engine (and engine/audit, engine/payout); persistence to adapters/store; subjects, partitions
// and acks to adapters/stream. A command hands them values and shows their results; the only
// place adapters meet is here.
package main
