package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commissioner/commissioner/engine/audit"
)

// schemaVerifyRuns is one row per recorded `audit verify` run (audit.VerifyRun); by_kind is a JSON
// object of finding counts.
const schemaVerifyRuns = `
CREATE TABLE IF NOT EXISTS verify_runs (
	id          {{PK}},
	started_at  {{Time}} NOT NULL,
	finished_at {{Time}} NOT NULL,
	by_whom     TEXT NOT NULL,
	program     TEXT NOT NULL,
	decisions   BIGINT NOT NULL,
	reproduced  BIGINT NOT NULL,
	orders      BIGINT NOT NULL,
	findings    BIGINT NOT NULL,
	by_kind     TEXT NOT NULL,
	checkpoints BIGINT NOT NULL,
	error       TEXT NOT NULL
);
`

type verifyRunRow struct {
	bun.BaseModel `bun:"table:verify_runs"`

	ID          int64     `bun:"id,pk,autoincrement"`
	StartedAt   time.Time `bun:"started_at"`
	FinishedAt  time.Time `bun:"finished_at"`
	By          string    `bun:"by_whom"`
	Program     string    `bun:"program"`
	Decisions   int64     `bun:"decisions"`
	Reproduced  int64     `bun:"reproduced"`
	Orders      int64     `bun:"orders"`
	Findings    int64     `bun:"findings"`
	ByKind      string    `bun:"by_kind"`
	Checkpoints int64     `bun:"checkpoints"`
	Error       string    `bun:"error"`
}

// RecordVerifyRun stores a run of audit verify and returns its id.
func (s *Store) RecordVerifyRun(ctx context.Context, run audit.VerifyRun) (int64, error) {
	byKind, err := json.Marshal(run.ByKind)
	if err != nil || run.ByKind == nil {
		byKind = []byte("{}")
	}
	row := verifyRunRow{StartedAt: run.StartedAt.UTC(), FinishedAt: run.FinishedAt.UTC(), By: safeText(run.By),
		Program: safeText(run.Program), Decisions: run.Decisions, Reproduced: run.Reproduced, Orders: run.Orders,
		Findings: int64(run.Findings), ByKind: string(byKind), Checkpoints: int64(run.Checkpoints), Error: safeText(run.Err)}
	err = s.writeTx(ctx, func(ctx context.Context, w *wtx) error {
		_, err := w.NewInsert().Model(&row).Returning("id").Exec(ctx, &row.ID)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("recording the audit verify run: %w", err)
	}
	return row.ID, nil
}

// LastVerifyRun returns the latest recorded run of audit verify (the last to finish); ErrNotFound
// when none was recorded.
func (s *Store) LastVerifyRun(ctx context.Context) (audit.VerifyRun, error) {
	var row verifyRunRow
	err := s.db.NewSelect().Model(&row).OrderExpr("finished_at DESC, id DESC").Limit(1).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return audit.VerifyRun{}, fmt.Errorf("the last audit verify run: %w", ErrNotFound)
	}
	if err != nil {
		return audit.VerifyRun{}, fmt.Errorf("reading the last audit verify run: %w", err)
	}
	run := audit.VerifyRun{ID: row.ID, StartedAt: row.StartedAt.UTC(), FinishedAt: row.FinishedAt.UTC(), By: row.By,
		Program: row.Program, Decisions: row.Decisions, Reproduced: row.Reproduced, Orders: row.Orders,
		Findings: int(row.Findings), Checkpoints: int(row.Checkpoints), Err: row.Error}
	if err := json.Unmarshal([]byte(row.ByKind), &run.ByKind); err != nil {
		return run, fmt.Errorf("the audit verify run %d: by_kind: %w", row.ID, err)
	}
	return run, nil
}
