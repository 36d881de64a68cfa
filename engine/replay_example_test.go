package engine_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// history is an engine.History over events held in memory; a store implements it over its
// tables (adapters/store: Store.History).
type history []engine.ReplayEvent

func (h history) Walk(_ context.Context, fn func([]engine.ReplayEvent) error) error {
	return fn(append([]engine.ReplayEvent(nil), h...))
}

// Replay prices a rate cut on two recorded orders: the seed policy decided them; the candidate
// pays returning buyers in the selected markets 5% instead of 6%.
func ExampleReplay() {
	seed, _ := os.ReadFile("../policies/alibaba/v1.yaml")
	recorded, _ := rules.LoadFile("../policies/alibaba/v1.yaml")
	v1, _ := recorded.Version("alibaba", 1)

	var h history
	for i, country := range []string{"GB", "BR"} {
		raw := fmt.Sprintf(`{"order_id":"o-%d","program":"alibaba","affiliate_id":"a","status":"completed",`+
			`"placed_at":"2025-10-10T12:00:00Z","click_at":"2025-10-01T12:00:00Z","buyer":{"id":"b","country":%q,"new":false},`+
			`"traffic_country":%[2]q,"currency":"USD","amount":"250.00"}`, i, country)
		o, _ := engine.DecodeOrder([]byte(raw))
		d, _ := engine.New(recorded).DecideWith(context.Background(), v1, o)
		rec := &engine.RecordedDecision{Verdict: d.Verdict(), Trace: d.Outcomes()}
		h = append(h, engine.ReplayEvent{Event: engine.Event{ID: fmt.Sprintf("ev-%d", i), Raw: []byte(raw)}, Recorded: rec})
	}

	// The candidate: the same terms as version 2, returning buyers in the selected markets at 5%.
	src := strings.Replace(string(seed), "version: 1\n", "version: 2\n", 1)
	src = strings.Replace(src, "!order.buyer.new\n    rate: \"6%\"", "!order.buyer.new\n    rate: \"5%\"", 1)
	dir, _ := os.MkdirTemp("", "candidate")
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "v2.yaml")
	os.WriteFile(file, []byte(src), 0o644)
	candidate, err := rules.LoadFile(file)
	if err != nil {
		fmt.Println(err)
		return
	}

	rep, err := engine.Replay(context.Background(), candidate, h, engine.ReplayOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, t := range rep.Totals {
		fmt.Printf("%s: %s → %s (%s), %d of %d orders changed\n", t.Currency, t.Before.Text('f'), t.After.Text('f'), t.Diff.Text('f'), t.Changed, t.Orders)
	}
	for _, c := range rep.Changes {
		fmt.Printf("%s: %s → %s, %s\n", c.OrderID, c.Old.Commission.Text('f'), c.New.Commission.Text('f'), c.Cause)
	}
	// Output:
	// USD: 27.50 → 25.00 (-2.50), 1 of 2 orders changed
	// o-0: 15.00 → 12.50, rate selected_returning: 6% → 5%
}
