package store

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestRecentDecisions pages through every combination of the console's filters and compares the
// pages with the decisions a plain read selects: RecentDecisions reads them through indexes and
// id ranges (console.go), which must select exactly what the filter says, in id order.
func TestRecentDecisions(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testRecentDecisions(t, sqliteBackend()) })
	t.Run("postgres", func(t *testing.T) {
		postgresAdmin(t) // skips (or fails) when there is no server
		testRecentDecisions(t, postgresBackend())
	})
}

func testRecentDecisions(t *testing.T, be backend) {
	ctx := context.Background()
	s := openStore(t, be.fresh(t))
	// Four batches, decided on three days (a decision's decided_at is its batch's created_at:
	// WriteBatch), the third batch's decisions of a second program.
	days := []time.Time{
		time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC),
		time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC),
		time.Date(2026, 3, 2, 23, 59, 59, 0, time.UTC),
		time.Date(2026, 3, 5, 0, 0, 0, 0, time.UTC),
	}
	for i, day := range days {
		batch := genBatch(t, batchSpec{prefix: "r" + strconv.Itoa(i), seqBase: uint64(i * 100), orders: 40, invalid: 2, seed: uint64(i + 1)})
		saved, err := saveBatch(ctx, s, batch)
		if err != nil {
			t.Fatal(err)
		}
		if saved.Decisions == 0 {
			t.Fatalf("batch %d stored no decision", i)
		}
		// The write path stamps both with the time it stored them; move both to the batch's day.
		var part, seq int64
		if err := s.db.QueryRowContext(ctx, "SELECT part, max(seq) FROM batches GROUP BY part").Scan(&part, &seq); err != nil {
			t.Fatal(err)
		}
		if _, err := s.db.ExecContext(ctx, "UPDATE batches SET created_at = ? WHERE part = ? AND seq = ?", day, part, seq); err != nil {
			t.Fatal(err)
		}
		program := "alibaba"
		if i == 2 {
			program = "zeta" // only the columns the filters read; the rows are not audited here
		}
		if _, err := s.db.ExecContext(ctx, "UPDATE decisions SET decided_at = ?, program = ? WHERE part = ? AND batch_seq = ?",
			day, program, part, seq); err != nil {
			t.Fatal(err)
		}
	}
	var all []StoredDecision
	if err := s.queryDecisions(ctx, func(d StoredDecision) error { all = append(all, d); return nil }, "ORDER BY id DESC"); err != nil {
		t.Fatal(err)
	}
	var rateRules []string
	for _, d := range all {
		if d.RateRule != "" && !slices.Contains(rateRules, d.RateRule) {
			rateRules = append(rateRules, d.RateRule)
		}
	}
	if len(rateRules) < 2 {
		t.Fatalf("the decisions matched %d rate rules, want at least 2", len(rateRules))
	}
	yes, no := true, false
	dates := []struct{ from, to time.Time }{
		{},
		{from: days[1].Truncate(24 * time.Hour)},
		{to: days[1].Truncate(24 * time.Hour)},
		{from: days[1].Truncate(24 * time.Hour), to: days[1].Truncate(24*time.Hour).AddDate(0, 0, 1)},
		{to: days[0].AddDate(-1, 0, 0)}, // before any
	}
	for _, program := range []string{"", "alibaba", "zeta", "nosuch"} {
		for _, qualified := range []*bool{nil, &yes, &no} {
			for _, rateRule := range []string{"", rateRules[0], rateRules[1], "nosuch"} {
				for _, date := range dates {
					f := DecisionFilter{Program: program, Qualified: qualified, RateRule: rateRule, From: date.from, To: date.to}
					var want []int64
					for _, d := range all {
						if (f.Program == "" || d.Program == f.Program) && (f.Qualified == nil || d.Qualified == *f.Qualified) &&
							(f.RateRule == "" || d.RateRule == f.RateRule) && (f.From.IsZero() || !d.DecidedAt.Before(f.From)) &&
							(f.To.IsZero() || d.DecidedAt.Before(f.To)) {
							want = append(want, d.ID)
						}
					}
					checkPages(t, s, f, want, all)
				}
			}
		}
	}
}

// checkPages pages through f's decisions, 7 at a time, and compares them with want (ids, newest
// first) and their rows with all's.
func checkPages(t *testing.T, s *Store, f DecisionFilter, want []int64, all []StoredDecision) {
	t.Helper()
	qualified := "either"
	if f.Qualified != nil {
		qualified = strconv.FormatBool(*f.Qualified)
	}
	name := fmt.Sprintf("program %q, qualified %s, rate rule %q, from %v, to %v", f.Program, qualified, f.RateRule, f.From, f.To)
	byID := map[int64]StoredDecision{}
	for _, d := range all {
		byID[d.ID] = d
	}
	var got []int64
	var before int64
	for page := 0; ; page++ {
		ds, err := s.RecentDecisions(context.Background(), f, before, 7)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, d := range ds {
			if !reflect.DeepEqual(d, byID[d.ID]) {
				t.Fatalf("%s: decision %d reads\n%+v\nwant\n%+v", name, d.ID, d, byID[d.ID])
			}
			got = append(got, d.ID)
		}
		if len(ds) < 7 || page > len(all) {
			break
		}
		before = ds[len(ds)-1].ID
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s: got ids %v, want %v", name, got, want)
	}
}
