package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/uptrace/bun"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// ErrPolicyChanged: a policy file's content changed while its version number stayed the same,
// after the stored version was used. The running set must refuse such a file.
var ErrPolicyChanged = errors.New("policy changed without a new version")

// PolicyChangedError is the error CheckPolicies and WriteBatch return for a changed policy file.
// It matches ErrPolicyChanged (errors.Is).
type PolicyChangedError struct {
	File          string
	Program       string
	Version       int
	StoredDigest  string
	CurrentDigest string
}

func (e *PolicyChangedError) Error() string {
	return fmt.Sprintf("%s: %s version %d is stored with digest %s, but the file now has digest %s: "+
		"decisions were made with the stored text, so a changed policy needs a new version number — bump the version",
		e.File, e.Program, e.Version, e.StoredDigest, e.CurrentDigest)
}

func (e *PolicyChangedError) Unwrap() error { return ErrPolicyChanged }

// Is makes the error match engine.ErrPermanent: retrying the batch does not help until the
// version's stored file is restored or the change gets a new version number.
func (e *PolicyChangedError) Is(target error) bool { return target == engine.ErrPermanent }

// Saved counts what one batch wrote (SavedOf).
type Saved struct {
	Events      int // order events newly stored
	Decisions   int // decisions newly stored
	DeadLetters int // dead letters newly stored
	// Duplicates counts results whose decision or dead letter was stored already (a redelivery,
	// or the same event twice in the batch): nothing was written for them.
	Duplicates int
}

// --- rows as written ---

type policyRow struct {
	bun.BaseModel `bun:"table:policy_versions"`

	Program       string    `bun:"program"`
	Version       int       `bun:"version"`
	Digest        string    `bun:"digest"`
	Source        string    `bun:"source"`
	File          string    `bun:"file"`
	EffectiveFrom time.Time `bun:"effective_from"`
	FirstUsedAt   time.Time `bun:"first_used_at"`
}

// isDeadlock reports whether err is PostgreSQL's deadlock_detected (40P01).
func isDeadlock(err error) bool {
	var pg interface{ Field(byte) string }
	return errors.As(err, &pg) && pg.Field('C') == "40P01"
}

// storePolicies stores policy versions on first use and refuses one stored with another digest.
func (s *Store) storePolicies(ctx context.Context, tx bun.Tx, ps []*rules.Policy, now time.Time) error {
	if len(ps) == 0 {
		return nil
	}
	rows := make([]policyRow, len(ps))
	for i, p := range ps {
		rows[i] = policyRow{Program: p.Program, Version: p.Version, Digest: p.Digest, Source: string(p.Source),
			File: p.File, EffectiveFrom: p.EffectiveFrom.UTC(), FirstUsedAt: now}
	}
	if _, err := tx.NewInsert().Model(&rows).On("CONFLICT (program, version) DO NOTHING").Exec(ctx); err != nil {
		return fmt.Errorf("inserting %d policy versions: %w", len(rows), err)
	}
	for _, p := range ps {
		var digest string
		if err := tx.NewSelect().Table("policy_versions").Column("digest").
			Where("program = ? AND version = ?", p.Program, p.Version).Scan(ctx, &digest); err != nil {
			return fmt.Errorf("reading policy %s v%d: %w", p.Program, p.Version, err)
		}
		if digest != p.Digest {
			return &PolicyChangedError{File: p.File, Program: p.Program, Version: p.Version, StoredDigest: digest, CurrentDigest: p.Digest}
		}
	}
	return nil
}

// CheckPolicies compares policy versions with the stored ones: a (program, version) stored with
// another digest gives an error wrapping ErrPolicyChanged (a *PolicyChangedError per changed
// file, joined), naming the file, program, version and both digests. Versions not stored yet are
// fine. Call it before a policy set goes into service (start, reload).
func (s *Store) CheckPolicies(ctx context.Context, ps []*rules.Policy) error {
	if len(ps) == 0 {
		return nil
	}
	programs := map[string]bool{}
	var names []string
	for _, p := range ps {
		if !programs[p.Program] {
			programs[p.Program] = true
			names = append(names, p.Program)
		}
	}
	var rows []struct {
		Program string `bun:"program"`
		Version int    `bun:"version"`
		Digest  string `bun:"digest"`
	}
	if err := s.db.NewSelect().Table("policy_versions").Column("program", "version", "digest").
		Where("program IN (?)", bun.In(names)).Scan(ctx, &rows); err != nil {
		return fmt.Errorf("checking policies against the store: %w", err)
	}
	stored := make(map[string]string, len(rows))
	for _, r := range rows {
		stored[policyKey(r.Program, r.Version)] = r.Digest
	}
	var errs []error
	for _, p := range ps {
		if d, ok := stored[policyKey(p.Program, p.Version)]; ok && d != p.Digest {
			errs = append(errs, &PolicyChangedError{File: p.File, Program: p.Program, Version: p.Version, StoredDigest: d, CurrentDigest: p.Digest})
		}
	}
	return errors.Join(errs...)
}

func policyKey(program string, version int) string {
	return program + "\x00" + strconv.Itoa(version)
}
