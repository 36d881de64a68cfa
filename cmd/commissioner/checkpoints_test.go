package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine/audit"
)

// TestServiceSignsCheckpoints: serve signs its partitions' heads while it runs and at shutdown,
// into the store, the checkpoint log (mode 0600, beside a 0600 key) and the CHECKPOINTS stream;
// audit pubkey prints the key and audit verify --checkpoints holds the store against the log. A
// checkpoint log of another key is refused.
func TestServiceSignsCheckpoints(t *testing.T) {
	cfg := pipelineConfig(t)
	cfg.Audit.CheckpointInterval = 50 * time.Millisecond
	svc := startRunning(t, cfg)
	lines := sampleLines(t, 1500, 7, "2025-10")
	waitSettledService(t, svc, publishAll(t, svc.js, svc.cfg.NATS, lines), time.Minute)
	var exported []audit.SignedCheckpoint
	waitUntil(t, 10*time.Second, "a checkpoint in the CHECKPOINTS stream", func() (bool, string) {
		var err error
		exported, err = stream.ReadCheckpoints(context.Background(), svc.js, svc.cfg.NATS.Stream)
		return err == nil && len(exported) > 0, fmt.Sprintf("%d, %v", len(exported), err)
	})
	if err := svc.stop(); err != nil {
		t.Fatal(err)
	}

	logPath, keyPath := filepath.Join(cfg.DataDir, "checkpoints.log"), filepath.Join(cfg.DataDir, "checkpoint.key")
	for _, p := range []string{logPath, keyPath} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v; want 0600", p, err, fi.Mode().Perm())
		}
	}
	logged, err := readCheckpoints(context.Background(), svc.cfg, logPath, nil)
	if err != nil || len(logged) == 0 || len(exported) == 0 || len(exported) > len(logged) {
		t.Fatalf("%d checkpoints logged (%v), %d exported to the stream before shutdown; want some, the log holding at least the stream's", len(logged), err, len(exported))
	}
	// The last one (signed at shutdown) names every partition's head as stored.
	vkey := cliOK(t, "audit", "pubkey", "--data-dir", cfg.DataDir)
	key, err := checkpointVerifier(svc.cfg, strings.TrimSpace(vkey))
	if err != nil {
		t.Fatal(err)
	}
	last, err := audit.OpenCheckpoint(logged[len(logged)-1].Signed, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(last.Heads) != cfg.NATS.Partitions {
		t.Errorf("the last checkpoint names %d partitions, want %d", len(last.Heads), cfg.NATS.Partitions)
	}

	args := []string{"audit", "verify", "--data-dir", cfg.DataDir, "--checkpoints", logPath}
	if out := cliOK(t, args...); !strings.Contains(out, "stored as signed") || !strings.Contains(out, "OK:") {
		t.Errorf("audit verify --checkpoints printed:\n%s", out)
	}
	if out := cliOK(t, append(args, "--key", strings.TrimSpace(vkey))...); !strings.Contains(out, "OK:") {
		t.Errorf("audit verify --checkpoints --key printed:\n%s", out)
	}
	// A decision proven against the log: its batch links up to a signed head.
	var first struct {
		OrderID string `json:"order_id"`
	}
	if err := json.Unmarshal(lines[0], &first); err != nil {
		t.Fatal(err)
	}
	explained := cliOK(t, "explain", first.OrderID, "--data-dir", cfg.DataDir, "--proof", logPath)
	if !regexp.MustCompile(`checkpoint +proven: batches \d+–\d+ link to the head the checkpoint at .*checkpoints.log:\d+`).MatchString(explained) {
		t.Errorf("explain --proof printed:\n%s", explained)
	}
	// Another key: every checkpoint refused, and verify fails.
	otherDir := t.TempDir()
	if _, _, err := checkpointKey(filepath.Join(otherDir, "checkpoint.key"), true); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), append(args, "--key", filepath.Join(otherDir, "checkpoint.key")), nil, &out, &errOut)
	if code != 1 || !strings.Contains(out.String(), "checkpoint_signature") {
		t.Errorf("audit verify with another key: exit %d, printed:\n%s%s", code, out.String(), errOut.String())
	}
}

// cliOK runs a command line in-process and returns what it printed; it fails the test unless it
// exits 0.
func cliOK(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(context.Background(), args, nil, &out, &errOut); code != 0 {
		t.Fatalf("commissioner %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	}
	return out.String()
}

// TestReconcileFindsPurgedEvents: events purged from the order stream before any partition
// decided them are stream gaps; the ones decided are held, the stream is otherwise accounted for.
func TestReconcileFindsPurgedEvents(t *testing.T) {
	ctx := context.Background()
	natsCfg, _ := testBroker(t, stream.Config{})
	js := connectJS(t, natsCfg)
	s, err := stream.EnsureStream(ctx, js, natsCfg)
	if err != nil {
		t.Fatal(err)
	}
	last := publishAll(t, js, natsCfg, sampleLines(t, 800, 5, "2025-10"))
	// An insider purges partition 3 before the service has read it.
	before, _ := s.Info(ctx)
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(natsCfg.PartitionFilter(3))); err != nil {
		t.Fatal(err)
	}
	after, _ := s.Info(ctx)
	purged := before.State.Msgs - after.State.Msgs
	if purged == 0 {
		t.Fatal("nothing was purged from partition 3")
	}

	cfg := pipelineConfig(t)
	cfg.NATS.URL, cfg.NATS.User, cfg.NATS.Password = natsCfg.URL, natsCfg.User, natsCfg.Password
	cfg.Audit.ReconcileInterval = 100 * time.Millisecond
	svc := startRunning(t, cfg)
	waitSettledService(t, svc, last, time.Minute)
	// The service's own reconciliation says so too, in its log and its metrics. It logs when the
	// loss is first seen, which may be before the partitions drained (pending > 0).
	lostLine := fmt.Sprintf(`order events were lost from the stream before they were decided: run audit verify --reconcile" .*lost=%d pending=\d+`, purged)
	waitUntil(t, 10*time.Second, "the service to report the loss", func() (bool, string) {
		return regexp.MustCompile(lostLine).MatchString(svc.logs.String()), "not yet"
	})
	var metrics bytes.Buffer
	if fams, err := svc.metrics.Registry.Gather(); err == nil {
		for _, f := range fams {
			if f.GetName() == "commissioner_stream_lost_events" {
				fmt.Fprint(&metrics, f.GetMetric()[0].GetGauge().GetValue())
			}
		}
	}
	if metrics.String() != fmt.Sprint(purged) {
		t.Errorf("commissioner_stream_lost_events = %q, want %d", metrics.String(), purged)
	}
	cfg = svc.cfg
	rec, err := reconcile(ctx, cfg, svc.store)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Skipped != "" || rec.Lost != purged || rec.Pending != 0 || rec.Consumed != last-purged || len(rec.Findings) == 0 {
		t.Fatalf("reconciled: %+v; want %d lost (the purged), none pending, %d consumed", rec, purged, last-purged)
	}
	var out bytes.Buffer
	err = runAuditVerify(ctx, svc.store, auditVerifyParams{Workers: 2, MaxFindings: 5}, audit.VerifyOptions{Reconciled: &rec}, &out, io.Discard)
	// Partition 3 was claimed and never wrote a batch: its genesis head is no finding.
	if !errors.Is(err, exitCode(1)) || !strings.Contains(out.String(), "stream_gap") || strings.Contains(out.String(), "head_mismatch") ||
		!strings.Contains(out.String(), fmt.Sprintf("%d were lost", purged)) {
		t.Errorf("audit verify with the reconciliation: %v, printed:\n%s", err, out.String())
	}
}

// TestNATSOutageIsLogged: the broker going away is an ERROR once, and its return a WARN once with
// how long it was gone; the service's own shutdown is neither.
func TestNATSOutageIsLogged(t *testing.T) {
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	natsCfg := stream.Config{DataDir: t.TempDir(), EmbeddedListen: addr}.WithDefaults()
	emb, err := stream.StartEmbedded(ctx, natsCfg)
	if err != nil {
		t.Fatal(err)
	}
	natsCfg = asExternal(t, emb, natsCfg)
	cfg := pipelineConfig(t)
	cfg.NATS.URL, cfg.NATS.User, cfg.NATS.Password = natsCfg.URL, natsCfg.User, natsCfg.Password
	svc := startRunning(t, cfg)

	if err := emb.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the lost connection in the log", func() (bool, string) {
		return strings.Contains(svc.logs.String(), "NATS connection lost"), "not yet"
	})
	if emb, err = stream.StartEmbedded(ctx, natsCfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emb.Shutdown() })
	waitUntil(t, 10*time.Second, "the connection back in the log", func() (bool, string) {
		return regexp.MustCompile(`NATS connection back" .*after=\S+`).MatchString(svc.logs.String()), "not yet"
	})
	waitSharing(t, svc) // the consumer is back at work before it is stopped
	if err := svc.stop(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(svc.logs.String(), "NATS connection lost"); n != 1 {
		t.Errorf("%d lost-connection lines, want the outage's one (not the shutdown's):\n%s", n, svc.logs.String())
	}
}
