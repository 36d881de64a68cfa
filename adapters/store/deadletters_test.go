package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/commissioner/commissioner/engine"
)

func TestDeadLettersSQLite(t *testing.T)   { runDeadLetterSuite(t, sqliteBackend()) }
func TestDeadLettersPostgres(t *testing.T) { runDeadLetterSuite(t, postgresBackend()) }

// runDeadLetterSuite: dead letters are listed by kind, program and order, oldest first, and one
// is read whole; decodable ones keep their order's placed_at, undecodable ones have none.
func runDeadLetterSuite(t *testing.T, b backend) {
	ctx := context.Background()
	s := openStore(t, b.fresh(t))
	mustSave(t, s, genBatch(t, batchSpec{prefix: "dl", orders: 5, invalid: 3, unknownProgram: 2, noPolicy: 1, seed: 4}))

	all, err := s.DeadLetters(ctx, DeadLetterFilter{})
	if err != nil || len(all) != 6 {
		t.Fatalf("DeadLetters() = %d, %v; want 6", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID <= all[i-1].ID {
			t.Fatalf("not oldest first: %d after %d", all[i].ID, all[i-1].ID)
		}
	}
	kinds := map[string]int{}
	for _, d := range all {
		kinds[d.Kind]++
		if (d.Kind == engine.ErrorKindInvalid) != (d.PlacedAt == nil) {
			t.Errorf("dead letter %d (%s): placed_at %v; want one exactly when the event decoded", d.ID, d.Kind, d.PlacedAt)
		}
	}
	if kinds[engine.ErrorKindInvalid] != 3 || kinds[engine.ErrorKindUnknownProgram] != 2 || kinds[engine.ErrorKindNoPolicy] != 1 {
		t.Errorf("kinds %v, want 3 invalid, 2 unknown_program, 1 no_policy", kinds)
	}
	unknown, err := s.DeadLetters(ctx, DeadLetterFilter{Kind: engine.ErrorKindUnknownProgram, Program: "nosuchprogram"})
	if err != nil || len(unknown) != 2 {
		t.Errorf("by kind and program: %d, %v; want 2", len(unknown), err)
	}
	one, err := s.DeadLetters(ctx, DeadLetterFilter{OrderID: unknown[0].OrderID})
	if err != nil || len(one) != 1 || one[0].ID != unknown[0].ID {
		t.Errorf("by order: %+v, %v; want dead letter %d", one, err, unknown[0].ID)
	}
	if later, err := s.DeadLetters(ctx, DeadLetterFilter{From: time.Now().Add(time.Hour)}); err != nil || len(later) != 0 {
		t.Errorf("received from an hour ahead: %d, %v; want none", len(later), err)
	}
	d, err := s.DeadLetter(ctx, all[0].ID)
	if err != nil || d.EventID != all[0].EventID || len(d.Raw) == 0 || d.Reason == "" {
		t.Errorf("DeadLetter(%d) = %+v, %v", all[0].ID, d, err)
	}
	if _, err := s.DeadLetter(ctx, 1<<40); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeadLetter(missing) = %v, want ErrNotFound", err)
	}
}
