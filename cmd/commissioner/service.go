package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/sync/errgroup"

	"github.com/commissioner/commissioner/adapters/checkpointlog"
	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/audit"
	"github.com/commissioner/commissioner/rules"
)

// service is the running pipeline: JetStream → engine → bun store → ack, with HTTP health and
// metrics and policy hot reload. Build it with startService; Run it; it closes what it opened.
type service struct {
	cfg     Config
	log     *slog.Logger
	metrics *httpapi.Metrics

	engine   atomic.Pointer[engine.Engine]
	store    *store.Store
	embedded *stream.Embedded // nil with an external server
	nc       *nats.Conn
	js       jetstream.JetStream
	consumer *stream.Consumer
	http     *httpapi.Server
	httpAddr string
	// streamSource names the stream the partitions are read from (its name and creation time).
	streamSource string
	// checkpoints signs the heads this process writes (nil: off); checkpointLog is its file.
	checkpoints   *audit.Checkpointer
	checkpointLog *checkpointlog.Log
	checkpointKey note.Verifier // the public key of the checkpoints (the audit API proves against them)
	// shadows counts the shadow versions' outcomes, stored with their batches (shadows.go).
	shadows *shadowCounter
	// loads are the policy loads since start; verify runs audit verify for the console.
	loads  policyLoads
	verify *verifyJob
}

// logConnection logs losing the NATS connection once when it happens and once when it is back,
// with how long it was gone (the connection reconnects by itself; partitions whose leases lapsed
// meanwhile are taken again).
func (s *service) logConnection() {
	var since atomic.Int64
	s.nc.SetDisconnectErrHandler(func(nc *nats.Conn, err error) {
		if err == nil || nc.IsDraining() || nc.IsClosed() {
			return // the service's own drain and close at shutdown
		}
		if since.CompareAndSwap(0, time.Now().UnixNano()) {
			s.log.Error("NATS connection lost; reconnecting", "err", err)
		}
	})
	s.nc.SetReconnectHandler(func(nc *nats.Conn) {
		if t := since.Swap(0); t != 0 {
			s.log.Warn("NATS connection back", "after", time.Since(time.Unix(0, t)).Round(time.Millisecond), "url", nc.ConnectedUrlRedacted())
		}
	})
}

// checkpointHead reports a partition's head to the checkpointer.
func (s *service) checkpointHead(h engine.PartitionHead) {
	if s.checkpoints != nil {
		s.checkpoints.Update(h)
	}
}

// startService loads and verifies the policies, opens the store, starts or connects to NATS,
// ensures the stream and the durable consumer. On any failure it closes what it had opened.
func startService(ctx context.Context, cfg Config, log *slog.Logger) (_ *service, err error) {
	s := &service{cfg: cfg, log: log, metrics: httpapi.NewMetrics()}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	set, err := verifiedPolicies(ctx, cfg.Policies, cfg.PolicyMaxBytes)
	if err != nil {
		return nil, err
	}
	if s.store, err = store.Open(ctx, cfg.storeConfig()); err != nil {
		return nil, err
	}
	s.shadows = newShadowCounter(s.metrics, log)
	if err := s.store.CheckPolicies(ctx, set.All()); err != nil {
		return nil, fmt.Errorf("checking policies against the decisions already stored: %w", err)
	}
	if err := s.store.CheckPinned(ctx, set.All()); err != nil {
		return nil, fmt.Errorf("checking policies against the orders already decided: %w", err)
	}
	s.engine.Store(engine.New(set))
	s.loads.add(set, nil)

	if cfg.NATS.URL == "" {
		if s.embedded, err = stream.StartEmbedded(ctx, cfg.NATS); err != nil {
			return nil, err
		}
		log.Info("embedded NATS server started", "url", s.embedded.ClientURL(), "data", cfg.NATS.DataDir)
	}
	if s.nc, err = stream.Connect(ctx, cfg.NATS); err != nil {
		return nil, err
	}
	s.logConnection()
	if s.js, err = jetstream.New(s.nc); err != nil {
		return nil, fmt.Errorf("opening JetStream: %w", err)
	}
	st, err := stream.EnsureStream(ctx, s.js, cfg.NATS)
	if err != nil {
		return nil, err
	}
	// The stream's identity: the partitions' positions in the store are positions in it.
	s.streamSource = stream.Source(st.CachedInfo())
	if err := s.startCheckpoints(ctx); err != nil {
		return nil, err
	}
	if s.consumer, err = stream.NewConsumer(ctx, s.js, cfg.NATS, newProcessor(s), streamObserver{s.metrics}, log); err != nil {
		return nil, err
	}
	if cfg.HTTP.Addr != "" {
		s.http = httpapi.New(cfg.HTTP, s.metrics.Registry, s.ready)
		rd, err := newRedriver(cfg, s.store, s.js)
		if err != nil {
			return nil, err
		}
		mountAuditAPI(s.http, s.store, cfg.HTTP, s.checkpointKey, rd, log) // the audit API (/v1/…): audit.go
		mountShadowAPI(s.http, s.store, cfg.HTTP, log)                     // GET /v1/shadow/report: shadow.go
		s.verify = newVerifyJob(s.store, s.verifyOptions, log)
		mountConsole(s.http, s, cfg.HTTP, log) // the console (/ui/…): console.go
		addr, err := s.http.Listen()
		if err != nil {
			return nil, err
		}
		s.httpAddr = addr.String()
	}
	log.Info("commissioner ready", "programs", set.Programs(), "store", s.store.String(), "http", s.httpAddr)
	return s, nil
}

// Run consumes until ctx ends, serving HTTP and reloading policies alongside; then it shuts down
// in order: stop fetching and finish the batch in flight, stop HTTP, drain NATS, stop the
// embedded server, close the store.
func (s *service) Run(ctx context.Context) error {
	defer s.close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.consumer.Run(gctx) })
	if s.http != nil {
		g.Go(func() error { return s.http.Run(gctx) })
	}
	g.Go(func() error { return s.watchPolicies(gctx) })
	if s.checkpoints != nil {
		g.Go(func() error { return s.checkpoints.Run(gctx) })
	}
	g.Go(func() error { return s.reconcileLoop(gctx) })
	if s.verify != nil {
		g.Go(func() error { return s.verify.Run(gctx) })
	}
	err := g.Wait()
	if s.checkpoints != nil {
		// The heads the writers left, signed after they stopped.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if cerr := s.checkpoints.Checkpoint(cctx); cerr != nil {
			s.log.Error("signing the last checkpoint at shutdown", "err", cerr)
		} else {
			s.log.Info("checkpoints signed", "count", s.checkpoints.Signed())
		}
	}
	return err
}

func (s *service) close() {
	if s.nc != nil {
		if err := s.nc.Drain(); err != nil {
			s.log.Warn("draining NATS", "err", err)
		}
		for i := 0; i < 100 && !s.nc.IsClosed(); i++ {
			time.Sleep(20 * time.Millisecond) // Drain is asynchronous; wait (bounded) for it to finish
		}
		s.nc = nil
	}
	if s.checkpointLog != nil {
		if err := s.checkpointLog.Close(); err != nil {
			s.log.Warn("closing the checkpoint log", "err", err)
		}
		s.checkpointLog = nil
	}
	if s.embedded != nil {
		if err := s.embedded.Shutdown(); err != nil {
			s.log.Warn("stopping the embedded NATS server", "err", err)
		}
		s.embedded = nil
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			s.log.Warn("closing the store", "err", err)
		}
		s.store = nil
	}
}

// streamObserver feeds the stream consumer's counts to the metrics.
type streamObserver struct{ *httpapi.Metrics }

var _ stream.Observer = streamObserver{}

func (o streamObserver) Acquired(stream.Partition)    { o.PartitionAcquired() }
func (o streamObserver) Lost(stream.Partition, error) { o.PartitionLost() }

// ready reports whether the service can work: NATS connected and the store answering.
func (s *service) ready(ctx context.Context) error {
	if s.nc == nil || !s.nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	if err := s.store.DB().PingContext(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// verifiedPolicies loads the policies in dir through the gate (engine.CheckPolicies): a set that
// does not compile, has a lint error or fails a test is refused.
func verifiedPolicies(ctx context.Context, dir string, maxBytes int64) (*rules.Set, error) {
	c, err := engine.CheckPolicies(ctx, dir, rules.MaxFileBytes(maxBytes))
	if err != nil {
		return nil, fmt.Errorf("loading policies from %s:\n%w", dir, err)
	}
	if err := c.Err(); err != nil {
		return nil, fmt.Errorf("policies in %s %w", dir, err)
	}
	return c.Set, nil
}

// reload loads the policies again; a set that fails its check or tests, or changes a version
// already used by a stored decision, is refused and the running set stays in force.
func (s *service) reload(ctx context.Context) error {
	set, err := verifiedPolicies(ctx, s.cfg.Policies, s.cfg.PolicyMaxBytes)
	if err == nil {
		err = s.store.CheckPolicies(ctx, set.All())
	}
	if err == nil {
		err = s.store.CheckPinned(ctx, set.All())
	}
	if err != nil {
		s.metrics.Reloaded(false)
		s.loads.add(nil, err)
		s.log.Error("policy reload refused; the running policies stay in force", "err", err)
		return err
	}
	s.engine.Store(engine.New(set))
	s.metrics.Reloaded(true)
	s.loads.add(set, nil)
	s.log.Info("policies reloaded", "versions", s.loads.newestFirst()[0].Versions)
	return nil
}

// watchPolicies reloads on SIGHUP and, when configured, when a file in the policy directory
// changes (debounced, so an editor's several writes make one reload).
func (s *service) watchPolicies(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var events <-chan fsnotify.Event
	if s.cfg.WatchPolicies {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			return fmt.Errorf("watching policies: %w", err)
		}
		defer w.Close()
		err = filepath.WalkDir(s.cfg.Policies, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				err = w.Add(path)
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("watching policies in %s: %w", s.cfg.Policies, err)
		}
		events = w.Events
	}
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			s.log.Info("SIGHUP: reloading policies")
			_ = s.reload(ctx) // a refused reload is logged and counted; the service goes on
		case <-events:
			debounce.Reset(300 * time.Millisecond)
		case <-debounce.C:
			s.log.Info("policy files changed: reloading")
			_ = s.reload(ctx)
		}
	}
}

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
