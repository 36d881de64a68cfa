package store

// Payee details and what a payout run paid to whom.
//
//   - payees: where an affiliate of a program is paid (payout.Payee), one row per (program,
//     affiliate_id), set with `commissioner affiliates set` or imported. The store keeps the
//     values it is given; the command checks them (payout.Payee.Normalize) first.
//   - payout_payees: the payee details each payout (payouts.id) was paid to, copied from payees
//     in the transaction that closes the month (ClosePayouts), so that a run's bank file can be
//     written again, the same, after the details changed.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commissioner/commissioner/engine/payout"
)

// schemaPayees: payee details, and the ones each payout was paid to.
const schemaPayees = `
CREATE TABLE IF NOT EXISTS payees (
	program      {{Key}} NOT NULL,
	affiliate_id {{Key}} NOT NULL,
	name         TEXT NOT NULL,
	iban         TEXT NOT NULL,
	account      TEXT NOT NULL,
	bic          TEXT NOT NULL,
	updated_at   {{Time}} NOT NULL,
	PRIMARY KEY (program, affiliate_id)
);

CREATE TABLE IF NOT EXISTS payout_payees (
	payout_id BIGINT NOT NULL PRIMARY KEY,
	name      TEXT NOT NULL,
	iban      TEXT NOT NULL,
	account   TEXT NOT NULL,
	bic       TEXT NOT NULL
);
`

type payeeRow struct {
	bun.BaseModel `bun:"table:payees"`

	Program     string    `bun:"program,pk"`
	AffiliateID string    `bun:"affiliate_id,pk"`
	Name        string    `bun:"name"`
	IBAN        string    `bun:"iban"`
	Account     string    `bun:"account"`
	BIC         string    `bun:"bic"`
	UpdatedAt   time.Time `bun:"updated_at"`
}

func (r payeeRow) payee() payout.Payee {
	return payout.Payee{Program: r.Program, AffiliateID: r.AffiliateID, Party: payout.Party{Name: r.Name, IBAN: r.IBAN, Account: r.Account, BIC: r.BIC}}
}

// SetPayees records payee details (each replaces the program's earlier details of the
// affiliate), all in one transaction: all or none are stored. An affiliate given twice is an
// error. The payees should be normalized (payout.Payee.Normalize); the store stores them as given.
func (s *Store) SetPayees(ctx context.Context, payees []payout.Payee, now time.Time) error {
	if len(payees) == 0 {
		return nil
	}
	rows := make([]payeeRow, len(payees))
	seen := make(map[[2]string]bool, len(payees))
	for i, p := range payees {
		k := [2]string{p.Program, p.AffiliateID}
		if seen[k] {
			return fmt.Errorf("storing payee details: %s of %s is given twice", p.AffiliateID, p.Program)
		}
		seen[k] = true
		rows[i] = payeeRow{Program: p.Program, AffiliateID: p.AffiliateID, Name: p.Name, IBAN: p.IBAN, Account: p.Account, BIC: p.BIC, UpdatedAt: now.UTC()}
	}
	err := s.writeTx(ctx, func(ctx context.Context, w *wtx) error {
		for start := 0; start < len(rows); start += historyChunk {
			chunk := rows[start:min(start+historyChunk, len(rows))]
			if _, err := w.NewInsert().Model(&chunk).On("CONFLICT (program, affiliate_id) DO UPDATE").
				Set("name = EXCLUDED.name, iban = EXCLUDED.iban, account = EXCLUDED.account, bic = EXCLUDED.bic, updated_at = EXCLUDED.updated_at").
				Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing the details of %d payee(s): %w", len(payees), err)
	}
	return nil
}

// Payee returns an affiliate's payee details in a program; an error matching ErrNotFound when
// there are none.
func (s *Store) Payee(ctx context.Context, program, affiliateID string) (payout.Payee, error) {
	var r payeeRow
	err := s.db.NewSelect().Model(&r).Where("program = ? AND affiliate_id = ?", program, affiliateID).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return payout.Payee{}, fmt.Errorf("payee details of %s in %s: %w", affiliateID, program, ErrNotFound)
	}
	if err != nil {
		return payout.Payee{}, fmt.Errorf("reading the payee details of %s in %s: %w", affiliateID, program, err)
	}
	return r.payee(), nil
}

// Payees returns the payee details of a program ("" every program), by program and affiliate.
func (s *Store) Payees(ctx context.Context, program string) ([]payout.Payee, error) {
	var rows []payeeRow
	q := s.db.NewSelect().Model(&rows).Order("program", "affiliate_id")
	if program != "" {
		q = q.Where("program = ?", program)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("reading the payee details: %w", err)
	}
	out := make([]payout.Payee, len(rows))
	for i, r := range rows {
		out[i] = r.payee()
	}
	return out, nil
}

// RunPayments returns what a payout run paid: one payment per paid statement, by payout id,
// each with the payee details it was paid to (nil when the affiliate had none at the close).
func (s *Store) RunPayments(ctx context.Context, runID int64) ([]payout.Payment, error) {
	amount := "p.amount"
	if s.backend == Postgres {
		amount += "::text"
	}
	var rows []struct {
		ID          int64          `bun:"id"`
		Program     string         `bun:"program"`
		AffiliateID string         `bun:"affiliate_id"`
		Currency    string         `bun:"currency"`
		Amount      string         `bun:"amount"`
		Entries     int64          `bun:"entries"`
		Method      string         `bun:"method"`
		Name        sql.NullString `bun:"name"`
		IBAN        sql.NullString `bun:"iban"`
		Account     sql.NullString `bun:"account"`
		BIC         sql.NullString `bun:"bic"`
	}
	if err := s.db.NewRaw("SELECT p.id, p.program, p.affiliate_id, p.currency, "+amount+" AS amount, p.entries, p.method, "+
		"pp.name, pp.iban, pp.account, pp.bic FROM payouts p LEFT JOIN payout_payees pp ON pp.payout_id = p.id "+
		"WHERE p.run_id = ? ORDER BY p.id", runID).Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("reading the payouts of run %d: %w", runID, err)
	}
	out := make([]payout.Payment, len(rows))
	for i, r := range rows {
		p := payout.Payment{ID: r.ID, Program: r.Program, AffiliateID: r.AffiliateID, Currency: r.Currency, Entries: r.Entries, Method: r.Method}
		var err error
		if p.Amount, err = parseDecimal(r.Amount, "payouts.amount"); err != nil {
			return nil, err
		}
		if r.Name.Valid {
			p.Payee = &payout.Payee{Program: r.Program, AffiliateID: r.AffiliateID,
				Party: payout.Party{Name: r.Name.String, IBAN: r.IBAN.String, Account: r.Account.String, BIC: r.BIC.String}}
		}
		out[i] = p
	}
	return out, nil
}

// recordPayee copies the affiliate's payee details, when it has any, as those payout p (of a
// statement of program) was paid to: in the transaction that records the payout.
func recordPayee(ctx context.Context, w *wtx, payoutID int64, program, affiliateID string) error {
	_, err := w.ExecContext(ctx, "INSERT INTO payout_payees (payout_id, name, iban, account, bic) "+
		"SELECT ?, name, iban, account, bic FROM payees WHERE program = ? AND affiliate_id = ?", payoutID, program, affiliateID)
	return err
}
