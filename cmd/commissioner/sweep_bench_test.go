package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// BenchmarkReplaySweep times a whole `commissioner replay --sweep` of 8 points (the returning
// buyers' rate in the selected markets from 4% to 7.5% by 0.5%) against a single replay of the
// same store, each iteration running both, one after the other: the target is a sweep of 8
// points over 1 M stored orders in at most 3× a single replay (sweep/replay-wall, and
// sweep/replay-cpu, all cores together, which says more on a shared machine). The store is
// BenchmarkReplay's: COMMISSIONER_REPLAY_BENCH_ORDERS decided orders (default 100 000), seeded once
// into $TMPDIR (or COMMISSIONER_REPLAY_BENCH_DIR) and kept.
//
//	COMMISSIONER_REPLAY_BENCH_ORDERS=1000000 go test ./cmd/commissioner -run '^$' -bench ReplaySweep -benchtime 3x
func BenchmarkReplaySweep(b *testing.B) {
	n := 100_000
	if s := os.Getenv("COMMISSIONER_REPLAY_BENCH_ORDERS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n <= 0 {
			b.Fatalf("COMMISSIONER_REPLAY_BENCH_ORDERS=%q: want a positive number", s)
		}
	}
	path := benchStore(b, n)
	candidate := writeCandidate(b, b.TempDir(), "5%")
	cfg := defaultConfig()
	cfg.DataDir = b.TempDir()
	cfg.Store.DSN = "sqlite://" + path
	if err := cfg.complete(); err != nil {
		b.Fatal(err)
	}
	single := replayParams{Policy: candidate, Format: "table", Source: "store", Changes: -1, Workers: runtime.GOMAXPROCS(0)}
	sweep := single
	if err := sweep.parseSweep([]string{"selected_returning.rate=4%..7.5%/0.5%"}, []string{"USD:-5000"}); err != nil {
		b.Fatal(err)
	}
	if len(sweep.Sweep[0].Values) != 8 {
		b.Fatalf("%d points, want 8", len(sweep.Sweep[0].Values))
	}
	ctx := context.Background()
	var singleWall, sweepWall, singleCPU, sweepCPU time.Duration
	b.ResetTimer()
	for b.Loop() {
		var errOut bytes.Buffer
		start, cpu := time.Now(), processCPUTime()
		if err := runReplay(ctx, cfg, single, io.Discard, &errOut); err != nil {
			b.Fatalf("replay: %v\n%s", err, errOut.String())
		}
		mid, cpuMid := time.Now(), processCPUTime()
		if err := runSweep(ctx, cfg, sweep, io.Discard, &errOut); err != nil {
			b.Fatalf("sweep: %v\n%s", err, errOut.String())
		}
		singleWall += mid.Sub(start)
		sweepWall += time.Since(mid)
		singleCPU += cpuMid - cpu
		sweepCPU += processCPUTime() - cpuMid
	}
	runs := float64(b.N)
	b.ReportMetric(singleWall.Seconds()/runs, "s/replay")
	b.ReportMetric(sweepWall.Seconds()/runs, "s/sweep")
	b.ReportMetric(sweepWall.Seconds()/singleWall.Seconds(), "sweep/replay-wall")
	b.ReportMetric(sweepCPU.Seconds()/max(singleCPU.Seconds(), 1e-9), "sweep/replay-cpu")
	b.ReportMetric(float64(sweepCPU)/runs/float64(n), "sweep-cpu-ns/order")
}
