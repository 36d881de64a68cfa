package engine_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/commissioner/commissioner/rules"
)

func itoa(n int) string { return strconv.Itoa(n) }

// baseOrderFlow is the seed policy's base example order, as a YAML flow mapping.
const baseOrderFlow = `{order_id: t-1, program: alibaba, affiliate_id: aff-1, status: completed, ` +
	`placed_at: "2025-03-10T12:00:00Z", click_at: "2025-03-01T12:00:00Z", ` +
	`buyer: {id: b-1, country: US, new: true}, traffic_country: US, currency: USD, amount: "2941.00"}`

// seedPolicy returns the seed policy file's bytes.
func seedPolicy(t testing.TB) []byte {
	t.Helper()
	src, err := os.ReadFile("../policies/alibaba/v1.yaml")
	if err != nil {
		t.Fatalf("reading the seed policy: %v", err)
	}
	return src
}

// seedWithTests returns the seed policy's terms (everything before its tests) followed by tests.
func seedWithTests(tests string) string {
	src, err := os.ReadFile("../policies/alibaba/v1.yaml")
	if err != nil {
		panic(err)
	}
	s := string(src)
	if i := strings.Index(s, "\ntests:"); i >= 0 {
		s = s[:i+1]
	}
	return s + tests
}

// withVersion rewrites the version and effective_from lines of a policy.
func withVersion(src string, version int, effectiveFrom string) string {
	var out []string
	for _, line := range strings.Split(src, "\n") {
		switch {
		case strings.HasPrefix(line, "version:"):
			line = "version: " + strconv.Itoa(version)
		case strings.HasPrefix(line, "effective_from:"):
			line = "effective_from: " + effectiveFrom
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// mustSet writes files (path relative to a temp dir -> content) and loads them as a policy set.
func mustSet(t testing.TB, files map[string]string) *rules.Set {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	set, err := rules.LoadDir(dir)
	if err != nil {
		t.Fatalf("loading policies: %v", err)
	}
	return set
}

// seedSet loads the seed policies directory.
func seedSet(t testing.TB) *rules.Set {
	t.Helper()
	set, err := rules.LoadDir("../policies")
	if err != nil {
		t.Fatalf("loading ../policies: %v", err)
	}
	return set
}
