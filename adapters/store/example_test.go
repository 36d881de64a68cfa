package store_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// Open a SQLite store, claim a partition, decide a batch of order events and store it in one
// transaction (engine.PartitionWriter: one history read, one pass, one write); storing the same
// events again (a redelivery) stores nothing twice.
func Example() {
	dir, err := os.MkdirTemp("", "commissioner")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{DSN: "sqlite://" + filepath.Join(dir, "commissioner.db")})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	set, err := rules.LoadDir("../../policies")
	if err != nil {
		log.Fatal(err)
	}
	if err := s.CheckPolicies(ctx, set.All()); err != nil {
		log.Fatal(err) // a policy file changed without a new version
	}
	events := []engine.Event{
		{ID: "order-1", Subject: "orders.alibaba", StreamSeq: 1, Raw: []byte(`{"order_id":"o-1","program":"alibaba",` +
			`"affiliate_id":"aff-1","status":"completed","placed_at":"2025-03-10T12:00:00Z","click_at":"2025-03-01T12:00:00Z",` +
			`"buyer":{"id":"b-1","country":"US","new":true},"traffic_country":"US","currency":"USD","amount":"2941.00"}`)},
		{ID: "order-2", Subject: "orders.alibaba", StreamSeq: 2, Raw: []byte(`{"order_id": "o-2"`)},
	}
	eng := engine.New(set)
	w, err := engine.ClaimPartition(ctx, s, 0, 1) // partition 0, fencing token 1
	if err != nil {
		log.Fatal(err)
	}
	b, err := w.Write(ctx, eng, events)
	if err != nil {
		log.Fatal(err) // nak the batch: nothing of it was stored
	}
	fmt.Printf("%+v batch %d root %s…\n", store.SavedOf(b), b.Header.Seq, b.Header.Root.String()[:8])
	b, _ = w.Write(ctx, eng, events)
	fmt.Printf("%+v batch %d\n", store.SavedOf(b), b.Header.Seq)

	st, _ := s.Stats(ctx)
	fmt.Println(st.Decisions, st.DeadLetters, st.Commission["USD"], st.ByRateRule["selected_new"])
	// Output:
	// {Events:1 Decisions:1 DeadLetters:1 Duplicates:0} batch 1 root 41a49b4b…
	// {Events:0 Decisions:0 DeadLetters:0 Duplicates:2} batch 2
	// 1 1 294.10 1
}
