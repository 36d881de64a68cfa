package stream_test

import (
	"bytes"
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine"
)

// benchOrders is how many orders one iteration of the pipeline benchmarks moves.
const benchOrders = 100_000

// BenchmarkPipeline measures the broker + engine part of the live pipeline on the embedded
// defaults (batches of 1 000): benchOrders realistic orders are published to a fresh embedded
// JetStream, then a consumer fetches, decodes and decides them with the engine on the seed
// policy, and acks them. The store is a no-op; in the noop case the engine is too, which leaves
// the broker's and the consumer's own share. It reports orders per second from the first fetch
// to the last ack ("orders/s"), and CPU time per order ("cpu-µs/order": server, client and
// engine all run in this process).
//
//	go test ./adapters/stream -run '^$' -bench Pipeline -benchtime 3x
func BenchmarkPipeline(b *testing.B) {
	lines := genOrders(benchOrders, 9)
	input := joinLines(lines)
	eng := newEngine(b)
	for _, tc := range []struct {
		name       string
		partitions int
		proc       stream.Processor
	}{
		{"engine/partitions=1", 1, &engineProcessor{eng: eng}},
		{"engine/partitions=8", 8, &engineProcessor{eng: eng}},
		{"noop/partitions=8", 8, noopProcessor{}}, // the broker's share: fetch and ack only
	} {
		partitions := tc.partitions
		b.Run(tc.name, func(b *testing.B) {
			var consumeTime, consumeCPU time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				cfg := stream.DefaultConfig()
				cfg.DataDir = b.TempDir()
				cfg.Partitions = partitions
				cfg = cfg.WithDefaults()
				br := startBroker(b, cfg)
				st, err := br.publisher(b).PublishLines(context.Background(), bytes.NewReader(input), 0)
				if err != nil || st.Accepted != benchOrders {
					b.Fatalf("publishing: got %+v, %v; want %d accepted", st, err, benchOrders)
				}

				c := newConsumer(b, br, tc.proc, nil)
				b.StartTimer()
				start, cpu := time.Now(), cpuTime()
				stop := run(b, c)
				waitFor(b, 5*time.Minute, "every order acked", func() (bool, string) {
					s := c.Stats()
					return s.Acked+s.Termed == benchOrders, fmt.Sprintf("%+v", s)
				})
				consumeTime += time.Since(start)
				consumeCPU += cpuTime() - cpu
				b.StopTimer()
				if err := stop(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(benchOrders*b.N)/consumeTime.Seconds(), "orders/s")
			b.ReportMetric(float64(consumeCPU.Microseconds())/float64(benchOrders*b.N), "cpu-µs/order")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkPublish measures PublishLines into a fresh embedded JetStream, with the default
// persist mode and with Config.AsyncPersist, for several in-flight windows.
//
//	go test ./adapters/stream -run '^$' -bench Publish -benchtime 3x
func BenchmarkPublish(b *testing.B) {
	input := joinLines(genOrders(benchOrders, 11))
	for _, async := range []bool{false, true} {
		for _, window := range []int{256, 1024, 4000} {
			b.Run(fmt.Sprintf("async_persist=%t/window=%d", async, window), func(b *testing.B) {
				var total, cpuTotal time.Duration
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					cfg := stream.DefaultConfig()
					cfg.DataDir = b.TempDir()
					cfg.AsyncPersist = async
					br := startBroker(b, cfg.WithDefaults())
					pub := br.publisher(b)
					b.StartTimer()
					start, cpu := time.Now(), cpuTime()
					st, err := pub.PublishLines(context.Background(), bytes.NewReader(input), window)
					if err != nil || st.Accepted != benchOrders {
						b.Fatalf("publishing: got %+v, %v; want %d accepted", st, err, benchOrders)
					}
					total += time.Since(start)
					cpuTotal += cpuTime() - cpu
				}
				b.ReportMetric(float64(benchOrders*b.N)/total.Seconds(), "published/s")
				b.ReportMetric(float64(cpuTotal.Microseconds())/float64(benchOrders*b.N), "cpu-µs/published")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkPipelineConcurrent publishes and consumes at the same time, as a live service does:
// orders per second from the first publish to the last ack.
//
//	go test ./adapters/stream -run '^$' -bench PipelineConcurrent -benchtime 3x
func BenchmarkPipelineConcurrent(b *testing.B) {
	lines := genOrders(benchOrders, 10)
	input := joinLines(lines)
	eng := newEngine(b)
	var total, cpuTotal time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		cfg := stream.DefaultConfig()
		cfg.DataDir = b.TempDir()
		cfg = cfg.WithDefaults()
		br := startBroker(b, cfg)
		c := newConsumer(b, br, &engineProcessor{eng: eng}, nil)
		pub := br.publisher(b)
		b.StartTimer()
		start, cpu := time.Now(), cpuTime()
		stop := run(b, c)
		st, err := pub.PublishLines(context.Background(), bytes.NewReader(input), 0)
		if err != nil || st.Accepted != benchOrders {
			b.Fatalf("publishing: got %+v, %v; want %d accepted", st, err, benchOrders)
		}
		waitFor(b, 5*time.Minute, "every order acked", func() (bool, string) {
			s := c.Stats()
			return s.Acked+s.Termed == benchOrders, fmt.Sprintf("%+v", s)
		})
		total += time.Since(start)
		cpuTotal += cpuTime() - cpu
		b.StopTimer()
		if err := stop(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(benchOrders*b.N)/total.Seconds(), "orders/s")
	b.ReportMetric(float64(cpuTotal.Microseconds())/float64(benchOrders*b.N), "cpu-µs/order")
	b.ReportMetric(0, "ns/op")
}

// noopProcessor processes nothing: what is left is the broker's and the consumer's own cost.
type noopProcessor struct{}

func (noopProcessor) Acquire(context.Context, stream.Partition) (uint64, error) { return 0, nil }
func (noopProcessor) Release(stream.Partition)                                  {}
func (noopProcessor) Process(context.Context, stream.Partition, []engine.Event) (stream.BatchOutcome, error) {
	return stream.BatchOutcome{}, nil
}

// cpuTime is the CPU time (user + system) this process has used: the benchmarks report it per
// order, a figure that holds when other work shares the machine and wall-clock rates do not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
