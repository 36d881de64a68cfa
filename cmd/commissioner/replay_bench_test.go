package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// seedDecided stores n sample orders placed in month, decided with the policies in dir, the way
// the pipeline stores them (an engine.PartitionWriter: history, pass, write per batch) but
// without NATS: each event gets the publisher's Nats-Msg-Id and a stream sequence from
// seqBase+1, all in partition 0.
func seedDecided(ctx context.Context, st *store.Store, policies string, n int, seed uint64, month string, seqBase uint64) error {
	set, err := rules.LoadDir(policies)
	if err != nil {
		return err
	}
	eng := engine.New(set)
	pub, err := stream.NewPublisher(nil, stream.DefaultConfig())
	if err != nil {
		return err
	}
	heads, err := st.PartitionHeads(ctx)
	if err != nil {
		return err
	}
	var epoch uint64 = 1
	for _, h := range heads {
		epoch = max(epoch, h.Epoch+1)
	}
	w, err := engine.ClaimPartition(ctx, st, 0, epoch)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 1<<16)
		err := writeSample(bw, sampleParams{N: n, Seed: seed, Program: "alibaba", Month: month})
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
	}()
	const batchSize = 5000
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	seq := seqBase
	var events []engine.Event
	for sc.Scan() {
		raw := bytes.Clone(sc.Bytes())
		m := pub.Message(raw)
		seq++
		events = append(events, engine.Event{ID: m.Header.Get(jetstream.MsgIDHeader), Subject: m.Subject, StreamSeq: seq,
			Raw: raw, ReceivedAt: time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC)})
		if len(events) == batchSize {
			if _, err := w.Write(ctx, eng, events); err != nil {
				pr.CloseWithError(err)
				return err
			}
			events = nil
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(events) > 0 {
		_, err = w.Write(ctx, eng, events)
	}
	return err
}

// processCPUTime is the CPU time this process used so far, user and system, on every core.
func processCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchStore returns a SQLite store of n decided sample orders (October 2025), seeded on first
// use into $TMPDIR (or COMMISSIONER_REPLAY_BENCH_DIR) and kept for later runs.
func benchStore(b *testing.B, n int) string {
	b.Helper()
	dir := os.Getenv("COMMISSIONER_REPLAY_BENCH_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("commissioner-replay-bench-%d.db", n))
	ready := path + ".ready"
	if _, err := os.Stat(ready); err == nil {
		return path
	}
	os.Remove(path)
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{DSN: "sqlite://" + path})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := seedDecided(ctx, st, repoPolicies(b), n, 1, "2025-10", 0); err != nil {
		st.Close()
		b.Fatalf("seeding %s: %v", path, err)
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d decided orders into %s in %v", n, path, time.Since(start).Round(time.Millisecond))
	return path
}

// BenchmarkReplay times a whole `commissioner replay` — SQLite store to table report — of a
// candidate that cuts the selected markets' returning-buyer rate from 6% to 5%, over a store of
// COMMISSIONER_REPLAY_BENCH_ORDERS decided orders (default 100 000; 1000000 for the target:
// ≤ 10 s per replay on two cores). Seeding the store takes longer than a replay, once.
//
//	COMMISSIONER_REPLAY_BENCH_ORDERS=1000000 go test ./cmd/commissioner -run '^$' -bench Replay -benchtime 3x
func BenchmarkReplay(b *testing.B) {
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
	p := replayParams{Policy: candidate, Format: "table", Source: "store", Changes: -1, Workers: runtime.GOMAXPROCS(0)}
	cpu := processCPUTime()
	b.ResetTimer()
	for b.Loop() {
		var errOut bytes.Buffer
		if err := runReplay(context.Background(), cfg, p, io.Discard, &errOut); err != nil {
			b.Fatalf("replay: %v\n%s", err, errOut.String())
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "orders/s")
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/replay")
	// CPU time, all cores together: on a machine other work shares, the wall time says little.
	b.ReportMetric((processCPUTime()-cpu).Seconds()/float64(b.N), "cpu-s/replay")
	b.ReportMetric(float64(processCPUTime()-cpu)/float64(b.N)/float64(n), "cpu-ns/order")
}
