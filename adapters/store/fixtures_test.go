package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// policiesDir is the repository's policy directory: the real seed policy decides the test orders.
const policiesDir = "../../policies"

var (
	engineOnce sync.Once
	testEngine *engine.Engine
	engineErr  error
)

// seedEngine returns an engine over the repository's policies.
func seedEngine(tb testing.TB) *engine.Engine {
	tb.Helper()
	engineOnce.Do(func() {
		set, err := rules.LoadDir(policiesDir)
		if err != nil {
			engineErr = err
			return
		}
		testEngine = engine.New(set)
	})
	if engineErr != nil {
		tb.Fatalf("loading %s: %v", policiesDir, engineErr)
	}
	return testEngine
}

// seedPolicy returns the seed policy as loaded.
func seedPolicy(tb testing.TB) *rules.Policy {
	tb.Helper()
	p, err := seedEngine(tb).Policies().Version("alibaba", 1)
	if err != nil {
		tb.Fatalf("seed policy: %v", err)
	}
	return p
}

// changedSeedPolicy is the seed policy file with one byte more and the same version number.
func changedSeedPolicy(tb testing.TB) *rules.Policy {
	tb.Helper()
	p := seedPolicy(tb)
	src := append(append([]byte(nil), p.Source...), "# edited in place\n"...)
	changed, ps := rules.Compile(p.File, src)
	if changed == nil {
		tb.Fatalf("compiling the changed seed policy: %v", ps)
	}
	return changed
}

// orderSpec describes one generated order.
type orderSpec struct {
	ID, Program, Affiliate, Status, Country, Traffic, Currency, Amount, Refunded, Category string
	New                                                                                    bool
	PlacedAt, ClickAt                                                                      time.Time
}

func (o orderSpec) JSON() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"order_id":%q,"program":%q,"affiliate_id":%q,"status":%q,"placed_at":%q,`,
		o.ID, o.Program, o.Affiliate, o.Status, o.PlacedAt.Format(time.RFC3339))
	if !o.ClickAt.IsZero() {
		fmt.Fprintf(&b, `"click_at":%q,`, o.ClickAt.Format(time.RFC3339))
	}
	fmt.Fprintf(&b, `"buyer":{"id":"b-%s","country":%q,"new":%t},"traffic_country":%q,"currency":%q,"amount":%q,`,
		o.ID, o.Country, o.New, o.Traffic, o.Currency, o.Amount)
	if o.Refunded != "" {
		fmt.Fprintf(&b, `"refunded_amount":%q,`, o.Refunded)
	}
	fmt.Fprintf(&b, `"items":[{"sku":"s-%s","category":%q,"amount":%q,"quantity":1}]}`, o.ID, o.Category, o.Amount)
	return []byte(b.String())
}

var (
	countries  = []string{"US", "CA", "MX", "GB", "DE", "FR", "AU", "NL", "BR", "ZA", "JP", "TW", "ES", "IT", "PL"}
	currencies = map[string]string{"US": "USD", "CA": "CAD", "MX": "MXN", "GB": "GBP", "DE": "EUR", "FR": "EUR",
		"AU": "AUD", "NL": "EUR", "BR": "BRL", "ZA": "ZAR", "JP": "JPY", "TW": "TWD", "ES": "EUR", "IT": "EUR", "PL": "PLN"}
	categories = []string{"electronics", "home", "toys", "garden", "apparel", "books", "weapons", "tobacco"}
)

// genOrder makes a realistic order: most qualify, some fail one or more rules.
func genOrder(r *rand.Rand, id string) orderSpec {
	country := countries[r.IntN(len(countries))]
	placed := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.IntN(30*24*3600)) * time.Second)
	o := orderSpec{
		ID: id, Program: "alibaba", Affiliate: "aff-" + strconv.Itoa(r.IntN(50)), Status: "completed",
		Country: country, Traffic: country, Currency: currencies[country], New: r.IntN(3) == 0,
		PlacedAt: placed, ClickAt: placed.Add(-time.Duration(r.IntN(20*24)) * time.Hour),
		Category: categories[r.IntN(6)],
	}
	cents := 100 + r.IntN(500000)
	if o.Currency == "JPY" {
		o.Amount = strconv.Itoa(cents)
	} else {
		o.Amount = fmt.Sprintf("%d.%02d", cents/100, cents%100)
	}
	switch n := r.IntN(100); {
	case n < 4:
		o.Status = "pending"
	case n < 6:
		o.Traffic = "CN"
	case n < 8:
		o.Category = categories[6+r.IntN(2)]
	case n < 10:
		o.ClickAt = time.Time{}
	case n < 11:
		o.Status, o.Refunded = "refunded", o.Amount
	}
	return o
}

// decide decodes and decides events as the pipeline does.
func decide(tb testing.TB, events []engine.Event) []engine.Result {
	tb.Helper()
	return seedEngine(tb).DecideEvents(context.Background(), events, make([]engine.Result, 0, len(events)))
}

// event wraps order JSON as a stream event.
func event(id string, seq uint64, raw []byte) engine.Event {
	return engine.Event{ID: id, Subject: "orders.alibaba", StreamSeq: seq, Raw: raw,
		ReceivedAt: time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(seq) * time.Millisecond)}
}

// batchSpec says what a generated batch holds besides ordinary orders.
type batchSpec struct {
	prefix                            string // event and order id prefix
	seqBase                           uint64
	orders                            int // ordinary orders
	invalid, unknownProgram, noPolicy int
	seed                              uint64
	// liveFrom, when set, places the ordinary orders one after another from then, 60 ms
	// apart, as live traffic arrives; otherwise they are spread over March 2025.
	liveFrom time.Time
}

// genBatch makes a batch of real engine results: ordinary orders, then malformed and invalid
// events, orders of an unknown program and orders placed before any policy was in force.
func genBatch(tb testing.TB, s batchSpec) []engine.Result {
	tb.Helper()
	r := rand.New(rand.NewPCG(s.seed, 7))
	var events []engine.Event
	seq := s.seqBase
	next := func(raw []byte) {
		seq++
		events = append(events, event(fmt.Sprintf("%s-%d", s.prefix, seq), seq, raw))
	}
	for i := 0; i < s.orders; i++ {
		o := genOrder(r, fmt.Sprintf("%s-o%d", s.prefix, i))
		if !s.liveFrom.IsZero() {
			click := o.PlacedAt.Sub(o.ClickAt)
			o.PlacedAt = s.liveFrom.Add(time.Duration(i) * 60 * time.Millisecond)
			if !o.ClickAt.IsZero() {
				o.ClickAt = o.PlacedAt.Add(-click)
			}
		}
		next(o.JSON())
	}
	bad := [][]byte{
		[]byte(`{"order_id": "x", "program": `),                                             // malformed JSON
		[]byte("\xff\xfe not json at all \x00"),                                             // not UTF-8, with a NUL
		[]byte(`{"order_id":"inv","program":"alibaba"}`),                                    // missing fields
		[]byte(`[1,2,3]`),                                                                   // not an object
		[]byte(`{"order_id":"neg","program":"alibaba","affiliate_id":"a","status":"done"}`), // bad status
	}
	for i := 0; i < s.invalid; i++ {
		next(bad[i%len(bad)])
	}
	for i := 0; i < s.unknownProgram; i++ {
		o := genOrder(r, fmt.Sprintf("%s-u%d", s.prefix, i))
		o.Program = "nosuchprogram"
		next(o.JSON())
	}
	for i := 0; i < s.noPolicy; i++ {
		o := genOrder(r, fmt.Sprintf("%s-n%d", s.prefix, i))
		o.PlacedAt = time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
		o.ClickAt = o.PlacedAt.Add(-time.Hour)
		next(o.JSON())
	}
	return decide(tb, events)
}

// counts is what a batch should store.
type counts struct{ events, decisions, dead, qualified int }

func expected(results []engine.Result) counts {
	var c counts
	for _, r := range results {
		if r.Order != nil {
			c.events++
		}
		if r.Err != nil {
			c.dead++
			continue
		}
		c.decisions++
		if r.Decision.Qualified {
			c.qualified++
		}
	}
	return c
}

func integrationRequired() bool { return os.Getenv("COMMISSIONER_INTEGRATION") == "1" }

// randFor returns a deterministic random source.
func randFor(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 7)) }

// mustSetOf builds a policy set of compiled policies.
func mustSetOf(tb testing.TB, ps ...*rules.Policy) *rules.Set {
	tb.Helper()
	set, problems := rules.NewSet(ps)
	if set == nil {
		tb.Fatalf("building a policy set: %v", problems)
	}
	return set
}
