package payout

import (
	"errors"
	"sort"
	"strings"
	"testing"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
)

// fields lists the fields an error names, sorted.
func fields(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var fe *FieldError
		if errors.As(err, &fe) {
			out = append(out, fe.Field)
		}
	}
	if err != nil {
		walk(err)
	}
	sort.Strings(out)
	return out
}

func TestPayeeNormalize(t *testing.T) {
	got, err := Payee{Program: " alibaba ", AffiliateID: "aff-1", Party: Party{Name: "  Ana Pérez ", IBAN: "de89 3704 0044 0532 0130 00", BIC: "deutdeff"}}.Normalize()
	want := Payee{Program: "alibaba", AffiliateID: "aff-1", Party: Party{Name: "Ana Pérez", IBAN: "DE89370400440532013000", BIC: "DEUTDEFF"}}
	if err != nil || got != want {
		t.Errorf("Normalize = %+v, %v; want %+v", got, err, want)
	}
	if got, err := (Payee{Program: "p", AffiliateID: "a", Party: Party{Name: "Bo", Account: "0001-234", BIC: "BOFAUS3N"}}).Normalize(); err != nil || got.Account != "0001234" {
		t.Errorf("an account with a BIC: got %+v, %v; want account 0001234", got, err)
	}

	for _, tc := range []struct {
		name   string
		payee  Payee
		fields string
		why    string
	}{
		{"no account", Payee{Program: "p", AffiliateID: "a", Party: Party{Name: "A"}}, "iban", "give an IBAN, or an account number"},
		{"both", Payee{Program: "p", AffiliateID: "a", Party: Party{Name: "A", IBAN: "DE89370400440532013000", Account: "1", BIC: "DEUTDEFF"}}, "account", "not both"},
		{"an account without a BIC", Payee{Program: "p", AffiliateID: "a", Party: Party{Name: "A", Account: "12345"}}, "bic", "paid with its bank's BIC"},
		{"a bad checksum", Payee{Program: "p", AffiliateID: "a", Party: Party{Name: "A", IBAN: "DE89370400440532013001"}}, "iban", "check digits do not match"},
		{"a bad BIC", Payee{Program: "p", AffiliateID: "a", Party: Party{Name: "A", IBAN: "DE89370400440532013000", BIC: "DEUT"}}, "bic", "4 characters"},
		{"a name with a line break", Payee{Program: "p", AffiliateID: "a", Party: Party{Name: "A\nB", IBAN: "DE89370400440532013000"}}, "name", "control character"},
		{"a name too long", Payee{Program: "p", AffiliateID: "a", Party: Party{Name: strings.Repeat("é", 141), IBAN: "DE89370400440532013000"}}, "name", "141 characters"},
		{"everything missing", Payee{}, "affiliate_id iban name program", "missing"},
	} {
		_, err := tc.payee.Normalize()
		if err == nil || strings.Join(fields(err), " ") != tc.fields || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%s: got %v (fields %v), want an error naming %s, saying %q", tc.name, err, fields(err), tc.fields, tc.why)
		}
	}

	// The debtor's fields are named by their configuration keys.
	_, err = Party{Name: "D", IBAN: "GB82WEST12345698765423"}.Normalize("payouts.debtor.")
	if got := fields(err); len(got) != 1 || got[0] != "payouts.debtor.iban" || strings.Contains(err.Error(), "GB82WEST12345698765423") {
		t.Errorf("a debtor's bad IBAN: got %v (fields %v), want payouts.debtor.iban, the IBAN masked", err, got)
	}
}

func TestHold(t *testing.T) {
	st := func(program, aff, method, total string, payable bool) engine.Statement {
		d, _, _ := apd.NewFromString(total)
		return engine.Statement{Program: program, AffiliateID: aff, Currency: "USD", Method: method, Total: *d, Payable: payable}
	}
	sts := []engine.Statement{
		st("alibaba", "aff-1", MethodWireTransfer, "10.00", true),  // known: paid
		st("alibaba", "aff-2", MethodWireTransfer, "20.00", true),  // unknown: held
		st("other", "aff-1", MethodWireTransfer, "30.00", true),    // known in alibaba only: held
		st("alibaba", "aff-3", "paypal", "40.00", true),            // another method: paid
		st("alibaba", "aff-4", MethodWireTransfer, "-5.00", false), // not payable anyway
	}
	sts[4].CarriedForward = "nothing owed: the balance is carried forward"
	known := func(program, aff string) bool { return program == "alibaba" && aff == "aff-1" }
	held := Hold(sts, known)
	if len(held) != 2 || held[0].AffiliateID != "aff-2" || held[1].Program != "other" {
		t.Fatalf("held %+v, want alibaba aff-2 and other aff-1", held)
	}
	for i, want := range []struct {
		payable bool
		why     string
	}{{true, ""}, {false, HeldReason}, {false, HeldReason}, {true, ""}, {false, "nothing owed: the balance is carried forward"}} {
		if sts[i].Payable != want.payable || sts[i].CarriedForward != want.why {
			t.Errorf("statement %d (%s %s %s): payable %t %q, want %t %q", i, sts[i].Program, sts[i].AffiliateID, sts[i].Method,
				sts[i].Payable, sts[i].CarriedForward, want.payable, want.why)
		}
	}
}
