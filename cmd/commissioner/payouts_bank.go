package main

// The bank files of payout runs (payouts --export): the wiring of engine/payout's pain.001
// documents to the store's runs and to files.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine/payout"
)

// PayoutsConfig is how payout runs are paid.
type PayoutsConfig struct {
	// Debtor is the account the programs pay from: the bank file's debtor and initiating party.
	Debtor DebtorConfig `koanf:"debtor"`
}

// DebtorConfig is the paying account: an IBAN, or an account number with its bank's BIC.
type DebtorConfig struct {
	Name    string `koanf:"name"`
	IBAN    string `koanf:"iban"`
	Account string `koanf:"account"`
	BIC     string `koanf:"bic"`
}

// debtor checks the paying account, which a bank file needs: its name, account and BIC.
func (c PayoutsConfig) debtor() (payout.Party, error) {
	d := c.Debtor
	if d.Name == "" && d.IBAN == "" && d.Account == "" && d.BIC == "" {
		return payout.Party{}, errors.New("the bank file needs the account the programs pay from: set payouts.debtor.name, " +
			"payouts.debtor.iban (or payouts.debtor.account) and payouts.debtor.bic in the configuration file, " +
			"or COMMISSIONER_PAYOUTS__DEBTOR__NAME, …__IBAN, …__BIC")
	}
	p, err := payout.Party{Name: d.Name, IBAN: d.IBAN, Account: d.Account, BIC: d.BIC}.Normalize("payouts.debtor.")
	if err == nil && p.BIC == "" {
		err = &payout.FieldError{Field: "payouts.debtor.bic", Err: fmt.Errorf("%w: the bank file names the paying bank by its BIC", payout.ErrMissing)}
	}
	if err != nil {
		return payout.Party{}, fmt.Errorf("config: %w", err)
	}
	return p, nil
}

// bankExport is what --export writes: the paying account, where, and the execution date.
type bankExport struct {
	path   string // FILE: each file is named after it, with the program and currency
	debtor payout.Party
	exec   time.Time // zero: payout.ExecutionDate of each run
}

// bankFile is one file written.
type bankFile struct {
	Path string
	payout.File
}

// exportPath names a run's file in a currency after FILE: bank/2025-11.xml gives
// bank/2025-11-alibaba-USD.xml (.xml when FILE has no extension).
func exportPath(file, program, currency string) string {
	ext := filepath.Ext(file)
	base := strings.TrimSuffix(file, ext)
	if ext == "" {
		ext = ".xml"
	}
	safe := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == os.PathSeparator {
			return '_'
		}
		return r
	}, program)
	return base + "-" + safe + "-" + currency + ext
}

// exportRun writes the bank files of a run: what it paid by wire transfer, one file per
// currency, to the payee details recorded when it closed. It returns the files and the payments
// by another method (in no file).
func exportRun(ctx context.Context, st *store.Store, run store.PayoutRun, ex bankExport) ([]bankFile, []payout.Payment, error) {
	payments, err := st.RunPayments(ctx, run.ID)
	if err != nil {
		return nil, nil, err
	}
	r := payout.Run{ID: run.ID, Program: run.Program, Month: run.Month, ClosedAt: run.ClosedAt}
	exec := payout.ExecutionDate(run.ClosedAt)
	if !ex.exec.IsZero() {
		if ex.exec.Format(time.DateOnly) < run.ClosedAt.UTC().Format(time.DateOnly) {
			return nil, nil, usageError{fmt.Errorf("payouts: --execution-date %s is before run %d of %s closed (%s)",
				ex.exec.Format(time.DateOnly), run.ID, run.Program, run.ClosedAt.UTC().Format(time.DateOnly))}
		}
		exec = ex.exec
	}
	files, others, err := payout.Files(r, payments, ex.debtor, exec)
	if err != nil {
		return nil, nil, err
	}
	out := make([]bankFile, 0, len(files))
	for _, f := range files {
		path := exportPath(ex.path, run.Program, f.Currency)
		if err := writeFile0600(path, f.XML); err != nil {
			return out, others, fmt.Errorf("payouts: writing the bank file of run %d (%s %s): %w", run.ID, f.Currency, run.Program, err)
		}
		out = append(out, bankFile{Path: path, File: f})
	}
	return out, others, nil
}

// writeFile0600 writes data to path, readable by its owner only, atomically: a temporary file in
// the same directory, synced, renamed over path.
func writeFile0600(path string, data []byte) error {
	tmp, err := writeSyncedTemp(path, data, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // after the rename: nothing there
	return os.Rename(tmp, path)
}

// writeSyncedTemp writes data to a new temporary file beside path (".NAME.*"), with mode, synced
// and closed, and returns its name: the caller renames or links it to path, and removes it.
func writeSyncedTemp(path string, data []byte, mode fs.FileMode) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return "", err
	}
	tmp := f.Name()
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}
