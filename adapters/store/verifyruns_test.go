package store

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/commissioner/commissioner/engine/audit"
)

func runVerifyRunSuite(t *testing.T, b backend) {
	ctx := context.Background()
	s := openStore(t, b.fresh(t))
	if _, err := s.LastVerifyRun(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LastVerifyRun before any run: %v, want ErrNotFound", err)
	}
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	clean := audit.NewVerifyRun("cli", "", t0, t0.Add(2*time.Second),
		&audit.VerifyReport{Decisions: 10, Reproduced: 10, Orders: 9, ByKind: map[string]int{}}, nil)
	found := audit.NewVerifyRun("console", "alibaba", t0.Add(time.Minute), t0.Add(time.Minute+3*time.Second),
		&audit.VerifyReport{Decisions: 10, Reproduced: 9, Orders: 9, Findings: 2, Checkpoints: 4,
			ByKind: map[string]int{"decision_drift": 1, "leaf_mismatch": 1}}, nil)
	failed := audit.NewVerifyRun("console", "", t0.Add(30*time.Second), t0.Add(40*time.Second), nil, context.DeadlineExceeded)
	// Recorded out of order: the last to finish is the last run.
	for _, r := range []audit.VerifyRun{found, clean, failed} {
		if _, err := s.RecordVerifyRun(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.LastVerifyRun(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := found
	want.ID = got.ID
	if !reflect.DeepEqual(got, want) || got.OK() {
		t.Errorf("LastVerifyRun = %+v\nwant %+v (not OK)", got, want)
	}
	if !clean.OK() || failed.OK() || failed.Err != "context deadline exceeded" {
		t.Errorf("OK: clean %v, failed %v (%q); want true, false", clean.OK(), failed.OK(), failed.Err)
	}
}

func TestSQLiteVerifyRuns(t *testing.T) { runVerifyRunSuite(t, sqliteBackend()) }

func TestPostgresVerifyRuns(t *testing.T) {
	postgresAdmin(t)
	runVerifyRunSuite(t, postgresBackend())
}
