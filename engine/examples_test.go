package engine_test

import (
	"context"
	"slices"
	"testing"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// TestExamplePrograms: every example program under policies/examples compiles, passes lint
// (warnings included) and its in-file examples; and none of them is in the served set, which
// loads policies/ without its examples directory.
func TestExamplePrograms(t *testing.T) {
	set, err := rules.LoadDir("../policies/examples")
	if err != nil {
		t.Fatalf("loading ../policies/examples: %v", err)
	}
	if got, want := set.Programs(), []string{"cpa", "hybrid", "revshare", "tiered"}; !slices.Equal(got, want) {
		t.Errorf("example programs: got %v, want %v", got, want)
	}
	for _, p := range set.All() {
		if ps := rules.Lint(p); len(ps) > 0 {
			t.Errorf("%s: lint: %v", p.File, ps)
		}
		if len(p.Tests) < 5 {
			t.Errorf("%s: %d examples, want at least 5", p.File, len(p.Tests))
		}
	}
	for _, r := range engine.New(set).RunPolicyTests(context.Background()) {
		if !r.Passed() {
			t.Errorf("%s: %v", r.Name(), r.Diffs)
		}
	}
	served := seedSet(t)
	if got := served.Programs(); !slices.Equal(got, []string{"alibaba"}) {
		t.Errorf("the served set (../policies): got programs %v, want only alibaba (examples are skipped)", got)
	}
}
