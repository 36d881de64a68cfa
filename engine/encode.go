package engine

import (
	"errors"
	"strconv"
	"unicode/utf8"
)

// AppendJSON appends the decision as one JSON object, fields in a fixed order, so the same decision
// always encodes to the same bytes. A decision by a policy that reads affiliate.* inputs has an
// "affiliate" object with them (month, month_qualified_orders, month_qualified_sales), after
// "currency". With trace, every rule of the policy is listed with its
// expression and outcome ("pass"/"fail" for qualification, "match"/"no_match" for rates,
// "not_evaluated" for the rules after the first match or of a disqualified order).
func (d *Decision) AppendJSON(b []byte, trace bool) []byte {
	b = append(b, `{"order_id":`...)
	b = appendString(b, d.OrderID)
	b = append(b, `,"program":`...)
	b = appendString(b, d.Program)
	b = append(b, `,"policy_version":`...)
	b = strconv.AppendInt(b, int64(d.PolicyVersion), 10)
	b = append(b, `,"policy_digest":`...)
	b = appendString(b, d.PolicyDigest)
	b = append(b, `,"qualified":`...)
	b = strconv.AppendBool(b, d.Qualified)
	b = append(b, `,"failed_rules":[`...)
	for i, id := range d.FailedRules {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, id)
	}
	b = append(b, `],"rate_rule":`...)
	b = appendString(b, d.RateRule)
	b = append(b, `,"rate":"`...)
	b = d.Rate.Append(b, 'f')
	if d.hasFlat {
		b = append(b, `","flat":"`...)
		b = d.Flat.Append(b, 'f')
	}
	b = append(b, `","commission":"`...)
	b = d.Commission.Append(b, 'f')
	b = append(b, `","currency":`...)
	b = appendString(b, d.Currency.Code)
	if a := d.Affiliate; a != nil {
		// Only a policy that reads affiliate.* records them: other decisions encode as before.
		b = append(b, `,"affiliate":{"month":`...)
		b = appendString(b, a.Month)
		b = append(b, `,"month_qualified_orders":`...)
		b = strconv.AppendInt(b, a.QualifiedOrders, 10)
		b = append(b, `,"month_qualified_sales":"`...)
		b = a.QualifiedSales.Append(b, 'f')
		b = append(b, `"}`...)
	}
	if trace {
		b = d.appendTrace(b)
	}
	return append(b, '}')
}

// outcomes are every rule's outcome, in policy order: pass/fail (qualify), match/no_match (rate),
// or not_evaluated.
func (d *Decision) outcomes() (qualify, rates []string) {
	p := d.Policy
	qualify = make([]string, len(p.Qualify))
	rates = make([]string, len(p.Rates))
	for i := range qualify {
		qualify[i] = "not_evaluated"
	}
	for i := range rates {
		rates[i] = "not_evaluated"
	}
	for _, o := range d.Trace {
		switch {
		case o.Stage == StageQualify && o.Result:
			qualify[o.Index] = "pass"
		case o.Stage == StageQualify:
			qualify[o.Index] = "fail"
		case o.Result:
			rates[o.Index] = "match"
		default:
			rates[o.Index] = "no_match"
		}
	}
	return qualify, rates
}

func (d *Decision) appendTrace(b []byte) []byte {
	p := d.Policy
	qualify, rates := d.outcomes()
	b = append(b, `,"trace":[`...)
	n := 0
	entry := func(stage, id, expr, outcome string) {
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = append(b, `{"stage":"`...)
		b = append(b, stage...)
		b = append(b, `","rule":`...)
		b = appendString(b, id)
		b = append(b, `,"expr":`...)
		b = appendString(b, expr)
		b = append(b, `,"outcome":"`...)
		b = append(b, outcome...)
		b = append(b, `"}`...)
	}
	for i, r := range p.Qualify {
		entry("qualify", r.ID, r.Expr, qualify[i])
	}
	for i, r := range p.Rates {
		entry("rate", r.ID, r.When, rates[i])
	}
	return append(b, ']')
}

// AppendErrorJSON appends the line for an order that was not decided: its input line number
// (omitted when 0), its id when it could be read, the error, and for an invalid order each
// problem apart ("errors": [{"field", "message"}]).
func AppendErrorJSON(b []byte, line int, orderID string, err error) []byte {
	b = append(b, '{')
	if line > 0 {
		b = append(b, `"line":`...)
		b = strconv.AppendInt(b, int64(line), 10)
		b = append(b, ',')
	}
	if orderID != "" {
		b = append(b, `"order_id":`...)
		b = appendString(b, orderID)
		b = append(b, ',')
	}
	b = append(b, `"error":`...)
	b = appendString(b, err.Error())
	var ie *InputError
	if errors.As(err, &ie) && ie.Field != "" {
		b = append(b, `,"errors":[`...)
		for i, p := range ie.Problems() {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"field":`...)
			b = appendString(b, p.Field)
			b = append(b, `,"message":`...)
			b = appendString(b, p.Msg)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaping what JSON requires, and U+2028 and U+2029
// (JavaScript line separators). Invalid UTF-8 becomes U+FFFD. Rule expressions stay readable:
// <, > and & are not escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// AppendCompactTrace appends the decision's compact trace, as stored with it: [stage, rule,
// outcome] for every rule of the policy, in policy order; outcome is pass/fail (qualify),
// match/no_match (rate) or not_evaluated. The full trace (with expressions) is AppendJSON's.
func (d *Decision) AppendCompactTrace(b []byte) []byte {
	p := d.Policy
	q, r := d.outcomes()
	b = append(b, '[')
	n := 0
	entry := func(stage, id, outcome string) {
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = append(b, `["`...)
		b = append(b, stage...)
		b = append(b, `",`...)
		b = appendString(b, id)
		b = append(b, `,"`...)
		b = append(b, outcome...)
		b = append(b, `"]`...)
	}
	for i, rule := range p.Qualify {
		entry("qualify", rule.ID, q[i])
	}
	for i, rule := range p.Rates {
		entry("rate", rule.ID, r[i])
	}
	return append(b, ']')
}

// AppendStrings appends ss as a JSON array of strings.
func AppendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}
