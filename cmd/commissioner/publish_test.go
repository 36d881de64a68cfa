package main

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPublishChecksLines: publish checks each line as eval decodes it, reports the bad ones with
// their line numbers and reasons, publishes only the good ones and exits 1; --raw publishes all.
func TestPublishChecksLines(t *testing.T) {
	cfg := pipelineConfig(t)
	svc := startRunning(t, cfg)
	good := sampleLines(t, 2, 3, "2025-10")
	input := string(good[0]) + "\n" + `{"order_id":"x","program":"alibaba"}` + "\n" + `{"order_id": ` + "\n" + string(good[1]) + "\n"
	var out bytes.Buffer
	err := runPublish(context.Background(), svc.cfg, publishParams{File: "-", Concurrency: 8}, strings.NewReader(input), &out)
	if !errors.Is(err, exitCode(1)) {
		t.Fatalf("publish with bad lines: %v, want exit 1\n%s", err, out.String())
	}
	for _, want := range []string{`(?m)^rejected line 2: \S.*$`, `(?m)^rejected line 3: \S.*$`,
		`(?m)^published 4 lines: 2 accepted, 0 duplicates dropped, 2 rejected, 0 failed$`} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("publish printed:\n%s\nwant a line matching %s", out.String(), want)
		}
	}
	out.Reset()
	if err := runPublish(context.Background(), svc.cfg, publishParams{File: "-", Concurrency: 8, Raw: true}, strings.NewReader(input), &out); err != nil ||
		!strings.Contains(out.String(), "published 4 lines: 2 accepted, 2 duplicates dropped, 0 rejected, 0 failed") {
		t.Errorf("publish --raw: %v, printed:\n%s", err, out.String())
	}
	waitUntil(t, 30*time.Second, "the raw bad lines dead-lettered", func() (bool, string) {
		st := mustStoreStats(t, svc)
		return st.Decisions == 2 && st.DeadLetters == 2, ""
	})
}
