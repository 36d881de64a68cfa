package main

// commissioner policy promote: a shadow version becomes the program's next live version.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

type promoteParams struct {
	File          string    // the shadow version's file
	EffectiveFrom time.Time // the live version's effective_from
}

func newPolicyPromoteCmd(s streams) *cobra.Command {
	var p promoteParams
	var at string
	cmd := &cobra.Command{
		Use:   "promote FILE --effective-from T [--policies DIR] [config flags]",
		Short: "Make a shadow version the program's next live version, in force from T",
		Long: `Writes the live version a shadow version (a policy file with stage: shadow) becomes: the shadow's
file with the program's next version number (after every live and shadow version in the policy
directory and every version stored decisions used), effective_from set to T, and stage and sample
removed — every other line, comment and test kept — as <policies>/<program>/v<N>.yaml.

It refuses, writing nothing:
  - a file that is not a shadow version, or does not compile;
  - a policy set that, with the new version, fails policy check (errors) or policy test;
  - an effective date at or before the latest order time (placed_at) of any stored decision of
    the program (the new version would have been in force for orders decided already), or
    before the effective_from of the program's latest live version;
  - a file of that name that exists already (it never overwrites).

The file is written atomically (a temporary file in the same directory, synced, then linked to
its name), with the mode of the program's latest version file (0600 when there is none). The
shadow file stays: remove it (or keep it as a shadow) once the new version is served; serve
reloads the policy directory when it changes.`,
		Args: cobra.ExactArgs(1),
	}
	cf := addConfigFlags(cmd, storeFlags|flagPolicies)
	cmd.Flags().StringVar(&at, "effective-from", "", "when the new live version takes effect (RFC 3339, or a date 2026-01-01, UTC)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		p.File = args[0]
		if at == "" {
			return usageError{errors.New("--effective-from is required: when the new live version takes effect")}
		}
		var err error
		if p.EffectiveFrom, err = parseReplayTime("--effective-from", at); err != nil {
			return err
		}
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		return runPolicyPromote(cmd.Context(), cfg, p, s.out)
	}
	return cmd
}

// promoteStore is what promotion asks the store: the versions stored decisions used, and the
// latest order time decided.
type promoteStore interface {
	PolicyVersions(ctx context.Context, program string) ([]store.StoredPolicy, error)
	LatestDecided(ctx context.Context, program string) (store.LatestOrder, bool, error)
}

// runPolicyPromote promotes the shadow p.File into the policy directory cfg.Policies, checking
// the resulting set and the store first.
func runPolicyPromote(ctx context.Context, cfg Config, p promoteParams, out io.Writer) error {
	src, err := os.ReadFile(p.File)
	if err != nil {
		return fmt.Errorf("promoting: %w", err)
	}
	shadow, problems := rules.Compile(p.File, src)
	if shadow == nil {
		return fmt.Errorf("promoting %s: it does not compile:\n%w", p.File, problems)
	}
	if !shadow.IsShadow() {
		return fmt.Errorf("promoting %s: %s v%d is not a shadow version (stage: shadow): only a shadow is promoted", p.File, shadow.Program, shadow.Version)
	}
	if err := existingStore(cfg, "promoting "+p.File); err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.storeConfig())
	if err != nil {
		return err
	}
	defer st.Close()
	target, promoted, err := promotion(ctx, cfg.Policies, shadow, p.EffectiveFrom, st)
	if err != nil {
		return err
	}
	mode := policyFileMode(cfg.Policies, shadow.Program)
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		return fmt.Errorf("promoting: %w", err)
	}
	if err := writeNewFile(target, promoted.Source, mode); err != nil {
		return fmt.Errorf("promoting %s: writing %s: %w", p.File, target, err)
	}
	fmt.Fprintf(out, "promoted %s (shadow %s v%d, %s)\n", p.File, shadow.Program, shadow.Version, shadow.Digest)
	fmt.Fprintf(out, "wrote %s: %s v%d, in force from %s, %s\n", target, promoted.Program, promoted.Version,
		promoted.EffectiveFrom.Format(time.RFC3339), promoted.Digest)
	fmt.Fprintf(out, "the shadow file stays a shadow: remove it once v%d is served\n", promoted.Version)
	return nil
}

// promotion works out and checks the live version shadow becomes in the policy directory dir,
// in force from at: its path and compiled policy. It writes nothing.
func promotion(ctx context.Context, dir string, shadow *rules.Policy, at time.Time, st promoteStore) (string, *rules.Policy, error) {
	fail := func(format string, args ...any) (string, *rules.Policy, error) {
		return "", nil, fmt.Errorf("promoting %s: "+format, append([]any{shadow.File}, args...)...)
	}
	current, err := engine.CheckPolicies(ctx, dir)
	if err != nil {
		return fail("loading the policies in %s:\n%w", dir, err)
	}
	// The next number: after every version of the program in the directory (live or shadow),
	// the shadow's own, and every version stored decisions used.
	next := shadow.Version
	var latestLive *rules.Policy
	for _, pol := range current.Set.All() {
		if pol.Program != shadow.Program {
			continue
		}
		next = max(next, pol.Version)
		if !pol.IsShadow() && (latestLive == nil || pol.EffectiveFrom.After(latestLive.EffectiveFrom)) {
			latestLive = pol
		}
	}
	stored, err := st.PolicyVersions(ctx, shadow.Program)
	if err != nil {
		return "", nil, err
	}
	for _, sp := range stored {
		next = max(next, sp.Version)
	}
	next++

	if latestLive != nil && at.Before(latestLive.EffectiveFrom) {
		return fail("--effective-from %s is before %s v%d's effective_from %s (%s): the new version would be in force only until then",
			at.Format(time.RFC3339), latestLive.Program, latestLive.Version, latestLive.EffectiveFrom.Format(time.RFC3339), latestLive.File)
	}
	latest, ok, err := st.LatestDecided(ctx, shadow.Program)
	if err != nil {
		return "", nil, err
	}
	if ok && !at.After(latest.PlacedAt) {
		return fail("--effective-from %s is not after %s, the time of order %s of program %s, which is decided already (event %s): "+
			"a version in force from then would have decided it; choose a time after the latest decided order",
			at.Format(time.RFC3339), latest.PlacedAt.Format(time.RFC3339Nano), latest.OrderID, shadow.Program, latest.EventID)
	}

	target := filepath.Join(dir, shadow.Program, fmt.Sprintf("v%d.yaml", next))
	if latestLive != nil {
		target = filepath.Join(filepath.Dir(latestLive.File), fmt.Sprintf("v%d.yaml", next))
	}
	if _, err := os.Lstat(target); err == nil {
		return fail("%s exists already: promotion never overwrites a file", target)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", nil, fmt.Errorf("promoting: %w", err)
	}
	src, err := rules.Promote(shadow, next, at)
	if err != nil {
		return "", nil, fmt.Errorf("promoting: %w", err)
	}
	promoted, ps := rules.Compile(target, src)
	if promoted == nil {
		return fail("the promoted file does not compile:\n%w", ps)
	}
	// The resulting set, checked and tested as serve's gate would (engine.CheckPolicies).
	set, dup := rules.NewSet(append(current.Set.All(), promoted))
	if set == nil {
		return fail("%w", dup)
	}
	check := &engine.PolicyCheck{Set: set, Problems: append(append(append(append(rules.Problems(nil), current.Problems...), ps...),
		rules.Lint(promoted)...), rules.LintLayout(promoted)...)}
	check.Problems.Sort()
	check.Tests = engine.New(set).RunPolicyTests(ctx)
	if err := check.Err(); err != nil {
		return fail("the policies with %s v%d %w", promoted.Program, promoted.Version, err)
	}
	return target, promoted, nil
}

// policyFileMode is the permission bits of the program's latest version file in dir, or 0600
// when it has none: a promoted version is as readable as the versions beside it.
func policyFileMode(dir, program string) fs.FileMode {
	set, err := rules.LoadDir(dir)
	if err != nil {
		return 0o600
	}
	vs := set.Versions(program)
	if len(vs) == 0 {
		return 0o600
	}
	info, err := os.Stat(vs[len(vs)-1].File)
	if err != nil {
		return 0o600
	}
	return info.Mode().Perm()
}

// writeNewFile writes data to path atomically and never over an existing file: a temporary file
// in the same directory, with mode, synced, then hard-linked to path (which fails when path
// exists) and removed.
func writeNewFile(path string, data []byte, mode fs.FileMode) error {
	tmp, err := writeSyncedTemp(path, data, mode)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // the new name, durable
		d.Close()
	}
	return nil
}
