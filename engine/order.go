package engine

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
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
	EventID        string // the publisher's idempotency key for this event; "" when it gave none
	Status         Status
	PlacedAt       time.Time
	UpdatedAt      time.Time // when the publisher's order changed to this event; zero when absent; never read by rules
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

// InputError is an order that cannot be decided: malformed JSON, missing or invalid fields. It
// names the field (dotted, with list indexes: items[2].amount) and, when it could be read, the
// order. Every problem of the event is reported at once: Field and Msg are the first, More the
// others, in the order they were found.
type InputError struct {
	OrderID string
	Field   string // "" for a problem with the document as a whole
	Msg     string
	More    []FieldError
}

// FieldError is one problem with one field of an order event.
type FieldError struct {
	Field string
	Msg   string
}

func (e FieldError) String() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// Problems returns every problem of the event, the first one first.
func (e *InputError) Problems() []FieldError {
	return append([]FieldError{{e.Field, e.Msg}}, e.More...)
}

func (e *InputError) Error() string {
	first := FieldError{e.Field, e.Msg}.String()
	if len(e.More) == 0 {
		return first
	}
	var b strings.Builder
	b.WriteString(first)
	for _, m := range e.More {
		b.WriteString("; ")
		b.WriteString(m.String())
	}
	return b.String()
}

// ErrInvalidOrder matches every *InputError with errors.Is.
var ErrInvalidOrder = errors.New("invalid order")

func (e *InputError) Is(target error) bool { return target == ErrInvalidOrder }

// decoder state for one order: which required fields were seen, and the problems found.
type orderFields struct {
	orderID, program, affiliate, status, placedAt, buyer, currency, amount bool
	buyerID, buyerCountry, buyerNew, eventID                               bool
	amountText, refundedText                                               []byte
	refundedSet                                                            bool
	currencyCode                                                           string
	itemAmounts                                                            [][]byte
	problems                                                               []FieldError
}

// add records a problem with field.
func (f *orderFields) add(field, format string, args ...any) {
	f.problems = append(f.problems, FieldError{field, fmt.Sprintf(format, args...)})
}

// has reports whether a problem was recorded for field or a field inside it (buyer for
// buyer.id, items[2] for items[2].amount), so that validation does not report it twice.
func (f *orderFields) has(field string) bool {
	for _, p := range f.problems {
		if p.Field == field || (strings.HasPrefix(p.Field, field) && len(p.Field) > len(field) &&
			(p.Field[len(field)] == '.' || p.Field[len(field)] == '[')) {
			return true
		}
	}
	return false
}

// hasExactly reports whether a problem was recorded for field itself.
func (f *orderFields) hasExactly(field string) bool {
	for _, p := range f.problems {
		if p.Field == field {
			return true
		}
	}
	return false
}

// value settles the reading of field's value, which started at offset start: a value of the wrong
// type or shape is recorded as the field's problem and stepped over, so the decoder goes on to
// report the event's other problems; input that is not JSON ends the decoding (the error is
// returned).
func (f *orderFields) value(s *scanner, field string, start int, err error) error {
	if _, ok := err.(*InputError); err == nil || err == errEOF || ok {
		return err
	}
	if malformed(err) { // a bad string or number: named for its field, and the end of decoding
		return &InputError{Field: field, Msg: err.Error()}
	}
	if c := s.peek(); c != ',' && c != '}' && c != ']' { // the value was not consumed
		s.i = start
		if err := s.skip(); err != nil {
			return err
		}
	}
	f.add(field, "%s", err.Error())
	return nil
}

// DecodeOrder decodes and validates one order event (a JSON object). Unknown fields are ignored.
// Amounts are read exactly from decimal strings or JSON numbers in plain notation, never through
// float64. Problems come back as one *InputError naming every field at fault.
//
// It is long on purpose: one switch over the order schema's top-level fields, kept together
// for the allocation-free fast path (BenchmarkDecode, checked against encoding/json by the fuzz
// test); the nested objects have their own readers (readBuyer, readItems, item).
func DecodeOrder(data []byte) (*Order, error) {
	o := &Order{}
	var f orderFields
	s := scanner{b: data}
	if s.peek() != '{' {
		if s.peek() == 0 {
			return nil, &InputError{Msg: "malformed JSON: empty input"}
		}
		if err := s.skip(); err != nil {
			return nil, &InputError{Msg: "malformed JSON: " + err.Error()}
		}
		return nil, &InputError{Msg: "an order must be a JSON object"}
	}
	err := s.object(func(key string) error {
		start := s.i
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
		case "event_id":
			if !s.null() {
				o.EventID, err = s.str()
				f.eventID = true
			}
		case "status":
			o.Status, err = s.status()
			f.status = true
		case "placed_at":
			o.PlacedAt, err = s.timestamp()
			f.placedAt = true
		case "updated_at":
			if !s.null() {
				o.UpdatedAt, err = s.timestamp()
			}
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
			err = f.readBuyer(&s, o)
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
			if s.null() {
				// A null "items" replaces an earlier list, as encoding/json does.
				o.Items, f.itemAmounts = nil, nil
				return nil
			}
			err = f.readItems(&s, o)
		default:
			return s.skip()
		}
		return f.value(&s, key, start, err)
	})
	if ie, ok := err.(*InputError); ok {
		f.problems = append(f.problems, FieldError{ie.Field, ie.Msg})
	} else if err != nil {
		return nil, &InputError{OrderID: o.OrderID, Msg: "malformed JSON: " + err.Error()}
	}
	if err == nil && s.peek() != 0 {
		return nil, &InputError{OrderID: o.OrderID, Msg: "malformed JSON: " + s.syntax("data after the order object").Error()}
	}
	if err == nil {
		o.validate(&f)
	}
	if len(f.problems) > 0 {
		return nil, &InputError{OrderID: o.OrderID, Field: f.problems[0].Field, Msg: f.problems[0].Msg, More: f.problems[1:]}
	}
	return o, nil
}

// readBuyer reads the buyer object into o.Buyer; a field's problem is recorded, named
// buyer.<field>.
func (f *orderFields) readBuyer(s *scanner, o *Order) error {
	return s.object(func(k string) error {
		start := s.i
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
		if err == nil {
			return nil
		}
		return f.value(s, "buyer."+k, start, err)
	})
}

// readItems reads a (non-null) items array into o.Items, replacing an earlier list, as
// encoding/json does with a repeated key.
func (f *orderFields) readItems(s *scanner, o *Order) error {
	o.Items, f.itemAmounts = o.Items[:0], f.itemAmounts[:0]
	if o.Items == nil {
		o.Items = make([]Item, 0, 4) // most orders have a few items: one allocation
		f.itemAmounts = make([][]byte, 0, 4)
	}
	return s.array(func() error { return f.item(s, o) })
}

// item reads one element of items. Past rules.MaxItems, elements are stepped over (the list is
// reported once).
func (f *orderFields) item(s *scanner, o *Order) error {
	i := len(o.Items)
	if i >= rules.MaxItems {
		if !f.has("items") {
			f.add("items", "more than %d items", rules.MaxItems)
		}
		return s.skip()
	}
	o.Items = append(o.Items, Item{})
	f.itemAmounts = append(f.itemAmounts, nil)
	it := &o.Items[i]
	seenQty := false
	start := s.i
	err := s.object(func(k string) error {
		start := s.i
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
		if err == nil {
			return nil
		}
		return f.value(s, fmt.Sprintf("items[%d].%s", i, k), start, err)
	})
	if err == nil {
		if !seenQty {
			it.Quantity = 1
		}
		return nil
	}
	return f.value(s, fmt.Sprintf("items[%d]", i), start, err)
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
		return time.Time{}, fmt.Errorf("%s is not an RFC 3339 timestamp (2025-03-01T12:00:00Z)", clip(string(b)))
	}
	// Rules subtract timestamps: keep every difference inside a CEL duration (±292 years).
	if y := t.UTC().Year(); y < minYear || y > maxYear {
		return time.Time{}, fmt.Errorf("%s is outside the years %d to %d", clip(string(b)), minYear, maxYear)
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

// decimalText reads an amount: a decimal string or a JSON number in plain notation, as its exact
// text. Exponent notation (1e3) is refused: an amount is written as the bank writes it.
func (s *scanner) decimalText() ([]byte, error) {
	var num []byte
	switch c := s.peek(); {
	case c == '"':
		v, err := s.strBytes()
		if err != nil {
			return nil, err
		}
		inner := scanner{b: v}
		num, err = inner.number()
		if err != nil || len(num) != len(v) { // the whole string, no spaces around it
			return nil, fmt.Errorf("%s is not a decimal number", clip(string(v)))
		}
	case c == '-' || (c >= '0' && c <= '9'):
		var err error
		if num, err = s.number(); err != nil {
			return nil, err
		}
	case c == 0:
		return nil, errEOF
	default:
		if err := s.skip(); err != nil {
			return nil, err
		}
		return nil, errors.New("must be a decimal string such as \"12.50\"")
	}
	if bytes.ContainsAny(num, "eE") {
		return nil, fmt.Errorf("%s is in exponent notation: write a plain decimal such as \"1000\" or \"12.50\"", clipNumber(num))
	}
	return num, nil
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

// validate checks the decoded order, recording every problem in f; fields whose value had a
// problem already are not checked again.
func (o *Order) validate(f *orderFields) {
	o.validateIDs(f)
	o.validateStatusAndBuyer(f)
	if o.TrafficCountry != "" && !KnownCountry(o.TrafficCountry) && !f.has("traffic_country") {
		f.add("traffic_country", "%s is not an ISO 3166-1 alpha-2 country code", clip(o.TrafficCountry))
	}
	cur, ok := LookupCurrency(f.currencyCode)
	if !ok {
		if f.currencyCode != "" && !f.has("currency") {
			f.add("currency", "%s is not an ISO 4217 currency code", clip(f.currencyCode))
		}
		// Amounts are read in the currency's minor units: without one they cannot be checked.
		return
	}
	o.Currency = cur
	o.validateAmounts(f)
	o.validateItems(f)
}

// validateIDs checks the required fields are there and not empty, and the ids' lengths and
// characters.
func (o *Order) validateIDs(f *orderFields) {
	check := func(field string) bool { return !f.has(field) }
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
		switch {
		case !check(r.name):
		case !r.seen:
			f.add(r.name, "required")
		case r.empty:
			f.add(r.name, "must not be empty")
		}
	}
	for _, s := range []struct{ name, v string }{
		{"order_id", o.OrderID}, {"program", o.Program}, {"affiliate_id", o.AffiliateID}, {"buyer.id", o.Buyer.ID},
		{"event_id", o.EventID},
	} {
		if len(s.v) > rules.MaxStringLen && check(s.name) {
			f.add(s.name, "longer than %d bytes", rules.MaxStringLen)
		}
	}
	if f.eventID && o.EventID == "" && check("event_id") {
		f.add("event_id", "must not be empty (leave it out when the publisher has no event id)")
	}
	if check("event_id") {
		for _, c := range o.EventID {
			if c < 0x20 || c == 0x7f {
				f.add("event_id", "must not hold control characters")
				break
			}
		}
	}
}

// validateStatusAndBuyer checks the status is a known one and the buyer's fields.
func (o *Order) validateStatusAndBuyer(f *orderFields) {
	check := func(field string) bool { return !f.has(field) }
	switch o.Status {
	case StatusPending, StatusCompleted, StatusCancelled, StatusRefunded, "":
	default:
		if check("status") {
			f.add("status", "%s is not one of pending, completed, cancelled, refunded", clip(string(o.Status)))
		}
	}
	if f.buyer && !f.hasExactly("buyer") {
		if check("buyer.id") && (!f.buyerID || o.Buyer.ID == "") {
			f.add("buyer.id", "required")
		}
		switch {
		case !check("buyer.country"):
		case !f.buyerCountry:
			f.add("buyer.country", "required")
		case !KnownCountry(o.Buyer.Country):
			f.add("buyer.country", "%s is not an ISO 3166-1 alpha-2 country code", clip(o.Buyer.Country))
		}
		if !f.buyerNew && check("buyer.new") {
			f.add("buyer.new", "required (true for the buyer's first paid order)")
		}
	}
}

// validateAmounts parses the amount and the refunded amount in o.Currency's minor units; the
// refund must not be more than the amount.
func (o *Order) validateAmounts(f *orderFields) {
	amountOK := f.amount && !f.has("amount")
	if amountOK {
		if err := o.Currency.parseAmount(&o.Amount, f.amountText); err != nil {
			f.add("amount", "%v", err)
			amountOK = false
		}
	}
	if f.refundedSet && !f.has("refunded_amount") {
		if err := o.Currency.parseAmount(&o.RefundedAmount, f.refundedText); err != nil {
			f.add("refunded_amount", "%v", err)
		} else if amountOK && o.RefundedAmount.Cmp(&o.Amount) > 0 {
			f.add("refunded_amount", "%s is more than the amount %s", o.RefundedAmount.Text('f'), o.Amount.Text('f'))
		}
	}
}

// validateItems checks each item's sku, lengths and quantity, and parses its amount in
// o.Currency's minor units.
func (o *Order) validateItems(f *orderFields) {
	for i := range o.Items {
		it := &o.Items[i]
		field := func(sub string) string { return fmt.Sprintf("items[%d]%s", i, sub) } // only for problems: Sprintf allocates
		fine := func(sub string) bool { return len(f.problems) == 0 || !f.has(field(sub)) }
		if len(f.problems) > 0 && f.hasExactly(field("")) {
			continue
		}
		if it.SKU == "" && fine(".sku") {
			f.add(field(".sku"), "required")
		}
		if len(it.SKU) > rules.MaxStringLen || len(it.Category) > rules.MaxStringLen {
			f.add(field(""), "sku and category must be at most %d bytes", rules.MaxStringLen)
		}
		if it.Quantity < 1 && fine(".quantity") {
			f.add(field(".quantity"), "must be at least 1")
		}
		if f.itemAmounts[i] != nil && fine(".amount") {
			if err := o.Currency.parseAmount(&it.Amount, f.itemAmounts[i]); err != nil {
				f.add(field(".amount"), "%v", err)
			}
		}
	}
}

// clip quotes an input value for an error message, cut to its first 32 bytes when longer (an
// error names the value; it does not echo a 5 000-digit one back whole).
func clip(v string) string {
	const keep = 32
	if len(v) <= keep {
		return strconv.Quote(v)
	}
	cut := keep
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return strconv.Quote(v[:cut]) + fmt.Sprintf("… (%d bytes)", len(v))
}

// clipNumber is clip for a number's text, unquoted.
func clipNumber(text []byte) string {
	const keep = 32
	if len(text) <= keep {
		return string(text)
	}
	return string(text[:keep]) + fmt.Sprintf("… (%d characters)", len(text))
}

// parseAmount parses an exact, non-negative amount with no more decimals than the currency has.
func (c Currency) parseAmount(d *apd.Decimal, text []byte) error {
	if len(text) > maxAmountText {
		return fmt.Errorf("%s is longer than %d characters", clipNumber(text), maxAmountText)
	}
	if !setPlainDecimal(d, text) {
		if _, _, err := d.SetString(string(text)); err != nil || d.Form != apd.Finite {
			return fmt.Errorf("%s is not a decimal number", clipNumber(text))
		}
	}
	if d.Negative && !d.IsZero() {
		return fmt.Errorf("%s is negative; amounts are ≥ 0", clipNumber(text))
	}
	d.Negative = false
	if d.Exponent < -c.MinorUnits {
		// More digits than the currency has: allowed only when they are zeros (12.500 USD).
		var q apd.Decimal
		if _, err := exact.Quantize(&q, d, -c.MinorUnits); err != nil || q.Cmp(d) != 0 {
			return fmt.Errorf("%s has more decimal places than %s allows (%d)", clipNumber(text), c.Code, c.MinorUnits)
		}
		d.Set(&q)
	}
	if d.NumDigits() > 40 {
		return fmt.Errorf("%s has more than 40 digits", clipNumber(text))
	}
	return nil
}

// maxAmountText bounds an amount's text: 40 digits (the most an amount may have), a sign, a
// point and some trailing zeros.
const maxAmountText = 64

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
