package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/commissioner/commissioner/engine"
)

// sqliteBackend makes each database a file in the test's temp dir.
func sqliteBackend() backend {
	return backend{
		fresh: func(tb testing.TB) Config {
			return Config{DSN: "sqlite://" + filepath.Join(tb.TempDir(), "commissioner.db")}
		},
	}
}

func TestSQLite(t *testing.T) { runSuite(t, sqliteBackend()) }

// TestGroupCommit: batches that wait while SQLite's writer is busy are written together in the
// next transaction, with one commit; when one of them fails (here a stale owner's), the group is
// rolled back and each is written alone, so only that one fails.
func TestGroupCommit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stale   bool // the group's second batch is a stale owner's
		commits uint64
	}{
		{"three that waited commit together", false, 2},
		{"one fails: the others commit each alone", true, 3},
	} {
		t.Run(tc.name, func(t *testing.T) { groupCommit(t, tc.stale, tc.commits) })
	}
}

func groupCommit(t *testing.T, stale bool, commits uint64) {
	ctx := context.Background()
	s := openStore(t, sqliteBackend().fresh(t))
	eng := seedEngine(t)
	writers := map[int]*engine.PartitionWriter{}
	for p := 1; p <= 4; p++ {
		w, err := engine.ClaimPartition(ctx, s, p, uint64(10+p))
		if err != nil {
			t.Fatal(err)
		}
		writers[p] = w
	}
	pass := func(p int, prefix string, epoch uint64) *engine.BatchWrite {
		var events []engine.Event
		for _, r := range genBatch(t, batchSpec{prefix: prefix, orders: 20, seed: uint64(p)}) {
			events = append(events, r.Event)
		}
		results := engine.DecodeEvents(events, nil)
		orders, months := eng.HistoryKeys(results)
		hist, err := s.LoadHistory(ctx, orders, months)
		if err != nil {
			t.Fatal(err)
		}
		head := writers[p].Head()
		head.Epoch = epoch
		b, err := eng.Pass(ctx, head, results, hist, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	epoch3 := uint64(13)
	if stale {
		epoch3 = 9 // partition 3 is held by epoch 13
	}
	batches := []*engine.BatchWrite{pass(1, "g1", 11), pass(2, "g2", 12), pass(3, "g3", epoch3), pass(4, "g4", 14)}

	// The first batch holds the writer until the three others wait.
	first := true
	s.hookBeforeCommit = func(context.Context) error {
		if !first {
			return nil
		}
		first = false
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			s.groupMu.Lock()
			n := len(s.group)
			s.groupMu.Unlock()
			if n == 3 {
				break
			}
		}
		return nil
	}
	before := s.commits.Load()
	errs := make([]error, len(batches))
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.WriteBatch(ctx, b)
		}()
		if i == 0 {
			time.Sleep(50 * time.Millisecond) // the first one writes alone
		}
	}
	wg.Wait()
	want3 := errors.Is(errs[2], engine.ErrFenced) == stale && (stale || errs[2] == nil)
	if errs[0] != nil || errs[1] != nil || errs[3] != nil || !want3 {
		t.Fatalf("WriteBatch errors %v, want nil, nil, %s, nil", errs, map[bool]string{true: "ErrFenced", false: "nil"}[stale])
	}
	if n := s.commits.Load() - before; n != commits {
		t.Errorf("%d commits for 4 batches, want %d", n, commits)
	}
	decisions, seq3 := int64(80), uint64(1)
	if stale {
		decisions, seq3 = 60, 0
	}
	if st := mustStats(t, s); st.Decisions != decisions {
		t.Errorf("%d decisions stored, want %d", st.Decisions, decisions)
	}
	heads, _ := s.PartitionHeads(ctx)
	for _, h := range heads {
		if want := map[int]uint64{1: 1, 2: 1, 3: seq3, 4: 1}[h.Partition]; h.Seq != want {
			t.Errorf("partition %d at batch %d, want %d", h.Partition, h.Seq, want)
		}
	}
}

// TestNewSQLiteFileIsPrivate: a new database file, and the WAL beside it, are the owner's alone.
func TestNewSQLiteFileIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "commissioner.db")
	s := openStore(t, Config{DSN: "sqlite://" + path})
	if _, err := saveBatch(context.Background(), s, genBatch(t, batchSpec{prefix: "m", orders: 5, seed: 1})); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{path, path + "-wal"} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m&0o077 != 0 {
			t.Errorf("%s has mode %v, want no access for group or others", f, m)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("the new directory: %v, %v; want mode 0700", fi.Mode(), err)
	}
}
