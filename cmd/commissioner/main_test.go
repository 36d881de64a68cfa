package main

import (
	"context"
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets the txtar scripts run "commissioner" in-process.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"commissioner": func() { os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs the CLI end to end as a user would: testdata/script/*.txtar.
func TestScripts(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			// Scripts can copy the real policies with: cp-policies
			env.Setenv("REPO_POLICIES", wd+"/../../policies")
			// and hold the README's examples to what the commands print.
			env.Setenv("REPO_README", wd+"/../../README.md")
			return nil
		},
	})
}
