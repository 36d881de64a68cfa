package replayreport

import (
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestImportsNoAdapter: the report is a pure rendering package, imported by the console and by
// cmd; it may know the engine's value types (and rules) and the standard library, nothing else
// of the project — no adapter, so importing it makes no adapter depend on another.
func TestImportsNoAdapter(t *testing.T) {
	const module = "github.com/commissioner/commissioner/"
	allowed := map[string]bool{module + "engine": true, module + "rules": true, "github.com/cockroachdb/apd/v3": true}
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
			if !strings.Contains(path, ".") { // the standard library
				continue
			}
			if !allowed[path] {
				t.Errorf("%s imports %s: the replay report may import engine, rules, apd and the standard library only", name, path)
			}
		}
	}
	if checked < 3 {
		t.Fatalf("checked %d files: the test no longer finds the package's sources", checked)
	}
}
