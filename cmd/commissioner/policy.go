package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

type policyParams struct {
	Policies string
	Strict   bool // warnings fail too
}

func newPolicyCmd(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check and test policy files before they ship",
	}
	p := policyParams{Policies: "policies"}
	check := &cobra.Command{
		Use:   "check [--policies DIR]",
		Short: "Compile every policy, report every problem with file:line, and lint the rate rules",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPolicyCheck(p, s.out)
		},
	}
	test := &cobra.Command{
		Use:   "test [--policies DIR]",
		Short: "Run the example orders kept in the policy files and report what differed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPolicyTest(cmd, p, s.out)
		},
	}
	for _, c := range []*cobra.Command{check, test} {
		c.Flags().StringVar(&p.Policies, "policies", p.Policies, "policy directory (or one file)")
	}
	check.Flags().BoolVar(&p.Strict, "strict", false, "fail on warnings too")
	cmd.AddCommand(check, test, newPolicyPromoteCmd(s))
	return cmd
}

// runPolicyCheck compiles and lints (rules.Check, the gate serve uses); it prints every problem
// and fails on any error (or, with --strict, any warning).
func runPolicyCheck(p policyParams, out io.Writer) error {
	set, problems, err := rules.Check(p.Policies)
	if err != nil {
		if ps, ok := err.(rules.Problems); ok {
			fmt.Fprintln(out, ps.Error())
			fmt.Fprintf(out, "policy check: %d problem(s)\n", len(ps))
			return exitCode(1)
		}
		return err
	}
	var versions, shadows, qualify, rates int
	for _, pol := range set.All() {
		versions++
		if pol.IsShadow() {
			shadows++
		}
		qualify += len(pol.Qualify)
		rates += len(pol.Rates)
	}
	for _, pr := range problems {
		fmt.Fprintln(out, pr.String())
	}
	failed := problems.HasErrors() || (p.Strict && len(problems) > 0)
	if failed {
		fmt.Fprintf(out, "policy check: %d problem(s)\n", len(problems))
		return exitCode(1)
	}
	shadowNote := ""
	if shadows > 0 {
		shadowNote = fmt.Sprintf(" (%d shadow)", shadows)
	}
	fmt.Fprintf(out, "policy check: ok: %d program(s), %d version(s)%s, %d qualification rule(s), %d rate rule(s)",
		len(set.Programs()), versions, shadowNote, qualify, rates)
	if len(problems) > 0 {
		fmt.Fprintf(out, ", %d warning(s)", len(problems))
	}
	fmt.Fprintln(out)
	return nil
}

// runPolicyTest runs every in-file example (engine.CheckPolicies, the gate serve uses); it prints PASS/FAIL per case with what differed.
func runPolicyTest(cmd *cobra.Command, p policyParams, out io.Writer) error {
	c, err := engine.CheckPolicies(cmd.Context(), p.Policies)
	if err != nil {
		if ps, ok := err.(rules.Problems); ok {
			fmt.Fprintln(out, ps.Error())
			return exitCode(1)
		}
		return err
	}
	results := c.Tests
	failed := 0
	for _, r := range results {
		if r.Passed() {
			fmt.Fprintf(out, "PASS %s\n", r.Name())
			continue
		}
		failed++
		fmt.Fprintf(out, "FAIL %s\n", r.Name())
		for _, d := range r.Diffs {
			fmt.Fprintf(out, "    %s\n", d)
		}
	}
	fmt.Fprintf(out, "policy-test: %d passed, %d failed\n", len(results)-failed, failed)
	if failed > 0 || len(results) == 0 {
		if len(results) == 0 {
			fmt.Fprintln(out, "policy test: no example orders found: add a tests: section")
		}
		return exitCode(1)
	}
	return nil
}
