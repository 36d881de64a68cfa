package audit_test

import (
	"strings"
	"testing"

	"github.com/commissioner/commissioner/engine/audit"
)

func TestReconcile(t *testing.T) {
	seqs := func(ranges ...[2]uint64) []uint64 {
		var out []uint64
		for _, r := range ranges {
			for s := r[0]; s <= r[1]; s++ {
				out = append(out, s)
			}
		}
		return out
	}
	const src = "ORDERS@2026-12-03T00:00:00Z"
	for _, tc := range []struct {
		name                           string
		state                          audit.StreamState
		consumed                       []uint64
		sources                        []string
		consumedN, gone, pending, lost uint64
		gaps                           []string // the findings' ranges
		skipped                        bool
	}{
		{name: "every event stored, all still in the stream", state: audit.StreamState{Source: src, First: 1, Last: 10},
			consumed: seqs([2]uint64{1, 10}), sources: []string{src}, consumedN: 10},
		{name: "stored, then expired: fine", state: audit.StreamState{Source: src, First: 8, Last: 10},
			consumed: seqs([2]uint64{1, 10}), sources: []string{src}, consumedN: 10, gone: 7},
		{name: "the last ones not decided yet", state: audit.StreamState{Source: src, First: 1, Last: 10},
			consumed: seqs([2]uint64{1, 6}), sources: []string{src}, consumedN: 6, pending: 4},
		{name: "purged before they were decided", state: audit.StreamState{Source: src, First: 7, Last: 10},
			consumed: seqs([2]uint64{1, 2}, [2]uint64{5, 5}, [2]uint64{7, 10}), sources: []string{src, ""},
			consumedN: 7, gone: 3, lost: 3, gaps: []string{"3–4", "sequence 6 "}},
		{name: "deleted in the middle, never stored", state: audit.StreamState{Source: src, First: 1, Last: 10, Deleted: []uint64{9, 4}},
			consumed: seqs([2]uint64{1, 3}, [2]uint64{5, 8}), sources: []string{src}, consumedN: 7, pending: 1, lost: 2,
			gaps: []string{"sequence 4 ", "sequence 9 "}},
		{name: "positions of another stream", state: audit.StreamState{Source: src, First: 1, Last: 10},
			consumed: seqs([2]uint64{1, 3}), sources: []string{"ORDERS@2025-01-01T00:00:00Z"}, skipped: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := audit.Reconcile(tc.state, tc.consumed, tc.sources)
			if (r.Skipped != "") != tc.skipped {
				t.Fatalf("skipped %q, want skipped %t", r.Skipped, tc.skipped)
			}
			if tc.skipped {
				return
			}
			if r.Consumed != tc.consumedN || r.Gone != tc.gone || r.Pending != tc.pending || r.Lost != tc.lost {
				t.Errorf("consumed %d gone %d pending %d lost %d; want %d %d %d %d", r.Consumed, r.Gone, r.Pending, r.Lost,
					tc.consumedN, tc.gone, tc.pending, tc.lost)
			}
			if len(r.Findings) != len(tc.gaps) {
				t.Fatalf("findings %v, want %d", r.Findings, len(tc.gaps))
			}
			for i, g := range tc.gaps {
				f := r.Findings[i]
				if f.Kind != audit.FindingStreamGap || !strings.Contains(f.Detail, g) {
					t.Errorf("finding %d: %s %q, want a stream gap naming %q", i, f.Kind, f.Detail, g)
				}
			}
		})
	}
	t.Run("gap findings are bounded, every lost event counted", func(t *testing.T) {
		var consumed []uint64
		for s := uint64(2); s <= 1000; s += 2 {
			consumed = append(consumed, s)
		}
		r := audit.Reconcile(audit.StreamState{Source: src, First: 1001, Last: 1000}, consumed, nil)
		if r.Lost != 500 || len(r.Findings) != 100 {
			t.Errorf("lost %d in %d findings, want 500 in 100", r.Lost, len(r.Findings))
		}
	})
}
