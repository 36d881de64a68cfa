package payout

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/commissioner/commissioner/engine"
)

// MethodWireTransfer is the payout method (rules.Payout.Method) paid by bank transfer: its
// statements need the affiliate's payee details, and go into the bank file.
const MethodWireTransfer = "wire_transfer"

// Party is a bank account and its holder: an affiliate's (a Payee) or the account a program
// pays from (the debtor). An account is an IBAN, or an account number of a country without
// IBANs with the bank's BIC.
type Party struct {
	Name    string // the account holder, as the bank knows them (1-140 characters)
	IBAN    string // electronic form (no spaces); "" when Account is given
	Account string // a non-IBAN account number; "" when IBAN is given
	BIC     string // the bank's BIC; required with Account, optional with an IBAN
}

// Payee is where an affiliate of a program is paid. Payee details are per program: an affiliate
// may be paid to different accounts by different programs.
type Payee struct {
	Program     string
	AffiliateID string
	Party
}

// FieldError is an invalid field of a payee or debtor; Field names it as the user gave it
// ("iban", "payouts.debtor.bic").
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

func (e *FieldError) Unwrap() error { return e.Err }

// ErrMissing: a required field is empty.
var ErrMissing = errors.New("missing")

// Normalize checks a party's fields and returns them in their canonical form (IBAN and account
// without spaces, upper case; BIC upper case; name trimmed). Each problem is a *FieldError whose
// field is prefix + the field's name ("name", "iban", "account", "bic"); all are returned,
// joined. Account numbers in errors are masked.
func (p Party) Normalize(prefix string) (Party, error) {
	var errs []error
	bad := func(field string, err error) { errs = append(errs, &FieldError{Field: prefix + field, Err: err}) }
	out := Party{Name: strings.TrimSpace(p.Name)}
	if err := checkName(out.Name); err != nil {
		bad("name", err)
	}
	iban, account := strings.TrimSpace(p.IBAN), strings.TrimSpace(p.Account)
	switch {
	case iban != "" && account != "":
		bad("account", errors.New("give an IBAN or an account number, not both"))
	case iban == "" && account == "":
		bad("iban", fmt.Errorf("%w: give an IBAN, or an account number (account) with the bank's BIC", ErrMissing))
	case iban != "":
		var err error
		if out.IBAN, err = NormalizeIBAN(iban); err != nil {
			bad("iban", err)
		}
	default:
		var err error
		if out.Account, err = NormalizeAccount(account); err != nil {
			bad("account", err)
		}
	}
	switch bic := strings.TrimSpace(p.BIC); {
	case bic != "":
		var err error
		if out.BIC, err = NormalizeBIC(bic); err != nil {
			bad("bic", err)
		}
	case account != "":
		bad("bic", fmt.Errorf("%w: an account number that is not an IBAN is paid with its bank's BIC", ErrMissing))
	}
	return out, errors.Join(errs...)
}

// Normalize checks a payee (Party.Normalize, and its program and affiliate) and returns it in
// canonical form. Fields are named as in the CSV import: program, affiliate_id, name, iban,
// account, bic.
func (p Payee) Normalize() (Payee, error) {
	var errs []error
	out := Payee{Program: strings.TrimSpace(p.Program), AffiliateID: strings.TrimSpace(p.AffiliateID)}
	if out.Program == "" {
		errs = append(errs, &FieldError{Field: "program", Err: ErrMissing})
	}
	if out.AffiliateID == "" {
		errs = append(errs, &FieldError{Field: "affiliate_id", Err: ErrMissing})
	}
	party, err := p.Party.Normalize("")
	out.Party = party
	return out, errors.Join(append(errs, err)...)
}

// checkName accepts what ISO 20022's Max140Text holds and a bank can print: 1 to 140
// characters of valid UTF-8, no control characters.
func checkName(name string) error {
	switch {
	case name == "":
		return ErrMissing
	case !utf8.ValidString(name):
		return errors.New("not valid UTF-8")
	case utf8.RuneCountInString(name) > 140:
		return fmt.Errorf("%d characters, at most 140", utf8.RuneCountInString(name))
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("holds the control character %q", r)
		}
	}
	return nil
}

// MaskedAccount is the party's account as tables and logs show it: the IBAN or account number
// with all but its last four characters hidden.
func (p Party) MaskedAccount() string {
	if p.IBAN != "" {
		return Mask(p.IBAN)
	}
	return Mask(p.Account)
}

// HeldReason is the CarriedForward of a statement Hold held.
const HeldReason = "held: no payee details"

// Hold keeps wire-transfer statements from being paid to an affiliate whose payee details are
// unknown (known says whether the program has them for the affiliate): each such payable
// statement becomes unpayable, carried forward with HeldReason, and is returned (a copy) in
// the order given. Its entries stay unpaid and are paid with the first statement after the
// details are set. Statements paid by another method, and those not payable anyway, are left as
// they are.
func Hold(sts []engine.Statement, known func(program, affiliateID string) bool) []engine.Statement {
	var held []engine.Statement
	for i := range sts {
		st := &sts[i]
		if !st.Payable || st.Method != MethodWireTransfer || known(st.Program, st.AffiliateID) {
			continue
		}
		st.Payable, st.CarriedForward = false, HeldReason
		held = append(held, *st)
	}
	return held
}
