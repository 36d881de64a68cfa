package engine

import (
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/rules"
)

// Status is an order's status.
type Status string

const (
	StatusPending   Status = "pending"
	StatusCompleted Status = "completed"
	StatusCancelled Status = "cancelled"
	StatusRefunded  Status = "refunded"
)

// Order is one validated order event. Only DecodeOrder makes one, so every Order the engine
// decides has passed validation.
type Order struct {
	OrderID        string
	Program        string
	AffiliateID    string
	Status         Status
	PlacedAt       time.Time
	CompletedAt    time.Time // zero when absent
	ClickAt        time.Time // zero when absent: no referral
	HasCompletedAt bool
	HasClick       bool
	Buyer          Buyer
	TrafficCountry string // "" when absent
	Currency       Currency
	Amount         apd.Decimal
	RefundedAmount apd.Decimal
	Items          []Item
	// Affiliate holds the affiliate.* inputs; see AffiliateMonth.
	Affiliate AffiliateMonth
}

// Buyer is the order's buyer.
type Buyer struct {
	ID          string
	Country     string
	New         bool
	SignupAt    time.Time // zero when absent
	HasSignupAt bool
}

// AffiliateMonth is what the order's affiliate sold in the order's month before it: the
// affiliate.* inputs of rules. It is never read from the order JSON: the lifecycle (DecideBatch)
// fills it from the stored history, a policy test from its "affiliate" givens.
type AffiliateMonth struct {
	Month           string // "2026-10": the UTC month of placed_at
	QualifiedOrders int64  // the affiliate's orders of the month and currency whose current decision qualifies, this one not counted
	QualifiedSales  apd.Decimal
}

// Item is one line of an order.
type Item struct {
	SKU      string
	Category string
	Amount   apd.Decimal
	Quantity int64
}

// InputError is an order that cannot be decided: malformed JSON, a missing or invalid field. It
// names the field (dotted, with list indexes: items[2].amount) and, when it could be read, the order.
type InputError struct {
	OrderID string
	Field   string // "" for a problem with the document as a whole
	Msg     string
}

func (e *InputError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// ErrInvalidOrder matches every *InputError with errors.Is.
var ErrInvalidOrder = errors.New("invalid order")

func (e *InputError) Is(target error) bool { return target == ErrInvalidOrder }

// decoder state for one order: which required fields were seen.
type orderFields struct {
	orderID, program, affiliate, status, placedAt, buyer, currency, amount bool
	buyerID, buyerCountry, buyerNew                                        bool
	amountText, refundedText                                               []byte
	refundedSet                                                            bool
	currencyCode                                                           string
	itemAmounts                                                            [][]byte
}

// DecodeOrder decodes and validates one order event (a JSON object). Unknown fields are ignored.
// Amounts are read exactly from decimal strings or JSON numbers, never through float64. Any
// problem comes back as an *InputError naming the field.
func DecodeOrder(data []byte) (*Order, error) {
	o := &Order{}
	var f orderFields
	s := scanner{b: data}
	fail := func(field string, err error) error {
		if ie, ok := err.(*InputError); ok {
			return ie
		}
		if err == errEOF || (err != nil && field == "") {
			return &InputError{OrderID: o.OrderID, Msg: "malformed JSON: " + err.Error()}
		}
		return &InputError{OrderID: o.OrderID, Field: field, Msg: err.Error()}
	}
	if s.peek() != '{' {
		if s.peek() == 0 {
			return nil, &InputError{Msg: "malformed JSON: empty input"}
		}
		if err := s.skip(); err != nil {
			return nil, fail("", err)
		}
		return nil, &InputError{Msg: "an order must be a JSON object"}
	}
	err := s.object(func(key string) error {
		var err error
		switch key {
		case "order_id":
			o.OrderID, err = s.str()
			f.orderID = true
		case "program":
			o.Program, err = s.str()
			f.program = true
		case "affiliate_id":
			o.AffiliateID, err = s.str()
			f.affiliate = true
		case "status":
			o.Status, err = s.status()
			f.status = true
		case "placed_at":
			o.PlacedAt, err = s.timestamp()
			f.placedAt = true
		case "completed_at":
			if !s.null() {
				o.CompletedAt, err = s.timestamp()
				o.HasCompletedAt = err == nil
			}
		case "click_at":
			if !s.null() {
				o.ClickAt, err = s.timestamp()
				o.HasClick = err == nil
			}
		case "buyer":
			f.buyer = true
			err = s.object(func(k string) error {
				var err error
				switch k {
				case "id":
					o.Buyer.ID, err = s.str()
					f.buyerID = true
				case "country":
					o.Buyer.Country, err = s.code(countries)
					f.buyerCountry = true
				case "new":
					o.Buyer.New, err = s.boolean()
					f.buyerNew = true
				case "signup_at":
					if !s.null() {
						o.Buyer.SignupAt, err = s.timestamp()
						o.Buyer.HasSignupAt = err == nil
					}
				default:
					return s.skip()
				}
				if err != nil && err != errEOF {
					return fail("buyer."+k, err)
				}
				return err
			})
		case "traffic_country":
			if !s.null() {
				o.TrafficCountry, err = s.code(countries)
			}
		case "currency":
			f.currencyCode, err = s.code(currencyCodes)
			f.currency = true
		case "amount":
			f.amountText, err = s.decimalText()
			f.amount = true
		case "refunded_amount":
			if !s.null() {
				f.refundedText, err = s.decimalText()
				f.refundedSet = true
			}
		case "items":
			// A repeated "items" replaces the earlier list, as encoding/json does.
			o.Items, f.itemAmounts = o.Items[:0], f.itemAmounts[:0]
			if s.null() {
				o.Items, f.itemAmounts = nil, nil
				return nil
			}
			if o.Items == nil {
				o.Items = make([]Item, 0, 4) // most orders have a few items: one allocation
				f.itemAmounts = make([][]byte, 0, 4)
			}
			err = s.array(func() error {
				i := len(o.Items)
				if i >= rules.MaxItems {
					return fail("items", fmt.Errorf("more than %d items", rules.MaxItems))
				}
				o.Items = append(o.Items, Item{})
				f.itemAmounts = append(f.itemAmounts, nil)
				it := &o.Items[i]
				seenQty := false
				err := s.object(func(k string) error {
					var err error
					switch k {
					case "sku":
						it.SKU, err = s.str()
					case "category":
						it.Category, err = s.str()
					case "amount":
						f.itemAmounts[i], err = s.decimalText()
					case "quantity":
						it.Quantity, err = s.wholeNumber()
						seenQty = true
					default:
						return s.skip()
					}
					if err != nil && err != errEOF {
						return fail(fmt.Sprintf("items[%d].%s", i, k), err)
					}
					return err
				})
				if err == errNotObject {
					return fail(fmt.Sprintf("items[%d]", i), err)
				}
				if err == nil && !seenQty {
					it.Quantity = 1
				}
				return err
			})
		default:
			return s.skip()
		}
		if err != nil && err != errEOF {
			return fail(key, err)
		}
		return err
	})
	if err != nil {
		return nil, fail("", err)
	}
	if s.peek() != 0 {
		return nil, fail("", s.syntax("data after the order object"))
	}
	if err := o.validate(&f); err != nil {
		return nil, err
	}
	return o, nil
}

// timestamp reads an RFC 3339 string into a UTC time.
func (s *scanner) timestamp() (time.Time, error) {
	b, err := s.strBytes()
	if err != nil {
		return time.Time{}, err
	}
	// The string is only parsed, never kept (a parse error keeps it, but that error is dropped
	// here for one that copies it), so it can share the input's bytes instead of copying them.
	t, err := time.Parse(time.RFC3339Nano, unsafe.String(unsafe.SliceData(b), len(b)))
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 timestamp (2025-03-01T12:00:00Z)", b)
	}
	// Rules subtract timestamps: keep every difference inside a CEL duration (±292 years).
	if y := t.UTC().Year(); y < minYear || y > maxYear {
		return time.Time{}, fmt.Errorf("%q is outside the years %d to %d", b, minYear, maxYear)
	}
	return t.UTC(), nil
}

// The years an order's timestamps may fall in.
const (
	minYear = 1970
	maxYear = 2199
)

// status reads an order status; the known ones come back as constants, with no allocation.
func (s *scanner) status() (Status, error) {
	b, err := s.strBytes()
	if err != nil {
		return "", err
	}
	switch Status(b) {
	case StatusPending:
		return StatusPending, nil
	case StatusCompleted:
		return StatusCompleted, nil
	case StatusCancelled:
		return StatusCancelled, nil
	case StatusRefunded:
		return StatusRefunded, nil
	}
	return Status(b), nil
}

// code reads a country or currency code; a known code comes back as the table's own string,
// with no allocation.
func (s *scanner) code(known map[string]string) (string, error) {
	b, err := s.strBytes()
	if err != nil {
		return "", err
	}
	if c, ok := known[string(b)]; ok {
		return c, nil
	}
	return string(b), nil
}

// decimalText reads an amount: a decimal string or a JSON number, as its exact text.
func (s *scanner) decimalText() ([]byte, error) {
	switch c := s.peek(); {
	case c == '"':
		v, err := s.strBytes()
		if err != nil {
			return nil, err
		}
		inner := scanner{b: v}
		num, err := inner.number()
		if err != nil || len(num) != len(v) { // the whole string, no spaces around it
			return nil, fmt.Errorf("%q is not a decimal number", v)
		}
		return num, nil
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case c == 0:
		return nil, errEOF
	}
	if err := s.skip(); err != nil {
		return nil, err
	}
	return nil, errors.New("must be a decimal string such as \"12.50\"")
}

// wholeNumber reads a JSON integer.
func (s *scanner) wholeNumber() (int64, error) {
	num, err := s.number()
	if err != nil {
		if s.i < len(s.b) && s.b[s.i] != '-' && (s.b[s.i] < '0' || s.b[s.i] > '9') {
			s.skip()
			return 0, errors.New("must be a whole number")
		}
		return 0, err
	}
	var n int64
	for i, c := range num {
		if c == '-' && i == 0 {
			continue
		}
		if c < '0' || c > '9' || n > (1<<62)/10 {
			return 0, fmt.Errorf("%s is not a whole number", num)
		}
		n = n*10 + int64(c-'0')
	}
	if num[0] == '-' {
		n = -n
	}
	return n, nil
}

func (o *Order) validate(f *orderFields) error {
	bad := func(field, format string, args ...any) error {
		return &InputError{OrderID: o.OrderID, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	required := []struct {
		seen  bool
		empty bool
		name  string
	}{
		{f.orderID, o.OrderID == "", "order_id"},
		{f.program, o.Program == "", "program"},
		{f.affiliate, o.AffiliateID == "", "affiliate_id"},
		{f.status, o.Status == "", "status"},
		{f.placedAt, false, "placed_at"},
		{f.buyer, false, "buyer"},
		{f.currency, f.currencyCode == "", "currency"},
		{f.amount, false, "amount"},
	}
	for _, r := range required {
		if !r.seen {
			return bad(r.name, "required")
		}
		if r.empty {
			return bad(r.name, "must not be empty")
		}
	}
	for _, s := range []struct{ name, v string }{
		{"order_id", o.OrderID}, {"program", o.Program}, {"affiliate_id", o.AffiliateID}, {"buyer.id", o.Buyer.ID},
	} {
		if len(s.v) > rules.MaxStringLen {
			return bad(s.name, "longer than %d bytes", rules.MaxStringLen)
		}
	}
	switch o.Status {
	case StatusPending, StatusCompleted, StatusCancelled, StatusRefunded:
	default:
		return bad("status", "%q is not one of pending, completed, cancelled, refunded", string(o.Status))
	}
	if !f.buyerID || o.Buyer.ID == "" {
		return bad("buyer.id", "required")
	}
	if !f.buyerCountry {
		return bad("buyer.country", "required")
	}
	if !KnownCountry(o.Buyer.Country) {
		return bad("buyer.country", "%q is not an ISO 3166-1 alpha-2 country code", o.Buyer.Country)
	}
	if !f.buyerNew {
		return bad("buyer.new", "required (true for the buyer's first paid order)")
	}
	if o.TrafficCountry != "" && !KnownCountry(o.TrafficCountry) {
		return bad("traffic_country", "%q is not an ISO 3166-1 alpha-2 country code", o.TrafficCountry)
	}
	cur, ok := LookupCurrency(f.currencyCode)
	if !ok {
		return bad("currency", "%q is not an ISO 4217 currency code", f.currencyCode)
	}
	o.Currency = cur
	if err := o.Currency.parseAmount(&o.Amount, f.amountText); err != nil {
		return bad("amount", "%v", err)
	}
	if f.refundedSet {
		if err := o.Currency.parseAmount(&o.RefundedAmount, f.refundedText); err != nil {
			return bad("refunded_amount", "%v", err)
		}
		if o.RefundedAmount.Cmp(&o.Amount) > 0 {
			return bad("refunded_amount", "%s is more than the amount %s", o.RefundedAmount.Text('f'), o.Amount.Text('f'))
		}
	}
	for i := range o.Items {
		it := &o.Items[i]
		if it.SKU == "" {
			return bad(fmt.Sprintf("items[%d].sku", i), "required")
		}
		if len(it.SKU) > rules.MaxStringLen || len(it.Category) > rules.MaxStringLen {
			return bad(fmt.Sprintf("items[%d]", i), "sku and category must be at most %d bytes", rules.MaxStringLen)
		}
		if it.Quantity < 1 {
			return bad(fmt.Sprintf("items[%d].quantity", i), "must be at least 1")
		}
		if f.itemAmounts[i] != nil {
			if err := o.Currency.parseAmount(&it.Amount, f.itemAmounts[i]); err != nil {
				return bad(fmt.Sprintf("items[%d].amount", i), "%v", err)
			}
		}
	}
	return nil
}

// parseAmount parses an exact, non-negative amount with no more decimals than the currency has.
func (c Currency) parseAmount(d *apd.Decimal, text []byte) error {
	if !setPlainDecimal(d, text) {
		if _, _, err := d.SetString(string(text)); err != nil || d.Form != apd.Finite {
			return fmt.Errorf("%q is not a decimal number", text)
		}
	}
	if d.Negative && !d.IsZero() {
		return fmt.Errorf("%s is negative; amounts are ≥ 0", text)
	}
	d.Negative = false
	if d.Exponent < -c.MinorUnits {
		// More digits than the currency has: allowed only when they are zeros (12.500 USD).
		var q apd.Decimal
		if _, err := exact.Quantize(&q, d, -c.MinorUnits); err != nil || q.Cmp(d) != 0 {
			return fmt.Errorf("%s has more decimal places than %s allows (%d)", text, c.Code, c.MinorUnits)
		}
		d.Set(&q)
	}
	if d.NumDigits() > 40 {
		return fmt.Errorf("%s is too large", text)
	}
	return nil
}

// setPlainDecimal sets d from text written as -?digits[.digits] with at most 18 digits (most
// amounts), giving exactly what apd's SetString gives, without converting text to a string.
// It reports false, leaving d alone, for anything else, which SetString then reads.
func setPlainDecimal(d *apd.Decimal, text []byte) bool {
	i, neg := 0, false
	if len(text) > 0 && text[0] == '-' {
		i, neg = 1, true
	}
	var coeff int64
	digits, frac, point := 0, 0, false
	for ; i < len(text); i++ {
		switch c := text[i]; {
		case c >= '0' && c <= '9':
			coeff = coeff*10 + int64(c-'0')
			digits++
			if point {
				frac++
			}
		case c == '.' && !point && digits > 0:
			point = true
		default:
			return false
		}
	}
	if digits == 0 || digits > 18 || (point && frac == 0) {
		return false
	}
	d.SetFinite(coeff, -int32(frac))
	d.Negative = neg
	return true
}

// Vars returns the facts rules read about the order.
func (o *Order) Vars() *rules.Vars {
	v := &rules.Vars{}
	o.fillVars(v)
	return v
}

func (o *Order) fillVars(v *rules.Vars) {
	*v = rules.Vars{
		OrderID: o.OrderID, Program: o.Program, AffiliateID: o.AffiliateID, Status: string(o.Status),
		PlacedAt: o.PlacedAt, CompletedAt: o.CompletedAt, HasCompletedAt: o.HasCompletedAt,
		ClickAt: o.ClickAt, HasClick: o.HasClick,
		BuyerID: o.Buyer.ID, BuyerCountry: o.Buyer.Country, BuyerNew: o.Buyer.New,
		BuyerSignupAt: o.Buyer.SignupAt, HasBuyerSignupAt: o.Buyer.HasSignupAt,
		MonthQualifiedOrders: o.Affiliate.QualifiedOrders, MonthQualifiedSales: &o.Affiliate.QualifiedSales,
		TrafficCountry: o.TrafficCountry, Currency: o.Currency.Code,
		Amount: &o.Amount, RefundedAmount: &o.RefundedAmount,
		Items: v.Items[:0],
	}
	for i := range o.Items {
		it := &o.Items[i]
		v.Items = append(v.Items, rules.Item{SKU: it.SKU, Category: it.Category, Quantity: it.Quantity, Amount: &it.Amount})
	}
}
