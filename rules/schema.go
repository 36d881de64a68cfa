package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"
	"cel.dev/cel-go/interpreter"
	"github.com/cockroachdb/apd/v3"
)

// Item is one line of an order as rules see it: order.items is a list of these, with fields sku,
// category and quantity. The amount is exact and not visible to CEL.
type Item struct {
	SKU      string       `cel:"sku"`
	Category string       `cel:"category"`
	Quantity int64        `cel:"quantity"`
	Amount   *apd.Decimal `cel:"-"`
}

// Vars are the facts of one order event that rules may read. The engine fills them from a
// validated order; rules never read anything else (no clock, no I/O), so the same Vars and the
// same policy version always give the same outcome.
type Vars struct {
	OrderID        string
	Program        string
	AffiliateID    string
	Status         string
	PlacedAt       time.Time
	CompletedAt    time.Time // zero when HasCompletedAt is false
	HasCompletedAt bool
	ClickAt        time.Time // zero when HasClick is false
	HasClick       bool
	BuyerID        string
	BuyerCountry   string
	BuyerNew       bool
	// BuyerSignupAt is when the buyer signed up; zero when HasBuyerSignupAt is false.
	BuyerSignupAt    time.Time
	HasBuyerSignupAt bool
	TrafficCountry   string
	Currency         string
	Amount           *apd.Decimal
	RefundedAmount   *apd.Decimal
	Items            []Item

	// The affiliate's month so far (affiliate.*): its orders of the same program, month (UTC, of
	// placed_at) and currency whose current decision qualifies, this order not counted, and their
	// commissionable sales. The pipeline computes them from the stored history before deciding;
	// nil MonthQualifiedSales reads as 0.
	MonthQualifiedOrders int64
	MonthQualifiedSales  *apd.Decimal
}

// variable is one name of the order schema: its CEL type, a one-line doc, and how to read it.
type variable struct {
	name string
	typ  *cel.Type
	doc  string
	get  func(v *Vars) ref.Val
}

var itemType = cel.ObjectType("rules.Item")

// schema is the order schema every rule is type-checked against. Its order is the order of the
// reference table in docs/program-manager.md and of the environment fingerprint.
var schema = []variable{
	{"order.id", cel.StringType, "the order id", func(v *Vars) ref.Val { return types.String(v.OrderID) }},
	{"order.program", cel.StringType, "the program the order belongs to", func(v *Vars) ref.Val { return types.String(v.Program) }},
	{"order.affiliate_id", cel.StringType, "the referring affiliate", func(v *Vars) ref.Val { return types.String(v.AffiliateID) }},
	{"order.status", cel.StringType, `"pending", "completed", "cancelled" or "refunded"`, func(v *Vars) ref.Val { return internString(v.Status) }},
	{"order.placed_at", cel.TimestampType, "when the order was placed", func(v *Vars) ref.Val { return types.Timestamp{Time: v.PlacedAt} }},
	{"order.has_completed_at", cel.BoolType, "whether completed_at was given", func(v *Vars) ref.Val { return types.Bool(v.HasCompletedAt) }},
	{"order.completed_at", cel.TimestampType, "when the order completed (1970-01-01 when absent)", func(v *Vars) ref.Val { return timestampOr1970(v.HasCompletedAt, v.CompletedAt) }},
	{"order.has_click", cel.BoolType, "whether an affiliate click referred the buyer", func(v *Vars) ref.Val { return types.Bool(v.HasClick) }},
	{"order.click_at", cel.TimestampType, "when the referring click happened (1970-01-01 when absent)", func(v *Vars) ref.Val { return timestampOr1970(v.HasClick, v.ClickAt) }},
	{"order.buyer.id", cel.StringType, "the buyer", func(v *Vars) ref.Val { return types.String(v.BuyerID) }},
	{"order.buyer.country", cel.StringType, "the buyer's country, ISO 3166-1 alpha-2", func(v *Vars) ref.Val { return internString(v.BuyerCountry) }},
	{"order.buyer.new", cel.BoolType, "whether this is the buyer's first paid order", func(v *Vars) ref.Val { return types.Bool(v.BuyerNew) }},
	{"order.buyer.has_signup_at", cel.BoolType, "whether buyer.signup_at was given", func(v *Vars) ref.Val { return types.Bool(v.HasBuyerSignupAt) }},
	{"order.buyer.signup_at", cel.TimestampType, "when the buyer signed up (1970-01-01 when absent)", func(v *Vars) ref.Val { return timestampOr1970(v.HasBuyerSignupAt, v.BuyerSignupAt) }},
	{"order.traffic_country", cel.StringType, "where the referring traffic came from, ISO 3166-1 alpha-2", func(v *Vars) ref.Val { return internString(v.TrafficCountry) }},
	{"order.currency", cel.StringType, "ISO 4217 currency code", func(v *Vars) ref.Val { return types.String(v.Currency) }},
	{"order.amount", DecimalType, "the order amount (exact decimal)", func(v *Vars) ref.Val { return Decimal{D: v.Amount} }},
	{"order.refunded_amount", DecimalType, "the amount refunded so far (exact decimal)", func(v *Vars) ref.Val { return Decimal{D: v.RefundedAmount} }},
	{"order.items", cel.ListType(itemType), "the order's items: sku, category, quantity", nil},
	{"affiliate.month_qualified_orders", cel.IntType, "the affiliate's qualified orders this month (program, UTC month of placed_at, currency) before this one",
		func(v *Vars) ref.Val { return types.Int(v.MonthQualifiedOrders) }},
	{"affiliate.month_qualified_sales", DecimalType, "their commissionable sales (amount − refunded_amount), in the order's currency",
		func(v *Vars) ref.Val { return decimalOr0(v.MonthQualifiedSales) }},
}

var zeroDecimal = apd.New(0, 0)

// internString is s as a CEL value, without allocating for the strings orders repeat: country
// codes (two upper-case letters) and statuses. Every rule that reads a string field converts it
// once per order; for these fields that was an allocation per order and field.
func internString(s string) ref.Val {
	if len(s) == 2 && 'A' <= s[0] && s[0] <= 'Z' && 'A' <= s[1] && s[1] <= 'Z' {
		return countryCodes[int(s[0]-'A')*26+int(s[1]-'A')]
	}
	for _, v := range statusValues {
		if string(v.(types.String)) == s {
			return v
		}
	}
	return types.String(s)
}

var countryCodes = func() (codes [26 * 26]ref.Val) {
	for i := range codes {
		codes[i] = types.String([]byte{byte('A' + i/26), byte('A' + i%26)})
	}
	return codes
}()

var statusValues = [...]ref.Val{types.String("completed"), types.String("pending"), types.String("cancelled"), types.String("refunded")}

// decimalOr0 is an optional decimal as rules see it: 0 when absent.
func decimalOr0(d *apd.Decimal) ref.Val {
	if d == nil {
		return Decimal{D: zeroDecimal}
	}
	return Decimal{D: d}
}

// timestampOr1970 is an optional timestamp as rules see it: 1970-01-01T00:00:00Z when absent (a
// zero time.Time, year 1, is too far from any order for a CEL duration: subtracting it fails).
func timestampOr1970(present bool, t time.Time) ref.Val {
	if !present {
		return types.Timestamp{Time: time.Unix(0, 0).UTC()}
	}
	return types.Timestamp{Time: t}
}

// schemaByLen lists, for each name length, the indexes of the schema names of that length.
// Resolving a name runs on every variable a rule reads, so it compares the few names of the same
// length instead of hashing into a map (a third of the time of a rule like order.status == "x").
var schemaByLen = func() [][]int {
	var byLen [][]int
	for i, v := range schema {
		for len(byLen) <= len(v.name) {
			byLen = append(byLen, nil)
		}
		byLen[len(v.name)] = append(byLen[len(v.name)], i)
	}
	return byLen
}()

// schemaIndex returns the index in schema of a name.
func schemaIndex(name string) (int, bool) {
	if len(name) >= len(schemaByLen) {
		return 0, false
	}
	for _, i := range schemaByLen[len(name)] {
		if schema[i].name == name {
			return i, true
		}
	}
	return 0, false
}

// SchemaDoc lists the order schema as (name, CEL type, doc) rows, for documentation and `policy check -v`.
func SchemaDoc() [][3]string {
	rows := make([][3]string, len(schema))
	for i, v := range schema {
		rows[i] = [3]string{v.name, v.typ.String(), v.doc}
	}
	return rows
}

// Activation resolves the order schema's names against one order's Vars. It is the typed
// activation the compiled programs evaluate over: no map is built per order.
type Activation struct {
	vars    *Vars
	bounded bool // vars is inside the sizes the cost estimate assumed (see withinEstimate)
	// vals holds each schema name's value once a rule has read it, so that the rules of one
	// order convert each fact to a CEL value once (by schema index; nil = not read yet).
	vals  []ref.Val
	items itemList // order.items, re-pointed at each order
	// frame is the execution frame the uncosted programs run in, made once: cel-go otherwise
	// takes one from its pool and looks for function bindings at each evaluation, about a fifth
	// of a simple rule. It only holds this activation as its scope, so it stays valid across
	// orders (comprehensions push and pop their own child frames).
	frame *interpreter.ExecutionFrame
}

// NewActivation returns an activation over v. v must not change while the activation is in use;
// to evaluate another order, or v after changing it, call Reset.
func NewActivation(v *Vars) *Activation {
	a := &Activation{vals: make([]ref.Val, len(schema))}
	frame, err := interpreter.NewExecutionFrame(a)
	if err != nil {
		// An Activation is a valid input to a frame: an error is a programming error.
		panic(fmt.Sprintf("rules: execution frame: %v", err))
	}
	a.frame = frame
	a.Reset(v)
	return a
}

// Reset points the activation at another order (or at v again after it changed), so one
// activation serves many orders.
func (a *Activation) Reset(v *Vars) {
	a.vars, a.bounded = v, v.withinEstimate()
	clear(a.vals)
}

func (a *Activation) withinEstimate() bool { return a.bounded }

// withinEstimate reports whether the order is inside the sizes the cost estimator assumes (at
// most MaxItems items, strings of at most MaxStringLen bytes): then no rule that Compile
// accepted can cost more than RuntimeCostLimit. DecodeOrder rejects every order outside them.
func (v *Vars) withinEstimate() bool {
	if len(v.Items) > MaxItems {
		return false
	}
	for _, s := range [...]string{v.OrderID, v.Program, v.AffiliateID, v.Status, v.BuyerID, v.BuyerCountry, v.TrafficCountry, v.Currency} {
		if len(s) > MaxStringLen {
			return false
		}
	}
	for i := range v.Items {
		if len(v.Items[i].SKU) > MaxStringLen || len(v.Items[i].Category) > MaxStringLen {
			return false
		}
	}
	return true
}

// ResolveName implements interpreter.Activation.
func (a *Activation) ResolveName(name string) (any, bool) {
	i, ok := schemaIndex(name)
	if !ok {
		return nil, false
	}
	if v := a.vals[i]; v != nil {
		return v, true
	}
	var v ref.Val
	if schema[i].get == nil { // order.items
		a.items.reset(a.vars.Items)
		v = &a.items
	} else {
		v = schema[i].get(a.vars)
	}
	a.vals[i] = v
	return v, true
}

// Parent implements interpreter.Activation.
func (a *Activation) Parent() interpreter.Activation { return nil }

var baseEnvOnce = sync.OnceValues(func() (*cel.Env, error) {
	opts := []cel.EnvOption{
		ext.NativeTypes(reflect.TypeFor[Item](), ext.ParseStructTags(true)),
		ext.Strings(),
		lowerASCIIWithoutRunes(),
		ext.Sets(),
		decimalLibrary(),
	}
	for _, v := range schema {
		opts = append(opts, cel.Variable(v.name, v.typ))
	}
	return cel.NewEnv(opts...)
})

// lowerASCIIWithoutRunes gives ext.Strings' lowerAscii the same results without converting every
// string to runes and back: a string with no upper-case ASCII letter comes back as it is, with no
// allocation, and others are lowered byte by byte. Invalid UTF-8 (which DecodeOrder never lets
// through) still goes to ext.Strings' way, which turns each bad byte into U+FFFD. The seed policy
// lowers every item's category, so this is on the hot path.
func lowerASCIIWithoutRunes() cel.EnvOption {
	return cel.Function("lowerAscii",
		cel.MemberOverload("string_lower_ascii", []*cel.Type{cel.StringType}, cel.StringType,
			cel.UnaryBinding(func(v ref.Val) ref.Val {
				s, ok := v.(types.String)
				if !ok {
					return types.MaybeNoSuchOverloadErr(v)
				}
				upper, ascii := false, true
				for i := 0; i < len(s); i++ {
					if c := s[i]; c >= utf8.RuneSelf {
						ascii = false
					} else if 'A' <= c && c <= 'Z' {
						upper = true
					}
				}
				if !ascii && !utf8.ValidString(string(s)) {
					runes := []rune(string(s))
					for j, r := range runes {
						if 'A' <= r && r <= 'Z' {
							runes[j] = r + ('a' - 'A')
						}
					}
					return types.String(string(runes))
				}
				if !upper {
					return v // v, not s: boxing s again would allocate
				}
				b := []byte(s)
				for i, c := range b {
					if 'A' <= c && c <= 'Z' {
						b[i] = c + ('a' - 'A')
					}
				}
				return types.String(b)
			})))
}

func baseEnv() *cel.Env {
	env, err := baseEnvOnce()
	if err != nil {
		// The schema is fixed at build time: an error here is a programming error.
		panic(fmt.Sprintf("rules: building the CEL environment: %v", err))
	}
	return env
}

func baseAdapter() types.Adapter { return baseEnv().CELTypeAdapter() }

// EnvFingerprint identifies the CEL environment rules are compiled in: the cel-go version, the
// order schema and the functions added to standard CEL. A decision records it, so a replay can tell
// whether it runs in the environment the decision was made in.
var EnvFingerprint = sync.OnceValue(func() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cel-go %s\n", celVersion())
	for _, v := range schema {
		fmt.Fprintf(&b, "var %s %s\n", v.name, v.typ)
	}
	fmt.Fprintf(&b, "libs: ext.Strings ext.Sets decimal(string|int) decimal-ordering\n")
	sum := sha256.Sum256([]byte(b.String()))
	return "cel-go@" + celVersion() + "+" + hex.EncodeToString(sum[:8])
})

func celVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		deps := append([]*debug.Module(nil), bi.Deps...)
		sort.Slice(deps, func(i, j int) bool { return deps[i].Path < deps[j].Path })
		for _, m := range deps {
			if m.Path == "cel.dev/cel-go" {
				return m.Version
			}
		}
	}
	return "unknown"
}

// ResolveName resolves a schema name (order.buyer.country) against vars, for explanations.
func ResolveName(v *Vars, name string) (ref.Val, bool) {
	i, ok := schemaIndex(name)
	if !ok {
		return nil, false
	}
	if schema[i].get == nil {
		l := &itemList{}
		l.reset(v.Items)
		return l, true
	}
	return schema[i].get(v), true
}
