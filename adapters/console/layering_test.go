package console

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// renderingPackages are the only adapters the console may import: pure rendering packages that
// cmd uses too and that import no adapter themselves (checked below). replayreport is the replay
// report's view model and template body, shared with `replay --format html` so the two cannot
// drift.
var renderingPackages = map[string]string{
	"github.com/commissioner/commissioner/adapters/replayreport": "../replayreport",
}

// imports returns the imports of the non-test Go files of dir, by file name.
func imports(t *testing.T, dir string) map[string][]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, name), nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = []string{}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			out[name] = append(out[name], path)
		}
	}
	return out
}

// TestDependsOnPortsNotOnAdapters: the console reads through the port it declares (Store) and
// engine/audit; no non-test file of it imports another adapter, but for the pure rendering
// packages (renderingPackages), which import none.
func TestDependsOnPortsNotOnAdapters(t *testing.T) {
	files := imports(t, ".")
	if len(files) < 3 {
		t.Fatalf("checked %d files: the test no longer finds the package's sources", len(files))
	}
	for name, paths := range files {
		for _, path := range paths {
			if _, ok := renderingPackages[path]; ok {
				continue
			}
			if strings.Contains(path, "/commissioner/adapters/") {
				t.Errorf("%s imports %s: the console must depend on ports, not on another adapter", name, path)
			}
		}
	}
	for pkg, dir := range renderingPackages {
		rfiles := imports(t, dir)
		if len(rfiles) == 0 {
			t.Fatalf("%s: no sources in %s", pkg, dir)
		}
		for name, paths := range rfiles {
			for _, path := range paths {
				if strings.Contains(path, "/commissioner/adapters/") {
					t.Errorf("%s/%s imports %s: a rendering package the console imports must import no adapter", pkg, name, path)
				}
			}
		}
	}
}
