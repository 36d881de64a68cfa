package main

// What the console's health page shows of the running service (console.Operations): its policy
// loads, the order stream's backlog per partition, and audit verify run in the background.

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/commissioner/commissioner/adapters/console"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine/audit"
	"github.com/commissioner/commissioner/rules"
)

// maxPolicyLoads is how many policy loads the service remembers.
const maxPolicyLoads = 50

// policyLoads remembers the service's policy loads, newest last.
type policyLoads struct {
	mu    sync.Mutex
	loads []console.PolicyLoad
}

// add records a load of set (applied) or its refusal (err).
func (l *policyLoads) add(set *rules.Set, err error) {
	load := console.PolicyLoad{At: time.Now().UTC(), Applied: err == nil}
	if err != nil {
		load.Err = err.Error()
	} else {
		for _, p := range set.All() {
			v := fmt.Sprintf("%s v%d", p.Program, p.Version)
			if p.IsShadow() {
				v += " (shadow)"
			}
			load.Versions = append(load.Versions, v)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.loads) == maxPolicyLoads {
		l.loads = append(l.loads[:0], l.loads[1:]...)
	}
	l.loads = append(l.loads, load)
}

// newestFirst returns a copy of the loads, newest first.
func (l *policyLoads) newestFirst() []console.PolicyLoad {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]console.PolicyLoad, len(l.loads))
	for i, load := range l.loads {
		out[len(l.loads)-1-i] = load
	}
	return out
}

// verifyJob runs audit verify over the store when the console asks, one run at a time, within
// the service's lifetime (Run), and records each run in the store.
type verifyJob struct {
	st *store.Store
	// options are the run's options: the stored checkpoints with the service's key, when it
	// signs them.
	options func(ctx context.Context) (audit.VerifyOptions, error)
	log     interface{ Error(string, ...any) }
	starts  chan string // who asked; buffered 1

	mu      sync.Mutex
	running time.Time
}

func newVerifyJob(st *store.Store, options func(context.Context) (audit.VerifyOptions, error), log interface{ Error(string, ...any) }) *verifyJob {
	return &verifyJob{st: st, options: options, log: log, starts: make(chan string, 1)}
}

// Start asks for a run; false when one is running or asked for already.
func (j *verifyJob) Start(by string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.running.IsZero() {
		return false
	}
	select {
	case j.starts <- by:
		j.running = time.Now().UTC()
		return true
	default:
		return false
	}
}

// Running returns when the run in progress was asked for (zero: none).
func (j *verifyJob) Running() time.Time {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.running
}

// Run runs the runs asked for until ctx ends (a run then in progress stops unrecorded).
func (j *verifyJob) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case by := <-j.starts:
			j.run(ctx, by)
			j.mu.Lock()
			j.running = time.Time{}
			j.mu.Unlock()
		}
	}
}

func (j *verifyJob) run(ctx context.Context, by string) {
	started := time.Now()
	opts, err := j.options(ctx)
	var rep *audit.VerifyReport
	if err == nil {
		// Half the CPUs: the service goes on deciding meanwhile.
		opts.Workers = max(1, runtime.GOMAXPROCS(0)/2)
		rep, err = audit.Verify(ctx, j.st, opts)
	}
	if ctx.Err() != nil {
		return // the service is stopping: nothing to record
	}
	if err != nil {
		j.log.Error("audit verify from the console", "err", err)
	}
	if _, rerr := j.st.RecordVerifyRun(ctx, audit.NewVerifyRun(by, "", started, time.Now(), rep, err)); rerr != nil {
		j.log.Error("recording the audit verify run", "err", rerr)
	}
}

// serviceOps is the service as the console's health page sees it.
type serviceOps struct{ s *service }

var _ console.Operations = serviceOps{}

func (o serviceOps) PolicyLoads() []console.PolicyLoad { return o.s.loads.newestFirst() }
func (o serviceOps) StartVerify(by string) bool        { return o.s.verify.Start(by) }
func (o serviceOps) VerifyRunning() time.Time          { return o.s.verify.Running() }

// Lag reads each partition consumer's backlog from JetStream.
func (o serviceOps) Lag(ctx context.Context) ([]console.PartitionLag, error) {
	infos, err := stream.PartitionConsumers(ctx, o.s.js, o.s.cfg.NATS)
	if err != nil {
		return nil, err
	}
	out := make([]console.PartitionLag, len(infos))
	for n, ci := range infos {
		out[n].Partition = n
		if ci != nil {
			out[n].Pending, out[n].AckPending, out[n].Consumer = ci.NumPending, uint64(ci.NumAckPending), ci.Name
		}
	}
	return out, nil
}
