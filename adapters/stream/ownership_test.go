package stream_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine"
)

// Two processes share the 8 partitions of one stream, each partition owned by exactly one; one
// dies abruptly (its connection closes, nothing released) while it holds a batch: the other
// takes its partitions over once the leases expire, the dead owner's batch in flight is fenced
// out by the store, and every event is processed once, in stream order per partition. Then a
// third process starts and gets its share.
func TestPartitionsFailoverAndScaleOut(t *testing.T) {
	cfg := testConfig(t) // 8 partitions, leases of 2 s
	cfg.BatchSize = 50
	b := startBroker(t, cfg)
	ctx := context.Background()
	eng := newEngine(t)
	snk := newSink(b.cfg)

	// A, once armed, holds the next batch it gets until released, and says which partition.
	var armed atomic.Bool
	stuck := make(chan stream.Partition, 1)
	release := make(chan struct{})
	aProc := &engineProcessor{eng: eng, sink: snk, before: func(p stream.Partition, _ []engine.Event) {
		if armed.CompareAndSwap(true, false) {
			stuck <- p
			<-release
		}
	}}
	ncA, jsA := connect(t, b.cfg)
	a := newConsumerOn(t, jsA, b.cfg, aProc, nil)
	aDone := make(chan error, 1)
	go func() { aDone <- a.Run(ctx) }()
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	bProc := &engineProcessor{eng: eng, sink: snk}
	bc := newConsumer(t, b, bProc, nil)
	stopB := run(t, bc)

	// Every partition has one owner, and each process has its fair share: 4 of 8.
	waitOwned(t, b, 4, a, bc)
	kv, err := b.js.KeyValue(ctx, b.cfg.OwnersBucket())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*stream.Consumer{a, bc} {
		for _, p := range c.Owned() {
			e, err := kv.Get(ctx, fmt.Sprintf("p.%d", p.Index))
			if err != nil {
				t.Fatalf("lease of partition %d: %v", p.Index, err)
			}
			// The revision moves on with every renewal; the epoch is the one Create returned, plus the
			// bucket's base (its low 30 bits are the revision).
			if string(e.Value()) != c.MemberID() || e.Revision() < p.Epoch&(1<<30-1) {
				t.Errorf("lease of partition %d: got owner %s at revision %d, want %s at its epoch %d or later", p.Index, e.Value(), e.Revision(), c.MemberID(), p.Epoch)
			}
		}
	}

	// Both process events.
	round1 := genOrders(3000, 21)
	b.publish(t, round1)
	waitFor(t, 60*time.Second, "round 1 processed", func() (bool, string) {
		return snk.count() == len(round1), fmt.Sprintf("%d of %d", snk.count(), len(round1))
	})
	if sa, sb := a.Stats(), bc.Stats(); sa.Acked == 0 || sb.Acked == 0 {
		t.Errorf("acked: A %d, B %d; want both to have worked", sa.Acked, sb.Acked)
	}

	// A takes a batch and hangs in Process; then its connection dies.
	armed.Store(true)
	round2 := genOrders(3000, 22)
	b.publish(t, round2)
	var held stream.Partition
	select {
	case held = <-stuck:
	case <-time.After(30 * time.Second):
		t.Fatal("A got no batch of round 2")
	}
	killed := time.Now()
	ncA.Close()

	// B takes every partition over, within the lease TTL plus the poll and the server's expiry
	// check (the failover bound docs/operator.md documents; generous slack for a loaded machine).
	waitFor(t, b.cfg.LeaseTTL+30*time.Second, "B to own every partition", func() (bool, string) {
		return len(bc.Owned()) == b.cfg.Partitions, fmt.Sprintf("B owns %v", bc.Owned())
	})
	took := time.Since(killed)
	t.Logf("B owned all %d partitions %v after A's connection closed (lease TTL %v)", b.cfg.Partitions, took.Round(time.Millisecond), b.cfg.LeaseTTL)
	if bound := b.cfg.LeaseTTL + 5*time.Second; took > bound {
		t.Errorf("takeover took %v, want within the lease TTL %v + 5 s", took, b.cfg.LeaseTTL)
	}
	for _, p := range bc.Owned() {
		if p.Index == held.Index && p.Epoch <= held.Epoch {
			t.Errorf("partition %d: B's epoch %d is not above A's %d", p.Index, p.Epoch, held.Epoch)
		}
	}

	// A's batch in flight now tries to commit: the store refuses it, and A stops.
	close(release)
	select {
	case err := <-aDone:
		if !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("A's Run: got %v, want an error wrapping nats.ErrConnectionClosed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("A's Run did not return")
	}
	snk.mu.Lock()
	refused := append([]stream.Partition(nil), snk.refused...)
	snk.mu.Unlock()
	if len(refused) != 1 || refused[0] != held {
		t.Errorf("batches the store refused: got %v, want A's held batch of %v", refused, held)
	}

	total := len(round1) + len(round2)
	waitFor(t, 60*time.Second, "round 2 processed by B", func() (bool, string) {
		return snk.count() == total, fmt.Sprintf("%d of %d", snk.count(), total)
	})
	waitSettled(t, b)
	snk.check(t)

	// A new process gets a share: B gives up half of the partitions, C takes them.
	cProc := &engineProcessor{eng: eng, sink: snk}
	cc := newConsumer(t, b, cProc, nil)
	stopC := run(t, cc)
	waitOwned(t, b, 4, bc, cc)
	round3 := genOrders(2000, 23)
	b.publish(t, round3)
	total += len(round3)
	waitFor(t, 60*time.Second, "round 3 processed", func() (bool, string) {
		return snk.count() == total, fmt.Sprintf("%d of %d", snk.count(), total)
	})
	waitSettled(t, b)
	if st := cc.Stats(); st.Acked == 0 {
		t.Errorf("C acked nothing of round 3, want its share (stats %+v)", st)
	}
	if err := errors.Join(stopB(), stopC()); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	snk.check(t)
	if st := bc.Stats(); st.Lost != 0 || st.Released < 4 {
		t.Errorf("B: got %d partitions lost and %d released, want none lost and its rebalanced ones released", st.Lost, st.Released)
	}
}

// A live owner whose lease was taken (here by the test, as a paused process would see it on
// waking) stops at once: its batch in flight is fenced out by the store, it gets no more batches
// of that partition, and it only takes the partition again with a new epoch once the lease is
// free.
func TestStaleOwnerGetsNoMoreBatches(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchSize = 20
	b := startBroker(t, cfg)
	ctx := context.Background()
	snk := newSink(b.cfg)
	var armed atomic.Bool
	armed.Store(true)
	stuck := make(chan stream.Partition, 1)
	release := make(chan struct{})
	proc := &engineProcessor{eng: newEngine(t), sink: snk, before: func(p stream.Partition, _ []engine.Event) {
		if armed.CompareAndSwap(true, false) {
			stuck <- p
			<-release
		}
	}}
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	c := newConsumer(t, b, proc, nil)
	stop := run(t, c)
	waitOwned(t, b, 8, c)

	round1 := genOrders(1000, 31)
	b.publish(t, round1)
	var held stream.Partition
	select {
	case held = <-stuck:
	case <-time.After(30 * time.Second):
		t.Fatal("no batch reached the processor")
	}

	// Another owner takes the partition: its lease, then its Acquire in the store.
	kv, err := b.js.KeyValue(ctx, b.cfg.OwnersBucket())
	if err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("p.%d", held.Index)
	if err := kv.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Create(ctx, key, []byte("intruder"))
	if err != nil {
		t.Fatal(err)
	}
	// The intruder's epoch: the same bucket's base (the high bits of every epoch) plus its revision.
	intruder := held.Epoch&^(1<<30-1) + rev
	if _, err := snk.acquire(stream.Partition{Index: held.Index, Epoch: intruder}); err != nil {
		t.Fatal(err)
	}
	intruderDone := make(chan struct{})
	intruderStopped := make(chan struct{})
	go func() { // the intruder keeps its lease until told to stop
		defer close(intruderStopped)
		tick := time.NewTicker(b.cfg.LeaseTTL / 4)
		defer tick.Stop()
		r := rev
		for {
			select {
			case <-intruderDone:
				return
			case <-tick.C:
				if next, err := kv.Update(ctx, key, []byte("intruder"), r); err == nil {
					r = next
				}
			}
		}
	}()
	t.Cleanup(func() {
		select {
		case <-intruderDone:
		default:
			close(intruderDone)
		}
		<-intruderStopped
	})

	waitFor(t, 30*time.Second, "the consumer to give the partition up", func() (bool, string) {
		for _, p := range c.Owned() {
			if p.Index == held.Index {
				return false, fmt.Sprintf("still owns %v", c.Owned())
			}
		}
		return true, ""
	})
	if st := c.Stats(); st.Lost != 1 {
		t.Errorf("partitions lost: got %d, want 1", st.Lost)
	}

	// Its batch in flight commits too late: refused.
	close(release)
	waitFor(t, 30*time.Second, "the held batch to be refused", func() (bool, string) {
		snk.mu.Lock()
		defer snk.mu.Unlock()
		return len(snk.refused) == 1 && snk.refused[0] == held, fmt.Sprintf("refused %v", snk.refused)
	})
	calls := proc.processCalls(held.Index)

	// Every other partition goes on; the lost one gets no batch while the intruder holds it.
	s, err := b.js.Stream(ctx, b.cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	round2 := genOrders(1000, 32)
	b.publish(t, round2)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(b.cfg.PartitionFilter(held.Index)))
	if err != nil {
		t.Fatal(err)
	}
	var inHeld int
	for _, k := range info.State.Subjects {
		inHeld += int(k)
	}
	committedInHeld := func() int {
		snk.mu.Lock()
		defer snk.mu.Unlock()
		return snk.perPartition[held.Index]
	}
	before := committedInHeld()
	total := len(round1) + len(round2)
	waitFor(t, 60*time.Second, "every other partition's events processed", func() (bool, string) {
		want := total - inHeld + before
		return snk.count() == want, fmt.Sprintf("%d of %d", snk.count(), want)
	})
	if got := proc.processCalls(held.Index); got != calls {
		t.Errorf("Process calls for the lost partition %d: got %d after the loss, want none", held.Index, got-calls)
	}
	if got := committedInHeld(); got != before {
		t.Errorf("events of the lost partition committed meanwhile: %d, want 0", got-before)
	}

	// The intruder goes away: its lease expires, the consumer takes the partition again with
	// a new epoch and processes the rest of it, from where the store is.
	close(intruderDone)
	<-intruderStopped
	waitFor(t, 60*time.Second, "every event processed", func() (bool, string) {
		return snk.count() == total, fmt.Sprintf("%d of %d", snk.count(), total)
	})
	for _, p := range c.Owned() {
		if p.Index == held.Index && p.Epoch <= intruder {
			t.Errorf("partition %d taken again at epoch %d, want above the intruder's %d", p.Index, p.Epoch, intruder)
		}
	}
	waitSettled(t, b)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	snk.check(t)
}

// Processes with different lease TTLs could both believe they own a partition: a consumer with
// another TTL than the owners bucket's is refused while leases are live, and updates an idle
// bucket.
func TestLeaseTTLMustAgree(t *testing.T) {
	b := startBroker(t, testConfig(t))
	c := newConsumer(t, b, &engineProcessor{eng: newEngine(t)}, nil)
	stop := run(t, c)
	waitOwned(t, b, 8, c)

	other := b.cfg
	other.LeaseTTL = 3 * time.Second
	_, err := stream.NewConsumer(context.Background(), b.js, other, &engineProcessor{eng: newEngine(t)}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "lease TTL 2s and nats.lease_ttl is 3s") {
		t.Errorf("NewConsumer with another lease TTL while leases are live: got %v, want an error naming 2s and 3s", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Stopped, the consumer released everything: the bucket is idle and takes the new TTL.
	if _, err := stream.NewConsumer(context.Background(), b.js, other, &engineProcessor{eng: newEngine(t)}, nil, nil); err != nil {
		t.Fatalf("NewConsumer with another lease TTL on an idle bucket: %v", err)
	}
	kv, err := b.js.KeyValue(context.Background(), b.cfg.OwnersBucket())
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != 3*time.Second {
		t.Errorf("owners bucket TTL: got %v, want 3s", st.TTL())
	}
}
