package store

// The order lifecycle and the commission ledger in the store.
//
//   - an order's state is not stored apart: it is its decisions (decisions.is_current, pin_version,
//     pin_digest, prev_id), read for a batch with one indexed read (LoadHistory).
//   - ledger_entries: append-only; accruals, reversals and adjustments (engine.Book), each naming
//     the decision and event that caused it. Only payouts set payout_id (and status approved).
//   - decision_inputs: what a decision was decided with besides its event and policy version —
//     the pin it saw and whether it was decided with it, and the affiliate.* inputs — so that it
//     can be reproduced (replay, audit). One row per decision that has any.
//   - payout_runs and payouts: one row per closed (program, month), one per statement paid
//     (ClosePayouts); payees and payout_payees (payees.go): where affiliates are paid, and where
//     each payout was.
//
// The engine books every batch (engine.Pass); WriteBatch writes the entries it computed. An
// order's decisions form one line (decisions.prev_id, unique per order): a batch decided with a
// history another partition's owner has since extended (an order whose events name several
// affiliates) is refused with an error matching engine.ErrStaleHistory, and passed again.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cockroachdb/apd/v3"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// schemaLedger: the lifecycle, ledger and payout tables. Amounts are exact decimals.
const schemaLedger = `
CREATE TABLE IF NOT EXISTS ledger_entries (
	id           {{PK}},
	program      {{Key}} NOT NULL,
	affiliate_id {{Key}} NOT NULL,
	order_id     {{Key}} NOT NULL,
	currency     TEXT NOT NULL,
	amount       {{Decimal}} NOT NULL,
	kind         TEXT NOT NULL,
	decision_id  BIGINT NOT NULL,
	event_id     {{Key}} NOT NULL,
	status       TEXT NOT NULL,
	approve_at   {{Time}} NOT NULL,
	payout_id    BIGINT,
	created_at   {{Time}} NOT NULL
);
-- payouts: the program's unpaid entries approved before the month's end
CREATE INDEX IF NOT EXISTS ledger_entries_unpaid ON ledger_entries (program, approve_at) WHERE payout_id IS NULL;

CREATE TABLE IF NOT EXISTS decision_inputs (
	decision_id            BIGINT NOT NULL PRIMARY KEY,
	program                {{Key}} NOT NULL,
	event_id               {{Key}} NOT NULL,
	pin_version            BIGINT,
	pin_digest             TEXT,
	pinned                 BOOLEAN NOT NULL,
	month                  TEXT,
	month_qualified_orders BIGINT,
	month_qualified_sales  {{Decimal}}
);

CREATE TABLE IF NOT EXISTS payout_runs (
	id        {{PK}},
	program   {{Key}} NOT NULL,
	month     TEXT NOT NULL,
	as_of     {{Time}} NOT NULL,
	closed_at {{Time}} NOT NULL,
	payouts   BIGINT NOT NULL,
	entries   BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS payout_runs_month ON payout_runs (program, month);

CREATE TABLE IF NOT EXISTS payouts (
	id           {{PK}},
	run_id       BIGINT NOT NULL,
	program      {{Key}} NOT NULL,
	affiliate_id {{Key}} NOT NULL,
	currency     TEXT NOT NULL,
	amount       {{Decimal}} NOT NULL,
	entries      BIGINT NOT NULL,
	method       TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS payouts_run_affiliate ON payouts (run_id, affiliate_id, currency);
`

// Ledger entry statuses: pending until a payout run sees its approve_at passed.
const (
	StatusPending  = "pending"
	StatusApproved = "approved"
)

type ledgerRow struct {
	bun.BaseModel `bun:"table:ledger_entries"`

	Program     string    `bun:"program"`
	AffiliateID string    `bun:"affiliate_id"`
	OrderID     string    `bun:"order_id"`
	Currency    string    `bun:"currency"`
	Amount      string    `bun:"amount"`
	Kind        string    `bun:"kind"`
	DecisionID  int64     `bun:"decision_id"`
	EventID     string    `bun:"event_id"`
	Status      string    `bun:"status"`
	ApproveAt   time.Time `bun:"approve_at"`
	CreatedAt   time.Time `bun:"created_at"`
}

type decisionInputRow struct {
	bun.BaseModel `bun:"table:decision_inputs"`

	DecisionID           int64          `bun:"decision_id"`
	Program              string         `bun:"program"`
	EventID              string         `bun:"event_id"`
	PinVersion           sql.NullInt64  `bun:"pin_version"`
	PinDigest            sql.NullString `bun:"pin_digest"`
	Pinned               bool           `bun:"pinned"`
	Month                sql.NullString `bun:"month"`
	MonthQualifiedOrders sql.NullInt64  `bun:"month_qualified_orders"`
	MonthQualifiedSales  sql.NullString `bun:"month_qualified_sales"`
}

// --- the history a batch is decided with ---

// LoadHistory reads the history of these orders and affiliate months (engine.HistoryKeys) at
// once: what DecideBatch needs. The snapshot may be stale by the time the batch is stored;
// WriteBatch then refuses it (engine.ErrStaleHistory) and it is decided again.
func (s *Store) LoadHistory(ctx context.Context, orders []engine.OrderKey, months []engine.MonthKey) (*engine.Snapshot, error) {
	snap, err := s.loadHistory(ctx, s.db, orders, months)
	if err != nil {
		return nil, fmt.Errorf("loading the history of %d orders: %w", len(orders), err)
	}
	return snap, nil
}

const historyChunk = 500

// pgHistoryChunk is the most order ids of one PostgreSQL history read (one array parameter).
const pgHistoryChunk = 5000

// loadHistory reads, through db, the stored decisions of these orders and the month figures of
// these affiliate months into a snapshot.
func (s *Store) loadHistory(ctx context.Context, db bun.IDB, orders []engine.OrderKey, months []engine.MonthKey) (*engine.Snapshot, error) {
	snap := engine.NewSnapshot()
	if err := s.loadPastDecisions(ctx, db, snap, orders); err != nil {
		return nil, err
	}
	if len(months) == 0 {
		return snap, nil
	}
	if err := s.loadMonthTotals(ctx, db, snap, months); err != nil {
		return nil, err
	}
	return snap, nil
}

// loadPastDecisions adds to snap the stored decisions of these orders, each order's in the order
// they were stored (its state: AddDecision), read by program in chunks of ids.
func (s *Store) loadPastDecisions(ctx context.Context, db bun.IDB, snap *engine.Snapshot, orders []engine.OrderKey) error {
	// Ids are stored as safeText (storable text); an order is looked up by its stored key and
	// known by its own.
	byProgram := map[string][]string{}
	keysOf := map[engine.OrderKey][]engine.OrderKey{}
	for _, k := range orders {
		sk := engine.OrderKey{Program: safeText(k.Program), OrderID: safeText(k.OrderID)}
		if _, dup := keysOf[sk]; !dup {
			byProgram[sk.Program] = append(byProgram[sk.Program], sk.OrderID)
		}
		keysOf[sk] = append(keysOf[sk], k)
	}
	query, chunkLen, args := s.pastDecisionsQuery()
	for _, program := range sortedProgramKeys(byProgram) {
		ids := byProgram[program]
		for start := 0; start < len(ids); start += chunkLen {
			chunk := ids[start:min(start+chunkLen, len(ids))]
			rows, err := db.QueryContext(ctx, query, args(program, chunk)...)
			if err != nil {
				return err
			}
			err = scanPastDecisions(rows, program, keysOf, snap)
			rows.Close()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// pastDecisionsQuery returns the query that reads a program's decisions of a chunk of order ids
// (ordered by order id, then id), the most ids of a chunk, and the query's arguments for a
// program and a chunk.
func (s *Store) pastDecisionsQuery() (query string, chunkLen int, args func(program string, ids []string) []any) {
	const cols = "order_id, id, event_id, stream_seq, affiliate_id, currency, month, qualified, base, commission, is_current, pin_version, pin_digest"
	if s.backend == Postgres {
		// The ids as one array parameter (one literal rather than an IN list of 500), in
		// chunks of pgHistoryChunk, each looked up on its own (LATERAL; OFFSET 0 keeps the
		// planner from flattening it into a join): planned with the statistics of a table that
		// was empty a minute before (autovacuum had not analysed it yet), the plain = ANY read
		// took an index for program alone and filtered every row of the program (measured:
		// 180 ms instead of 7 per batch of 1 000).
		query = "SELECT d.order_id, d.id, d.event_id, d.stream_seq, d.affiliate_id, d.currency, d.month, d.qualified, d.base::text, d.commission::text, " +
			"d.is_current, d.pin_version, d.pin_digest FROM unnest(?::text[]) AS k(order_id) CROSS JOIN LATERAL (SELECT " + cols +
			" FROM decisions x WHERE x.program = ? AND x.order_id = k.order_id OFFSET 0) AS d ORDER BY 1, 2"
		return query, pgHistoryChunk, func(program string, ids []string) []any { return []any{pgdialect.Array(ids), program} }
	}
	query = "SELECT " + cols + " FROM decisions WHERE program = ? AND order_id IN (?) ORDER BY order_id, id"
	return query, historyChunk, func(program string, ids []string) []any { return []any{program, bun.In(ids)} }
}

// scanPastDecisions adds each decision rows holds (pastDecisionsQuery's columns) to snap, under
// every key its order was asked for by (keysOf). The caller closes rows.
func scanPastDecisions(rows *sql.Rows, program string, keysOf map[engine.OrderKey][]engine.OrderKey, snap *engine.Snapshot) error {
	for rows.Next() {
		var (
			id, b, c string
			seq      int64
			pv       sql.NullInt64
			pd       sql.NullString
			d        engine.PastDecision
		)
		if err := rows.Scan(&id, &d.ID, &d.EventID, &seq, &d.AffiliateID, &d.Currency, &d.Month, &d.Qualified, &b, &c, &d.Current, &pv, &pd); err != nil {
			return err
		}
		d.StreamSeq = uint64(seq)
		var err error
		if d.Base, err = parseDecimal(b, "decisions.base"); err == nil {
			d.Commission, err = parseDecimal(c, "decisions.commission")
		}
		if err != nil {
			return err
		}
		if pv.Valid {
			d.Pin = &engine.Pin{Version: int(pv.Int64), Digest: pd.String}
		}
		for _, k := range keysOf[engine.OrderKey{Program: program, OrderID: id}] {
			snap.AddDecision(k, &d)
		}
	}
	return rows.Err()
}

// loadMonthTotals sets in snap the figures of these affiliate months: the count and sales of
// the orders whose current decision qualifies, read by program in chunks of affiliates.
func (s *Store) loadMonthTotals(ctx context.Context, db bun.IDB, snap *engine.Snapshot, months []engine.MonthKey) error {
	want := make(map[engine.MonthKey][]engine.MonthKey, len(months))
	type group struct{ affiliates, months map[string]bool }
	groups := map[string]*group{}
	for _, k := range months {
		sk := engine.MonthKey{Program: safeText(k.Program), AffiliateID: safeText(k.AffiliateID), Month: k.Month, Currency: k.Currency}
		want[sk] = append(want[sk], k)
		g := groups[sk.Program]
		if g == nil {
			g = &group{affiliates: map[string]bool{}, months: map[string]bool{}}
			groups[sk.Program] = g
		}
		g.affiliates[sk.AffiliateID], g.months[sk.Month] = true, true
	}
	sum := "SUM(base)::text"
	if s.backend == SQLite {
		sum = decimalSumFunc + "(d.base)"
	}
	for program, g := range groups {
		affiliates, ms := setKeys(g.affiliates), setKeys(g.months)
		for start := 0; start < len(affiliates); start += historyChunk {
			chunk := affiliates[start:min(start+historyChunk, len(affiliates))]
			var rows []struct {
				AffiliateID string `bun:"affiliate_id"`
				Month       string `bun:"month"`
				Currency    string `bun:"currency"`
				N           int64  `bun:"n"`
				Sales       string `bun:"sales"`
			}
			// The orders whose current decision (the last one that became current) qualifies.
			if err := db.NewRaw("SELECT affiliate_id, month, currency, count(*) AS n, "+sum+" AS sales FROM decisions d "+
				"WHERE program = ? AND affiliate_id IN (?) AND month IN (?) AND qualified AND is_current "+
				"AND NOT EXISTS (SELECT 1 FROM decisions n WHERE n.program = d.program AND n.order_id = d.order_id AND n.is_current AND n.id > d.id) "+
				"GROUP BY affiliate_id, month, currency",
				program, bun.In(chunk), bun.In(ms)).Scan(ctx, &rows); err != nil {
				return err
			}
			for _, r := range rows {
				sk := engine.MonthKey{Program: program, AffiliateID: r.AffiliateID, Month: r.Month, Currency: r.Currency}
				t := engine.MonthTotals{Orders: r.N}
				var err error
				if t.Sales, err = parseDecimal(r.Sales, "month sales"); err != nil {
					return err
				}
				for _, k := range want[sk] {
					snap.Months[k] = t
				}
			}
		}
	}
	return nil
}

func sortedProgramKeys(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func setKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// The tables WriteBatch writes in bulk (bulk.go: bound parameters on SQLite, COPY or
// prepared statements on PostgreSQL; bun's rendering of every value into the SQL text cost more
// than storing the rows), with the columns in the order of the rows' fields.
var (
	ledgerTable = bulkTable{name: "ledger_entries", cols: []string{"program", "affiliate_id", "order_id", "currency", "amount",
		"kind", "decision_id", "event_id", "status", "approve_at", "created_at"}}
	decisionInputsTable = bulkTable{name: "decision_inputs", cols: []string{"decision_id", "program", "event_id", "pin_version",
		"pin_digest", "pinned", "month", "month_qualified_orders", "month_qualified_sales"}}
)

// --- pins ---

// ErrPinnedVersionMissing: a policy set leaves out a version that orders are pinned to.
var ErrPinnedVersionMissing = errors.New("a pinned policy version is missing")

// CheckPinned refuses a policy set that leaves out (or changes) a version orders are pinned to:
// their later events must be decided with it. Call it with CheckPolicies before a set goes into
// service. The error names each missing version and how many orders it pins.
func (s *Store) CheckPinned(ctx context.Context, ps []*rules.Policy) error {
	var pins []struct {
		Program string `bun:"program"`
		Version int    `bun:"pin_version"`
		Digest  string `bun:"pin_digest"`
		Orders  int64  `bun:"n"`
	}
	// An order's pin never changes once set, so the pins its decisions name are its pin.
	if err := s.db.NewRaw("SELECT program, pin_version, pin_digest, count(DISTINCT order_id) AS n FROM decisions WHERE pin_version IS NOT NULL "+
		"GROUP BY program, pin_version, pin_digest ORDER BY program, pin_version").Scan(ctx, &pins); err != nil {
		return fmt.Errorf("checking the pinned policy versions: %w", err)
	}
	loaded := map[string]string{}
	for _, p := range ps {
		loaded[policyKey(p.Program, p.Version)] = p.Digest
	}
	var missing []string
	for _, p := range pins {
		if loaded[policyKey(p.Program, p.Version)] != p.Digest {
			missing = append(missing, fmt.Sprintf("%s v%d (%s) pins %d order(s)", p.Program, p.Version, p.Digest, p.Orders))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s; an order's later events are decided with the version of its first qualifying one: "+
			"keep that version's file (its source is in policy_versions)", ErrPinnedVersionMissing, strings.Join(missing, "; "))
	}
	return nil
}

// DecisionInputs returns a decision's recorded inputs; the zero value (with DecisionID) when
// it has none (it was decided with the version in force, by a policy that reads no affiliate.*).
func (s *Store) DecisionInputs(ctx context.Context, decisionID int64) (DecisionInputs, error) {
	out := DecisionInputs{DecisionID: decisionID}
	var r decisionInputRow
	sales := "month_qualified_sales"
	if s.backend == Postgres {
		sales += "::text"
	}
	err := s.db.NewSelect().Model(&r).Column("decision_id", "program", "event_id", "pin_version", "pin_digest", "pinned", "month", "month_qualified_orders").
		ColumnExpr(sales+" AS month_qualified_sales").Where("decision_id = ?", decisionID).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("reading the inputs of decision %d: %w", decisionID, err)
	}
	out.Pinned = r.Pinned
	if r.PinVersion.Valid {
		out.Pin = &engine.Pin{Version: int(r.PinVersion.Int64), Digest: r.PinDigest.String}
	}
	if r.Month.Valid {
		a := &engine.AffiliateMonth{Month: r.Month.String, QualifiedOrders: r.MonthQualifiedOrders.Int64}
		if a.QualifiedSales, err = parseDecimal(r.MonthQualifiedSales.String, "month_qualified_sales"); err != nil {
			return out, err
		}
		out.Affiliate = a
	}
	return out, nil
}

// --- reading the ledger ---

// LedgerFilter selects ledger entries; zero fields select everything.
type LedgerFilter struct {
	Program   string
	Affiliate string
	OrderID   string
	// Unpaid keeps the entries no payout has paid; ApprovedBefore (non-zero) those whose
	// approve_at is before it.
	Unpaid         bool
	ApprovedBefore time.Time
}

const ledgerColumns = "id, program, affiliate_id, order_id, currency, amount, kind, decision_id, event_id, status, approve_at, payout_id, created_at"

func (s *Store) ledgerColumns() string {
	if s.backend == Postgres {
		return strings.Replace(ledgerColumns, " amount,", " amount::text,", 1)
	}
	return strings.NewReplacer(" approve_at,", " "+s.timeCol("approve_at")+",", " created_at", " "+s.timeCol("created_at")).Replace(ledgerColumns)
}

func ledgerWhere(f LedgerFilter) (string, []any) {
	var where []string
	var args []any
	if f.Program != "" {
		where, args = append(where, "program = ?"), append(args, f.Program)
	}
	if f.Affiliate != "" {
		where, args = append(where, "affiliate_id = ?"), append(args, f.Affiliate)
	}
	if f.OrderID != "" {
		where, args = append(where, "order_id = ?"), append(args, f.OrderID)
	}
	if f.Unpaid {
		where = append(where, "payout_id IS NULL")
	}
	if !f.ApprovedBefore.IsZero() {
		where, args = append(where, "approve_at < ?"), append(args, f.ApprovedBefore.UTC())
	}
	if len(where) == 0 {
		return "", nil
	}
	return "WHERE " + strings.Join(where, " AND "), args
}

// LedgerEntries returns the entries the filter selects, in the order they were written.
func (s *Store) LedgerEntries(ctx context.Context, f LedgerFilter) ([]engine.LedgerEntry, error) {
	where, args := ledgerWhere(f)
	out, err := s.queryLedger(ctx, s.db, "SELECT "+s.ledgerColumns()+" FROM ledger_entries "+where+" ORDER BY id", args...)
	if err != nil {
		return nil, fmt.Errorf("reading ledger entries: %w", err)
	}
	return out, nil
}

func (s *Store) queryLedger(ctx context.Context, db bun.IDB, query string, args ...any) ([]engine.LedgerEntry, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []engine.LedgerEntry
	for rows.Next() {
		var (
			e      engine.LedgerEntry
			amount string
			kind   string
			payout sql.NullInt64
		)
		if err := rows.Scan(&e.ID, &e.Program, &e.AffiliateID, &e.OrderID, &e.Currency, &amount, &kind, &e.DecisionID, &e.EventID,
			&e.Status, timeScanner{&e.ApproveAt}, &payout, timeScanner{&e.CreatedAt}); err != nil {
			return nil, err
		}
		e.Kind, e.PayoutID, e.Result = engine.LedgerKind(kind), payout.Int64, -1
		if e.Amount, err = parseDecimal(amount, "ledger amount"); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Balance is what the ledger owes one affiliate in one currency of a program.
type Balance struct {
	Program, AffiliateID, Currency string
	Total                          apd.Decimal
	Entries                        int64
}

// Balances sums the ledger per program, affiliate and currency (all entries, paid or not), in
// that order; an empty program selects every program.
func (s *Store) Balances(ctx context.Context, program string) ([]Balance, error) {
	sum := "SUM(amount)::text"
	if s.backend == SQLite {
		sum = decimalSumFunc + "(amount)"
	}
	where, args := ledgerWhere(LedgerFilter{Program: program})
	var rows []struct {
		Program     string `bun:"program"`
		AffiliateID string `bun:"affiliate_id"`
		Currency    string `bun:"currency"`
		Total       string `bun:"total"`
		N           int64  `bun:"n"`
	}
	if err := s.db.NewRaw("SELECT program, affiliate_id, currency, "+sum+" AS total, count(*) AS n FROM ledger_entries "+where+
		" GROUP BY program, affiliate_id, currency ORDER BY program, affiliate_id, currency", args...).Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("summing the ledger: %w", err)
	}
	out := make([]Balance, len(rows))
	for i, r := range rows {
		out[i] = Balance{Program: r.Program, AffiliateID: r.AffiliateID, Currency: r.Currency, Entries: r.N}
		var err error
		if out[i].Total, err = parseDecimal(r.Total, "ledger total"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// --- payouts ---

// ErrAlreadyClosed: the program's month was closed by an earlier payout run.
var ErrAlreadyClosed = errors.New("payout month already closed")

// PayoutRun is a closed month of a program: the payouts it recorded.
type PayoutRun struct {
	ID       int64
	Program  string
	Month    string // "2026-10"
	AsOf     time.Time
	ClosedAt time.Time
	Payouts  int64 // statements paid
	Entries  int64 // ledger entries paid
}

type payoutRunRow struct {
	bun.BaseModel `bun:"table:payout_runs"`

	ID       int64     `bun:"id,pk,autoincrement"`
	Program  string    `bun:"program"`
	Month    string    `bun:"month"`
	AsOf     time.Time `bun:"as_of"`
	ClosedAt time.Time `bun:"closed_at"`
	Payouts  int64     `bun:"payouts"`
	Entries  int64     `bun:"entries"`
}

type payoutRow struct {
	bun.BaseModel `bun:"table:payouts"`

	ID          int64  `bun:"id,pk,autoincrement"`
	RunID       int64  `bun:"run_id"`
	Program     string `bun:"program"`
	AffiliateID string `bun:"affiliate_id"`
	Currency    string `bun:"currency"`
	Amount      string `bun:"amount"`
	Entries     int64  `bun:"entries"`
	Method      string `bun:"method"`
}

// Payable returns the ledger entries a statement as of asOf pays: approved (approve_at before
// asOf) and not paid yet, of one program ("" every program), in the order they were written.
func (s *Store) Payable(ctx context.Context, program string, asOf time.Time) ([]engine.LedgerEntry, error) {
	return s.LedgerEntries(ctx, LedgerFilter{Program: program, Unpaid: true, ApprovedBefore: asOf})
}

// PayoutRun returns the run that closed a program's month; an error matching ErrNotFound when
// it is not closed.
func (s *Store) PayoutRun(ctx context.Context, program, month string) (PayoutRun, error) {
	var r payoutRunRow
	err := s.db.NewSelect().Model(&r).Where("program = ? AND month = ?", program, month).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return PayoutRun{}, fmt.Errorf("payout run of %s %s: %w", program, month, ErrNotFound)
	}
	if err != nil {
		return PayoutRun{}, fmt.Errorf("reading the payout run of %s %s: %w", program, month, err)
	}
	return r.run(), nil
}

func (r payoutRunRow) run() PayoutRun {
	return PayoutRun{ID: r.ID, Program: r.Program, Month: r.Month, AsOf: r.AsOf.UTC(), ClosedAt: r.ClosedAt.UTC(), Payouts: r.Payouts, Entries: r.Entries}
}

// ClosePayouts closes a program's month in one transaction: it records the run, reads the payable
// entries (Payable as of asOf) there, builds the statements with build, records a payout for each
// payable statement — with the payee details the affiliate has then (payout_payees: what the
// run's bank file pays to, RunPayments) — and marks its entries paid (payout_id, status
// approved); the other entries of the month are marked approved and stay unpaid, carried forward. No entry is ever paid twice:
// closes of one program are serialised (the write lock on SQLite, a transaction-scoped advisory
// lock on PostgreSQL), a month closes once (ErrAlreadyClosed, with the earlier run, when it was
// closed before), and an entry is marked paid only while it is unpaid — anything else rolls the
// whole run back. It returns the run and the statements as built.
func (s *Store) ClosePayouts(ctx context.Context, program, month string, asOf time.Time, now time.Time,
	build func([]engine.LedgerEntry) ([]engine.Statement, error)) (PayoutRun, []engine.Statement, error) {
	var (
		run        PayoutRun
		statements []engine.Statement
	)
	err := s.writeTx(ctx, func(ctx context.Context, w *wtx) error {
		var err error
		run, statements, err = s.closeMonth(ctx, w, program, month, asOf, now, build)
		return err
	})
	if errors.Is(err, ErrAlreadyClosed) {
		return run, nil, fmt.Errorf("%s %s was closed by payout run %d at %s: %w", program, month, run.ID, run.ClosedAt.Format(time.RFC3339), ErrAlreadyClosed)
	}
	if err != nil {
		if isUniqueViolation(err) {
			return PayoutRun{}, nil, fmt.Errorf("%s %s was closed by another run meanwhile: %w", program, month, ErrAlreadyClosed)
		}
		return PayoutRun{}, nil, fmt.Errorf("closing the payouts of %s %s: %w", program, month, err)
	}
	return run, statements, nil
}

// closeMonth is ClosePayouts' transaction w: it returns the run recorded and the statements
// built, or the earlier run with ErrAlreadyClosed.
func (s *Store) closeMonth(ctx context.Context, w *wtx, program, month string, asOf time.Time, now time.Time,
	build func([]engine.LedgerEntry) ([]engine.Statement, error)) (PayoutRun, []engine.Statement, error) {
	if s.backend == Postgres {
		if _, err := w.ExecContext(ctx, "SELECT pg_advisory_xact_lock(?, hashtext(?))", migrationLockKey, "payouts:"+program); err != nil {
			return PayoutRun{}, nil, fmt.Errorf("locking the payouts of %s: %w", program, err)
		}
	}
	var prev payoutRunRow
	err := w.NewSelect().Model(&prev).Where("program = ? AND month = ?", program, month).Scan(ctx)
	if err == nil {
		return prev.run(), nil, ErrAlreadyClosed
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return PayoutRun{}, nil, fmt.Errorf("reading the payout runs: %w", err)
	}
	entries, err := s.queryLedger(ctx, w.Tx, "SELECT "+s.ledgerColumns()+" FROM ledger_entries WHERE program = ? AND payout_id IS NULL AND approve_at < ? ORDER BY id",
		program, asOf.UTC())
	if err != nil {
		return PayoutRun{}, nil, fmt.Errorf("reading the payable entries: %w", err)
	}
	statements, err := build(entries)
	if err != nil {
		return PayoutRun{}, nil, err
	}
	row := payoutRunRow{Program: program, Month: month, AsOf: asOf.UTC(), ClosedAt: now.UTC()}
	if _, err := w.NewInsert().Model(&row).Returning("id").Exec(ctx); err != nil {
		return PayoutRun{}, nil, fmt.Errorf("recording the payout run: %w", err)
	}
	var approved []int64
	for i := range statements {
		st := &statements[i]
		for _, e := range st.Lines {
			approved = append(approved, e.ID)
		}
		if !st.Payable {
			continue
		}
		if err := payStatement(ctx, w, &row, st); err != nil {
			return PayoutRun{}, nil, err
		}
	}
	for start := 0; start < len(approved); start += historyChunk {
		chunk := approved[start:min(start+historyChunk, len(approved))]
		if _, err := w.NewUpdate().Table("ledger_entries").Set("status = ?", StatusApproved).
			Where("id IN (?) AND status = ?", bun.In(chunk), StatusPending).Exec(ctx); err != nil {
			return PayoutRun{}, nil, fmt.Errorf("marking entries approved: %w", err)
		}
	}
	if _, err := w.NewUpdate().Model(&row).Column("payouts", "entries").WherePK().Exec(ctx); err != nil {
		return PayoutRun{}, nil, fmt.Errorf("recording the payout run: %w", err)
	}
	return row.run(), statements, nil
}

// payStatement records the payout of payable statement st in run row (with the payee details
// the affiliate has now) and marks its entries paid by it; an entry that is no longer unpaid
// fails the run.
func payStatement(ctx context.Context, w *wtx, row *payoutRunRow, st *engine.Statement) error {
	p := payoutRow{RunID: row.ID, Program: st.Program, AffiliateID: st.AffiliateID, Currency: st.Currency,
		Amount: st.Total.Text('f'), Entries: int64(len(st.Lines)), Method: st.Method}
	if _, err := w.NewInsert().Model(&p).Returning("id").Exec(ctx); err != nil {
		return fmt.Errorf("recording the payout of %s %s: %w", st.AffiliateID, st.Currency, err)
	}
	if err := recordPayee(ctx, w, p.ID, st.Program, st.AffiliateID); err != nil {
		return fmt.Errorf("recording the payee details of the payout of %s %s: %w", st.AffiliateID, st.Currency, err)
	}
	ids := make([]int64, len(st.Lines))
	for i, e := range st.Lines {
		ids[i] = e.ID
	}
	for start := 0; start < len(ids); start += historyChunk {
		chunk := ids[start:min(start+historyChunk, len(ids))]
		res, err := w.NewUpdate().Table("ledger_entries").Set("payout_id = ?", p.ID).Set("status = ?", StatusApproved).
			Where("id IN (?) AND payout_id IS NULL", bun.In(chunk)).Exec(ctx)
		if err != nil {
			return fmt.Errorf("marking the entries of %s %s paid: %w", st.AffiliateID, st.Currency, err)
		}
		if n, err := res.RowsAffected(); err != nil || n != int64(len(chunk)) {
			return fmt.Errorf("marking the entries of %s %s paid: %d of %d were unpaid (%v): another run paid them", st.AffiliateID, st.Currency, n, len(chunk), err)
		}
	}
	row.Payouts++
	row.Entries += int64(len(ids))
	return nil
}

// isUniqueViolation reports whether err is PostgreSQL's unique-key violation (23505). (On SQLite
// the write lock makes the check before the insert final.)
func isUniqueViolation(err error) bool {
	var pg interface{ Field(byte) string }
	return errors.As(err, &pg) && pg.Field('C') == "23505"
}

// PayoutRuns returns the recorded payout runs of a program ("" every program), oldest first.
func (s *Store) PayoutRuns(ctx context.Context, program string) ([]PayoutRun, error) {
	var rows []payoutRunRow
	q := s.db.NewSelect().Model(&rows).Order("id")
	if program != "" {
		q = q.Where("program = ?", program)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("reading the payout runs: %w", err)
	}
	out := make([]PayoutRun, len(rows))
	for i, r := range rows {
		out[i] = r.run()
	}
	return out, nil
}

// LedgerPrograms returns the programs with ledger entries, sorted.
func (s *Store) LedgerPrograms(ctx context.Context) ([]string, error) {
	var out []string
	if err := s.db.NewRaw("SELECT DISTINCT program FROM ledger_entries ORDER BY program").Scan(ctx, &out); err != nil {
		return nil, fmt.Errorf("reading the ledger's programs: %w", err)
	}
	return out, nil
}

// PaidEntries returns the ledger entries a payout run paid, by id: what a closed month paid.
func (s *Store) PaidEntries(ctx context.Context, runID int64) ([]engine.LedgerEntry, error) {
	out, err := s.queryLedger(ctx, s.db, "SELECT "+s.ledgerColumns()+" FROM ledger_entries WHERE payout_id IN (SELECT id FROM payouts WHERE run_id = ?) ORDER BY id", runID)
	if err != nil {
		return nil, fmt.Errorf("reading the entries paid by run %d: %w", runID, err)
	}
	return out, nil
}
