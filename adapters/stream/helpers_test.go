package stream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

// testConfig is a small, fast configuration on its own data directory.
func testConfig(t testing.TB) stream.Config {
	return stream.Config{
		DataDir:     t.TempDir(),
		BatchSize:   100,
		FetchWait:   2 * time.Millisecond,
		NakDelay:    20 * time.Millisecond,
		NakMaxDelay: 100 * time.Millisecond,
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
		cfg.URL = emb.ClientURL()
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

// sink is an in-memory stand-in for the store: what each successful Process "committed".
type sink struct {
	mu        sync.Mutex
	processed map[string]int    // event id -> successful Process calls that contained it
	decided   map[string]string // event id -> commission
	dead      map[string]string // event id -> reason
	orderIDs  map[string]string // event id -> order id ("" when unreadable)
}

func newSink() *sink {
	return &sink{processed: map[string]int{}, decided: map[string]string{}, dead: map[string]string{}, orderIDs: map[string]string{}}
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.processed)
}

// engineProcessor decides with the real engine and "stores" into a sink. fail, when set, is
// asked first and makes the whole batch fail (the store is down).
type engineProcessor struct {
	eng    *engine.Engine
	sink   *sink // nil: a no-op store
	fail   func(batch []engine.Event) error
	before func(batch []engine.Event) // called first, e.g. to block
	pool   sync.Pool
}

var _ stream.Processor = (*engineProcessor)(nil)

func (p *engineProcessor) Process(ctx context.Context, batch []engine.Event) (stream.BatchOutcome, error) {
	if p.before != nil {
		p.before(batch)
	}
	if p.fail != nil {
		if err := p.fail(batch); err != nil {
			return stream.BatchOutcome{}, err
		}
	}
	buf, _ := p.pool.Get().(*[]engine.Result)
	if buf == nil {
		buf = new([]engine.Result)
	}
	results := p.eng.DecideEvents(ctx, batch, (*buf)[:0])
	var out stream.BatchOutcome
	for i := range results {
		if results[i].Err != nil {
			out.Dead = append(out.Dead, stream.DeadLetter{Index: i, Reason: results[i].Err.Error()})
		}
	}
	if s := p.sink; s != nil {
		s.mu.Lock()
		for i := range results {
			r := &results[i]
			s.processed[r.Event.ID]++
			s.orderIDs[r.Event.ID] = r.OrderID()
			if r.Err != nil {
				s.dead[r.Event.ID] = r.Err.Error()
			} else {
				s.decided[r.Event.ID] = r.Decision.Commission.Text('f')
			}
		}
		s.mu.Unlock()
	}
	clear(results) // drop references to the batch's bytes
	*buf = results[:0]
	p.pool.Put(buf)
	return out, nil
}

var errStoreDown = errors.New("store unavailable")

// newConsumer creates a consumer on the broker's durable with its own connection.
func newConsumer(t testing.TB, b *broker, p stream.Processor, obs stream.Observer) *stream.Consumer {
	t.Helper()
	_, js := connect(t, b.cfg)
	c, err := stream.NewConsumer(context.Background(), js, b.cfg, p, obs)
	if err != nil {
		t.Fatal(err)
	}
	return c
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

// waitSettled waits until the durable consumer has nothing pending and nothing unacked.
func waitSettled(t testing.TB, c *stream.Consumer) {
	t.Helper()
	waitFor(t, 30*time.Second, "the consumer to have nothing pending and nothing unacked", func() (bool, string) {
		info, err := c.Info(context.Background())
		if err != nil {
			return false, err.Error()
		}
		return stream.Settled(info, 0),
			fmt.Sprintf("NumPending %d, NumAckPending %d", info.NumPending, info.NumAckPending)
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
