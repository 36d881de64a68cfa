package stream_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine"
)

func TestConfigDefaultsAreValid(t *testing.T) {
	cfg := stream.DefaultConfig().WithDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate(): got %v, want nil", err)
	}
	if got, want := cfg.MaxAckPending, 1000*4*4; got != want {
		t.Errorf("default MaxAckPending: got %d, want %d", got, want)
	}
	if got, want := cfg.OrderSubject("alibaba"), "orders.alibaba"; got != want {
		t.Errorf("OrderSubject: got %q, want %q", got, want)
	}
	if got, want := cfg.DeadSubject("alibaba"), "orders.dead.alibaba"; got != want {
		t.Errorf("DeadSubject: got %q, want %q", got, want)
	}
	if got, want := cfg.ConsumeSubject(), "orders.*"; got != want {
		t.Errorf("ConsumeSubject: got %q, want %q", got, want)
	}
}

func TestConfigValidateNamesEveryProblem(t *testing.T) {
	cfg := stream.DefaultConfig()
	cfg.Stream = "ORDERS.X"
	cfg.Subjects = "orders.*"
	cfg.Durable = "a b"
	cfg.BatchSize = -1
	cfg.NakDelay = time.Minute
	cfg.NakMaxDelay = time.Second
	cfg.URL = "nats://ok:4222, ::bad::"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate: got nil, want errors")
	}
	for _, field := range []string{"stream:", "subjects:", "durable:", "batch_size:", "nak_max_delay:", "url:"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("Validate: got %q, want a problem with %s", err, field)
		}
	}
}

func TestConfigStringMasksSecrets(t *testing.T) {
	cfg := stream.DefaultConfig()
	cfg.URL = "nats://alice:s3cret@n1:4222,nats://t0ken@n2:4222"
	cfg.Token = "hunter2"
	s := cfg.String()
	for _, secret := range []string{"s3cret", "t0ken", "hunter2", "alice"} {
		if strings.Contains(s, secret) {
			t.Errorf("String(): got %q, want %q masked", s, secret)
		}
	}
	for _, want := range []string{"nats://****@n1:4222", "nats://****@n2:4222", `token="****"`} {
		if !strings.Contains(s, want) {
			t.Errorf("String(): got %q, want it to contain %q", s, want)
		}
	}
}

func TestPublisherMessage(t *testing.T) {
	p, err := stream.NewPublisher(nil, stream.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, raw         string
		subject, idPrefix string
	}{
		{"plain", `{"order_id":"o-1","program":"alibaba","amount":"1"}`, "orders.alibaba", "alibaba:o-1:"},
		{"program after nested objects", `{"buyer":{"program":"x","order_id":"y"},"items":[{"program":"z"}],"order_id":"o-2", "program" : "alibaba"}`, "orders.alibaba", "alibaba:o-2:"},
		{"no program", `{"order_id":"o-3"}`, "orders.unknown", ":o-3:"},
		{"reserved program", `{"program":"dead","order_id":"o-4"}`, "orders.unknown", "dead:o-4:"},
		{"program not a token", `{"program":"a.b","order_id":"o-5"}`, "orders.unknown", "a.b:o-5:"},
		{"escaped values", `{"program":"ali\u0062aba","order_id":"o\n6"}`, "orders.unknown", "::"},
		{"program not a string", `{"program":7,"order_id":"o-7"}`, "orders.unknown", ":o-7:"},
		{"malformed", `{"order_id":"o-8","program":"alibaba"`, "orders.alibaba", "alibaba:o-8:"},
		{"not an object", `["program","alibaba"]`, "orders.unknown", "::"},
		{"empty", ``, "orders.unknown", "::"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := p.Message([]byte(tt.raw))
			if m.Subject != tt.subject {
				t.Errorf("subject: got %q, want %q", m.Subject, tt.subject)
			}
			sum := sha256.Sum256([]byte(tt.raw))
			if got, want := m.Header.Get(jetstream.MsgIDHeader), tt.idPrefix+hex.EncodeToString(sum[:8]); got != want {
				t.Errorf("Nats-Msg-Id: got %q, want %q", got, want)
			}
		})
	}
}

func TestEmbeddedWritesItsURLAndRefusesASecondServer(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	emb, err := stream.StartEmbedded(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	urlFile := filepath.Join(cfg.DataDir, stream.URLFile)
	b, err := os.ReadFile(urlFile)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(b)), emb.ClientURL(); got != want {
		t.Errorf("%s: got %q, want %q", stream.URLFile, got, want)
	}
	if strings.HasSuffix(emb.ClientURL(), ":4222") {
		t.Errorf("ClientURL: got %q, want a free port, not 4222", emb.ClientURL())
	}

	// Another process (`commissioner publish`) finds it with no URL configured.
	nc, err := stream.Connect(ctx, cfg)
	if err != nil {
		t.Fatalf("Connect with no URL: got %v, want the embedded server", err)
	}
	if got := nc.ConnectedUrl(); got != emb.ClientURL() {
		t.Errorf("connected to %q, want %q", got, emb.ClientURL())
	}
	nc.Close()

	if _, err := stream.StartEmbedded(ctx, cfg); !errors.Is(err, stream.ErrEmbeddedRunning) {
		t.Errorf("second StartEmbedded on the same data dir: got %v, want ErrEmbeddedRunning", err)
	}
	if err := emb.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(urlFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Shutdown, %s: got %v, want it removed", stream.URLFile, err)
	}
	if _, err := stream.Connect(ctx, cfg); err == nil {
		t.Error("Connect after Shutdown: got nil, want an error")
	}

	// The data survives a restart.
	emb2, err := stream.StartEmbedded(ctx, cfg)
	if err != nil {
		t.Fatalf("restarting on the same data dir: %v", err)
	}
	if err := emb2.Shutdown(); err != nil {
		t.Fatal(err)
	}
}

func TestEnsureStreamIsIdempotent(t *testing.T) {
	b := startBroker(t, testConfig(t))
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		s, err := stream.EnsureStream(ctx, b.js, b.cfg)
		if err != nil {
			t.Fatalf("EnsureStream #%d: %v", i+2, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c := info.Config
		if c.Storage != jetstream.FileStorage || c.Duplicates != b.cfg.DuplicateWindow || len(c.Subjects) != 1 || c.Subjects[0] != "orders.>" {
			t.Errorf("stream config: got storage %v, duplicates %v, subjects %v; want file, %v, [orders.>]",
				c.Storage, c.Duplicates, c.Subjects, b.cfg.DuplicateWindow)
		}
		if c.PersistMode != jetstream.DefaultPersistMode {
			t.Errorf("persist mode: got %v, want the default (write before the publish ack)", c.PersistMode)
		}
	}
	// A changed configuration updates the stream in place.
	cfg := b.cfg
	cfg.DuplicateWindow = time.Minute
	s, err := stream.EnsureStream(ctx, b.js, cfg)
	if err != nil {
		t.Fatalf("EnsureStream with a changed config: %v", err)
	}
	if got := s.CachedInfo().Config.Duplicates; got != time.Minute {
		t.Errorf("updated stream: got duplicate window %v, want 1m0s", got)
	}
	// except the persist mode, which the server cannot change.
	cfg.AsyncPersist = true
	if _, err := stream.EnsureStream(ctx, b.js, cfg); err == nil || !strings.Contains(err.Error(), "async_persist") {
		t.Errorf("EnsureStream changing the persist mode: got %v, want an error naming async_persist", err)
	}
}

func TestPublishConsumeEachEventOnce(t *testing.T) {
	b := startBroker(t, testConfig(t))
	const n = 3000
	lines := genOrders(n, 1)
	b.publish(t, lines)

	snk := newSink()
	c := newConsumer(t, b, &engineProcessor{eng: newEngine(t), sink: snk}, nil)
	stop := run(t, c)
	waitFor(t, 30*time.Second, "every event processed", func() (bool, string) {
		return snk.count() == n, fmt.Sprintf("%d of %d", snk.count(), n)
	})
	waitSettled(t, c)
	if err := stop(); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}

	snk.mu.Lock()
	defer snk.mu.Unlock()
	for _, line := range lines {
		var o struct {
			OrderID string `json:"order_id"`
		}
		if err := json.Unmarshal(line, &o); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(line)
		id := "alibaba:" + o.OrderID + ":" + hex.EncodeToString(sum[:8])
		if got := snk.processed[id]; got != 1 {
			t.Fatalf("event %s: processed %d times, want 1", id, got)
		}
	}
	if len(snk.dead) != 0 {
		t.Errorf("dead letters: got %d (%v), want none for valid orders", len(snk.dead), firstOf(snk.dead))
	}
	st := c.Stats()
	if st.Consumed != n || st.Acked != n || st.Naked != 0 || st.Termed != 0 || st.SettleErrors != 0 {
		t.Errorf("stats: got %+v, want %d consumed and acked, nothing else", st, n)
	}
}

func firstOf(m map[string]string) string {
	for k, v := range m {
		return k + ": " + v
	}
	return ""
}

func TestRepublishedEventsAreDropped(t *testing.T) {
	b := startBroker(t, testConfig(t))
	ctx := context.Background()
	lines := genOrders(500, 2)
	b.publish(t, lines)

	p := b.publisher(t)
	st, err := p.PublishLines(ctx, bytes.NewReader(joinLines(lines)), 64)
	if err != nil {
		t.Fatal(err)
	}
	if want := (stream.PublishStats{Lines: 500, Duplicates: 500}); st != want {
		t.Errorf("re-publishing: got %+v, want %+v", st, want)
	}
	if ok, err := p.Publish(ctx, lines[0]); err != nil || ok {
		t.Errorf("Publish of a published event: got accepted=%v, %v; want false, nil", ok, err)
	}
	// The same order with a new status is a new event.
	changed := bytes.Replace(lines[0], []byte(`"status":"`), []byte(`"status":"x`), 1)
	if ok, err := p.Publish(ctx, changed); err != nil || !ok {
		t.Errorf("Publish of a changed event: got accepted=%v, %v; want true, nil", ok, err)
	}
	s, err := b.js.Stream(ctx, b.cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.State.Msgs, uint64(501); got != want {
		t.Errorf("messages in the stream: got %d, want %d", got, want)
	}
}

func TestStoreDownNothingAckedNothingLost(t *testing.T) {
	b := startBroker(t, testConfig(t))
	const n = 1000
	b.publish(t, genOrders(n, 3))

	var down atomic.Bool
	down.Store(true)
	var mu sync.Mutex
	seenWhileDown := map[string]bool{}
	snk := newSink()
	proc := &engineProcessor{eng: newEngine(t), sink: snk, fail: func(batch []engine.Event) error {
		if !down.Load() {
			return nil
		}
		mu.Lock()
		for _, ev := range batch {
			seenWhileDown[ev.ID] = true
		}
		mu.Unlock()
		return errStoreDown
	}}
	c := newConsumer(t, b, proc, nil)
	stop := run(t, c)

	// Every event is offered, fails, and is handed back; none is acked.
	waitFor(t, 30*time.Second, "every event offered while the store is down, and offered again", func() (bool, string) {
		mu.Lock()
		seen := len(seenWhileDown)
		mu.Unlock()
		st := c.Stats()
		return seen == n && st.FailedBatches > uint64(n/b.cfg.BatchSize), fmt.Sprintf("%d events seen, stats %+v", seen, st)
	})
	if st := c.Stats(); st.Acked != 0 || st.Termed != 0 || snk.count() != 0 {
		t.Fatalf("while the store is down: got %+v and %d stored, want nothing acked, termed or stored", st, snk.count())
	}

	down.Store(false)
	waitFor(t, 30*time.Second, "every event processed after the store is back", func() (bool, string) {
		return snk.count() == n, fmt.Sprintf("%d of %d", snk.count(), n)
	})
	waitSettled(t, c)
	if err := stop(); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	snk.mu.Lock()
	for id, k := range snk.processed {
		if k != 1 {
			t.Errorf("event %s: stored %d times, want 1", id, k)
		}
	}
	snk.mu.Unlock()
	if st := c.Stats(); st.Acked != n || st.Naked < n {
		t.Errorf("stats: got %+v, want %d acked and at least %d naked", st, n, n)
	}
}

func TestMalformedEventsAreDeadLettered(t *testing.T) {
	b := startBroker(t, testConfig(t))
	ctx := context.Background()
	valid := genOrders(1000, 4)
	const good = `"affiliate_id":"a","status":"completed","placed_at":"2025-03-01T00:00:00Z","buyer":{"id":"b","country":"US","new":true},"currency":"USD","amount":"10.00"`
	type bad struct {
		line  string
		token string // the dead letter's subject token
	}
	var bads []bad
	for i := 0; i < 50; i++ {
		bads = append(bads,
			bad{fmt.Sprintf(`{"order_id":"trunc-%d","program":"alibaba"`, i), "alibaba"},
			bad{fmt.Sprintf(`not json %d`, i), "unknown"},
			bad{fmt.Sprintf(`[%d]`, i), "unknown"},
			bad{fmt.Sprintf(`{"order_id":"status-%d","program":"alibaba",%s,"status":"shipped"}`, i, good), "alibaba"},
			bad{fmt.Sprintf(`{"order_id":"neg-%d","program":"alibaba",%s,"amount":"-1"}`, i, strings.Replace(good, `,"amount":"10.00"`, "", 1)), "alibaba"},
			bad{fmt.Sprintf(`{"order_id":"nope-%d","program":"nope",%s}`, i, good), "nope"},
			bad{fmt.Sprintf(`{"order_id":"dead-%d","program":"dead",%s}`, i, good), "unknown"},
			bad{fmt.Sprintf(`{"order_id":"dots-%d","program":"a.b",%s}`, i, good), "unknown"},
			bad{fmt.Sprintf(`{"order_id":"missing-%d"}`, i), "unknown"},
		)
	}
	var lines [][]byte
	wantDead := map[string]int{}
	for i, v := range valid {
		lines = append(lines, v)
		if i < len(bads) {
			lines = append(lines, []byte(bads[i].line))
			wantDead["orders.dead."+bads[i].token]++
		}
	}
	b.publish(t, lines)

	snk := newSink()
	c := newConsumer(t, b, &engineProcessor{eng: newEngine(t), sink: snk}, nil)
	stop := run(t, c)
	waitFor(t, 30*time.Second, "every event processed", func() (bool, string) {
		return snk.count() == len(lines), fmt.Sprintf("%d of %d", snk.count(), len(lines))
	})
	waitSettled(t, c)
	if err := stop(); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}

	snk.mu.Lock()
	if len(snk.decided) != len(valid) || len(snk.dead) != len(bads) {
		t.Errorf("got %d decided and %d dead, want %d and %d", len(snk.decided), len(snk.dead), len(valid), len(bads))
	}
	deadReasons := maps(snk.dead)
	snk.mu.Unlock()
	if st := c.Stats(); st.Termed != uint64(len(bads)) || st.Acked != uint64(len(valid)) {
		t.Errorf("stats: got %+v, want %d termed and %d acked", st, len(bads), len(valid))
	}

	// Every bad event is on orders.dead.<token>, with its reason, and was never read back.
	s, err := b.js.Stream(ctx, b.cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("orders.dead.>"))
	if err != nil {
		t.Fatal(err)
	}
	for subj, want := range wantDead {
		if got := info.State.Subjects[subj]; got != uint64(want) {
			t.Errorf("dead letters on %s: got %d, want %d", subj, got, want)
		}
	}
	if len(info.State.Subjects) != len(wantDead) {
		t.Errorf("dead-letter subjects: got %v, want %v", info.State.Subjects, wantDead)
	}
	oc, err := b.js.OrderedConsumer(ctx, b.cfg.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"orders.dead.>"}})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := oc.Fetch(len(bads), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		got++
		id := m.Headers().Get(stream.HeaderEventID)
		want, ok := deadReasons[id]
		if !ok {
			t.Errorf("dead letter %q: not an event the processor dead-lettered", id)
			continue
		}
		if r := m.Headers().Get(stream.HeaderReason); r != want || r == "" {
			t.Errorf("dead letter %s: reason header %q, want %q", id, r, want)
		}
		if m.Headers().Get(stream.HeaderStreamSeq) == "" || !strings.HasPrefix(m.Headers().Get(stream.HeaderSubject), "orders.") {
			t.Errorf("dead letter %s: headers %v, want the original subject and stream sequence", id, m.Headers())
		}
	}
	if got != len(bads) {
		t.Errorf("dead letters read back: got %d, want %d", got, len(bads))
	}
}

func maps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestTwoConsumersShareTheDurable(t *testing.T) {
	b := startBroker(t, testConfig(t))
	const n = 5000
	snk := newSink()
	eng := newEngine(t)

	// A holds its first batch until B has processed one, so both must take part.
	bDone := make(chan struct{})
	var bOnce sync.Once
	var aBlocked atomic.Bool
	aProc := &engineProcessor{eng: eng, sink: snk, before: func([]engine.Event) {
		if aBlocked.CompareAndSwap(false, true) {
			select {
			case <-bDone:
			case <-time.After(30 * time.Second):
				t.Error("consumer B processed nothing while A held its batch")
			}
		}
	}}
	bProc := &engineProcessor{eng: eng, sink: snk, before: func([]engine.Event) {
		bOnce.Do(func() { close(bDone) })
	}}
	ca := newConsumer(t, b, aProc, nil)
	cb := newConsumer(t, b, bProc, nil)
	stopA, stopB := run(t, ca), run(t, cb)
	b.publish(t, genOrders(n, 5))

	waitFor(t, 60*time.Second, "every event processed", func() (bool, string) {
		return snk.count() == n, fmt.Sprintf("%d of %d", snk.count(), n)
	})
	waitSettled(t, ca)
	if err := errors.Join(stopA(), stopB()); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	snk.mu.Lock()
	for id, k := range snk.processed {
		if k != 1 {
			t.Errorf("event %s: processed %d times, want 1", id, k)
		}
	}
	snk.mu.Unlock()
	sa, sb := ca.Stats(), cb.Stats()
	if sa.Acked == 0 || sb.Acked == 0 || sa.Acked+sb.Acked != n {
		t.Errorf("acked: got A %d + B %d, want both > 0 and %d in all", sa.Acked, sb.Acked, n)
	}
}

func TestShutdownFinishesTheBatchInFlight(t *testing.T) {
	b := startBroker(t, testConfig(t))
	const n = 1000
	b.publish(t, genOrders(n, 6))

	snk := newSink()
	entered, release := make(chan []string, 1), make(chan struct{})
	var first atomic.Bool
	proc := &engineProcessor{eng: newEngine(t), sink: snk, before: func(batch []engine.Event) {
		if first.CompareAndSwap(false, true) {
			ids := make([]string, len(batch))
			for i, ev := range batch {
				ids[i] = ev.ID
			}
			entered <- ids
			<-release
		}
	}}
	c := newConsumer(t, b, proc, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	var inFlight []string
	select {
	case inFlight = <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("no batch reached the processor")
	}
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Run returned %v before the batch in flight finished", err)
	default:
	}
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: got %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the batch in flight finished")
	}
	// The blocked batch (and any other that was in flight with it) was finished and acked.
	snk.mu.Lock()
	for _, id := range inFlight {
		if snk.processed[id] != 1 {
			t.Errorf("event %s of the batch in flight: processed %d times, want 1", id, snk.processed[id])
		}
	}
	stored := len(snk.processed)
	snk.mu.Unlock()
	if st := c.Stats(); st.Acked != uint64(stored) || st.Acked < uint64(len(inFlight)) {
		t.Errorf("after shutdown: got %+v with %d stored, want every stored event acked (at least the %d in flight)", st, stored, len(inFlight))
	}
	acked := int(c.Stats().Acked)

	// Another consumer takes the rest; the acked batch is not delivered again.
	c2 := newConsumer(t, b, &engineProcessor{eng: newEngine(t), sink: snk}, nil)
	stop := run(t, c2)
	waitFor(t, 30*time.Second, "every event processed", func() (bool, string) {
		return snk.count() == n, fmt.Sprintf("%d of %d", snk.count(), n)
	})
	waitSettled(t, c2)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	snk.mu.Lock()
	defer snk.mu.Unlock()
	for id, k := range snk.processed {
		if k != 1 {
			t.Errorf("event %s: processed %d times, want 1", id, k)
		}
	}
	if got := c2.Stats().Acked; got != uint64(n-acked) {
		t.Errorf("second consumer acked %d, want %d", got, n-acked)
	}
}

// badProcessor reports a dead letter outside its batch.
type badProcessor struct{}

func (badProcessor) Process(_ context.Context, batch []engine.Event) (stream.BatchOutcome, error) {
	return stream.BatchOutcome{Dead: []stream.DeadLetter{{Index: len(batch), Reason: "?"}}}, nil
}

func TestProcessorContractViolationStopsRun(t *testing.T) {
	b := startBroker(t, testConfig(t))
	b.publish(t, genOrders(10, 7))
	c := newConsumer(t, b, badProcessor{}, nil)
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, stream.ErrProcessorContract) {
			t.Fatalf("Run: got %v, want ErrProcessorContract", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop on a broken contract")
	}
	if st := c.Stats(); st.Acked != 0 || st.Termed != 0 || st.Naked != 10 {
		t.Errorf("stats: got %+v, want all 10 naked, none acked or termed", st)
	}
}

// TestExternalServer runs publish → consume against the NATS server at 127.0.0.1:4222 on a
// stream and subjects of its own, deleted afterwards.
func TestExternalServer(t *testing.T) {
	if !reachable("127.0.0.1:4222") {
		if integration() {
			t.Fatal("COMMISSIONER_INTEGRATION=1 but no NATS server at 127.0.0.1:4222")
		}
		t.Skip("no NATS server at 127.0.0.1:4222 (set COMMISSIONER_INTEGRATION=1 to require it)")
	}
	unique := fmt.Sprintf("t%d", time.Now().UnixNano())
	cfg := testConfig(t)
	cfg.URL = "nats://127.0.0.1:4222"
	cfg.Stream = "COMMISSIONER_TEST_" + unique
	cfg.Subjects = unique + ".orders.>"
	cfg.Durable = "test"
	b := startBroker(t, cfg)
	t.Cleanup(func() {
		if err := b.js.DeleteStream(context.Background(), cfg.Stream); err != nil {
			t.Errorf("deleting test stream %s: %v", cfg.Stream, err)
		}
	})
	const n = 2000
	b.publish(t, genOrders(n, 8))
	snk := newSink()
	c := newConsumer(t, b, &engineProcessor{eng: newEngine(t), sink: snk}, nil)
	stop := run(t, c)
	waitFor(t, 30*time.Second, "every event processed", func() (bool, string) {
		return snk.count() == n, fmt.Sprintf("%d of %d", snk.count(), n)
	})
	waitSettled(t, c)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Acked != n {
		t.Errorf("acked: got %d, want %d", st.Acked, n)
	}
}

func TestClosedConnectionStopsRunAndLosesNothing(t *testing.T) {
	cfg := testConfig(t)
	cfg.AckWait = time.Second // the unacked batch comes back quickly
	b := startBroker(t, cfg)
	const n = 500
	b.publish(t, genOrders(n, 12))

	snk := newSink()
	nc, js := connect(t, b.cfg)
	var once sync.Once
	proc := &engineProcessor{eng: newEngine(t), sink: snk, before: func([]engine.Event) {
		once.Do(nc.Close) // the connection dies while the batch is being stored
	}}
	c, err := stream.NewConsumer(context.Background(), js, b.cfg, proc, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("Run: got %v, want an error wrapping nats.ErrConnectionClosed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop when its connection closed")
	}
	if st := c.Stats(); st.Acked != 0 || st.SettleErrors == 0 {
		t.Errorf("stats: got %+v, want nothing acked and the failed acks counted", st)
	}

	// Another process gets everything, the unacked batch included, after AckWait.
	c2 := newConsumer(t, b, &engineProcessor{eng: newEngine(t), sink: snk}, nil)
	stop := run(t, c2)
	waitFor(t, 30*time.Second, "every event processed", func() (bool, string) {
		return snk.count() == n, fmt.Sprintf("%d of %d", snk.count(), n)
	})
	waitSettled(t, c2)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := c2.Stats().Acked; got != n {
		t.Errorf("second consumer acked %d, want all %d", got, n)
	}
}

func TestPublishLinesCountsFailures(t *testing.T) {
	cfg := testConfig(t)
	b := startBroker(t, cfg)
	other := cfg
	other.Subjects = "elsewhere.>" // no stream captures these subjects
	p, err := stream.NewPublisher(b.js, other)
	if err != nil {
		t.Fatal(err)
	}
	input := "\n" + string(joinLines(genOrders(5, 13))) + "  \n"
	st, err := p.PublishLines(context.Background(), strings.NewReader(input), 2)
	if err == nil || !strings.Contains(err.Error(), "publishing line") {
		t.Errorf("PublishLines with no stream: got %v, want an error naming the line", err)
	}
	if want := (stream.PublishStats{Lines: 5, Failed: 5}); st != want {
		t.Errorf("PublishLines with no stream: got %+v, want %+v", st, want)
	}
}

// TestSettledWaitsForTheAckFloor: a consumer is Settled up to the last published event only once
// it has settled that event, whatever NumPending says in between (the server counts new messages
// into it asynchronously, after acknowledging the publish).
func TestSettledWaitsForTheAckFloor(t *testing.T) {
	b := startBroker(t, testConfig(t))
	snk := newSink()
	c := newConsumer(t, b, &engineProcessor{eng: newEngine(t), sink: snk}, nil)
	const n = 50
	st, err := b.publisher(t).PublishLines(context.Background(), bytes.NewReader(joinLines(genOrders(n, 3))), 0)
	if err != nil || st.Accepted != n {
		t.Fatalf("publishing: got %+v, %v; want %d accepted", st, err, n)
	}
	if st.LastSeq != n { // a fresh stream numbers them 1…n
		t.Errorf("LastSeq: got %d, want %d", st.LastSeq, n)
	}
	ci, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if stream.Settled(ci, st.LastSeq) {
		t.Fatalf("Settled before the consumer ran: %+v", ci)
	}
	stop := run(t, c)
	waitFor(t, 30*time.Second, "the consumer settled up to the last event", func() (bool, string) {
		ci, err := c.Info(context.Background())
		if err != nil {
			return false, err.Error()
		}
		return stream.Settled(ci, st.LastSeq), fmt.Sprintf("%+v", ci.AckFloor)
	})
	if got := snk.count(); got != n {
		t.Errorf("Settled with %d of %d events processed", got, n)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
