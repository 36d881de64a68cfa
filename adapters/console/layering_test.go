package console

import (
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestDependsOnPortsNotOnAdapters: the console reads through the port it declares (Store) and
// engine/audit; no non-test file of it imports another adapter.
func TestDependsOnPortsNotOnAdapters(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.Contains(path, "/commissioner/adapters/") {
				t.Errorf("%s imports %s: the console must depend on ports, not on another adapter", name, path)
			}
		}
	}
	if checked < 3 {
		t.Fatalf("checked %d files: the test no longer finds the package's sources", checked)
	}
}
