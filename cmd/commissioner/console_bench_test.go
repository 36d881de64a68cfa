package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/commissioner/commissioner/adapters/console"
	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// The console's page latency (issue 13: a decision page and a 100-row search under 100 ms on a
// 1 M-order SQLite store), measured through the console's HTTP handler as serve mounts it
// (console.New over consoleStore), signed in with a session cookie, on a store built once and
// kept on disk:
//
//	go test ./cmd/commissioner -run '^$' -bench Console -benchtime 200x
//
// The first run builds the store (1 M orders: about 1.07 M decisions and 4 000 dead letters, ~2 GB,
// two to three minutes on two cores) into $COMMISSIONER_BENCH_DIR (default: the system's temporary
// directory) as commissioner-console-bench-1000000.db, and later runs reuse it (opening it applies
// any newer migration first, untimed). COMMISSIONER_CONSOLE_BENCH_ORDERS picks another size (e.g.
// 20000 for a quick check). Each page is checked once (status, rows, verdict) before it is timed;
// ms/op is ns/op in milliseconds. Plain `go test` runs none of this.

// consoleBenchVersion is written to a finished store's marker file: a store built by another
// version of seedConsoleBench (or not finished) is built again.
const consoleBenchVersion = "console-bench v1: sample seed 7, 4 bad per mille, 8 partitions, batches of 1000, pending orders completed later\n"

const (
	consoleBenchPartitions = 8    // stream.DefaultConfig's partitions
	consoleBenchBatch      = 1000 // and its batch size
	consoleBenchToken      = "console-bench-token-0123456789abcdef"
)

// consoleBenchOrders is the store's size: COMMISSIONER_CONSOLE_BENCH_ORDERS, default 1 000 000.
func consoleBenchOrders(b *testing.B) int {
	s := os.Getenv("COMMISSIONER_CONSOLE_BENCH_ORDERS")
	if s == "" {
		return 1_000_000
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		b.Fatalf("COMMISSIONER_CONSOLE_BENCH_ORDERS=%q: want a positive number", s)
	}
	return n
}

// consoleBenchStore returns the path of a SQLite store of n decided sample orders, built on
// first use and reused while its marker file (path + ".done") holds consoleBenchVersion. It is
// built under another name and renamed when finished, so an interrupted build is never used.
func consoleBenchStore(b *testing.B, n int) string {
	b.Helper()
	dir := os.Getenv("COMMISSIONER_BENCH_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("commissioner-console-bench-%d.db", n))
	done := path + ".done"
	if v, err := os.ReadFile(done); err == nil && string(v) == consoleBenchVersion {
		if _, err := os.Stat(path); err == nil {
			return path
		}
	}
	os.Remove(done)
	building := fmt.Sprintf("%s.building-%d", path, os.Getpid())
	removeSQLite := func(p string) {
		for _, suffix := range []string{"", "-wal", "-shm"} {
			os.Remove(p + suffix)
		}
	}
	removeSQLite(building)
	defer removeSQLite(building)
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{DSN: "sqlite://" + building})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	b.Logf("building a store of %d decided orders in %s (once: later runs reuse it)", n, path)
	if err := seedConsoleBench(ctx, st, repoPolicies(b), n); err != nil {
		st.Close()
		b.Fatalf("building %s: %v", path, err)
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	removeSQLite(path)
	if err := os.Rename(building, path); err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(building + "-wal"); err == nil {
		if err := os.Rename(building+"-wal", path+"-wal"); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(done, []byte(consoleBenchVersion), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("built %s in %v", path, time.Since(start).Round(time.Second))
	return path
}

// seedConsoleBench stores n sample orders (October 2025, 4 per mille malformed or invalid: dead
// letters) decided by the engine with the policies in dir, the way the service stores them
// without NATS: each event gets the publisher's Nats-Msg-Id, a stream sequence and the
// partition the stream's subject transform gives its (program, affiliate) (FNV-1a of the two
// tokens, modulo 8); each partition's events are decided and stored in batches of 1 000, in
// stream order, by an engine.PartitionWriter of their own (all at once, as the service's
// partitions are). A pending order is completed by a second event a few thousand events later,
// so some orders have two decisions.
func seedConsoleBench(ctx context.Context, st *store.Store, dir string, n int) error {
	set, err := rules.LoadDir(dir)
	if err != nil {
		return err
	}
	eng := engine.New(set)
	pub, err := stream.NewPublisher(nil, stream.DefaultConfig())
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	batches := make([]chan []engine.Event, consoleBenchPartitions)
	for p := range batches {
		ch := make(chan []engine.Event, 2)
		batches[p] = ch
		g.Go(func() error {
			w, err := engine.ClaimPartition(ctx, st, p, 1)
			if err != nil {
				return err
			}
			for events := range ch {
				if _, err := w.Write(ctx, eng, events); err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer func() {
			for _, ch := range batches {
				close(ch)
			}
		}()
		pr, pw := io.Pipe()
		go func() {
			bw := bufio.NewWriterSize(pw, 1<<16)
			err := writeSample(bw, sampleParams{N: n, Seed: 7, Program: "alibaba", Month: "2025-10", Bad: 4})
			if err == nil {
				err = bw.Flush()
			}
			pw.CloseWithError(err)
		}()
		defer pr.Close()
		pending := make([][]engine.Event, consoleBenchPartitions)
		var seq uint64
		received := time.Date(2025, 10, 1, 0, 0, 0, 0, time.UTC)
		add := func(raw []byte) error {
			// <prefix>.<program token>.<affiliate token>, stored as <prefix>.p.<n>.<program>.<affiliate>
			m := pub.Message(raw)
			toks := strings.Split(m.Subject, ".")
			k := len(toks) - 2
			h := fnv.New32a()
			h.Write([]byte(toks[k]))
			h.Write([]byte(toks[k+1]))
			p := int(h.Sum32() % consoleBenchPartitions)
			subject := strings.Join(append(toks[:k:k], "p", strconv.Itoa(p), toks[k], toks[k+1]), ".")
			seq++
			pending[p] = append(pending[p], engine.Event{ID: m.Header.Get(jetstream.MsgIDHeader), Subject: subject, StreamSeq: seq,
				Raw: raw, ReceivedAt: received.Add(time.Duration(seq) * 2 * time.Second)})
			if len(pending[p]) < consoleBenchBatch {
				return nil
			}
			select {
			case batches[p] <- pending[p]:
				pending[p] = nil
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		// later holds the completions of pending orders, each published completeAfter events on.
		const completeAfter = 5000
		type completion struct {
			at  uint64
			raw []byte
		}
		var later []completion
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			raw := bytes.Clone(sc.Bytes())
			if err := add(raw); err != nil {
				return err
			}
			if c := completed(raw); c != nil {
				later = append(later, completion{seq + completeAfter, c})
			}
			for len(later) > 0 && later[0].at <= seq {
				if err := add(later[0].raw); err != nil {
					return err
				}
				later = later[1:]
			}
		}
		if err := sc.Err(); err != nil {
			return err
		}
		for _, c := range later {
			if err := add(c.raw); err != nil {
				return err
			}
		}
		for p, events := range pending {
			if len(events) == 0 {
				continue
			}
			select {
			case batches[p] <- events:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	return g.Wait()
}

var samplePlacedAt = regexp.MustCompile(`"placed_at":"([^"]+)"`)

// completed is a pending sample order's next event, its completion a day after it was placed;
// nil for any other line.
func completed(raw []byte) []byte {
	if !bytes.Contains(raw, []byte(`"status":"pending"`)) {
		return nil
	}
	m := samplePlacedAt.FindSubmatch(raw)
	if m == nil {
		return nil
	}
	placed, err := time.Parse(time.RFC3339, string(m[1]))
	if err != nil {
		return nil
	}
	return bytes.Replace(raw, []byte(`"status":"pending"`),
		fmt.Appendf(nil, `"status":"completed","completed_at":"%s"`, placed.Add(24*time.Hour).Format(time.RFC3339)), 1)
}

// benchBrowser is a signed-in browser of a console handler, without a network: each request
// goes to the handler with the session cookie.
type benchBrowser struct {
	h       http.Handler
	session *http.Cookie
}

var csrfValue = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

func signInBench(b *testing.B, h http.Handler) *benchBrowser {
	b.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/ui/login", nil))
	m := csrfValue.FindStringSubmatch(rec.Body.String())
	if m == nil {
		b.Fatalf("the sign-in page has no csrf field:\n%s", rec.Body.String())
	}
	req := httptest.NewRequest("POST", "/ui/login", strings.NewReader(url.Values{"csrf": {m[1]}, "token": {consoleBenchToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, ck := range rec.Result().Cookies() {
		req.AddCookie(ck)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	for _, ck := range rec.Result().Cookies() {
		if ck.Name == "commissioner_session" && ck.Value != "" {
			return &benchBrowser{h: h, session: ck}
		}
	}
	b.Fatalf("signing in: status %d and no session cookie", rec.Code)
	return nil
}

// get requests a page and returns its body, failing unless the status is 200.
func (c *benchBrowser) get(b *testing.B, path string) string {
	req := httptest.NewRequest("GET", path, nil)
	req.AddCookie(c.session)
	rec := httptest.NewRecorder()
	c.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		b.Fatalf("GET %s: status %d, want 200:\n%s", path, rec.Code, rec.Body.String())
	}
	return rec.Body.String()
}

var (
	decisionRow = regexp.MustCompile(`<tr class="decision-row"`)
	nextPage    = regexp.MustCompile(`<a id="next-page" href="([^"]+)"`)
)

// BenchmarkConsole times the console's pages on a store of COMMISSIONER_CONSOLE_BENCH_ORDERS
// (default 1 000 000) decided orders: see the comment at the top of this file.
func BenchmarkConsole(b *testing.B) {
	n := consoleBenchOrders(b)
	path := consoleBenchStore(b, n)
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{DSN: "sqlite://" + path})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	h := console.New(consoleStore{Store: st}, console.Options{Authenticate: httpapi.NewTokens([]string{consoleBenchToken}, nil).Check, RequestTimeout: time.Minute})
	c := signInBench(b, h)

	// The orders to open: a random decision's order each, a lone one and one with two decisions.
	var maxID int64
	if err := st.DB().NewRaw("SELECT max(id) FROM decisions").Scan(ctx, &maxID); err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	orders := func(cond string, k int) []string {
		var out []string
		for len(out) < k {
			var ids []string
			q := "SELECT order_id FROM decisions WHERE id >= ? AND " + cond + " ORDER BY id LIMIT 1"
			if err := st.DB().NewRaw(q, 1+r.Int64N(maxID)).Scan(ctx, &ids); err != nil {
				b.Fatal(err)
			}
			out = append(out, ids...)
		}
		return out
	}
	decisionPage := func(orderIDs []string, decisions int) func(b *testing.B) {
		return func(b *testing.B) {
			for _, id := range orderIDs[:min(len(orderIDs), 20)] {
				body := c.get(b, "/ui/orders/"+url.PathEscape(id))
				if got := strings.Count(body, `class="verdict"`); got < decisions || strings.Contains(body, `class="verdict bad"`) {
					b.Fatalf("order %s: %d clean verdicts (want %d) or a bad one:\n%s", id, got, decisions, body)
				}
			}
			i := 0
			for b.Loop() {
				c.get(b, "/ui/orders/"+url.PathEscape(orderIDs[i%len(orderIDs)]))
				i++
			}
			b.ReportMetric(float64(b.Elapsed())/1e6/float64(b.N), "ms/op")
		}
	}
	searchPage := func(path string, rows int) func(b *testing.B) {
		return func(b *testing.B) {
			if got := len(decisionRow.FindAllStringIndex(c.get(b, path), -1)); got != rows {
				b.Fatalf("GET %s: %d rows, want %d", path, got, rows)
			}
			for b.Loop() {
				c.get(b, path)
			}
			b.ReportMetric(float64(b.Elapsed())/1e6/float64(b.N), "ms/op")
		}
	}
	// second is the next page's link of a page.
	second := func(path string) string {
		m := nextPage.FindStringSubmatch(c.get(b, path))
		if m == nil {
			b.Fatalf("GET %s: no next page", path)
		}
		return strings.ReplaceAll(m[1], "&amp;", "&")
	}

	b.Run("decision", decisionPage(orders("1 = 1", 500), 1))
	b.Run("decision/two-events", decisionPage(orders("prev_id <> 0", 200), 2))
	// The searches: 100 rows a page, plain and with filters (program, qualified, rate rule, the
	// day decided), their second pages (by the page's own link), a page deep in the store, and
	// filters nothing matches (the page that would read every row if any did).
	var decided string
	if err := st.DB().NewRaw("SELECT CAST(max(decided_at) AS TEXT) FROM decisions").Scan(ctx, &decided); err != nil {
		b.Fatal(err)
	}
	day := decided[:len(time.DateOnly)]
	const plain = "/ui/?limit=100"
	rateRule := plain + "&program=alibaba&qualified=yes&rate_rule=other_new"
	for _, sc := range []struct {
		name, path string
		rows       int
	}{
		{"search100", plain, 100},
		{"search100/page2", second(plain), 100},
		{"search100/deep", fmt.Sprintf("%s&before=%d", plain, maxID/2), 100},
		{"search100/not-qualified", plain + "&program=alibaba&qualified=no", 100},
		{"search100/rate-rule", rateRule, 100},
		{"search100/rate-rule/page2", second(rateRule), 100},
		{"search100/day", plain + "&from=" + day + "&to=" + day, 100},
		{"search100/day+rate-rule", rateRule + "&from=" + day + "&to=" + day, 100},
		{"search100/none", plain + "&program=alibaba&qualified=no&rate_rule=other_new", 0},
		{"search100/none-that-day", plain + "&to=2020-01-01", 0},
	} {
		b.Run(sc.name, searchPage(sc.path, sc.rows))
	}
}
