package payout

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/commissioner/commissioner/engine"
)

// Errors of bank account details; each error that wraps one names the field and what is wrong,
// with the account number masked (Mask).
var (
	ErrInvalidIBAN    = errors.New("invalid IBAN")
	ErrInvalidBIC     = errors.New("invalid BIC")
	ErrInvalidAccount = errors.New("invalid account number")
)

// ibanLengths is the length of the IBAN of each country that issues them (SWIFT's IBAN registry,
// release 2024/2025): an IBAN of another country, or of another length, is refused.
var ibanLengths = map[string]int{
	"AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
	"BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
	"EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
	"GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
	"IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
	"LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "MZ": 25,
	"NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24,
	"RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23,
	"ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}

// compact drops the spaces (and hyphens) people write account numbers with, and upper-cases.
func compact(s string) string {
	return strings.ToUpper(strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' || r == '\t' {
			return -1
		}
		return r
	}, s))
}

// NormalizeIBAN returns an IBAN in its electronic form (no spaces, upper case) when it is one:
// a country that issues IBANs, that country's length, letters and digits only, and check digits
// that pass ISO 13616's mod-97 test (ISO 7064 MOD 97-10). The error matches ErrInvalidIBAN and
// shows only the last four characters.
func NormalizeIBAN(s string) (string, error) {
	iban := compact(s)
	fail := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("%w %s: %s", ErrInvalidIBAN, Mask(iban), fmt.Sprintf(format, args...))
	}
	if iban == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidIBAN)
	}
	if i, c, bad := firstNotAlnum(iban); bad {
		return fail("character %d (%q) is not a letter or digit", i, c)
	}
	if len(iban) < 4 {
		return fail("%d characters is too short", len(iban))
	}
	country := iban[:2]
	want, ok := ibanLengths[country]
	if !ok {
		return fail("%q is not a country that issues IBANs (give the account with its BIC instead)", country)
	}
	if len(iban) != want {
		return fail("%d characters, a %s IBAN has %d", len(iban), country, want)
	}
	if iban[2] < '0' || iban[2] > '9' || iban[3] < '0' || iban[3] > '9' {
		return fail("the check digits (characters 3 and 4) are not digits")
	}
	if r := mod97(iban[4:] + iban[:4]); r != 1 {
		return fail("the check digits do not match (ISO 13616 mod 97 gives %d, not 1): a typing error?", r)
	}
	return iban, nil
}

// mod97 is the remainder modulo 97 of s read as a number, each letter standing for two digits
// (A = 10 … Z = 35).
func mod97(s string) int {
	r := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			v := int(c-'A') + 10
			r = (r*100 + v) % 97
		} else {
			r = (r*10 + int(c-'0')) % 97
		}
	}
	return r
}

// NormalizeBIC returns a BIC (ISO 9362, the BICFI of ISO 20022) in upper case when it is one:
// 8 or 11 characters — a 4-character party prefix (letters or digits), a 2-letter ISO 3166
// country code, a 2-character location and an optional 3-character branch (letters or digits).
// The error matches ErrInvalidBIC.
func NormalizeBIC(s string) (string, error) {
	bic := strings.ToUpper(strings.TrimSpace(s))
	fail := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("%w %q: %s", ErrInvalidBIC, bic, fmt.Sprintf(format, args...))
	}
	if bic == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidBIC)
	}
	if n := utf8.RuneCountInString(bic); n != 8 && n != 11 {
		return fail("%d characters, a BIC has 8 or 11", n)
	}
	if i, c, bad := firstNotAlnum(bic); bad {
		return fail("character %d (%q) is not a letter or digit", i, c)
	}
	for _, c := range bic[4:6] {
		if c < 'A' || c > 'Z' {
			return fail("characters 5-6 are the country code: %q is not a letter", c)
		}
	}
	// XK (Kosovo) is used by SWIFT though not assigned by ISO 3166.
	if country := bic[4:6]; !engine.KnownCountry(country) && country != "XK" {
		return fail("%q (characters 5-6) is not an ISO 3166 country code", country)
	}
	return bic, nil
}

// NormalizeAccount returns an account number that is not an IBAN (a US or Japanese account, say):
// spaces and hyphens dropped, 1 to 34 letters and digits (ISO 20022's Max34Text, as banks take
// it). It cannot be checked further: such an account is paid with its BIC. The error matches
// ErrInvalidAccount.
func NormalizeAccount(s string) (string, error) {
	acct := compact(s)
	if acct == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidAccount)
	}
	if n := utf8.RuneCountInString(acct); n > 34 {
		return "", fmt.Errorf("%w %s: %d characters, at most 34", ErrInvalidAccount, Mask(acct), n)
	}
	if i, c, bad := firstNotAlnum(acct); bad {
		return "", fmt.Errorf("%w %s: character %d (%q) is not a letter or digit", ErrInvalidAccount, Mask(acct), i, c)
	}
	return acct, nil
}

// firstNotAlnum returns the position (from 1) of the first character of s that is not an ASCII
// upper-case letter or digit.
func firstNotAlnum(s string) (int, rune, bool) {
	i := 0
	for _, c := range s {
		i++
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return i, c, true
		}
	}
	return 0, 0, false
}

// Mask hides all of an account number but its last four characters (spaces and hyphens
// dropped): what tables, logs and error messages show of it ("****3000"). Four characters or
// fewer are hidden entirely.
func Mask(account string) string {
	if account == "" {
		return ""
	}
	r := []rune(compact(account))
	if len(r) <= 4 {
		return "****"
	}
	return "****" + string(r[len(r)-4:])
}
