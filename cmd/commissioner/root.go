package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// exitCode is an error that sets the exit status without printing anything more: the command
// already said what went wrong (eval's rejected lines, a failed policy test).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// streams are a command's standard input and outputs, so tests run commands in-process.
type streams struct {
	in       io.Reader
	out, err io.Writer
}

// run executes the command line and returns the process exit status: 0 success, 1 failure,
// 2 a usage error.
func run(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) int {
	root := newRootCmd(streams{in: in, out: out, err: errOut})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var code exitCode
	if errors.As(err, &code) {
		return int(code)
	}
	fmt.Fprintf(errOut, "commissioner: %v\n", err)
	if isUsage(err) {
		return 2
	}
	return 1
}

type usageError struct{ error }

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

func newRootCmd(s streams) *cobra.Command {
	root := &cobra.Command{
		Use:   "commissioner",
		Short: "Decide affiliate commissions with versioned CEL policies",
		Long: `Commissioner decides affiliate commissions: every order event is evaluated against the policy
version in force at the order's time, and every decision records that version, its digest and
what each rule said.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(s.in)
	root.SetOut(s.out)
	root.SetErr(s.err)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w\n%s", err, c.UsageString())}
	})
	// Every command, in one place: the pipeline, then deciding and pricing, then auditing and
	// paying, then the tools.
	for _, c := range []func(streams) *cobra.Command{
		newServeCmd, newPublishCmd, newDemoCmd,
		newEvalCmd, newPolicyCmd, newReplayCmd, newShadowCmd,
		newExplainCmd, newAuditCmd, newDeadLettersCmd, newPayoutsCmd, newAffiliatesCmd,
		newLoadCmd, newSampleCmd, newConfigCmd,
	} {
		root.AddCommand(c(s))
	}
	return root
}

// writeJSONDoc writes v as indented JSON: every command's --json / --format json document.
func writeJSONDoc(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
