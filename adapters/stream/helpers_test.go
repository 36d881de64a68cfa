package stream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// testConfig is a small, fast configuration on its own data directory: 8 partitions, leases
// of 2 s.
func testConfig(t testing.TB) stream.Config {
	return stream.Config{
		DataDir:     t.TempDir(),
		BatchSize:   100,
		FetchWait:   2 * time.Millisecond,
		NakDelay:    20 * time.Millisecond,
		NakMaxDelay: 100 * time.Millisecond,
		LeaseTTL:    2 * time.Second,
	}.WithDefaults()
}

// broker is a running JetStream (embedded unless cfg.URL is set) with the stream ensured.
type broker struct {
	cfg stream.Config
	nc  *nats.Conn
	js  jetstream.JetStream
}

// startBroker starts an embedded server on cfg.DataDir (unless cfg.URL is set), connects, and
// ensures the stream. Everything is stopped when the test ends.
func startBroker(t testing.TB, cfg stream.Config) *broker {
	t.Helper()
	ctx := context.Background()
	if cfg.URL == "" {
		emb, err := stream.StartEmbedded(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := emb.Shutdown(); err != nil {
				t.Error(err)
			}
		})
		// Connections by URL authenticate as an external server's clients do: the service's
		// user and password (Connect reads them itself when the URL is not given).
		auth, err := stream.ReadEmbeddedAuth(cfg.DataDir)
		if err != nil {
			t.Fatal(err)
		}
		cfg.URL, cfg.User, cfg.Password = emb.ClientURL(), auth.Service.User, auth.Service.Password
	}
	b := &broker{cfg: cfg}
	b.nc, b.js = connect(t, cfg)
	if _, err := stream.EnsureStream(ctx, b.js, cfg); err != nil {
		t.Fatal(err)
	}
	return b
}

// connect opens one more connection (another "process").
func connect(t testing.TB, cfg stream.Config) (*nats.Conn, jetstream.JetStream) {
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
	return nc, js
}

func (b *broker) publisher(t testing.TB) *stream.Publisher {
	t.Helper()
	p, err := stream.NewPublisher(b.js, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// publish publishes the lines and checks that every one was accepted.
func (b *broker) publish(t testing.TB, lines [][]byte) {
	t.Helper()
	st, err := b.publisher(t).PublishLines(context.Background(), bytes.NewReader(joinLines(lines)), 256)
	if err != nil {
		t.Fatal(err)
	}
	if st.Accepted != len(lines) || st.Lines != len(lines) {
		t.Fatalf("publishing: got %+v, want %d lines accepted", st, len(lines))
	}
}

func joinLines(lines [][]byte) []byte {
	var buf bytes.Buffer
	for _, l := range lines {
		buf.Write(l)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// newEngine loads the repository's policies.
func newEngine(t testing.TB) *engine.Engine {
	t.Helper()
	set, err := rules.LoadDir("../../policies")
	if err != nil {
		t.Fatal(err)
	}
	return engine.New(set)
}

// sink is an in-memory stand-in for the store: what each successful Process "committed", with
// the store's fence: per partition, the epoch of its latest Acquire and the last stream
// sequence committed. A batch of an older epoch is refused with stream.ErrNotOwner; a batch
// whose events do not follow the partition's last sequence, or belong to another partition,
// is recorded as a violation of the consumer's contract.
type sink struct {
	cfg          stream.Config
	mu           sync.Mutex
	processed    map[string]int    // event id -> successful Process calls that contained it
	decided      map[string]string // event id -> commission
	dead         map[string]string // event id -> reason
	orderIDs     map[string]string // event id -> order id ("" when unreadable)
	epoch        map[int]uint64    // partition -> epoch of its latest Acquire
	last         map[int]uint64    // partition -> last stream sequence committed
	commits      map[int][]uint64  // partition -> epochs of its committed batches, in commit order
	perPartition map[int]int       // partition -> events committed
	refused      []stream.Partition
	problems     []string // contract violations
}

func newSink(cfg stream.Config) *sink {
	return &sink{cfg: cfg, processed: map[string]int{}, decided: map[string]string{}, dead: map[string]string{},
		orderIDs: map[string]string{}, epoch: map[int]uint64{}, last: map[int]uint64{}, commits: map[int][]uint64{},
		perPartition: map[int]int{}}
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.processed)
}

// acquire records p's epoch as the partition's fence and returns its last sequence.
func (s *sink) acquire(p stream.Partition) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.Epoch <= s.epoch[p.Index] {
		return 0, fmt.Errorf("acquiring partition %d at epoch %d, after epoch %d: %w", p.Index, p.Epoch, s.epoch[p.Index], stream.ErrNotOwner)
	}
	s.epoch[p.Index] = p.Epoch
	return s.last[p.Index], nil
}

// commit stores a decided batch, unless a later owner has acquired the partition.
func (s *sink) commit(p stream.Partition, results []engine.Result) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.Epoch != s.epoch[p.Index] {
		s.refused = append(s.refused, p)
		return fmt.Errorf("partition %d: epoch %d, the fence is at %d: %w", p.Index, p.Epoch, s.epoch[p.Index], stream.ErrNotOwner)
	}
	for i := range results {
		r := &results[i]
		if n, _, _, err := s.cfg.ParseSubject(r.Event.Subject); err != nil || n != p.Index {
			s.problems = append(s.problems, fmt.Sprintf("partition %d got event seq %d on %s (%v)", p.Index, r.Event.StreamSeq, r.Event.Subject, err))
		}
		if r.Event.StreamSeq <= s.last[p.Index] {
			s.problems = append(s.problems, fmt.Sprintf("partition %d: event seq %d after seq %d", p.Index, r.Event.StreamSeq, s.last[p.Index]))
		}
		s.last[p.Index] = max(s.last[p.Index], r.Event.StreamSeq)
		s.processed[r.Event.ID]++
		s.orderIDs[r.Event.ID] = r.OrderID()
		if r.Err != nil {
			s.dead[r.Event.ID] = r.Err.Error()
		} else {
			s.decided[r.Event.ID] = r.Decision.Commission.Text('f')
		}
	}
	s.commits[p.Index] = append(s.commits[p.Index], p.Epoch)
	s.perPartition[p.Index] += len(results)
	return nil
}

// check fails the test on any contract violation, and on any event processed more than once.
func (s *sink) check(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range s.problems {
		if i == 10 {
			t.Errorf("… %d problems in all", len(s.problems))
			break
		}
		t.Error(p)
	}
	for id, k := range s.processed {
		if k != 1 {
			t.Errorf("event %s: processed %d times, want 1", id, k)
		}
	}
}

// engineProcessor decides with the real engine and "stores" into a sink. before, when set, is
// called first (e.g. to block); fail, when set, is asked next and makes the whole batch fail
// (the store is down).
type engineProcessor struct {
	eng    *engine.Engine
	sink   *sink // nil: a no-op store with no fence
	fail   func(p stream.Partition, batch []engine.Event) error
	before func(p stream.Partition, batch []engine.Event)
	pool   sync.Pool

	mu       sync.Mutex
	acquired []stream.Partition
	released []stream.Partition
	calls    map[int]int // partition -> Process calls
}

var _ stream.Processor = (*engineProcessor)(nil)

func (p *engineProcessor) Acquire(_ context.Context, part stream.Partition) (uint64, error) {
	p.mu.Lock()
	p.acquired = append(p.acquired, part)
	p.mu.Unlock()
	if p.sink == nil {
		return 0, nil
	}
	return p.sink.acquire(part)
}

func (p *engineProcessor) Release(part stream.Partition) {
	p.mu.Lock()
	p.released = append(p.released, part)
	p.mu.Unlock()
}

// processCalls is how many times Process was called for partition n.
func (p *engineProcessor) processCalls(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[n]
}

func (p *engineProcessor) Process(ctx context.Context, part stream.Partition, batch []engine.Event) (stream.BatchOutcome, error) {
	p.mu.Lock()
	if p.calls == nil {
		p.calls = map[int]int{}
	}
	p.calls[part.Index]++
	p.mu.Unlock()
	if p.before != nil {
		p.before(part, batch)
	}
	if p.fail != nil {
		if err := p.fail(part, batch); err != nil {
			return stream.BatchOutcome{}, err
		}
	}
	buf, _ := p.pool.Get().(*[]engine.Result)
	if buf == nil {
		buf = new([]engine.Result)
	}
	results := p.eng.DecideEvents(ctx, batch, (*buf)[:0])
	defer func() {
		clear(results) // drop references to the batch's bytes
		*buf = results[:0]
		p.pool.Put(buf)
	}()
	var out stream.BatchOutcome
	for i := range results {
		if results[i].Err != nil {
			out.Dead = append(out.Dead, stream.DeadLetter{Index: i, Reason: results[i].Err.Error()})
		}
	}
	if p.sink != nil {
		if err := p.sink.commit(part, results); err != nil {
			return stream.BatchOutcome{}, err
		}
	}
	return out, nil
}

var errStoreDown = errors.New("store unavailable")

// newConsumer creates a consumer of the broker's stream with its own connection (another
// "process"). Its log is shown when the test fails.
func newConsumer(t testing.TB, b *broker, p stream.Processor, obs stream.Observer) *stream.Consumer {
	t.Helper()
	_, js := connect(t, b.cfg)
	return newConsumerOn(t, js, b.cfg, p, obs)
}

func newConsumerOn(t testing.TB, js jetstream.JetStream, cfg stream.Config, p stream.Processor, obs stream.Observer) *stream.Consumer {
	t.Helper()
	c, err := stream.NewConsumer(context.Background(), js, cfg, p, obs, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testLogger collects a log that is printed when the test fails.
func testLogger(t testing.TB) *slog.Logger {
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("consumer log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

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

// run starts c.Run; the returned stop cancels it and returns Run's error. The test fails if
// Run is still running when the test ends.
func run(t testing.TB, c *stream.Consumer) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(time.Minute):
				err = errors.New("Run did not return within a minute of cancelling")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// waitFor polls cond until it holds, failing the test with what after the deadline.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting %v for %s: got %s", timeout, what, state)
		}
		<-tick.C
	}
}

// waitSettled waits until the partition consumers have settled every event in the stream.
func waitSettled(t testing.TB, b *broker) {
	t.Helper()
	waitFor(t, 30*time.Second, "the partition consumers to settle every event", func() (bool, string) {
		ok, err := stream.Settled(context.Background(), b.js, b.cfg, 0)
		if err != nil {
			return false, err.Error()
		}
		return ok, "not settled"
	})
}

// waitOwned waits until the consumers own every partition between them, each exactly once,
// each consumer at least min of them.
func waitOwned(t testing.TB, b *broker, min int, cs ...*stream.Consumer) {
	t.Helper()
	waitFor(t, 30*time.Second, "every partition owned once", func() (bool, string) {
		owner := map[int]int{}
		var counts []int
		for i, c := range cs {
			owned := c.Owned()
			counts = append(counts, len(owned))
			for _, p := range owned {
				if j, dup := owner[p.Index]; dup {
					t.Fatalf("partition %d owned by consumers %d and %d at once", p.Index, j, i)
				}
				owner[p.Index] = i
			}
		}
		ok := len(owner) == b.cfg.Partitions
		for _, n := range counts {
			ok = ok && n >= min
		}
		return ok, fmt.Sprintf("owned per consumer %v", counts)
	})
}

// reachable reports whether a TCP server answers at addr.
func reachable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func integration() bool { return os.Getenv("COMMISSIONER_INTEGRATION") == "1" }

// ---- realistic orders ----

var (
	selected   = []string{"US", "CA", "MX", "GB", "DE", "FR", "AU", "NL"}
	others     = []string{"BR", "JP", "ZA", "ES", "IT", "PL", "SE", "KR", "AE", "HK", "TW", "SG", "KW"}
	banned     = []string{"CN", "IN", "NG"}
	categories = []string{"electronics", "home", "toys", "garden", "apparel", "beauty", "sports", "books", "auto"}
	forbidden  = []string{"weapons", "tobacco", "adult", "counterfeit"}
	currencies = []string{"USD", "USD", "USD", "EUR", "EUR", "GBP", "JPY", "BRL", "KWD", "AUD"}
	statuses   = []string{"completed", "completed", "completed", "completed", "completed", "completed", "pending", "cancelled", "refunded"}
)

// genOrders returns n valid order events of the alibaba program, deterministic for a seed:
// a realistic mix of markets, buyers, currencies, statuses, click windows, refunds and items.
func genOrders(n int, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, 42))
	pick := func(s []string) string { return s[r.IntN(len(s))] }
	base := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	out := make([][]byte, n)
	for i := range out {
		placed := base.Add(time.Duration(r.IntN(200*24*3600)) * time.Second)
		click := placed.Add(-time.Duration(r.IntN(35*24*3600)) * time.Second)
		country := pick(selected)
		if r.IntN(3) == 0 {
			country = pick(others)
		}
		traffic := country
		if r.IntN(20) == 0 {
			traffic = pick(banned)
		}
		cur := pick(currencies)
		minor := 2
		switch cur {
		case "JPY":
			minor = 0
		case "KWD":
			minor = 3
		}
		var b bytes.Buffer
		fmt.Fprintf(&b, `{"order_id":"ord-%d-%08d","program":"alibaba","affiliate_id":"aff-%03d","status":%q,`,
			seed, i, r.IntN(500), pick(statuses))
		fmt.Fprintf(&b, `"placed_at":%q,`, placed.Format(time.RFC3339))
		if r.IntN(10) != 0 {
			fmt.Fprintf(&b, `"click_at":%q,`, click.Format(time.RFC3339))
		}
		fmt.Fprintf(&b, `"buyer":{"id":"b-%06d","country":%q,"new":%t},"traffic_country":%q,"currency":%q,`,
			r.IntN(100000), country, r.IntN(3) == 0, traffic, cur)
		items := 1 + r.IntN(3)
		total := 0
		var ib bytes.Buffer
		for k := 0; k < items; k++ {
			cents := 100 + r.IntN(50000)
			total += cents
			cat := pick(categories)
			if r.IntN(40) == 0 {
				cat = pick(forbidden)
			}
			if k > 0 {
				ib.WriteByte(',')
			}
			fmt.Fprintf(&ib, `{"sku":"sku-%05d","category":%q,"amount":%q,"quantity":%d}`,
				r.IntN(99999), cat, amount(cents, minor), 1+r.IntN(3))
		}
		refunded := 0
		if r.IntN(25) == 0 {
			refunded = r.IntN(total)
		}
		fmt.Fprintf(&b, `"amount":%q,"refunded_amount":%q,"items":[%s]}`, amount(total, minor), amount(refunded, minor), ib.String())
		out[i] = b.Bytes()
	}
	return out
}

// amount writes cents (hundredths) in a currency's minor units.
func amount(cents, minor int) string {
	switch minor {
	case 0:
		return fmt.Sprintf("%d", cents)
	case 3:
		return fmt.Sprintf("%d.%02d0", cents/100, cents%100)
	default:
		return fmt.Sprintf("%d.%02d", cents/100, cents%100)
	}
}
