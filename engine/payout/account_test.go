package payout

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeIBAN(t *testing.T) {
	valid := []struct{ in, want string }{
		{"DE89370400440532013000", "DE89370400440532013000"},
		{"DE89 3704 0044 0532 0130 00", "DE89370400440532013000"}, // the printed form
		{"gb82 west 1234 5698 7654 32", "GB82WEST12345698765432"},
		{"FR14 2004 1010 0505 0001 3M02 606", "FR1420041010050500013M02606"},
		{"NL91ABNA0417164300", "NL91ABNA0417164300"},
		{"BE68539007547034", "BE68539007547034"}, // the shortest but one (16)
		{"NO9386011117947", "NO9386011117947"},   // the shortest (15)
		{"CH93-0076-2011-6238-5295-7", "CH9300762011623852957"},
		{"MT84MALT011000012345MTLCAST001S", "MT84MALT011000012345MTLCAST001S"},
		{"LC55HEMM000100010012001200023015", "LC55HEMM000100010012001200023015"}, // the longest (32)
		{"SA0380000000608010167519", "SA0380000000608010167519"},
		{"JO94CBJO0010000000000131000302", "JO94CBJO0010000000000131000302"},
	}
	for _, tc := range valid {
		got, err := NormalizeIBAN(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("NormalizeIBAN(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	invalid := []struct{ in, why string }{
		{"", "empty"},
		{"DE89370400440532013001", "check digits do not match"}, // last digit mistyped
		{"GB82WEST12345698765423", "check digits do not match"}, // two digits swapped
		{"DE00370400440532013000", "check digits do not match"}, // check digits 00
		{"DE8937040044053201300", "21 characters, a DE IBAN has 22"},
		{"DE893704004405320130000", "23 characters, a DE IBAN has 22"},
		{"US64SVBKUS6S3300958879", `"US" is not a country that issues IBANs`},
		{"XX89370400440532013000", `"XX" is not a country that issues IBANs`},
		{"DEAB370400440532013000", "check digits (characters 3 and 4) are not digits"},
		{"DE89.370400440532013000", `character 5 ('.') is not a letter or digit`},
		{"DE8937040044053201300é", "is not a letter or digit"},
		{"DE8", "too short"},
	}
	for _, tc := range invalid {
		got, err := NormalizeIBAN(tc.in)
		if err == nil || !errors.Is(err, ErrInvalidIBAN) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("NormalizeIBAN(%q) = %q, %v; want an error matching ErrInvalidIBAN saying %q", tc.in, got, err, tc.why)
			continue
		}
		// The error never shows the account in full.
		if c := compact(tc.in); len(c) > 4 && strings.Contains(err.Error(), c) {
			t.Errorf("NormalizeIBAN(%q): the error %q shows the account in full", tc.in, err)
		}
	}
}

func TestNormalizeBIC(t *testing.T) {
	valid := []struct{ in, want string }{
		{"DEUTDEFF", "DEUTDEFF"},
		{"deutdeff500", "DEUTDEFF500"},
		{" NWBKGB2L ", "NWBKGB2L"},
		{"BOFAUS3N", "BOFAUS3N"},
		{"MUFGJPJT", "MUFGJPJT"},
		{"1234DEFFXXX", "1234DEFFXXX"}, // ISO 9362:2014: the party prefix may hold digits
		{"RBKOXKPR", "RBKOXKPR"},       // Kosovo: XK
	}
	for _, tc := range valid {
		got, err := NormalizeBIC(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("NormalizeBIC(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	invalid := []struct{ in, why string }{
		{"", "empty"},
		{"DEUTDEF", "7 characters, a BIC has 8 or 11"},
		{"DEUTDEFF5000", "12 characters"},
		{"DEUTDEFF50", "10 characters"},
		{"DEUT12FF", "characters 5-6 are the country code: '1' is not a letter"},
		{"DEUTZZFF", `"ZZ" (characters 5-6) is not an ISO 3166 country code`},
		{"DEUT-EFF", "character 5 ('-') is not a letter or digit"},
		{"DEUTDEFF_50", "character 9 ('_')"},
	}
	for _, tc := range invalid {
		got, err := NormalizeBIC(tc.in)
		if err == nil || !errors.Is(err, ErrInvalidBIC) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("NormalizeBIC(%q) = %q, %v; want an error matching ErrInvalidBIC saying %q", tc.in, got, err, tc.why)
		}
	}
}

func TestNormalizeAccount(t *testing.T) {
	for _, tc := range []struct{ in, want, why string }{
		{"000123456789", "000123456789", ""},
		{"1234-5678 90", "1234567890", ""},
		{"", "", "empty"},
		{"12345678901234567890123456789012345", "", "35 characters, at most 34"},
		{"1234/5678", "", "character 5 ('/') is not a letter or digit"},
	} {
		got, err := NormalizeAccount(tc.in)
		if tc.why == "" {
			if err != nil || got != tc.want {
				t.Errorf("NormalizeAccount(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrInvalidAccount) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("NormalizeAccount(%q) = %q, %v; want an error saying %q", tc.in, got, err, tc.why)
		}
	}
}

func TestMask(t *testing.T) {
	for in, want := range map[string]string{
		"DE89370400440532013000":      "****3000",
		"12345":                       "****2345",
		"GB29 NWBK 6016 1331 9268 19": "****6819",
		"1234":                        "****",
		"":                            "",
	} {
		if got := Mask(in); got != want {
			t.Errorf("Mask(%q) = %q, want %q", in, got, want)
		}
	}
}
