package audit

import "time"

// VerifyRun is one recorded run of Verify over a store: when it ran, who ran it (the CLI, the
// console) and what it found — what the console's health page shows as "the last audit verify".
// It is a note for operators, not evidence: to know the store is whole, run Verify again.
type VerifyRun struct {
	ID                    int64
	StartedAt, FinishedAt time.Time
	By                    string // "cli" or "console"
	Program               string // the program verified; "": all
	Decisions, Reproduced int64  // decisions re-run, and re-run to exactly the stored row
	Orders                int64
	Findings              int
	ByKind                map[string]int // findings by kind
	Checkpoints           int            // signed checkpoints verified
	// Err says why the run could not finish (a failed read, a timeout); its counts are then
	// those reached.
	Err string
}

// OK reports whether the run finished and found nothing.
func (r VerifyRun) OK() bool { return r.Err == "" && r.Findings == 0 }

// NewVerifyRun records what rep found in a run that started and finished at the times given,
// or, with a nil rep, that it failed with err.
func NewVerifyRun(by, program string, started, finished time.Time, rep *VerifyReport, err error) VerifyRun {
	run := VerifyRun{StartedAt: started, FinishedAt: finished, By: by, Program: program, ByKind: map[string]int{}}
	if rep != nil {
		run.Decisions, run.Reproduced, run.Orders = rep.Decisions, rep.Reproduced, rep.Orders
		run.Findings, run.Checkpoints = rep.Findings, rep.Checkpoints
		for k, n := range rep.ByKind {
			run.ByKind[k] = n
		}
	}
	if err != nil {
		run.Err = err.Error()
	}
	return run
}
