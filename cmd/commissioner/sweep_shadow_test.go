package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSweepPricesAShadowAsLive: a shadow version's file (stage: shadow) is swept as `replay
// --policy` prices it, as if it were in force: every point's summary is, digit for digit, the
// summary of the same file without the stage line.
func TestSweepPricesAShadowAsLive(t *testing.T) {
	cfg, _ := sweepStore(t, 400)
	live := writeCandidate(t, t.TempDir(), "5%")
	src, err := os.ReadFile(live)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(src, []byte("\nversion: 2\n")) {
		t.Fatalf("the candidate has no line version: 2")
	}
	shadow := filepath.Join(t.TempDir(), "v2.yaml")
	if err := os.WriteFile(shadow, bytes.Replace(src, []byte("\nversion: 2\n"), []byte("\nversion: 2\nstage: shadow\n"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	sweeps := []string{"selected_returning.rate=4%,5%"}
	want, errOut, err := sweepReport(t, cfg, replayParams{Policy: live}, sweeps, nil)
	if err != nil {
		t.Fatalf("sweeping the live file: %v\n%s", err, errOut)
	}
	got, errOut, err := sweepReport(t, cfg, replayParams{Policy: shadow}, sweeps, nil)
	if err != nil {
		t.Fatalf("sweeping the shadow file: %v\n%s", err, errOut)
	}
	if len(got.Points) != 2 || len(want.Points) != 2 {
		t.Fatalf("%d and %d points, want 2 each", len(got.Points), len(want.Points))
	}
	for i := range got.Points {
		g, _ := json.Marshal(got.Points[i].Summary)
		w, _ := json.Marshal(want.Points[i].Summary)
		if !bytes.Equal(g, w) {
			t.Errorf("point %d: the shadow file's summary\n%s\nthe live file's\n%s", i+1, g, w)
		}
		if got.Points[i].Summary.Evaluated != 400 || i == 0 && got.Points[i].Summary.CommissionChanged == 0 {
			t.Errorf("point %d: evaluated %d, changed %d; want 400, and some changed at 4%%", i+1,
				got.Points[i].Summary.Evaluated, got.Points[i].Summary.CommissionChanged)
		}
		if !strings.Contains(got.Points[i].Candidate.Digest, "sha256:") {
			t.Errorf("point %d: digest %q", i+1, got.Points[i].Candidate.Digest)
		}
	}
}
