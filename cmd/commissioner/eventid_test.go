package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/commissioner/commissioner/adapters/stream"
)

// TestEventIDIsTheEventsIdentity: through the pipeline, an order that goes completed → refunded
// → completed again is decided three times when its publisher gives each event an event_id, and a
// re-sent event (same event_id, other bytes, no Nats-Msg-Id) is not decided twice. Without
// event_id an event is its content: a third event byte for byte like the first is dropped as the
// same event, and the order stays refunded (what docs/operator.md documents). explain lists the
// decisions in stream order and marks the current one.
func TestEventIDIsTheEventsIdentity(t *testing.T) {
	ctx := context.Background()
	natsCfg, _ := testBroker(t, stream.Config{})
	js := connectJS(t, natsCfg)
	if _, err := stream.EnsureStream(ctx, js, natsCfg); err != nil {
		t.Fatal(err)
	}
	event := func(orderID, status, eventID string) []byte {
		refund := ""
		if status == "refunded" {
			refund = `,"refunded_amount":"2941.00"`
		}
		id := ""
		if eventID != "" {
			id = `,"event_id":"` + eventID + `"`
		}
		return []byte(`{"order_id":"` + orderID + `"` + id + `,"program":"alibaba","affiliate_id":"aff-1","status":"` + status +
			`","placed_at":"2025-03-10T12:00:00Z","click_at":"2025-03-01T12:00:00Z","buyer":{"id":"b-1","country":"US","new":true},` +
			`"traffic_country":"US","currency":"USD","amount":"2941.00"` + refund + `}`)
	}
	publishAll(t, js, natsCfg, [][]byte{
		event("keyed", "completed", "e1"), event("keyed", "refunded", "e2"), event("keyed", "completed", "e3"),
		event("plain", "completed", ""), event("plain", "refunded", ""),
	})
	// The first event again, written differently and without a Nats-Msg-Id: the stream cannot
	// tell, the store must.
	resent := bytes.Replace(event("keyed", "completed", "e1"), []byte(`,"program"`), []byte(` , "program"`), 1)
	if _, err := js.Publish(ctx, natsCfg.OrderSubject("alibaba", "aff-1"), resent); err != nil {
		t.Fatal(err)
	}
	// Without event_id, the third event is the first one's bytes: the stream drops it.
	pub, err := stream.NewPublisher(js, natsCfg)
	if err != nil {
		t.Fatal(err)
	}
	accepted, err := pub.Publish(ctx, event("plain", "completed", ""))
	if err != nil || accepted {
		t.Fatalf("publishing a byte-identical event: accepted %v, %v; want it dropped as a duplicate", accepted, err)
	}
	info, err := js.Stream(ctx, natsCfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	last := info.CachedInfo().State.LastSeq

	cfg := pipelineConfig(t)
	cfg.NATS.URL, cfg.NATS.User, cfg.NATS.Password = natsCfg.URL, natsCfg.User, natsCfg.Password
	svc := startRunning(t, cfg)
	waitSettledService(t, svc, last, time.Minute)

	keyed, err := svc.store.DecisionsByOrder(ctx, "alibaba", "keyed")
	if err != nil {
		t.Fatal(err)
	}
	if len(keyed) != 3 {
		t.Fatalf("order keyed has %d decisions, want 3 (completed, refunded, completed; the re-sent event skipped)", len(keyed))
	}
	wantIDs := map[string]bool{"alibaba:keyed:id:e1": true, "alibaba:keyed:id:e2": true, "alibaba:keyed:id:e3": true}
	for _, d := range keyed {
		if !wantIDs[d.EventID] {
			t.Errorf("decision %d has event id %q, want one of %v", d.ID, d.EventID, wantIDs)
		}
	}
	plain, err := svc.store.DecisionsByOrder(ctx, "alibaba", "plain")
	if err != nil {
		t.Fatal(err)
	}
	if len(plain) != 2 {
		t.Fatalf("order plain has %d decisions, want 2 (the byte-identical third dropped)", len(plain))
	}

	var out bytes.Buffer
	if err := runExplain(ctx, svc.store, explainParams{OrderID: "keyed"}, nil, &out); err != nil {
		t.Fatalf("explain: %v\n%s", err, out.String())
	}
	text := out.String()
	m := regexp.MustCompile(`^order keyed: 3 decisions, in stream order; current: decision (\d+)\n`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("explain printed:\n%s", text)
	}
	blocks := regexp.MustCompile(`(?m)^== decision (\d+)( \(current\))? =+\n(?:  .*\n)*?  event +(\S+)`).FindAllStringSubmatch(text, -1)
	var order []string
	for _, b := range blocks {
		order = append(order, b[3])
		if (b[2] != "") != (b[1] == m[1]) {
			t.Errorf("decision %s marked current %v; the header says decision %s is", b[1], b[2] != "", m[1])
		}
		if b[1] == m[1] && b[3] != "alibaba:keyed:id:e3" {
			t.Errorf("the current decision is %s's, want e3's (the latest in the stream)", b[3])
		}
	}
	if got := strings.Join(order, " "); got != "alibaba:keyed:id:e1 alibaba:keyed:id:e2 alibaba:keyed:id:e3" {
		t.Errorf("explain lists the events as %q, want e1 e2 e3 in stream order\n%s", got, text)
	}
}
