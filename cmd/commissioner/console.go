package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/commissioner/commissioner/adapters/console"
	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/audit"
	"github.com/commissioner/commissioner/rules"
)

// consoleStore is the store as the console's port reads it: the console's filter is converted
// to the store's (the two adapters do not know each other), and a month's payouts are built as
// the payouts command builds them, with the payout terms of the policies the service runs
// (policies; nil: the versions stored).
type consoleStore struct {
	*store.Store
	policies func() *rules.Set
}

var (
	_ console.Store        = consoleStore{}
	_ console.ShadowSource = consoleStore{}
)

func (s consoleStore) RecentDecisions(ctx context.Context, f console.DecisionFilter, before int64, limit int) ([]audit.StoredDecision, error) {
	return s.Store.RecentDecisions(ctx, store.DecisionFilter(f), before, limit)
}

// PayoutMonth builds a month's statements with the payouts command's own steps (payoutsRun:
// prepare, preview, reprintClosedBefore), as `payouts --month M` without --close does, with the
// payout terms of the policies the service runs — the set `payouts` loads from the same
// directory — or, without a running set, of the versions stored.
func (s consoleStore) PayoutMonth(ctx context.Context, month string) (console.PayoutMonth, error) {
	m, asOf, err := engine.MonthBounds(month)
	if err != nil {
		return console.PayoutMonth{}, err
	}
	var set *rules.Set
	if s.policies != nil {
		set = s.policies()
	}
	if set == nil {
		if set, err = storedPolicySet(ctx, s.Store); err != nil {
			return console.PayoutMonth{}, err
		}
	}
	r := &payoutsRun{p: payoutsParams{Month: m, Format: "csv"}, month: m, asOf: asOf, st: s.Store}
	if err := r.prepare(ctx, set); err != nil {
		return console.PayoutMonth{}, err
	}
	rep := payoutReport{Month: m, AsOf: asOf}
	if err := r.preview(ctx, &rep); err != nil {
		return console.PayoutMonth{}, err
	}
	if _, err := r.reprintClosedBefore(ctx, &rep); err != nil {
		return console.PayoutMonth{}, err
	}
	out := console.PayoutMonth{Month: m, AsOf: asOf, Statements: rep.Statements}
	for _, rr := range rep.Runs {
		if rr.Before {
			out.Runs = append(out.Runs, console.PayoutRun{ID: rr.Run.ID, Program: rr.Program, ClosedAt: rr.Run.ClosedAt,
				Payouts: rr.Run.Payouts, Entries: rr.Run.Entries, Paid: rr.Paid})
		}
	}
	return out, nil
}

// LoadedShadows returns the shadow versions of the policies the service runs now (the shadow
// pages show their sample); none without a running set. The store's ShadowVersions and
// ShadowHistory are the rest of the console's ShadowSource.
func (s consoleStore) LoadedShadows() []*rules.Policy {
	if s.policies == nil {
		return nil
	}
	if set := s.policies(); set != nil {
		return set.AllShadows()
	}
	return nil
}

// storedPolicySet compiles every stored policy version into a set (for their payout terms).
func storedPolicySet(ctx context.Context, st *store.Store) (*rules.Set, error) {
	sps, err := st.PolicyVersions(ctx, "")
	if err != nil {
		return nil, err
	}
	var ps []*rules.Policy
	for _, sp := range sps {
		p, problems := rules.Compile(sp.File, sp.Source)
		if p == nil {
			return nil, fmt.Errorf("policy %s v%d (%s): the stored source does not compile:\n%v", sp.Program, sp.Version, sp.File, problems)
		}
		ps = append(ps, p)
	}
	set, problems := rules.NewSet(ps)
	if set == nil {
		return nil, errors.New("the stored policy versions do not form a set:\n" + fmt.Sprint(problems))
	}
	return set, nil
}

// ClosePayoutMonth closes a month as `payouts --month M --close` (without --export) does, with
// the payout terms of the policies the service runs, and returns the runs that closed it now.
func (s consoleStore) ClosePayoutMonth(ctx context.Context, month string) ([]console.PayoutRun, error) {
	m, asOf, err := engine.MonthBounds(month)
	if err != nil {
		return nil, err
	}
	set := s.policies()
	r := &payoutsRun{p: payoutsParams{Month: m, Close: true, Format: "csv"}, month: m, asOf: asOf, st: s.Store}
	if err := r.prepare(ctx, set); err != nil {
		return nil, err
	}
	rep := payoutReport{Month: m, AsOf: asOf, Close: true}
	if err := r.closeMonth(ctx, &rep); err != nil {
		return nil, err
	}
	var out []console.PayoutRun
	for _, rr := range rep.Runs {
		if rr.Closed {
			out = append(out, console.PayoutRun{ID: rr.Run.ID, Program: rr.Program, ClosedAt: rr.Run.ClosedAt,
				Payouts: rr.Run.Payouts, Entries: rr.Run.Entries})
		}
	}
	return out, nil
}

// mountConsole serves the console (/ui/…) on the service's HTTP server. It signs in with the
// audit API's bearer tokens — readers (http.tokens) and operators (http.operator_tokens, who
// may also close payout months) — reads the store with the policies the service runs now
// (reloads included), and shows the service's policy loads, stream backlog and audit verify on
// its health page. Its what-if replays have the bounds of POST /v1/replay (the same timeout,
// orders and http.max_replays), and so do its shadow reports (the timeout). Its shadow pages read
// the stored shadow outcomes and the shadow versions the service runs.
func mountConsole(srv *httpapi.Server, s *service, cfg httpapi.Config, log *slog.Logger) {
	st := consoleStore{s.store, func() *rules.Set { return s.engine.Load().Policies() }}
	srv.Handle("/ui/", console.New(st, console.Options{Authenticate: httpapi.NewTokens(cfg.Tokens, cfg.OperatorTokens).Check, Log: log,
		Payouts: st, Ops: serviceOps{s}, Shadows: st,
		// the what-if page is bounded as POST /v1/replay is
		ReplayTimeout: httpapi.DefaultReplayTimeout, ReplayMaxOrders: httpapi.DefaultReplayMaxOrders, MaxReplays: cfg.MaxReplays}))
}
