package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
)

// TestFailoverTwoServeProcesses is issue 9's failover test: two `commissioner serve` processes
// share the 8 partitions of one stream on the external NATS server and one fresh PostgreSQL
// schema. It shows, each from evidence outside the processes:
//
//   - both own partitions: the owners bucket's lease keys p.<n> name both members, 8 in all;
//   - both commit batches at once, with no shared lock between them: see lockSampler — the test
//     samples pg_locks every 20 ms and finds moments when a write transaction of each process is
//     open past its fence, and never a backend of either process waiting for a lock; the batches
//     table shows both processes' batches interleaved in time;
//   - SIGKILL of one mid-run: the survivor holds every lease within lease_ttl + 2.5 s of the kill
//     (docs/operator.md's bound, measured on the owners bucket's updates as they arrive) and settles
//     every published event;
//   - every order decided exactly once, every bad one dead-lettered once (verifyStored), the
//     ledger summing to the current decisions per affiliate and currency, audit verify passing;
//   - the dead owner's partitions were continued, not restarted: in each, the survivor's first
//     batch follows the dead owner's last (next seq, a larger epoch, the next stream events).
func TestFailoverTwoServeProcesses(t *testing.T) {
	const (
		partitions = 8
		leaseTTL   = 2 * time.Second
		// failoverBound is docs/operator.md's "a dead owner's partitions are processing again within
		// lease_ttl + 2.5 s at worst" (leases expire lease_ttl after the last renewal, which was at
		// most lease_ttl/3 before the kill; the survivor looks every second), for the lease itself.
		// The survivor usually holds them ~0.3 s after they could expire; now and then ~1.3 s (when
		// a key of the dead member outlives the others by one of the server's expiry passes, at
		// least 250 ms apart, and the survivor's look falls in between, it waits for its next look).
		failoverBound = leaseTTL + 2500*time.Millisecond
		good, bad     = 30000, 300
		killAt        = 0.4 // the share of the events stored when one process is killed
	)
	natsURL := externalNATS(t)
	dsn, schema, admin := postgresSchema(t, "")
	bin := buildCommissioner(t)

	var b [4]byte
	rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	natsCfg := stream.Config{
		URL: natsURL, Stream: "FAILTEST_" + suffix, Subjects: "failtest" + suffix + ".>", Durable: "failtest_" + suffix,
		Partitions: partitions, LeaseTTL: leaseTTL,
	}.WithDefaults()
	ctx := context.Background()
	js := connectJS(t, natsCfg)
	t.Cleanup(func() { // after the processes stopped (cleanups run last-in first-out)
		if err := stream.DeleteStream(context.Background(), js, natsCfg); err != nil {
			t.Errorf("deleting stream %s: %v", natsCfg.Stream, err)
		}
	})
	if _, err := stream.EnsureStream(ctx, js, natsCfg); err != nil {
		t.Fatal(err)
	}
	// The owners bucket is made here, as `serve` makes it (same TTL, history 1), so that the
	// watcher sees every lease write from the first.
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: natsCfg.OwnersBucket(), History: 1, TTL: leaseTTL, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	owners := watchOwners(t, kv)

	policies := repoPolicies(t)
	lines := mix(sampleLines(t, good, 51, "2025-10"), badOrderLines(bad), 52)
	want := expect(t, natsCfg, policies, lines)

	// The two processes, each with its own application_name on its PostgreSQL connections so
	// that pg_locks and pg_stat_activity tell their backends apart.
	type proc struct {
		name, app string
		p         *serveProcess
		log       string
	}
	start := func(name string) *proc {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		app := schema + "_" + name
		q.Set("application_name", app)
		u.RawQuery = q.Encode()
		logPath := filepath.Join(t.TempDir(), "serve-"+name+".log")
		log, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { log.Close() })
		t.Cleanup(func() {
			if t.Failed() {
				b, _ := os.ReadFile(logPath)
				if len(b) > 12<<10 {
					b = b[len(b)-12<<10:]
				}
				t.Logf("serve %s's output (the end):\n%s", name, b)
			}
		})
		args := []string{"--nats-url", natsURL, "--store-dsn", u.String(), "--data-dir", t.TempDir(), "--http-addr", "", "--policies", policies}
		env := serveEnv(
			"COMMISSIONER_NATS__STREAM="+natsCfg.Stream,
			"COMMISSIONER_NATS__SUBJECTS="+natsCfg.Subjects,
			"COMMISSIONER_NATS__DURABLE="+natsCfg.Durable,
			fmt.Sprintf("COMMISSIONER_NATS__PARTITIONS=%d", partitions),
			"COMMISSIONER_NATS__LEASE_TTL="+leaseTTL.String(),
			"COMMISSIONER_NATS__BATCH_SIZE=200", // many batches per partition: the interleaving is visible
			"COMMISSIONER_NATS__ACK_WAIT=5s",
			"COMMISSIONER_NATS__NAK_DELAY=100ms",
			"COMMISSIONER_NATS__NAK_MAX_DELAY=1s",
			"COMMISSIONER_WATCH_POLICIES=false",
		)
		return &proc{name: name, app: app, p: startServeProcess(t, bin, args, env, log), log: logPath}
	}
	a, bp := start("a"), start("b")
	procs := []*proc{a, bp}

	// Both own partitions: the lease keys name both processes' members, 8 leases in all.
	var memberA, memberB string
	waitUntil(t, 30*time.Second, "both processes to own partitions", func() (bool, string) {
		for _, p := range procs {
			if p.p.exited() {
				t.Fatalf("serve %s exited: %v", p.name, p.p.cmd.ProcessState)
			}
		}
		memberA, memberB = owners.memberOf(a.p.cmd.Process.Pid), owners.memberOf(bp.p.cmd.Process.Pid)
		held := owners.heldBy()
		na, nb := len(held[memberA]), len(held[memberB])
		return memberA != "" && memberB != "" && na > 0 && nb > 0 && na+nb == partitions,
			fmt.Sprintf("members a=%q b=%q, leases %v", memberA, memberB, held)
	})
	heldAtStart := owners.heldBy()
	t.Logf("owners bucket: a (member %s) holds %v, b (member %s) holds %v", memberA, heldAtStart[memberA], memberB, heldAtStart[memberB])

	sampler := startLockSampler(t, admin, a.app, bp.app)

	published := make(chan error, 1)
	var lastSeq uint64 // written before published is sent to
	go func() {
		last, err := publishLines(js, natsCfg, lines)
		lastSeq = last
		published <- err
	}()
	// stored is how many events the batches hold (decisions and dead letters: a leaf each).
	stored := func() int64 {
		var n int64
		if err := admin.QueryRow(fmt.Sprintf("SELECT COALESCE(SUM(leaves), 0) FROM %s.batches", schema)).Scan(&n); err != nil {
			t.Fatalf("counting stored events: %v", err)
		}
		return n
	}
	// Warm-up: each process inserts the policy version on its first batches (INSERT … ON
	// CONFLICT DO NOTHING), and concurrent first batches wait on each other's uncommitted row
	// until one commits. Once every partition has committed a batch, every later batch knows the
	// version is stored and inserts none: from then on no lock is shared by design.
	waitUntil(t, time.Minute, "every partition to commit a batch", func() (bool, string) {
		var n int
		if err := admin.QueryRow(fmt.Sprintf("SELECT COUNT(DISTINCT part) FROM %s.batches", schema)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == partitions, fmt.Sprintf("%d partitions have batches", n)
	})
	warm := time.Now()
	threshold := int64(killAt * float64(len(lines)))
	waitUntil(t, time.Minute, fmt.Sprintf("%d events stored before the kill", threshold), func() (bool, string) {
		for _, p := range procs {
			if p.p.exited() {
				t.Fatalf("serve %s exited: %v", p.name, p.p.cmd.ProcessState)
			}
		}
		n := stored()
		return n >= threshold, fmt.Sprintf("%d stored", n)
	})

	// SIGKILL a, mid-run.
	killedParts := owners.heldBy()[memberA]
	infos, err := stream.PartitionConsumers(ctx, js, natsCfg)
	if err != nil {
		t.Fatal(err)
	}
	var inFlight, pendingKilled uint64
	for _, n := range killedParts {
		if ci := infos[n]; ci != nil {
			inFlight += uint64(ci.NumAckPending)
			pendingKilled += ci.NumPending
		}
	}
	storedAtKill := stored()
	killed := time.Now()
	a.p.signal(t, syscall.SIGKILL, 10*time.Second)
	t.Logf("SIGKILL of a at %d of %d events stored; a held partitions %v, with %d events delivered and unacked, %d more pending",
		storedAtKill, len(lines), killedParts, inFlight, pendingKilled)
	if storedAtKill >= int64(len(lines)) || len(killedParts) == 0 {
		t.Fatalf("the kill came too late: %d of %d stored, a held %v", storedAtKill, len(lines), killedParts)
	}

	// The survivor takes every partition within the bound.
	waitUntil(t, 30*time.Second, "b to hold every lease", func() (bool, string) {
		if bp.p.exited() {
			t.Fatalf("serve b exited: %v", bp.p.cmd.ProcessState)
		}
		held := owners.heldBy()
		return len(held[memberB]) == partitions, fmt.Sprintf("leases %v", held)
	})
	takeover := time.Duration(0)
	for _, n := range killedParts {
		at, ok := owners.firstCreateAfter(n, memberB, killed)
		if !ok {
			t.Fatalf("partition %d: no lease of b after the kill", n)
		}
		takeover = max(takeover, at.Sub(killed))
	}
	// For the record: how the takeover time splits into the leases' life after the kill (from
	// a's last renewal, which the watcher saw) and b's reaction after they could expire.
	var renewed time.Time
	for _, n := range killedParts {
		if at, ok := owners.lastWriteBefore(n, memberA, killed); ok && at.After(renewed) {
			renewed = at
		}
	}
	memberRenewed := owners.memberWriteBefore(memberA, killed)
	t.Logf("b held a's %d partitions %v after the kill (bound: lease_ttl %v + 2.5 s = %v); a last renewed its leases %v before the kill "+
		"(its member key %v), so b took them %v after they could expire",
		len(killedParts), takeover.Round(time.Millisecond), leaseTTL, failoverBound, killed.Sub(renewed).Round(time.Millisecond),
		killed.Sub(memberRenewed).Round(time.Millisecond), (takeover - (leaseTTL - killed.Sub(renewed))).Round(time.Millisecond))
	if takeover > failoverBound {
		t.Errorf("b took a's partitions %v after the kill, want at most %v", takeover.Round(time.Millisecond), failoverBound)
	}

	select {
	case err := <-published:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("publishing did not finish")
	}
	waitUntil(t, 2*time.Minute, "b to settle every event", func() (bool, string) {
		if bp.p.exited() {
			t.Fatalf("serve b exited: %v", bp.p.cmd.ProcessState)
		}
		return streamSettled(js, natsCfg, lastSeq)()
	})
	samples, err := sampler.stop()
	if err != nil {
		t.Errorf("sampling pg_locks: %v", err)
	}
	bp.p.signal(t, syscall.SIGTERM, 30*time.Second)
	if code := bp.p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("serve b after SIGTERM: exit status %d, want 0", code)
	}

	// --- No shared lock: the pg_locks samples.
	checkLockSamples(t, samples, warm, killed, a.app, bp.app)

	// --- The batches: both processes committed, interleaved; a's partitions were continued.
	// Whose batch is whose: each process logs every acquisition with its partition and epoch (the
	// README's "acquisitions … are logged at INFO … with its partition and epoch"), before it
	// fetches the partition's first event, so every epoch in the batches table is in the log of
	// the process that held it. (The epoch is derived from the lease's KV revision, but how is the
	// consumer's business: the test does not recompute it.)
	epochsA, epochsB := acquiredEpochs(t, a.log), acquiredEpochs(t, bp.log)
	batches := readBatches(t, admin, schema)
	procOf := func(epoch uint64) string {
		_, inA := epochsA[epoch]
		_, inB := epochsB[epoch]
		switch {
		case inA && !inB:
			return "a"
		case inB && !inA:
			return "b"
		}
		return ""
	}
	checkBatches(t, batches, procOf, killed, killedParts, partitions)

	// --- Every order decided exactly once, the dead letters, audit verify.
	st, err := store.Open(ctx, store.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	verifyStored(t, st, policies, want)

	// --- The ledger sums to the current decisions, per affiliate and currency.
	checkLedgerSums(t, admin, schema)
}

// ownersWatch follows the owners bucket through a KV watcher: every lease key's writes (time of
// arrival here, member, revision) and every member's process id.
type ownersWatch struct {
	mu      sync.Mutex
	history map[int][]leaseWrite   // by partition
	pids    map[int]string         // process id → member
	members map[string][]time.Time // member → when each write of its member key arrived
}

type leaseWrite struct {
	at     time.Time
	member string // "" for a delete
	rev    uint64
}

func watchOwners(t *testing.T, kv jetstream.KeyValue) *ownersWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := kv.WatchAll(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	o := &ownersWatch{history: map[int][]leaseWrite{}, pids: map[int]string{}, members: map[string][]time.Time{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.Updates() {
			if e == nil {
				continue // the end of the initial values
			}
			now := time.Now()
			o.mu.Lock()
			switch k := e.Key(); {
			case strings.HasPrefix(k, "p."):
				var n int
				if _, err := fmt.Sscan(k[2:], &n); err != nil {
					break
				}
				lw := leaseWrite{at: now, rev: e.Revision()}
				if e.Operation() == jetstream.KeyValuePut {
					lw.member = string(e.Value())
				}
				o.history[n] = append(o.history[n], lw)
			case strings.HasPrefix(k, "m.") && e.Operation() == jetstream.KeyValuePut:
				var m struct {
					ID  string `json:"id"`
					PID int    `json:"pid"`
				}
				if json.Unmarshal(e.Value(), &m) == nil {
					o.pids[m.PID] = m.ID
					o.members[m.ID] = append(o.members[m.ID], now)
				}
			}
			o.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = w.Stop()
		<-done
	})
	return o
}

// memberOf is the member id of the process with that pid ("" while unknown).
func (o *ownersWatch) memberOf(pid int) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.pids[pid]
}

// heldBy lists, per member, the partitions whose lease key it last wrote. (An expired lease is
// not seen: the server drops it silently. A dead member keeps its partitions here until another
// writes them.)
func (o *ownersWatch) heldBy() map[string][]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string][]int{}
	for n, h := range o.history {
		if m := h[len(h)-1].member; m != "" {
			out[m] = append(out[m], n)
		}
	}
	for _, ps := range out {
		slices.Sort(ps)
	}
	return out
}

// lastWriteBefore is when the last write of partition n's lease by member before t arrived.
func (o *ownersWatch) lastWriteBefore(n int, member string, t time.Time) (time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var last time.Time
	for _, w := range o.history[n] {
		if w.member == member && w.at.Before(t) {
			last = w.at
		}
	}
	return last, !last.IsZero()
}

// memberWriteBefore is when the last write of member's member key before t arrived.
func (o *ownersWatch) memberWriteBefore(member string, t time.Time) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	var last time.Time
	for _, at := range o.members[member] {
		if at.Before(t) {
			last = at
		}
	}
	return last
}

// firstCreateAfter is when the first write of partition n's lease by member after t arrived.
func (o *ownersWatch) firstCreateAfter(n int, member string, t time.Time) (time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, w := range o.history[n] {
		if w.member == member && w.at.After(t) {
			return w.at, true
		}
	}
	return time.Time{}, false
}

// lockSampler samples, every 20 ms, the locks of the two processes' PostgreSQL backends (found
// by their application_name).
//
// Why this evidence: a lock shared by the writers (the former chain-head lock) shows as soon as
// two transactions want it at once — the second one's row in pg_locks is not granted (a row lock
// shows as a wait on the holder's transactionid). The fenced write path takes only its own
// partition's row in `partitions` (UPDATE … WHERE part = ?), so two owners never wait on each
// other. A sample in which a backend of each process holds RowExclusiveLock on `partitions` —
// taken by the fence's UPDATE and held until the commit — shows two batches of the two processes
// in their transactions at the same moment; together with "no backend ever waits", that is
// concurrent commits without a shared lock. Relation-extension locks (locktype "extend": a few
// microseconds to add a page to a table, taken by any two inserters into one table and never held
// to the commit) are counted apart and not a failure: they order page allocation, not batches.
type lockSampler struct {
	cancel  context.CancelFunc
	done    chan struct{}
	samples []lockSample
	err     error
}

type lockSample struct {
	at      time.Time
	fenced  map[string]int // application_name → its backends holding RowExclusiveLock on partitions
	waits   []string       // not granted, other than extend
	extends int            // not-granted relation-extension locks
}

func startLockSampler(t *testing.T, admin *sql.DB, apps ...string) *lockSampler {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &lockSampler{cancel: cancel, done: make(chan struct{})}
	const q = `SELECT a.application_name, l.pid, l.locktype, l.mode, l.granted, COALESCE(c.relname, ''),
	CASE WHEN l.granted THEN '' ELSE COALESCE(array_to_string(pg_blocking_pids(l.pid), ','), '') || ') in: ' || left(a.query, 60) END
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid LEFT JOIN pg_class c ON c.oid = l.relation
WHERE a.application_name IN ($1, $2)`
	go func() {
		defer close(s.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			rows, err := admin.QueryContext(ctx, q, apps[0], apps[1])
			if err != nil {
				if ctx.Err() == nil {
					s.err = err
				}
				return
			}
			smp := lockSample{at: time.Now(), fenced: map[string]int{}}
			for rows.Next() {
				var app, locktype, mode, rel, blockers string
				var pid int
				var granted bool
				if err := rows.Scan(&app, &pid, &locktype, &mode, &granted, &rel, &blockers); err != nil {
					s.err = err
					rows.Close()
					return
				}
				switch {
				case granted && locktype == "relation" && rel == "partitions" && mode == "RowExclusiveLock":
					smp.fenced[app]++
				case !granted && locktype == "extend":
					smp.extends++
				case !granted:
					smp.waits = append(smp.waits, fmt.Sprintf("%s backend %d waits for %s %s %s (blocked by %s", app, pid, locktype, mode, rel, blockers))
				}
			}
			if err := rows.Close(); err != nil && ctx.Err() == nil {
				s.err = err
				return
			}
			s.samples = append(s.samples, smp)
		}
	}()
	t.Cleanup(func() { _, _ = s.stop() })
	return s
}

// stop ends the sampling and returns the samples, and the error that ended it early.
func (s *lockSampler) stop() ([]lockSample, error) {
	s.cancel()
	<-s.done
	return s.samples, s.err
}

// checkLockSamples: after the warm-up no backend of either process ever waited for a lock, and
// while both lived their fenced transactions overlapped.
func checkLockSamples(t *testing.T, samples []lockSample, warm, killed time.Time, appA, appB string) {
	t.Helper()
	var during, both, maxFenced, extends, warmupWaits int
	var waits, warmup []string
	for _, s := range samples {
		extends += s.extends
		if s.at.Before(warm) {
			warmupWaits += len(s.waits)
			for _, w := range s.waits {
				if len(warmup) < 3 {
					warmup = append(warmup, w)
				}
			}
			continue
		}
		for _, w := range s.waits {
			if len(waits) < 10 {
				waits = append(waits, s.at.Format("15:04:05.000")+" "+w)
			}
		}
		if s.at.After(killed) {
			continue
		}
		during++
		if s.fenced[appA] > 0 && s.fenced[appB] > 0 {
			both++
		}
		maxFenced = max(maxFenced, s.fenced[appA]+s.fenced[appB])
	}
	t.Logf("pg_locks: %d samples in all, %d after the warm-up while both processes lived; in %d of those both had a fenced write "+
		"transaction open (at most %d at once); waits: %d after the warm-up, %d during it %q; %d relation-extension waits",
		len(samples), during, both, maxFenced, len(waits), warmupWaits, warmup, extends)
	if during < 10 {
		t.Errorf("only %d lock samples while both processes ran: too few to show anything", during)
	}
	if both == 0 {
		t.Errorf("no lock sample showed both processes in a fenced write transaction at once: their commits did not overlap")
	}
	if len(waits) > 0 {
		t.Errorf("backends of the two processes waited for locks after the warm-up:\n%s", strings.Join(waits, "\n"))
	}
}

// acquiredEpochs reads a serve log's "partition acquired" lines: epoch → partition.
func acquiredEpochs(t *testing.T, logPath string) map[uint64]int {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]int{}
	for _, m := range acquiredRE.FindAllStringSubmatch(string(b), -1) {
		var part int
		var epoch uint64
		if _, err := fmt.Sscan(m[1], &part); err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Sscan(m[2], &epoch); err != nil {
			t.Fatal(err)
		}
		out[epoch] = part
	}
	if len(out) == 0 {
		t.Errorf("%s: no \"partition acquired\" line with a partition and an epoch", logPath)
	}
	return out
}

var acquiredRE = regexp.MustCompile(`msg="partition acquired".* partition=(\d+) epoch=(\d+)`)

type batchRow struct {
	part, seq, epoch, first, last, leaves int64
	created                               time.Time
}

func readBatches(t *testing.T, admin *sql.DB, schema string) []batchRow {
	t.Helper()
	rows, err := admin.Query(fmt.Sprintf("SELECT part, seq, epoch, first_stream_seq, last_stream_seq, leaves, created_at FROM %s.batches ORDER BY part, seq", schema))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []batchRow
	for rows.Next() {
		var b batchRow
		if err := rows.Scan(&b.part, &b.seq, &b.epoch, &b.first, &b.last, &b.leaves, &b.created); err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkBatches: every batch is of a's or b's ownership; before the kill both committed batches
// and their commits interleave in time; each partition's batches follow each other (seq, stream
// events) with epochs that never go back; each of a's partitions goes on under b with the next
// seq and a larger epoch, after a's last stored event.
func checkBatches(t *testing.T, batches []batchRow, procOf func(uint64) string, killed time.Time, killedParts []int, partitions int) {
	t.Helper()
	byPart := map[int64][]batchRow{}
	for _, b := range batches {
		byPart[b.part] = append(byPart[b.part], b)
	}
	if len(byPart) != partitions {
		t.Errorf("batches in %d partitions, want %d", len(byPart), partitions)
	}
	unknown := map[int64]bool{}
	for part, bs := range byPart {
		for i, b := range bs {
			if procOf(uint64(b.epoch)) == "" && !unknown[b.epoch] {
				unknown[b.epoch] = true
				t.Errorf("partition %d from batch %d: epoch %d was acquired by neither process (or by both)", part, b.seq, b.epoch)
			}
			if b.seq != int64(i+1) {
				t.Errorf("partition %d: batch %d at position %d, want seq %d", part, b.seq, i+1, i+1)
			}
			if i > 0 {
				p := bs[i-1]
				if b.epoch < p.epoch {
					t.Errorf("partition %d: batch %d has epoch %d after batch %d's %d", part, b.seq, b.epoch, p.seq, p.epoch)
				}
				if b.first <= p.last {
					t.Errorf("partition %d: batch %d starts at stream sequence %d, not after batch %d's last %d", part, b.seq, b.first, p.seq, p.last)
				}
			}
		}
	}

	// Before the kill: both processes' batches, interleaved in time (created_at: when the batch's
	// write began).
	var before []batchRow
	for _, b := range batches {
		if b.created.Before(killed) {
			before = append(before, b)
		}
	}
	slices.SortFunc(before, func(x, y batchRow) int { return x.created.Compare(y.created) })
	count := map[string]int{}
	first, last := map[string]time.Time{}, map[string]time.Time{}
	switches, prev := 0, ""
	for _, b := range before {
		p := procOf(uint64(b.epoch))
		count[p]++
		if _, ok := first[p]; !ok {
			first[p] = b.created
		}
		last[p] = b.created
		if prev != "" && p != prev {
			switches++
		}
		prev = p
	}
	after := map[string]int{}
	for _, b := range batches {
		if !b.created.Before(killed) {
			after[procOf(uint64(b.epoch))]++
		}
	}
	t.Logf("batches before the kill: a %d, b %d, switching between them %d times in commit order; after: a %d, b %d",
		count["a"], count["b"], switches, after["a"], after["b"])
	if count["a"] < 5 || count["b"] < 5 {
		t.Errorf("before the kill a committed %d batches and b %d, want both at least 5", count["a"], count["b"])
	} else if !first["a"].Before(last["b"]) || !first["b"].Before(last["a"]) || switches < 4 {
		t.Errorf("before the kill the processes' batches did not interleave: a %v–%v, b %v–%v, %d switches",
			first["a"], last["a"], first["b"], last["b"], switches)
	}

	// a's partitions were continued by b.
	var resumed []string
	for _, n := range killedParts {
		bs := byPart[int64(n)]
		i := slices.IndexFunc(bs, func(b batchRow) bool { return procOf(uint64(b.epoch)) == "b" && b.created.After(killed) })
		if i <= 0 || procOf(uint64(bs[i-1].epoch)) != "a" {
			t.Errorf("partition %d: no batch of b after a batch of a (batches %d, first of b after the kill at %d)", n, len(bs), i)
			continue
		}
		pa, pb := bs[i-1], bs[i]
		if pb.seq != pa.seq+1 || pb.epoch <= pa.epoch || pb.first <= pa.last {
			t.Errorf("partition %d: a's last batch %d (epoch %d, to stream sequence %d), then b's %d (epoch %d, from %d): want the next seq, a larger epoch, the events after",
				n, pa.seq, pa.epoch, pa.last, pb.seq, pb.epoch, pb.first)
		}
		if rest := bs[i:]; slices.ContainsFunc(rest, func(b batchRow) bool { return procOf(uint64(b.epoch)) != "b" }) {
			t.Errorf("partition %d: a batch of a after b took over", n)
		}
		resumed = append(resumed, fmt.Sprintf("p%d: a's batch %d (epoch %d) → b's batch %d (epoch %d) %v after the kill",
			n, pa.seq, pa.epoch, pb.seq, pb.epoch, pb.created.Sub(killed).Round(time.Millisecond)))
		if d := pb.created.Sub(killed); d > 10*time.Second {
			t.Errorf("partition %d: b's first batch began %v after the kill, want within the 10 s the service promises", n, d)
		}
	}
	t.Logf("a's partitions continued by b: %s", strings.Join(resumed, "; "))
}

// checkLedgerSums compares, in SQL with exact NUMERIC sums, the ledger with the current decisions
// (each order's decision of its latest event): per affiliate and currency, the entries sum to the
// qualified current decisions' commissions.
func checkLedgerSums(t *testing.T, admin *sql.DB, schema string) {
	t.Helper()
	q := strings.ReplaceAll(`
WITH cur AS (
	SELECT DISTINCT ON (program, order_id) affiliate_id, currency, qualified, commission
	FROM S.decisions ORDER BY program, order_id, stream_seq DESC),
owed AS (SELECT affiliate_id, currency, SUM(commission) AS total FROM cur WHERE qualified GROUP BY 1, 2),
booked AS (SELECT affiliate_id, currency, SUM(amount) AS total FROM S.ledger_entries GROUP BY 1, 2)
SELECT COALESCE(o.affiliate_id, b.affiliate_id), COALESCE(o.currency, b.currency),
	COALESCE(o.total, 0)::text, COALESCE(b.total, 0)::text, COALESCE(o.total, 0) = COALESCE(b.total, 0)
FROM owed o FULL JOIN booked b ON o.affiliate_id = b.affiliate_id AND o.currency = b.currency
ORDER BY 1, 2`, "S.", schema+".")
	rows, err := admin.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var groups, differ int
	var diffs []string
	for rows.Next() {
		var aff, cur, owed, booked string
		var same bool
		if err := rows.Scan(&aff, &cur, &owed, &booked, &same); err != nil {
			t.Fatal(err)
		}
		groups++
		if !same {
			differ++
			if len(diffs) < 10 {
				diffs = append(diffs, fmt.Sprintf("%s %s: ledger %s, current decisions %s", aff, cur, booked, owed))
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("ledger: %d (affiliate, currency) totals compared with the current decisions, %d differ", groups, differ)
	if groups == 0 {
		t.Errorf("no commission owed at all: the test decided nothing that qualifies")
	}
	if differ > 0 {
		t.Errorf("the ledger differs from the current decisions in %d of %d (affiliate, currency) totals:\n%s", differ, groups, strings.Join(diffs, "\n"))
	}
}
