package engine

import "strings"

// Currency is an ISO 4217 currency with its minor units (the digits after the decimal point).
type Currency struct {
	Code       string
	MinorUnits int32
}

// currencies lists the active ISO 4217 codes by minor units (ISO 4217 amendment list, 2025).
var currencies = func() map[string]Currency {
	byUnits := map[int32]string{
		0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
		2: "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD " +
			"CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS " +
			"GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL " +
			"MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK " +
			"PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS " +
			"TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG",
		3: "BHD IQD JOD KWD LYD OMR TND",
		4: "CLF UYW",
	}
	m := map[string]Currency{}
	for units, codes := range byUnits {
		for _, c := range strings.Fields(codes) {
			m[c] = Currency{Code: c, MinorUnits: units}
		}
	}
	return m
}()

// LookupCurrency returns the ISO 4217 currency with that code.
func LookupCurrency(code string) (Currency, bool) {
	c, ok := currencies[code]
	return c, ok
}

// countries is the set of ISO 3166-1 alpha-2 codes, officially assigned.
var countries = func() map[string]string {
	const codes = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS " +
		"BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH " +
		"ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU " +
		"ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU " +
		"LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP " +
		"NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK " +
		"SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA " +
		"VC VE VG VI VN VU WF WS YE YT ZA ZM ZW"
	m := map[string]string{} // code -> the same code, so the decoder can reuse the table's strings
	for _, c := range strings.Fields(codes) {
		m[c] = c
	}
	return m
}()

// currencyCodes maps each known currency code to itself, for the decoder.
var currencyCodes = func() map[string]string {
	m := make(map[string]string, len(currencies))
	for c := range currencies {
		m[c] = c
	}
	return m
}()

// KnownCountry reports whether code is an assigned ISO 3166-1 alpha-2 code.
func KnownCountry(code string) bool { _, ok := countries[code]; return ok }
