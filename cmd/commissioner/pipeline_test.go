package main

// End-to-end tests of the live pipeline (issue 3): real JetStream (embedded on t.TempDir(), or
// the local server), real SQLite files and PostgreSQL schemas, the real engine and policies. No
// mocks, and no sleeping as synchronisation: every wait polls a condition against a deadline.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/audit"
	"github.com/commissioner/commissioner/rules"
)

// repoPolicies is the repository's policy directory, absolute.
func repoPolicies(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("../../policies")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// pipelineConfig is a service configuration on a fresh data directory: embedded NATS and SQLite
// there, the repository's policies, no HTTP, no policy watcher, and short redelivery delays so
// failures recover within a test's time.
func pipelineConfig(t testing.TB) Config {
	t.Helper()
	cfg := defaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Policies = repoPolicies(t)
	cfg.HTTP.Addr = ""
	cfg.WatchPolicies = false
	cfg.NATS.AckWait = 5 * time.Second
	cfg.NATS.NakDelay = 50 * time.Millisecond
	cfg.NATS.NakMaxDelay = 500 * time.Millisecond
	return cfg
}

// syncBuffer collects a service's log for the failure report.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runningService is a started service whose Run is going on in its own goroutine.
type runningService struct {
	*service
	cfg      Config
	logs     *syncBuffer // what the service logged
	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
	stopErr  error
}

// startRunning completes cfg, starts the service and runs it until stop or the end of the test.
// The service's log is printed when the test failed.
func startRunning(t *testing.T, cfg Config) *runningService {
	t.Helper()
	if err := cfg.complete(); err != nil {
		t.Fatalf("completing the config: %v", err)
	}
	logs := &syncBuffer{}
	startCtx, cancelStart := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelStart()
	svc, err := startService(startCtx, cfg, newLogger(logs))
	if err != nil {
		t.Fatalf("starting the service: %v\nlog:\n%s", err, logs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningService{service: svc, cfg: cfg, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("stopping the service: %v", err)
		}
		if t.Failed() {
			t.Logf("service log:\n%s", logs)
		}
	})
	return r
}

// stop cancels Run and waits (bounded) for it to return; the store and connections are closed
// then. Calling it again returns the first result.
func (r *runningService) stop() error {
	r.stopOnce.Do(func() {
		r.cancel()
		select {
		case r.stopErr = <-r.done:
		case <-time.After(60 * time.Second):
			r.stopErr = errors.New("Run did not return within 60s of cancellation")
		}
	})
	return r.stopErr
}

// waitUntil polls cond every 20ms until it holds, failing the test with cond's last status
// after timeout.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, status := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; last: %s", timeout, what, status)
		}
		<-tick.C
	}
}

// streamSettled is a condition: the partition consumers have settled every event up to stream
// sequence upTo (0: every event in the stream now; stream.Settled: right after a publish,
// NumPending alone can still read 0).
func streamSettled(js jetstream.JetStream, cfg stream.Config, upTo uint64) func() (bool, string) {
	return func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ok, err := stream.Settled(ctx, js, cfg, upTo)
		if err != nil {
			return false, fmt.Sprintf("settled: %v", err)
		}
		return ok, fmt.Sprintf("not settled up to stream sequence %d; partitions: %s", upTo, partitionState(ctx, js, cfg))
	}
}

// partitionState describes each partition consumer's ack floor and backlog, for failure reports.
func partitionState(ctx context.Context, js jetstream.JetStream, cfg stream.Config) string {
	infos, err := stream.PartitionConsumers(ctx, js, cfg)
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for n, ci := range infos {
		if ci == nil {
			fmt.Fprintf(&b, " p%d: none", n)
			continue
		}
		fmt.Fprintf(&b, " p%d: floor %d, pending %d, unacked %d", n, ci.AckFloor.Stream, ci.NumPending, ci.NumAckPending)
	}
	return b.String()
}

// waitSettledService waits until the partition consumers have settled every event up to stream
// sequence upTo (what publishAll returned).
func waitSettledService(t testing.TB, r *runningService, upTo uint64, timeout time.Duration) {
	t.Helper()
	waitUntil(t, timeout, "the partitions to settle", streamSettled(r.js, r.cfg.NATS, upTo))
}

// waitSharing waits until the services own every partition between them and each owns some:
// before publishing, so that every one of them gets work.
func waitSharing(t testing.TB, svcs ...*runningService) {
	t.Helper()
	waitUntil(t, time.Minute, "the services to share the partitions", func() (bool, string) {
		owned, parts := 0, svcs[0].cfg.NATS.Partitions
		var counts []int
		for _, s := range svcs {
			n := len(s.consumer.Owned())
			counts = append(counts, n)
			owned += n
		}
		return owned == parts && !slices.Contains(counts, 0), fmt.Sprintf("owned per service %v of %d", counts, parts)
	})
}

// publishAll publishes the lines, fails unless every one was accepted, and returns the stream
// sequence of the last (for waitSettledService).
func publishAll(t testing.TB, js jetstream.JetStream, cfg stream.Config, lines [][]byte) uint64 {
	t.Helper()
	last, err := publishLines(js, cfg, lines)
	if err != nil {
		t.Fatal(err)
	}
	return last
}

// publishLines publishes the lines; an error unless every one was accepted. It returns the
// stream sequence of the last. Safe to call from any goroutine.
func publishLines(js jetstream.JetStream, cfg stream.Config, lines [][]byte) (uint64, error) {
	pub, err := stream.NewPublisher(js, cfg)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := pub.PublishLines(ctx, bytes.NewReader(joinLines(lines)), 512)
	if err != nil {
		return 0, fmt.Errorf("publishing %d lines: %w", len(lines), err)
	}
	if st.Lines != len(lines) || st.Accepted != len(lines) {
		return 0, fmt.Errorf("publishing: got %+v, want all %d lines accepted", st, len(lines))
	}
	return st.LastSeq, nil
}

func joinLines(lines [][]byte) []byte {
	var b bytes.Buffer
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// sampleLines generates n realistic valid orders (writeSample, no bad lines) placed in month.
func sampleLines(t testing.TB, n int, seed uint64, month string) [][]byte {
	t.Helper()
	var b bytes.Buffer
	if err := writeSample(&b, sampleParams{N: n, Seed: seed, Program: "alibaba", Month: month}); err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(b.Bytes(), []byte("\n")), []byte("\n"))
	if len(lines) != n {
		t.Fatalf("sample: got %d lines, want %d", len(lines), n)
	}
	return lines
}

// badOrderLines returns n order events the pipeline must dead-letter, cycling through every
// kind of bad input: malformed JSON, invalid fields, an unknown or unusable program, and an
// order placed before any policy version is in force. Every line is distinct, so the stream
// keeps them all.
func badOrderLines(n int) [][]byte {
	base := func(i int) map[string]any {
		return map[string]any{
			"order_id": fmt.Sprintf("bad-%d", i), "program": "alibaba", "affiliate_id": fmt.Sprintf("aff-bad-%d", i),
			"status": "completed", "placed_at": "2025-10-05T12:00:00Z", "click_at": "2025-10-01T12:00:00Z",
			"buyer":           map[string]any{"id": "b-1", "country": "US", "new": true},
			"traffic_country": "US", "currency": "USD", "amount": "100.00",
			"items": []any{map[string]any{"sku": "s-1", "category": "electronics", "amount": "100.00", "quantity": 1}},
		}
	}
	marshal := func(m map[string]any) []byte {
		b, err := json.Marshal(m)
		if err != nil {
			panic(err)
		}
		return b
	}
	set := func(kv ...any) func(int) []byte {
		return func(i int) []byte {
			m := base(i)
			for j := 0; j < len(kv); j += 2 {
				m[kv[j].(string)] = kv[j+1]
			}
			return marshal(m)
		}
	}
	del := func(key string) func(int) []byte {
		return func(i int) []byte {
			m := base(i)
			delete(m, key)
			return marshal(m)
		}
	}
	kinds := []func(int) []byte{
		// malformed JSON
		func(i int) []byte { return fmt.Appendf(nil, "not json at all %d", i) },
		func(i int) []byte { b := marshal(base(i)); return b[:len(b)/2] },
		func(i int) []byte { return fmt.Appendf(nil, `[{"order_id":"bad-%d","program":"alibaba"}]`, i) },
		func(i int) []byte { return fmt.Appendf(nil, `{"order_id":"bad-%d","program":"alibaba",}`, i) },
		func(i int) []byte { return fmt.Appendf(nil, `"bad-%d"`, i) },
		// invalid fields
		set("amount", "-5.00"),
		set("amount", "1,00"),
		set("currency", "XXX"),
		set("status", "shipped"),
		set("placed_at", "yesterday"),
		set("buyer", map[string]any{"id": "b-1", "country": "ZZ", "new": true}),
		set("items", []any{map[string]any{"sku": "s-1", "category": "electronics", "amount": "abc", "quantity": 1}}),
		del("affiliate_id"),
		del("placed_at"),
		// unknown program; one that is no subject token; the reserved token
		set("program", "nosuch"),
		set("program", "no such program"),
		set("program", "dead"),
		// no policy version in force at the order's time
		set("placed_at", "2024-06-01T12:00:00Z", "click_at", "2024-05-30T12:00:00Z"),
	}
	out := make([][]byte, n)
	for i := range out {
		out[i] = kinds[i%len(kinds)](i)
	}
	return out
}

// mix interleaves bad lines among good ones at pseudo-random places.
func mix(good, bad [][]byte, seed uint64) [][]byte {
	all := append(slices.Clone(good), bad...)
	r := rand.New(rand.NewPCG(seed, 1))
	r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	return all
}

// expectation is what the store and the stream must hold once the pipeline settled, computed
// by running the engine over the published lines.
type expectation struct {
	decided map[string]bool     // event ids that must have exactly one decision
	dead    map[string]deadWant // event ids that must be dead letters
}

type deadWant struct {
	reason, kind, subject string // subject: where the dead letter is published
}

func (e expectation) total() int { return len(e.decided) + len(e.dead) }

// expect decides every line with the engine on the policies in dir, as the pipeline will, and
// names each line's event id as the publisher sets it.
func expect(t testing.TB, cfg stream.Config, policies string, lines [][]byte) expectation {
	t.Helper()
	set, err := rules.LoadDir(policies)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := stream.NewPublisher(nil, cfg) // only Message is used: no connection needed
	if err != nil {
		t.Fatal(err)
	}
	eng := engine.New(set)
	prefix := strings.TrimSuffix(cfg.WithDefaults().Subjects, ">")
	want := expectation{decided: map[string]bool{}, dead: map[string]deadWant{}}
	// <prefix>.<program token>.<affiliate token> → <prefix>.dead.<program token>.<affiliate token>
	var results []engine.Result
	for _, line := range lines {
		m := pub.Message(line)
		id := m.Header.Get(jetstream.MsgIDHeader)
		results = eng.DecideEvents(context.Background(), []engine.Event{{ID: id, Subject: m.Subject, Raw: line}}, results[:0])
		if r := results[0]; r.Err != nil {
			want.dead[id] = deadWant{reason: r.Err.Error(), kind: engine.ErrorKind(r.Err),
				subject: prefix + "dead." + strings.TrimPrefix(m.Subject, prefix)}
		} else {
			want.decided[id] = true
		}
	}
	return want
}

// verifyStored checks the store against the expectation: every event decided exactly once and
// nothing else decided, every bad event a dead letter with the engine's reason and kind, no
// stored event without an outcome, and every program's hash chain intact.
func verifyStored(t testing.TB, st *store.Store, policies string, want expectation) {
	t.Helper()
	ctx := context.Background()
	if n, err := st.CountDuplicateDecisions(ctx); err != nil || n != 0 {
		t.Errorf("CountDuplicateDecisions = %d, %v; want 0", n, err)
	}

	decided := map[string]int{}
	rows, err := st.DB().QueryContext(ctx, "SELECT event_id FROM decisions")
	if err != nil {
		t.Fatalf("reading decisions: %v", err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		decided[id]++
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	var problems []string
	for id, n := range decided {
		switch {
		case !want.decided[id]:
			problems = append(problems, fmt.Sprintf("event %s: got %d decisions, want none", id, n))
		case n != 1:
			problems = append(problems, fmt.Sprintf("event %s: got %d decisions, want 1", id, n))
		}
	}
	for id := range want.decided {
		if decided[id] == 0 {
			problems = append(problems, fmt.Sprintf("event %s: got no decision, want 1", id))
		}
	}

	dead := map[string]deadWant{}
	rows, err = st.DB().QueryContext(ctx, "SELECT event_id, reason, kind FROM dead_letters")
	if err != nil {
		t.Fatalf("reading dead letters: %v", err)
	}
	for rows.Next() {
		var id string
		var d deadWant
		if err := rows.Scan(&id, &d.reason, &d.kind); err != nil {
			t.Fatal(err)
		}
		if _, dup := dead[id]; dup {
			problems = append(problems, fmt.Sprintf("dead letter %s: stored twice", id))
		}
		dead[id] = d
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	for id, d := range dead {
		w, ok := want.dead[id]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("event %s: got a dead letter (%s), want a decision", id, d.reason))
		case d.reason != w.reason || d.kind != w.kind:
			problems = append(problems, fmt.Sprintf("dead letter %s: got %s %q, want %s %q", id, d.kind, d.reason, w.kind, w.reason))
		}
	}
	for id, w := range want.dead {
		if _, ok := dead[id]; !ok {
			problems = append(problems, fmt.Sprintf("event %s: got no dead letter, want one (%s)", id, w.reason))
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		t.Errorf("%d problems (decisions stored %d, want %d; dead letters %d, want %d), the first:\n%s",
			len(problems), len(decided), len(want.decided), len(dead), len(want.dead),
			strings.Join(problems[:min(len(problems), 10)], "\n"))
	}
	verifyChains(t, st, policies, int64(len(want.decided)))
}

// verifyChains audits the store as `audit verify` does — every decision decided again with its
// recorded policy version and its order booked again (leaves, ledger entries, order states), every
// partition's batches, roots and links — and checks that nothing is found and that wantTotal
// decisions were verified.
func verifyChains(t testing.TB, st *store.Store, policies string, wantTotal int64) {
	t.Helper()
	var found []string
	rep, err := audit.Verify(context.Background(), st, audit.VerifyOptions{OnFinding: func(f audit.Finding) {
		if len(found) < 10 {
			found = append(found, f.String())
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Errorf("audit verify: %d findings:\n%s", rep.Findings, strings.Join(found, "\n"))
	}
	if rep.Decisions != wantTotal || rep.Reproduced != wantTotal {
		t.Errorf("audit verify: %d decisions, %d reproduced; want %d", rep.Decisions, rep.Reproduced, wantTotal)
	}
}

// verifyDeadLetterMessages reads every message on the dead-letter subjects and checks there is
// exactly one per expected dead letter, on its subject, carrying the engine's reason.
func verifyDeadLetterMessages(t testing.TB, js jetstream.JetStream, cfg stream.Config, want expectation) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg = cfg.WithDefaults()
	deadFilter := strings.TrimSuffix(cfg.Subjects, ">") + "dead.>"
	cons, err := js.OrderedConsumer(ctx, cfg.DeadStream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{deadFilter}})
	if err != nil {
		t.Fatalf("reading dead letters from the stream: %v", err)
	}
	got := map[string]int{}
	var problems []string
	for read := 0; read < len(want.dead); {
		batch, err := cons.Fetch(len(want.dead)-read, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatalf("fetching dead letters: %v", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			id := m.Headers().Get(stream.HeaderEventID)
			got[id]++
			w, ok := want.dead[id]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("dead letter message for event %q, want none", id))
			case m.Subject() != w.subject:
				problems = append(problems, fmt.Sprintf("dead letter %s: got subject %s, want %s", id, m.Subject(), w.subject))
			case m.Headers().Get(stream.HeaderReason) != w.reason:
				problems = append(problems, fmt.Sprintf("dead letter %s: got reason %q, want %q", id, m.Headers().Get(stream.HeaderReason), w.reason))
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("fetching dead letters: %v", err)
		}
		if n == 0 {
			break // nothing more within FetchMaxWait
		}
		read += n
	}
	for id := range want.dead {
		if got[id] != 1 {
			problems = append(problems, fmt.Sprintf("dead letter %s: got %d messages, want 1", id, got[id]))
		}
	}
	info, err := cons.Info(ctx)
	if err == nil && info.NumPending != 0 {
		problems = append(problems, fmt.Sprintf("%d dead-letter messages beyond the %d expected", info.NumPending, len(want.dead)))
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		t.Errorf("%d problems with the dead-letter messages, the first:\n%s", len(problems), strings.Join(problems[:min(len(problems), 10)], "\n"))
	}
}

// TestPipelineDeadLettersBadInput: 1 000 bad events of every kind mixed among 4 000 valid ones.
// Every bad one becomes a dead letter with the engine's reason, in the store and on
// orders.dead.<program>.<affiliate>; every valid one is decided exactly once; the partitions
// settle.
func TestPipelineDeadLettersBadInput(t *testing.T) {
	cfg := pipelineConfig(t)
	good := sampleLines(t, 4000, 11, "2025-10")
	bad := badOrderLines(1000)
	lines := mix(good, bad, 12)
	want := expect(t, cfg.NATS, cfg.Policies, lines)
	if len(want.dead) != len(bad) || len(want.decided) != len(good) {
		t.Fatalf("test data: the engine rejects %d lines and decides %d, want %d bad and %d good", len(want.dead), len(want.decided), len(bad), len(good))
	}
	kinds := map[string]int{}
	for _, d := range want.dead {
		kinds[d.kind]++
	}
	for _, k := range []string{engine.ErrorKindInvalid, engine.ErrorKindUnknownProgram, engine.ErrorKindNoPolicy} {
		if kinds[k] == 0 {
			t.Fatalf("test data: no bad line of kind %s (got %v)", k, kinds)
		}
	}

	svc := startRunning(t, cfg)
	last := publishAll(t, svc.js, svc.cfg.NATS, lines)
	waitSettledService(t, svc, last, time.Minute)

	verifyStored(t, svc.store, cfg.Policies, want)
	verifyDeadLetterMessages(t, svc.js, svc.cfg.NATS, want)
	st := svc.consumer.Stats()
	if st.Termed != uint64(len(bad)) {
		t.Errorf("consumer terminated %d events, want %d", st.Termed, len(bad))
	}
	if st.Acked < uint64(len(good)) {
		t.Errorf("consumer acked %d events, want at least %d", st.Acked, len(good))
	}
	// A fifth of the events are bad: the batches say so in the log.
	if !strings.Contains(svc.logs.String(), "dead-letter burst") {
		t.Error("no dead-letter burst in the log, with a fifth of the events bad")
	}
}

// TestPipelineScaleOut: two services share the partitions of one stream (a NATS server the test
// runs) and one SQLite file: each event is decided once, and both did some of the work.
func TestPipelineScaleOut(t *testing.T) {
	natsCfg, _ := testBroker(t, stream.Config{})
	dsn := "sqlite://" + filepath.Join(t.TempDir(), "shared.db")
	var svcs []*runningService
	for range 2 {
		cfg := pipelineConfig(t)
		cfg.NATS.URL, cfg.NATS.User, cfg.NATS.Password = natsCfg.URL, natsCfg.User, natsCfg.Password
		cfg.NATS.BatchSize = 250
		cfg.Store.DSN = dsn
		svcs = append(svcs, startRunning(t, cfg))
	}
	waitSharing(t, svcs...)
	lines := mix(sampleLines(t, 6000, 21, "2025-10"), badOrderLines(100), 22)
	want := expect(t, svcs[0].cfg.NATS, svcs[0].cfg.Policies, lines)
	last := publishAll(t, svcs[0].js, svcs[0].cfg.NATS, lines)
	waitSettledService(t, svcs[0], last, 2*time.Minute)

	verifyStored(t, svcs[1].store, svcs[1].cfg.Policies, want)
	var total uint64
	for i, s := range svcs {
		st := s.consumer.Stats()
		if st.Acked+st.Termed == 0 {
			t.Errorf("service %d settled no events, want a share of the work (stats %+v)", i, st)
		}
		total += st.Acked + st.Termed
		t.Logf("service %d: %+v", i, st)
	}
	if total < uint64(want.total()) {
		t.Errorf("the services settled %d events between them, want at least %d", total, want.total())
	}
}

// TestPipelineNewStreamBesideOldStore: the embedded server's data is deleted (a new stream, its
// sequences from 1 again) while the database stays. The partitions' positions in the store are
// positions in the old stream; the new owners must read the new stream from its start rather
// than skip its first events: re-published orders are recognised, new ones decided, nothing lost.
func TestPipelineNewStreamBesideOldStore(t *testing.T) {
	cfg := pipelineConfig(t)
	first := sampleLines(t, 2000, 41, "2025-10")
	svc := startRunning(t, cfg)
	waitSettledService(t, svc, publishAll(t, svc.js, svc.cfg.NATS, first), time.Minute)
	if err := svc.stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(svc.cfg.NATS.DataDir); err != nil {
		t.Fatal(err)
	}

	svc = startRunning(t, cfg)
	more := sampleLines(t, 3000, 41, "2025-10")[2000:] // 1 000 orders the store has not seen
	last := publishAll(t, svc.js, svc.cfg.NATS, append(slices.Clone(first[:500]), more...))
	waitSettledService(t, svc, last, time.Minute)
	st := mustStoreStats(t, svc)
	if st.Decisions+st.DeadLetters != 3000 {
		t.Errorf("stored %d decisions and %d dead letters, want 3 000 outcomes: the first 2 000 once and the 1 000 new", st.Decisions, st.DeadLetters)
	}
	if n, err := svc.store.CountDuplicateDecisions(context.Background()); err != nil || n != 0 {
		t.Errorf("CountDuplicateDecisions = %d, %v; want 0", n, err)
	}
	verifyChains(t, svc.store, cfg.Policies, st.Decisions)
}

func mustStoreStats(t *testing.T, svc *runningService) store.Stats {
	t.Helper()
	st, err := svc.store.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// asExternal returns cfg for connecting to the embedded server emb by URL, as to an external
// server: with the service's user and password from its data directory.
func asExternal(t testing.TB, emb *stream.Embedded, cfg stream.Config) stream.Config {
	t.Helper()
	auth, err := stream.ReadEmbeddedAuth(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.URL, cfg.User, cfg.Password = emb.ClientURL(), auth.Service.User, auth.Service.Password
	return cfg
}

// testBroker starts an embedded NATS server of the test's own (on cfg.DataDir, a temporary one
// when empty; shut down when the test ends) and returns cfg to reach it as an external server.
// The services under test then run beside it, so stopping or killing them never touches it.
func testBroker(t testing.TB, cfg stream.Config) (stream.Config, *stream.Embedded) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg = cfg.WithDefaults()
	emb, err := stream.StartEmbedded(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := emb.Shutdown(); err != nil {
			t.Error(err)
		}
	})
	return asExternal(t, emb, cfg), emb
}

// connectJS connects to cfg's server (closed when the test ends) and opens JetStream.
func connectJS(t testing.TB, cfg stream.Config) jetstream.JetStream {
	t.Helper()
	nc, err := stream.Connect(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
