package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
)

// buildCommissioner builds the commissioner binary into a temporary directory.
func buildCommissioner(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("building commissioner: the go command is not on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "commissioner")
	start := time.Now()
	out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built %s in %v", bin, time.Since(start).Round(time.Millisecond))
	return bin
}

// serveProcess is one `commissioner serve` subprocess.
type serveProcess struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and cmd.ProcessState is set
}

// startServeProcess starts `commissioner serve` with args and env, its output appended to log.
// A process still running when the test ends is killed.
func startServeProcess(t *testing.T, bin string, args, env []string, log *os.File) *serveProcess {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Env = env
	cmd.Dir = t.TempDir() // no commissioner.yaml from the package directory
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting commissioner serve: %v", err)
	}
	p := &serveProcess{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // the exit status is read from cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *serveProcess) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig and waits (bounded) for the process to exit.
func (p *serveProcess) signal(t *testing.T, sig syscall.Signal, within time.Duration) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !p.exited() {
		t.Fatalf("sending %v to commissioner serve: %v", sig, err)
	}
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("commissioner serve did not exit within %v of %v", within, sig)
	}
}

// serveEnv is the environment without any COMMISSIONER_ setting of the caller, plus extra.
func serveEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COMMISSIONER_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// TestPipelineSurvivesSIGKILL runs `commissioner serve` as a subprocess against a NATS server
// this test process runs and a SQLite file, publishes 50 000 order events (some bad) while
// killing the consumer with SIGKILL at pseudo-random points and restarting it, then checks that
// every event was decided (or dead-lettered) exactly once and the hash chain is intact.
func TestPipelineSurvivesSIGKILL(t *testing.T) {
	n, kills := 50000, 5
	if testing.Short() {
		n, kills = 10000, 3
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("COMMISSIONER_TEST_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (COMMISSIONER_TEST_SEED=%d repeats this run's kill points)", seed, seed)
	bin := buildCommissioner(t)

	// The broker runs here, so killing the consumer never touches it.
	natsCfg, _ := testBroker(t, stream.Config{})
	js := connectJS(t, natsCfg)
	if _, err := stream.EnsureStream(context.Background(), js, natsCfg); err != nil {
		t.Fatal(err)
	}

	policies := repoPolicies(t)
	lines := mix(sampleLines(t, n-n/100, seed, "2025-10"), badOrderLines(n/100), seed)
	want := expect(t, natsCfg, policies, lines)

	dataDir := t.TempDir()
	logPath := filepath.Join(t.TempDir(), "serve.log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 16<<10 {
				b = b[len(b)-16<<10:]
			}
			t.Logf("commissioner serve's output (the end):\n%s", b)
		}
	})
	args := []string{"--nats-url", natsCfg.URL, "--data-dir", dataDir, "--http-addr", "", "--policies", policies}
	env := serveEnv(
		"COMMISSIONER_NATS__ACK_WAIT=2s",  // a killed consumer's batches come back after 2s
		"COMMISSIONER_NATS__LEASE_TTL=2s", // and its partitions are taken over about 2s after the kill
		"COMMISSIONER_NATS__NAK_DELAY=100ms",
		"COMMISSIONER_NATS__NAK_MAX_DELAY=1s",
		"COMMISSIONER_WATCH_POLICIES=false",
		"COMMISSIONER_NATS__USER="+natsCfg.User, // the password in the environment, never in argv
		"COMMISSIONER_NATS__PASSWORD="+natsCfg.Password,
	)

	var published atomic.Int64
	// consumerState sums the partition consumers' state; settled is how many of the events
	// published so far are neither pending nor awaiting an ack (a partition whose consumer the
	// first serve has not created yet counts as all pending).
	consumerState := func() (pending, unacked uint64, settled int64, err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		pub := published.Load()
		infos, err := stream.PartitionConsumers(ctx, js, natsCfg)
		if err != nil {
			return 0, 0, 0, err
		}
		for _, ci := range infos {
			if ci == nil {
				return 0, 0, 0, errors.New("not every partition consumer exists yet")
			}
			pending += ci.NumPending
			unacked += uint64(ci.NumAckPending)
		}
		return pending, unacked, pub - int64(pending) - int64(unacked), nil
	}

	// The publisher stays at most lead events ahead of the consumer, so publishing goes on
	// across the kills instead of finishing before the first one.
	const chunk, lead = 1000, 8000
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pubDone := make(chan error, 1)
	var lastSeq uint64 // the stream sequence of the last event published; written before pubDone
	go func() {
		pub, err := stream.NewPublisher(js, natsCfg)
		if err != nil {
			pubDone <- err
			return
		}
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for start := 0; start < len(lines); start += chunk {
			for {
				_, _, settled, err := consumerState()
				if err == nil && published.Load()-settled <= lead {
					break
				}
				select {
				case <-ctx.Done():
					pubDone <- fmt.Errorf("publisher: %w", ctx.Err())
					return
				case <-tick.C:
				}
			}
			end := min(start+chunk, len(lines))
			st, err := pub.PublishLines(ctx, bytes.NewReader(joinLines(lines[start:end])), 256)
			if err == nil && st.Accepted != end-start {
				err = fmt.Errorf("got %+v, want %d accepted", st, end-start)
			}
			if err != nil {
				pubDone <- fmt.Errorf("publishing lines %d–%d: %w", start, end, err)
				return
			}
			published.Add(int64(end - start))
			lastSeq = max(lastSeq, st.LastSeq)
		}
		pubDone <- nil
	}()

	r := rand.New(rand.NewPCG(seed, 2))
	proc := startServeProcess(t, bin, args, env, log)
	inFlightAtKills := 0
	for k := range kills {
		lo := k*n/(kills+1) + n/(4*(kills+1))
		hi := (k + 1) * n / (kills + 1)
		threshold := int64(lo + r.IntN(hi-lo))
		waitUntil(t, 2*time.Minute, fmt.Sprintf("kill %d: %d events settled", k+1, threshold), func() (bool, string) {
			if proc.exited() {
				t.Fatalf("commissioner serve exited on its own: %v", proc.cmd.ProcessState)
			}
			_, _, settled, err := consumerState()
			return err == nil && settled >= threshold, fmt.Sprintf("settled %d, published %d, err %v", settled, published.Load(), err)
		})
		pending, unacked, settled, _ := consumerState()
		proc.signal(t, syscall.SIGKILL, 10*time.Second)
		t.Logf("kill %d at %d settled: %d published, %d pending, %d delivered without ack", k+1, settled, published.Load(), pending, unacked)
		if unacked > 0 {
			inFlightAtKills++
		}
		fmt.Fprintf(log, "\n===== SIGKILL %d; restarting =====\n", k+1)
		proc = startServeProcess(t, bin, args, env, log)
	}
	if inFlightAtKills == 0 {
		t.Errorf("no kill hit events delivered and not yet acknowledged: the test exercised nothing")
	}

	select {
	case err := <-pubDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("publishing did not finish: %d of %d published", published.Load(), len(lines))
	}
	waitUntil(t, 2*time.Minute, "the last consumer to settle everything", func() (bool, string) {
		if proc.exited() {
			t.Fatalf("commissioner serve exited on its own: %v", proc.cmd.ProcessState)
		}
		return streamSettled(js, natsCfg, lastSeq)()
	})
	// A graceful stop ends the last one.
	proc.signal(t, syscall.SIGTERM, 30*time.Second)
	if code := proc.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("commissioner serve after SIGTERM: got exit status %d, want 0", code)
	}

	st, err := store.Open(context.Background(), store.Config{DSN: "sqlite://" + filepath.Join(dataDir, "commissioner.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	verifyStored(t, st, policies, want)
}
