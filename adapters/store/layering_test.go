package store

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// TestStoreNeverCallsTheEngine keeps the layering one way: an order goes decode → decide → book
// → chain in the engine, and the store only writes the rows it is given and reads rows back; the
// audit re-run (deciding stored events again, booking, recomputing leaves and roots) is the
// engine/audit package's, reading through its ports. No non-test file of the store may call the
// engine or the audit package to decide, encode, book, chain or check.
func TestStoreNeverCallsTheEngine(t *testing.T) {
	forbidden := map[string]bool{
		// decide
		"Pass": true, "Decide": true, "DecideWith": true, "DecideBatch": true, "DecideEvents": true, "DecodeEvents": true,
		"Explain": true, "ClaimPartition": true,
		// book
		"Book": true, "NewOrderBook": true, "ApproveAt": true, "Statements": true,
		// chain
		"AppendDecisionLeaf": true, "AppendDeadLetterLeaf": true, "LeafHash": true, "MerkleRoot": true,
		"InclusionProof": true, "VerifyInclusion": true,
		// encode
		"AppendJSON": true, "AppendCompactTrace": true, "AppendStrings": true,
		// check (engine/audit)
		"Verify": true, "NewAuditor": true, "Recheck": true,
	}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !forbidden[sel.Sel.Name] {
				return true
			}
			// engine.X(…) or audit.X(…), or an encoding method of an engine value (d.AppendJSON(…)).
			id, pkg := sel.X.(*ast.Ident)
			method := sel.Sel.Name == "AppendJSON" || sel.Sel.Name == "AppendCompactTrace"
			if !(pkg && (id.Name == "engine" || id.Name == "audit")) && !method {
				return true
			}
			t.Errorf("%s: the store calls the engine's %s: the write path must get every row computed (engine.Pass)", fset.Position(call.Pos()), sel.Sel.Name)
			return true
		})
	}
	if checked < 5 {
		t.Fatalf("checked %d files: the test no longer finds the store's sources", checked)
	}
}
