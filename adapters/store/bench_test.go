package store

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commissioner/commissioner/engine"
)

// BenchmarkSaveBatch measures SaveBatch alone with realistic batches of 1 000 results (about 90%
// qualified, 10% failing a rule, and a few dead letters), each iteration a new batch of new events
// into a growing database. orders/s is the figure to compare with the pipeline's targets. The
// +shadow runs decide and store each batch with one unsampled shadow too (the seed with returning
// buyers in the selected markets at 5%): what a shadow costs the write path.
func BenchmarkSaveBatch(b *testing.B) {
	for _, bc := range []struct {
		name   string
		be     backend
		shadow bool
	}{{"sqlite", sqliteBackend(), false}, {"sqlite+shadow", sqliteBackend(), true},
		{"postgres", postgresBackend(), false}, {"postgres+shadow", postgresBackend(), true}} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := bc.be.fresh(b)
			s := openStore(b, cfg)
			ctx := context.Background()
			var eng *engine.Engine // nil: the batch's own policies (saveBatch)
			if bc.shadow {
				eng = engine.New(mustSetOf(b, seedPolicy(b), shadowSeedPolicy(b, "5%", "")))
			}
			live := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
			var cpu time.Duration
			server := serverCPU(b, s, cfg)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				batch := genBatch(b, batchSpec{prefix: "b" + strconv.Itoa(i), seqBase: uint64(i * 1000), orders: 995,
					invalid: 3, unknownProgram: 1, noPolicy: 1, seed: uint64(i), liveFrom: live.Add(time.Duration(i) * time.Minute)})
				cpu0 := processCPU()
				b.StartTimer()
				saved, err := saveBatchWith(ctx, s, eng, batch)
				b.StopTimer()
				cpu += processCPU() - cpu0
				if err != nil {
					b.Fatal(err)
				}
				if saved.Duplicates != 0 || saved.Decisions < 990 {
					b.Fatalf("SaveBatch = %+v: want only new rows", saved)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "orders/s")
			// CPU time is steadier than wall time on a shared machine (it does not include the
			// PostgreSQL server's, which runs in its own processes).
			b.ReportMetric(float64(cpu)/float64(b.N)/1e6, "cpu-ms/op")
			if server != nil {
				b.ReportMetric(float64(server())/float64(b.N)/1e6, "server-cpu-ms/op")
			}
		})
	}
}

// serverCPU returns, for a PostgreSQL store on this machine, a func that reports the CPU time
// the store's server processes (its connections, found by application_name) used since
// serverCPU was called; nil for SQLite or when the server's processes cannot be read. The
// server's own background processes (WAL writer, checkpointer) are shared with other clients
// and not counted.
func serverCPU(b *testing.B, s *Store, cfg Config) func() time.Duration {
	if s.Backend() != Postgres {
		return nil
	}
	u, err := url.Parse(cfg.DSN)
	if err != nil {
		return nil
	}
	app := u.Query().Get("application_name")
	sample := func() map[int]time.Duration {
		var pids []int
		if err := s.DB().NewRaw("SELECT pid FROM pg_stat_activity WHERE application_name = ?", app).Scan(context.Background(), &pids); err != nil {
			b.Logf("reading the server's processes: %v", err)
			return nil
		}
		out := make(map[int]time.Duration, len(pids))
		for _, pid := range pids {
			if t, ok := procCPU(pid); ok {
				out[pid] = t
			}
		}
		return out
	}
	before := sample()
	if len(before) == 0 {
		return nil
	}
	return func() time.Duration {
		var d time.Duration
		for pid, t := range sample() {
			d += t - before[pid]
		}
		return d
	}
}

// procCPU reads a process's user and system CPU time from /proc/PID/stat (clock ticks, 100 Hz).
func procCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command may hold spaces; the fields after it are space-separated.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, true
}

// processCPU returns the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEvents measures streaming stored events (the replay's read side): 50 000 events stored
// once, then each iteration reads them all in placed_at order. events/s is the figure.
func BenchmarkEvents(b *testing.B) {
	for _, bc := range []struct {
		name string
		be   backend
	}{{"sqlite", sqliteBackend()}, {"postgres", postgresBackend()}} {
		b.Run(bc.name, func(b *testing.B) {
			s := openStore(b, bc.be.fresh(b))
			ctx := context.Background()
			const batches = 50
			live := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
			for i := range batches {
				batch := genBatch(b, batchSpec{prefix: "e" + strconv.Itoa(i), seqBase: uint64(i * 1000), orders: 1000,
					seed: uint64(i), liveFrom: live.Add(time.Duration(i) * time.Minute)})
				if _, err := saveBatch(ctx, s, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			n := 0
			for range b.N {
				if err := s.Events(ctx, EventFilter{Program: "alibaba"}, func(StoredEvent) error { n++; return nil }); err != nil {
					b.Fatal(err)
				}
			}
			if n != b.N*batches*1000 {
				b.Fatalf("read %d events, want %d", n, b.N*batches*1000)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
