// Package httpapi serves Commissioner over HTTP: health (/healthz, /readyz), Prometheus
// metrics (/metrics) and the read-only audit API under /v1 (audit.go: bearer tokens, an OpenAPI
// document at /v1/openapi.json). Handlers only read; nothing here decides or writes commissions.
//
// What it owns: routing, authentication (bearer tokens compared in constant time), request
// limits, and turning what the ports return into JSON documents and status codes. It reads
// through ports: AuditStore and Redriver, declared here, and the engine's and engine/audit's
// interfaces and value types (the engine explains and checks; a handler only calls it and
// shows the result).
//
// What it must not do: depend on another adapter — it imports engine, engine/audit and rules,
// never adapters/store, adapters/stream or adapters/checkpointlog (layering_test.go holds it to
// that); cmd/commissioner hands it their implementations. It writes no decisions, ledger entries
// or batches.
package httpapi
