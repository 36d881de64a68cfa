package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commissioner/commissioner/adapters/store"
)

// copyDir copies the files of src into dst, keeping the layout.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatalf("copying %s: %v", src, err)
	}
}

// writeAtomic puts a file in place with one rename, as a careful editor or deploy does.
func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// reloads reads the policy reload counter of one result ("applied" or "refused").
func reloads(t *testing.T, svc *runningService, result string) float64 {
	t.Helper()
	mfs, err := svc.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "commissioner_policy_reloads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func waitReloads(t *testing.T, svc *runningService, result string, want float64) {
	t.Helper()
	waitUntil(t, 30*time.Second, fmt.Sprintf("%v %s policy reloads", want, result), func() (bool, string) {
		n := reloads(t, svc, result)
		return n >= want, fmt.Sprintf("%v %s", n, result)
	})
}

// decideOne publishes one order of the alibaba program placed at placedAt and returns its
// stored decision.
func decideOne(t *testing.T, svc *runningService, orderID, placedAt string) store.StoredDecision {
	t.Helper()
	line := fmt.Appendf(nil, `{"order_id":%q,"program":"alibaba","affiliate_id":"aff-1","status":"completed","placed_at":%q,`+
		`"buyer":{"id":"b-1","country":"US","new":true},"traffic_country":"US","currency":"USD","amount":"100.00"}`, orderID, placedAt)
	publishAll(t, svc.js, svc.cfg.NATS, [][]byte{line})
	var got []store.StoredDecision
	waitUntil(t, 30*time.Second, "the decision of "+orderID, func() (bool, string) {
		var err error
		got, err = svc.store.DecisionsByOrder(context.Background(), "alibaba", orderID)
		return err == nil && len(got) > 0, fmt.Sprintf("%d decisions, err %v", len(got), err)
	})
	if len(got) != 1 {
		t.Fatalf("order %s: got %d decisions, want 1", orderID, len(got))
	}
	return got[0]
}

// TestPipelinePolicyHotReload: a new version file dropped into the watched directory is loaded
// and decides the orders in its time; a broken file is refused and the running set stays; a
// version whose bytes changed after a decision used it is refused, at reload and at start,
// with the error that says to bump the version.
func TestPipelinePolicyHotReload(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policies")
	copyDir(t, repoPolicies(t), dir)
	v1Path := filepath.Join(dir, "alibaba", "v1.yaml")
	v1, err := os.ReadFile(v1Path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := pipelineConfig(t)
	cfg.Policies = dir
	cfg.WatchPolicies = true
	svc := startRunning(t, cfg)

	d := decideOne(t, svc, "r-1", "2025-10-05T12:00:00Z")
	if d.PolicyVersion != 1 {
		t.Fatalf("before the reload: got version %d, want 1", d.PolicyVersion)
	}
	v1Digest := d.PolicyDigest

	// A new version, in force from June: the watcher loads it.
	v2 := strings.Replace(string(v1), "\nversion: 1\n", "\nversion: 2\n", 1)
	v2 = strings.Replace(v2, "\neffective_from: 2025-01-01T00:00:00Z\n", "\neffective_from: 2025-06-01T00:00:00Z\n", 1)
	if v2 == string(v1) || strings.Count(v2, "version: 2") != 1 || !strings.Contains(v2, "2025-06-01T00:00:00Z") {
		t.Fatalf("test data: could not derive v2 from v1.yaml (its version or effective_from line changed)")
	}
	writeAtomic(t, filepath.Join(dir, "alibaba", "v2.yaml"), []byte(v2))
	waitReloads(t, svc, "applied", 1)
	if d := decideOne(t, svc, "r-2", "2025-10-06T12:00:00Z"); d.PolicyVersion != 2 {
		t.Errorf("an October order after the reload: got version %d, want 2", d.PolicyVersion)
	}
	if d := decideOne(t, svc, "r-3", "2025-03-10T12:00:00Z"); d.PolicyVersion != 1 {
		t.Errorf("a March order after the reload: got version %d, want 1", d.PolicyVersion)
	}

	// A broken file is refused; the running set (v1, v2) stays in force.
	broken := filepath.Join(dir, "alibaba", "v3.yaml")
	writeAtomic(t, broken, []byte("program: alibaba\nversion: 3\neffective_from: 2025-09-01T00:00:00Z\nrounding: half_up\n"+
		"qualify:\n  - id: broken\n    expr: order.no_such_field >\nrates:\n  - id: all\n    when: \"true\"\n    rate: \"5%\"\n"))
	waitReloads(t, svc, "refused", 1)
	if err := svc.reload(context.Background()); err == nil || !strings.Contains(err.Error(), "v3.yaml") {
		t.Errorf("reloading with a broken v3.yaml: got error %v, want one naming v3.yaml", err)
	}
	if d := decideOne(t, svc, "r-4", "2025-10-07T12:00:00Z"); d.PolicyVersion != 2 {
		t.Errorf("after the refused reload: got version %d, want 2 (the running set)", d.PolicyVersion)
	}
	if err := os.Remove(broken); err != nil {
		t.Fatal(err)
	}
	waitReloads(t, svc, "applied", 2)

	// v1 changed in place after decisions used it: refused, with the advice to bump the version.
	refused := reloads(t, svc, "refused")
	writeAtomic(t, v1Path, append(append([]byte(nil), v1...), "\n# an edit that keeps version 1\n"...))
	err = svc.reload(context.Background())
	if !errors.Is(err, store.ErrPolicyChanged) || !strings.Contains(err.Error(), "bump the version") {
		t.Errorf("reloading with v1.yaml changed in place: got error %v, want ErrPolicyChanged saying to bump the version", err)
	}
	waitReloads(t, svc, "refused", refused+1) // the watcher refused it too
	if d := decideOne(t, svc, "r-5", "2025-03-11T12:00:00Z"); d.PolicyVersion != 1 || d.PolicyDigest != v1Digest {
		t.Errorf("after the refused reload: got version %d digest %s, want the running v1 %s", d.PolicyVersion, d.PolicyDigest, v1Digest)
	}

	// And at start.
	if err := svc.stop(); err != nil {
		t.Fatal(err)
	}
	restart := cfg
	if err := restart.complete(); err != nil {
		t.Fatal(err)
	}
	again, err := startService(context.Background(), restart, newLogger(&syncBuffer{}))
	if err == nil {
		again.close()
		t.Fatal("starting with v1.yaml changed in place: got no error, want ErrPolicyChanged")
	}
	if !errors.Is(err, store.ErrPolicyChanged) || !strings.Contains(err.Error(), "bump the version") {
		t.Errorf("starting with v1.yaml changed in place: got error %v, want ErrPolicyChanged saying to bump the version", err)
	}
}
