package rules_test

import (
	"context"
	"strings"
	"testing"

	"github.com/commissioner/commissioner/rules"
)

// FuzzCompilePolicy feeds arbitrary bytes to rules.Compile. It must never panic; it returns a
// policy exactly when no problem is an error; every problem names the file and has a known code;
// and the rules of a policy it accepts evaluate (to a bool or an error) without panicking.
//
//	go test ./rules -run '^$' -fuzz FuzzCompilePolicy -fuzztime 60s
func FuzzCompilePolicy(f *testing.F) {
	seed := seedTerms(f)
	full := seed + "tests:\n  - name: t\n    order: &base {order_id: a, amount: 1.5, items: [{sku: s}]}\n    expect: {qualified: true, commission: \"0.15\"}\n" +
		"  - name: u\n    order: {<<: *base, order_id: b}\n    expect: {error: x}\n"
	f.Add([]byte(seed))
	f.Add([]byte(full))
	for _, broken := range []string{
		strings.Replace(seed, `order.status == "completed"`, `order.status ==`, 1),
		strings.Replace(seed, `order.status == "completed"`, `order.amount > "x"`, 1),
		strings.Replace(seed, `order.status == "completed"`, `order.buyer.countr == "US"`, 1),
		strings.Replace(seed, `order.status == "completed"`, `order.status`, 1),
		strings.Replace(seed, "id: not_refunded", "id: completed", 1),
		strings.Replace(seed, `rate: "10%"`, `rate: "10"`, 1),
		strings.Replace(seed, "rounding: half_up", "rounding: sideways", 1),
		strings.Replace(seed, "program: alibaba\n", "", 1),
		strings.Replace(seed, "program: alibaba\n", "program: alibaba\ncolour: blue\n", 1),
		strings.Replace(seed, "cookie_window: {duration: 720h}", "cookie_window: {duration: 30d}", 1),
		strings.Replace(seed, "    expr: >-\n", "    expr: |\n", 1),
		seed[:len(seed)/2],
		policyWith(typedConstants, "order.amount >= threshold", "order.placed_at - order.click_at <= window"),
		policyWith("", `order.items.all(i, order.items.all(j, order.items.all(k, i.sku != k.sku)))`),
		"a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n",
		"", "- a\n", "program: [\n", "? [a]\n: b\n", "\t", "program: p\nprogram: q\n",
	} {
		f.Add([]byte(broken))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, ps := rules.Compile("f.yaml", data)
		if (p == nil) != ps.HasErrors() {
			t.Fatalf("got policy %v with problems %v: want a policy exactly when there is no error", p != nil, ps)
		}
		for _, pr := range ps {
			if pr.File != "f.yaml" || pr.Message == "" || pr.Line < 0 || pr.Column < 0 || !knownCodes[pr.Code] {
				t.Fatalf("got problem %+v, want one naming f.yaml with a known code, a message and a position", pr)
			}
		}
		_ = ps.Error()
		if p == nil {
			return
		}
		if p.Digest != rules.Digest(data) || string(p.Source) != string(data) {
			t.Fatalf("got digest %s, want %s", p.Digest, rules.Digest(data))
		}
		if len(p.Rates) == 0 {
			t.Fatalf("accepted a policy with no rate rules")
		}
		v := testVars()
		act := rules.NewActivation(&v)
		for _, r := range p.Qualify {
			_, _ = r.Eval(context.Background(), act)
		}
		for _, r := range p.Rates {
			_, _ = r.Eval(context.Background(), act)
		}
		if set, dup := rules.NewSet([]*rules.Policy{p}); set == nil || dup != nil {
			t.Fatalf("got %v building a set of one policy", dup)
		}
	})
}
