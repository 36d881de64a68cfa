package main

import (
	"context"
	"log/slog"

	"github.com/commissioner/commissioner/adapters/console"
	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine/audit"
)

// consoleStore is the store as the console's port reads it: the console's filter is converted
// to the store's (the two adapters do not know each other).
type consoleStore struct{ *store.Store }

var _ console.Store = consoleStore{}

func (s consoleStore) RecentDecisions(ctx context.Context, f console.DecisionFilter, before int64, limit int) ([]audit.StoredDecision, error) {
	return s.Store.RecentDecisions(ctx, store.DecisionFilter(f), before, limit)
}

// mountConsole serves the console (/ui/…) on the service's HTTP server; it signs in with the
// audit API's bearer tokens and reads the store only.
func mountConsole(srv *httpapi.Server, st *store.Store, cfg httpapi.Config, log *slog.Logger) {
	srv.Handle("/ui/", console.New(consoleStore{st}, console.Options{Tokens: cfg.Tokens, Log: log}))
}
