package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine/payout"
)

// Account numbers are never printed in full here: tables, CSV, JSON and errors show an IBAN or
// account number masked but for its last four characters (payout.Mask).

func newAffiliatesCmd(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "affiliates",
		Short: "Manage affiliates' payee details (name, IBAN or account, BIC) for wire-transfer payouts",
		Long: `Payee details say where an affiliate of a program is paid: the account holder's name, an IBAN (checked:
its country's length and ISO 13616 check digits) or an account number of a country without IBANs,
and the bank's BIC (ISO 9362; required with an account number). Payouts hold the wire-transfer
statements of affiliates without them: not paid, carried forward. Account numbers are shown
masked but for their last four characters.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newAffiliatesSetCmd(s), newAffiliatesShowCmd(s), newAffiliatesListCmd(s), newAffiliatesImportCmd(s))
	return cmd
}

// affiliatesSetParams are affiliates set's options.
type affiliatesSetParams struct {
	payout.Payee
	Now func() time.Time // the time recorded (the wall clock when nil)
}

func newAffiliatesSetCmd(s streams) *cobra.Command {
	var p affiliatesSetParams
	cmd := &cobra.Command{
		Use:   "set --program P AFFILIATE --name NAME (--iban IBAN [--bic BIC] | --account NUMBER --bic BIC)",
		Short: "Set (or replace) an affiliate's payee details in a program",
		Args:  cobra.ExactArgs(1),
	}
	cf := addConfigFlags(cmd, storeFlags)
	f := cmd.Flags()
	f.StringVar(&p.Program, "program", "", "the program (required): payee details are per program")
	f.StringVar(&p.Name, "name", "", "the account holder's name, as the bank knows it (required)")
	f.StringVar(&p.IBAN, "iban", "", "the IBAN (spaces allowed)")
	f.StringVar(&p.Account, "account", "", "an account number that is not an IBAN (with --bic)")
	f.StringVar(&p.BIC, "bic", "", "the bank's BIC (8 or 11 characters)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if p.Program == "" {
			return usageError{errors.New("affiliates set: --program is required")}
		}
		p.AffiliateID = args[0]
		st, err := cf.openStore(cmd.Context())
		if err != nil {
			return err
		}
		defer st.Close()
		return runAffiliatesSet(cmd.Context(), st, p, s.out, s.err)
	}
	return cmd
}

// setFlag names the flag (or argument) of affiliates set that sets a payee field.
var setFlag = map[string]string{"program": "--program", "affiliate_id": "AFFILIATE", "name": "--name", "iban": "--iban", "account": "--account", "bic": "--bic"}

// runAffiliatesSet checks and stores one affiliate's payee details.
func runAffiliatesSet(ctx context.Context, st *store.Store, p affiliatesSetParams, out, errOut io.Writer) error {
	payee, err := p.Payee.Normalize()
	if err != nil {
		var lines []string
		for _, fe := range fieldErrors(err) {
			lines = append(lines, fmt.Sprintf("affiliates set: %s: %v", setFlag[fe.Field], fe.Err))
		}
		return usageError{errors.New(strings.Join(lines, "\n"))}
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	if err := st.SetPayees(ctx, []payout.Payee{payee}, now()); err != nil {
		return err
	}
	fmt.Fprintf(out, "set the payee details of %s in %s: %s\n", payee.AffiliateID, payee.Program, payeeSummary(payee))
	if programs, err := st.LedgerPrograms(ctx); err == nil && !slices.Contains(programs, payee.Program) {
		fmt.Fprintf(errOut, "affiliates set: note: program %s has no ledger entries (yet): is its name right?\n", payee.Program)
	}
	return nil
}

// fieldErrors flattens a (joined) error of payout.FieldErrors.
func fieldErrors(err error) []*payout.FieldError {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*payout.FieldError
		for _, e := range j.Unwrap() {
			out = append(out, fieldErrors(e)...)
		}
		return out
	}
	var fe *payout.FieldError
	if errors.As(err, &fe) {
		return []*payout.FieldError{fe}
	}
	return []*payout.FieldError{{Field: "?", Err: err}}
}

// payeeSummary is one line about a payee, the account masked.
func payeeSummary(p payout.Payee) string {
	acct := "IBAN " + payout.Mask(p.IBAN)
	if p.IBAN == "" {
		acct = "account " + payout.Mask(p.Account)
	}
	bic := p.BIC
	if bic == "" {
		bic = "none"
	}
	return fmt.Sprintf("%s, %s, BIC %s", p.Name, acct, bic)
}

func newAffiliatesShowCmd(s streams) *cobra.Command {
	var program string
	cmd := &cobra.Command{
		Use:   "show --program P AFFILIATE",
		Short: "Show an affiliate's payee details in a program (the account masked)",
		Args:  cobra.ExactArgs(1),
	}
	cf := addConfigFlags(cmd, storeFlags)
	cmd.Flags().StringVar(&program, "program", "", "the program (required)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if program == "" {
			return usageError{errors.New("affiliates show: --program is required")}
		}
		st, err := cf.openStore(cmd.Context())
		if err != nil {
			return err
		}
		defer st.Close()
		p, err := st.Payee(cmd.Context(), program, args[0])
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("affiliates show: %s has no payee details in %s: its wire-transfer statements are held (affiliates set)", args[0], program)
		}
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(s.out, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "program:\t%s\naffiliate:\t%s\nname:\t%s\n", p.Program, p.AffiliateID, p.Name)
		if p.IBAN != "" {
			fmt.Fprintf(tw, "iban:\t%s\n", payout.Mask(p.IBAN))
		} else {
			fmt.Fprintf(tw, "account:\t%s\n", payout.Mask(p.Account))
		}
		fmt.Fprintf(tw, "bic:\t%s\n", p.BIC)
		return tw.Flush()
	}
	return cmd
}

func newAffiliatesListCmd(s streams) *cobra.Command {
	var program string
	format := "table"
	cmd := &cobra.Command{
		Use:   "list [--program P] [--format table|csv|json]",
		Short: "List the payee details (accounts masked)",
		Args:  cobra.NoArgs,
	}
	cf := addConfigFlags(cmd, storeFlags)
	cmd.Flags().StringVar(&program, "program", "", "only this program")
	cmd.Flags().StringVar(&format, "format", format, "output format: table, csv or json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if format != "table" && format != "csv" && format != "json" {
			return usageError{fmt.Errorf("affiliates list: --format %q is not one of table, csv, json", format)}
		}
		st, err := cf.openStore(cmd.Context())
		if err != nil {
			return err
		}
		defer st.Close()
		payees, err := st.Payees(cmd.Context(), program)
		if err != nil {
			return err
		}
		return writePayees(s.out, payees, format)
	}
	return cmd
}

// writePayees lists payee details, accounts masked.
func writePayees(out io.Writer, payees []payout.Payee, format string) error {
	switch format {
	case "json":
		type payeeJSON struct {
			Program     string `json:"program"`
			AffiliateID string `json:"affiliate_id"`
			Name        string `json:"name"`
			IBAN        string `json:"iban,omitempty"`
			Account     string `json:"account,omitempty"`
			BIC         string `json:"bic,omitempty"`
		}
		doc := []payeeJSON{}
		for _, p := range payees {
			doc = append(doc, payeeJSON{p.Program, p.AffiliateID, p.Name, payout.Mask(p.IBAN), payout.Mask(p.Account), p.BIC})
		}
		return writeJSONDoc(out, doc)
	case "csv":
		w := csv.NewWriter(out)
		w.Write([]string{"program", "affiliate_id", "name", "iban", "account", "bic"})
		for _, p := range payees {
			w.Write([]string{p.Program, p.AffiliateID, p.Name, payout.Mask(p.IBAN), payout.Mask(p.Account), p.BIC})
		}
		w.Flush()
		return w.Error()
	}
	fmt.Fprintf(out, "%d payee(s)\n", len(payees))
	if len(payees) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROGRAM\tAFFILIATE\tNAME\tACCOUNT\tBIC")
	for _, p := range payees {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Program, p.AffiliateID, p.Name, p.MaskedAccount(), p.BIC)
	}
	return tw.Flush()
}

func newAffiliatesImportCmd(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import FILE.csv",
		Short: "Import payee details from CSV (program,affiliate_id,name,iban,bic[,account]); all or none",
		Long: `Imports payee details from a CSV file ("-": standard input) whose header names its columns:
program, affiliate_id, name, iban and bic, and optionally account (for an account number that is
not an IBAN; then iban is empty and bic is required). Each row sets (or replaces) an affiliate's
details in a program. Every row is checked first; when any is bad, each bad row is reported with
its line number and nothing is imported.`,
		Args: cobra.ExactArgs(1),
	}
	cf := addConfigFlags(cmd, storeFlags)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		in := s.in
		if args[0] != "-" {
			f, err := os.Open(args[0])
			if err != nil {
				return fmt.Errorf("affiliates import: %w", err)
			}
			defer f.Close()
			in = f
		}
		payees, problems, err := readPayeesCSV(in, args[0])
		if err != nil {
			return err
		}
		if len(problems) > 0 {
			for _, p := range problems {
				fmt.Fprintln(s.err, p)
			}
			fmt.Fprintf(s.err, "affiliates import: %d bad row(s) in %s: nothing imported\n", len(problems), args[0])
			return exitCode(1)
		}
		st, err := cf.openStore(cmd.Context())
		if err != nil {
			return err
		}
		defer st.Close()
		if err := st.SetPayees(cmd.Context(), payees, time.Now()); err != nil {
			return err
		}
		fmt.Fprintf(s.out, "imported the payee details of %d affiliate(s) from %s\n", len(payees), args[0])
		return nil
	}
	return cmd
}

// readPayeesCSV reads and checks payee details from CSV (name is the file's, for messages). It
// returns the payees, normalized, and the problems, one per bad row ("FILE:LINE: field: why"); an
// error when the file itself cannot be read as such a CSV (no header, unknown columns).
func readPayeesCSV(in io.Reader, name string) ([]payout.Payee, []string, error) {
	r := csv.NewReader(in)
	r.FieldsPerRecord = -1
	header, col, err := readPayeesHeader(r, name)
	if err != nil {
		return nil, nil, err
	}
	var (
		payees   []payout.Payee
		problems []string
		lineOf   = map[[2]string]int{}
	)
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				problems = append(problems, fmt.Sprintf("%s:%d: %v", name, pe.Line, pe.Err))
				continue
			}
			return nil, nil, fmt.Errorf("affiliates import: %s: %w", name, err)
		}
		if len(rec) != len(header) {
			problems = append(problems, fmt.Sprintf("%s:%d: %d fields, the header has %d", name, line, len(rec), len(header)))
			continue
		}
		p, err := payeeOfRecord(rec, col)
		if err != nil {
			var why []string
			for _, fe := range fieldErrors(err) {
				why = append(why, fmt.Sprintf("%s: %v", fe.Field, fe.Err))
			}
			problems = append(problems, fmt.Sprintf("%s:%d: %s", name, line, strings.Join(why, "; ")))
			continue
		}
		k := [2]string{p.Program, p.AffiliateID}
		if first, dup := lineOf[k]; dup {
			problems = append(problems, fmt.Sprintf("%s:%d: affiliate_id: %s of %s is on line %d already", name, line, p.AffiliateID, p.Program, first))
			continue
		}
		lineOf[k] = line
		payees = append(payees, p)
	}
	if len(payees) == 0 && len(problems) == 0 {
		return nil, nil, fmt.Errorf("affiliates import: %s has a header but no rows", name)
	}
	return payees, problems, nil
}

// readPayeesHeader reads the header of a payees CSV and checks its columns: each known, none
// twice, none of the required missing. It returns the header and the index of each column.
func readPayeesHeader(r *csv.Reader, name string) ([]string, map[string]int, error) {
	header, err := r.Read()
	if err == io.EOF {
		return nil, nil, fmt.Errorf("affiliates import: %s is empty: want a header program,affiliate_id,name,iban,bic", name)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("affiliates import: %s: %w", name, err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		switch h {
		case "program", "affiliate_id", "name", "iban", "bic", "account":
		default:
			return nil, nil, fmt.Errorf("affiliates import: %s:1: column %q is not one of program, affiliate_id, name, iban, bic, account", name, h)
		}
		if _, dup := col[h]; dup {
			return nil, nil, fmt.Errorf("affiliates import: %s:1: column %q appears twice", name, h)
		}
		col[h] = i
	}
	var missing []string
	for _, c := range []string{"program", "affiliate_id", "name", "bic"} {
		if _, ok := col[c]; !ok {
			missing = append(missing, c)
		}
	}
	_, hasIBAN := col["iban"]
	_, hasAccount := col["account"]
	if !hasIBAN && !hasAccount {
		missing = append(missing, "iban (or account)")
	}
	if len(missing) > 0 {
		return nil, nil, fmt.Errorf("affiliates import: %s:1: the header has no column %s: want program,affiliate_id,name,iban,bic", name, strings.Join(missing, ", "))
	}
	return header, col, nil
}

// payeeOfRecord is the normalized payee of a CSV row whose columns col indexes; an error of
// field errors when a field is invalid.
func payeeOfRecord(rec []string, col map[string]int) (payout.Payee, error) {
	field := func(c string) string {
		if i, ok := col[c]; ok {
			return rec[i]
		}
		return ""
	}
	return payout.Payee{Program: field("program"), AffiliateID: field("affiliate_id"),
		Party: payout.Party{Name: field("name"), IBAN: field("iban"), Account: field("account"), BIC: field("bic")}}.Normalize()
}
