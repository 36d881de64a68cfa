package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun/driver/pgdriver"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
)

// integrationRequired: with COMMISSIONER_INTEGRATION=1 (CI) a missing server fails the test
// instead of skipping it.
func integrationRequired() bool { return os.Getenv("COMMISSIONER_INTEGRATION") == "1" }

func skipUnlessIntegration(t testing.TB, msg string) {
	t.Helper()
	if integrationRequired() {
		t.Fatalf("%s (COMMISSIONER_INTEGRATION=1)", msg)
	}
	t.Skipf("%s; set COMMISSIONER_INTEGRATION=1 to make this a failure", msg)
}

// testPostgresURL is the PostgreSQL server of the integration tests: COMMISSIONER_TEST_POSTGRES,
// or the local one.
func testPostgresURL() string {
	if u := os.Getenv("COMMISSIONER_TEST_POSTGRES"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// testNATSURL is the external NATS server of the integration tests: COMMISSIONER_TEST_NATS_URL,
// or the one .ci/run starts on 4223 (a nats-server built from the module version we embed; the
// machine's packaged server on 4222 is too old for partitions).
func testNATSURL() string {
	if u := os.Getenv("COMMISSIONER_TEST_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4223"
}

// postgresSchema creates a fresh schema on the test server, dropped when the test ends, and
// returns a DSN that uses it (search_path) through host (host:port; "" keeps the server's own).
// It also returns an admin connection straight to the server, for looking behind the service.
func postgresSchema(t *testing.T, host string) (dsn, schema string, admin *sql.DB) {
	t.Helper()
	admin = sql.OpenDB(pgdriver.NewConnector(pgdriver.WithDSN(testPostgresURL()), pgdriver.WithDialTimeout(3*time.Second)))
	t.Cleanup(func() { admin.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		skipUnlessIntegration(t, fmt.Sprintf("PostgreSQL at %s is not reachable: %v", testPostgresURL(), err))
	}
	scratch, err := store.NewScratch(ctx, testPostgresURL(), "pipetest", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := scratch.Close(); err != nil {
			t.Error(err)
		}
	})
	u, err := url.Parse(scratch.DSN)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		u.Host = host
	}
	return u.String(), scratch.Schema, admin
}

// externalNATS returns the URL of the external NATS server, skipping (or failing) the test
// when nothing answers there.
func externalNATS(t *testing.T) string {
	t.Helper()
	u := testNATSURL()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", pu.Host, 3*time.Second)
	if err != nil {
		skipUnlessIntegration(t, fmt.Sprintf("NATS at %s is not reachable: %v", u, err))
	}
	c.Close()
	return u
}

// tcpProxy forwards TCP connections to a target; cut closes the listener and every connection
// (the server is "gone"), restore listens again on the same address.
type tcpProxy struct {
	target, addr string

	mu    sync.Mutex
	ln    net.Listener // nil while cut
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{target: target, addr: ln.Addr().String(), conns: map[net.Conn]bool{}}
	p.serve(ln)
	t.Cleanup(func() {
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by cut
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.pipe(c)
			}()
		}
	}()
}

func (p *tcpProxy) pipe(client net.Conn) {
	server, err := net.DialTimeout("tcp", p.target, 3*time.Second)
	if err != nil {
		client.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil { // cut while dialling
		p.mu.Unlock()
		client.Close()
		server.Close()
		return
	}
	p.conns[client], p.conns[server] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(server, client); done <- struct{}{} }()
	go func() { io.Copy(client, server); done <- struct{}{} }()
	<-done
	client.Close()
	server.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, client)
	delete(p.conns, server)
	p.mu.Unlock()
}

// cut stops accepting and closes every connection in both directions.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

// restore accepts connections on the same address again.
func (p *tcpProxy) restore(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatalf("restoring the proxy on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

// TestPipelineStoreUnavailable cuts the service's PostgreSQL connections (through a proxy) while
// events flow: nothing more is acked or stored while the store is gone (each partition's owner
// tries its batch again and again); once it is back every event is decided exactly once and
// nothing is lost.
func TestPipelineStoreUnavailable(t *testing.T) {
	pu, _ := url.Parse(testPostgresURL())
	proxy := startProxy(t, pu.Host)
	dsn, schema, admin := postgresSchema(t, proxy.addr)
	cfg := pipelineConfig(t)
	cfg.Store.DSN = dsn
	svc := startRunning(t, cfg)

	lines := mix(sampleLines(t, 12000, 31, "2025-10"), badOrderLines(120), 32)
	want := expect(t, svc.cfg.NATS, cfg.Policies, lines)
	published := make(chan error, 1)
	var lastSeq uint64 // written before published is sent to
	go func() {
		last, err := publishLines(svc.js, svc.cfg.NATS, lines)
		lastSeq = last
		published <- err
	}()

	// stored reads, straight from the server, how many events have a decision or a dead letter.
	stored := func() int64 {
		var n int64
		err := admin.QueryRow(fmt.Sprintf("SELECT (SELECT count(*) FROM %[1]s.decisions) + (SELECT count(*) FROM %[1]s.dead_letters)", schema)).Scan(&n)
		if err != nil {
			t.Fatalf("counting stored outcomes: %v", err)
		}
		return n
	}
	waitUntil(t, time.Minute, "2 000 events stored before the cut", func() (bool, string) {
		n := stored()
		return n >= 2000, fmt.Sprintf("%d stored", n)
	})

	before := svc.consumer.Stats()
	proxy.cut()
	settledCount := func(st stream.Stats) uint64 { return st.Acked + st.Termed }
	// Once batches fail, nothing can commit any more: the stored count is frozen. Nothing may
	// ever be acked that was not stored. A batch committed just before the cut may still be
	// acking (or its commit reply was lost, and it comes back after the restore): so what is
	// asserted is a run of ten failed batches during which nothing at all was acked, neither
	// counted by the consumer nor seen by the server.
	waitUntil(t, time.Minute, "batches to fail while the store is gone", func() (bool, string) {
		st := svc.consumer.Stats()
		return st.FailedBatches >= before.FailedBatches+3, fmt.Sprintf("%+v", st)
	})
	frozen := stored()
	ctx := context.Background()
	// floors are the partition consumers' ack floors: what the server has seen acked.
	floors := func() []uint64 {
		infos, err := stream.PartitionConsumers(ctx, svc.js, svc.cfg.NATS)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]uint64, len(infos))
		for n, ci := range infos {
			if ci != nil {
				out[n] = ci.AckFloor.Stream
			}
		}
		return out
	}
	down1, floors1 := svc.consumer.Stats(), floors()
	waitUntil(t, 2*time.Minute, "ten failed batches in a row with nothing acked", func() (bool, string) {
		st, fl := svc.consumer.Stats(), floors()
		if n := settledCount(st); n > uint64(frozen) {
			t.Fatalf("while the store was gone: %d events acked or terminated, but only %d stored", n, frozen)
		}
		if settledCount(st) != settledCount(down1) || !slices.Equal(fl, floors1) {
			down1, floors1 = st, fl // acks of a batch committed before the cut: start the run again
			return false, fmt.Sprintf("still acking what was committed before the cut: %+v", st)
		}
		if n := stored(); n != frozen {
			// A COMMIT the server had received before the cut, applied late by a busy backend
			// (never acked: its reply had nowhere to go): start the run again from there.
			frozen, down1 = n, st
			return false, fmt.Sprintf("a commit sent before the cut was applied late: %d stored", n)
		}
		return st.FailedBatches >= down1.FailedBatches+10, fmt.Sprintf("%+v", st)
	})
	down2, stored2 := svc.consumer.Stats(), stored()
	if stored2 != frozen {
		t.Errorf("while the store was gone %d outcomes were stored, want 0", stored2-frozen)
	}
	if down2.Lost != before.Lost {
		t.Errorf("while the store was gone: %d partitions lost, want none (a store outage is not a reason to give a partition up)", down2.Lost-before.Lost)
	}
	t.Logf("cut at %d stored; while down: %d batches failed, %d events naked",
		frozen, down2.FailedBatches-before.FailedBatches, down2.Naked-before.Naked)

	proxy.restore(t)
	select {
	case err := <-published:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("publishing did not finish")
	}
	waitSettledService(t, svc, lastSeq, 2*time.Minute)
	verifyStored(t, svc.store, cfg.Policies, want)
	// The outage is in the log when it starts and when it ends, with its length. (A write that
	// hung on the cut connection until its 30 s deadline makes a second, shorter spell.)
	logged := svc.logs.String()
	if n := strings.Count(logged, "batches are failing"); n < 1 || n != strings.Count(logged, "batches are stored again") || !regexp.MustCompile(`batches are stored again" .*after=\S+ failed_attempts=\d+`).MatchString(logged) {
		t.Errorf("the log does not tell the outage once at its start and once at its end:\n%s", logged)
	}
}

// TestPipelineExternalServers runs two services against the external NATS server (testNATSURL: a
// stream, subjects and durable of this run's own, deleted afterwards with its owners bucket) and
// PostgreSQL (a fresh schema): every event is decided or dead-lettered once, and both services
// did some of it.
func TestPipelineExternalServers(t *testing.T) {
	natsURL := externalNATS(t)
	dsn, _, _ := postgresSchema(t, "")
	var b [4]byte
	rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])

	base := pipelineConfig(t)
	base.NATS.URL = natsURL
	base.NATS.Stream = "PIPETEST_" + suffix
	base.NATS.Subjects = "pipetest" + suffix + ".>"
	base.NATS.Durable = "pipetest_" + suffix
	base.NATS.BatchSize = 250
	base.Store.DSN = dsn
	t.Cleanup(func() { // runs after the services stopped (cleanups run last-in first-out)
		nc, err := stream.Connect(context.Background(), base.NATS)
		if err != nil {
			t.Errorf("deleting stream %s: %v", base.NATS.Stream, err)
			return
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err == nil {
			err = stream.DeleteStream(context.Background(), js, base.NATS)
		}
		if err != nil {
			t.Errorf("deleting stream %s: %v", base.NATS.Stream, err)
		}
	})
	var svcs []*runningService
	for range 2 {
		cfg := base
		cfg.DataDir = t.TempDir()
		svcs = append(svcs, startRunning(t, cfg))
	}
	waitSharing(t, svcs...)
	lines := mix(sampleLines(t, 5000, 41, "2025-10"), badOrderLines(50), 42)
	want := expect(t, svcs[0].cfg.NATS, base.Policies, lines)
	last := publishAll(t, svcs[0].js, svcs[0].cfg.NATS, lines)
	waitSettledService(t, svcs[1], last, 2*time.Minute)

	verifyStored(t, svcs[0].store, base.Policies, want)
	verifyDeadLetterMessages(t, svcs[0].js, svcs[0].cfg.NATS, want)
	for i, s := range svcs {
		if st := s.consumer.Stats(); st.Acked+st.Termed == 0 {
			t.Errorf("service %d settled no events, want a share of the work (stats %+v)", i, st)
		}
	}
}
