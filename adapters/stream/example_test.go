package stream_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// decideAndCount is a Processor that decides with the engine and stores nothing (so every
// partition starts from its first event); it reports each batch on a channel.
type decideAndCount struct {
	eng  *engine.Engine
	done chan [2]int // decided, dead-lettered
}

func (p *decideAndCount) Acquire(context.Context, stream.Partition) (uint64, error) { return 0, nil }
func (p *decideAndCount) Release(stream.Partition)                                  {}

func (p *decideAndCount) Process(ctx context.Context, _ stream.Partition, batch []engine.Event) (stream.BatchOutcome, error) {
	var out stream.BatchOutcome
	for i, r := range p.eng.DecideEvents(ctx, batch, nil) {
		if r.Err != nil {
			out.Dead = append(out.Dead, stream.DeadLetter{Index: i, Reason: r.Err.Error()})
		}
	}
	p.done <- [2]int{len(batch) - len(out.Dead), len(out.Dead)}
	return out, nil
}

// The whole pipeline on the embedded defaults: start the server, ensure the (partitioned)
// stream, publish order lines, and consume them — this process owns every partition — until
// cancelled.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, _ := os.MkdirTemp("", "commissioner-example")
	defer os.RemoveAll(dir)

	cfg := stream.DefaultConfig()
	cfg.DataDir = dir
	emb, err := stream.StartEmbedded(ctx, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer emb.Shutdown()
	nc, err := stream.Connect(ctx, cfg) // no URL: finds the embedded server through DataDir
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := stream.EnsureStream(ctx, js, cfg); err != nil {
		fmt.Println(err)
		return
	}

	pub, _ := stream.NewPublisher(js, cfg)
	lines := `{"order_id":"o-1","program":"alibaba","affiliate_id":"a-1","status":"completed","placed_at":"2025-03-10T12:00:00Z","click_at":"2025-03-01T12:00:00Z","buyer":{"id":"b-1","country":"US","new":true},"traffic_country":"US","currency":"USD","amount":"2941.00"}
{"order_id":"o-2","program":"alibaba"`
	st, err := pub.PublishLines(ctx, strings.NewReader(lines), 0)
	fmt.Printf("published %d, accepted %d, %v\n", st.Lines, st.Accepted, err)

	set, err := rules.LoadDir("../../policies")
	if err != nil {
		fmt.Println(err)
		return
	}
	proc := &decideAndCount{eng: engine.New(set), done: make(chan [2]int, 10)}
	c, err := stream.NewConsumer(ctx, js, cfg, proc, nil, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	stopped := make(chan error)
	go func() { stopped <- c.Run(ctx) }()
	decided, dead := 0, 0
	for decided+dead < 2 {
		n := <-proc.done
		decided, dead = decided+n[0], dead+n[1]
	}
	cancel()
	fmt.Printf("decided %d, dead-lettered %d, Run: %v\n", decided, dead, <-stopped)
	// Output:
	// published 2, accepted 2, <nil>
	// decided 1, dead-lettered 1, Run: <nil>
}
