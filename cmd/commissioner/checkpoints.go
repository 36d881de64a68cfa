package main

// Signed checkpoints, wired: the key (generated into the data directory on first use, or
// configured), the sinks the service writes each checkpoint to, and where audit verify reads
// them from. The format and the checks are the audit package's (engine/audit/checkpoint.go).

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/sumdb/note"

	"github.com/commissioner/commissioner/adapters/checkpointlog"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine/audit"
)

// AuditConfig is the audit section of the configuration.
type AuditConfig struct {
	// CheckpointInterval is how often the service signs its partitions' heads when they moved
	// (and once at shutdown); 0 turns checkpoints off.
	CheckpointInterval time.Duration `koanf:"checkpoint_interval"`
	// CheckpointKey is the signing key's file: the private key (a note signer key,
	// PRIVATE+KEY+<name>+…) on its first line, the public key on its second. Default: the data
	// directory's checkpoint.key, generated on first use (mode 0600).
	CheckpointKey string `koanf:"checkpoint_key"`
	// CheckpointLog is the file each checkpoint is appended to. Default: the data directory's
	// checkpoints.log; point it at a volume the database's administrator cannot write.
	CheckpointLog string `koanf:"checkpoint_log"`
	// ReconcileInterval is how often serve reconciles the store with the order stream (the
	// commissioner_stream_lost_events metric; an ERROR when events were lost); 0 turns it off.
	ReconcileInterval time.Duration `koanf:"reconcile_interval"`
}

// checkpointKeyName names the keys generated for the embedded default: the checkpoints' origin.
const checkpointKeyName = "commissioner"

// checkpointKey reads the key file at path, generating it (mode 0600) when it does not exist and
// create is set. It returns the signer and the public key.
func checkpointKey(path string, create bool) (note.Signer, string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		skey, vkey, gerr := note.GenerateKey(rand.Reader, checkpointKeyName)
		if gerr != nil {
			return nil, "", fmt.Errorf("generating the checkpoint key: %w", gerr)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, "", fmt.Errorf("checkpoint key: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			return checkpointKey(path, false) // another process made it meanwhile
		}
		if err != nil {
			return nil, "", fmt.Errorf("checkpoint key: %w", err)
		}
		_, werr := fmt.Fprintf(f, "%s\n%s\n", skey, vkey)
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			return nil, "", fmt.Errorf("writing the checkpoint key %s: %w", path, err)
		}
		data = []byte(skey + "\n" + vkey + "\n")
	} else if err != nil {
		return nil, "", fmt.Errorf("checkpoint key: %w", err)
	}
	lines := strings.Fields(string(data))
	if len(lines) != 2 {
		return nil, "", fmt.Errorf("checkpoint key %s: want the private key and the public key, one a line", path)
	}
	signer, err := note.NewSigner(lines[0])
	if err != nil {
		return nil, "", fmt.Errorf("checkpoint key %s: line 1: %w", path, err)
	}
	verifier, err := note.NewVerifier(lines[1])
	if err != nil {
		return nil, "", fmt.Errorf("checkpoint key %s: line 2: %w", path, err)
	}
	if verifier.Name() != signer.Name() || verifier.KeyHash() != signer.KeyHash() {
		return nil, "", fmt.Errorf("checkpoint key %s: the public key on line 2 is not the private key's on line 1", path)
	}
	return signer, lines[1], nil
}

func (c *Config) checkpointKeyPath() string {
	if c.Audit.CheckpointKey != "" {
		return c.Audit.CheckpointKey
	}
	return filepath.Join(c.DataDir, "checkpoint.key")
}

func (c *Config) checkpointLogPath() string {
	if c.Audit.CheckpointLog != "" {
		return c.Audit.CheckpointLog
	}
	return filepath.Join(c.DataDir, "checkpoints.log")
}

// startCheckpoints makes the service's checkpointer: signing with the configured key, writing
// each checkpoint to the store, the checkpoint log and the CHECKPOINTS stream. Nil when
// checkpoints are off.
func (s *service) startCheckpoints(ctx context.Context) error {
	if s.cfg.Audit.CheckpointInterval <= 0 {
		s.log.Warn("signed checkpoints are off (audit.checkpoint_interval 0): nothing outside the database holds the chains' heads")
		return nil
	}
	signer, vkey, err := checkpointKey(s.cfg.checkpointKeyPath(), true)
	if err != nil {
		return err
	}
	if s.checkpointKey, err = note.NewVerifier(vkey); err != nil {
		return fmt.Errorf("checkpoint key: %w", err)
	}
	if s.checkpointLog, err = checkpointlog.Open(s.cfg.checkpointLogPath()); err != nil {
		return err
	}
	exported, err := stream.EnsureCheckpoints(ctx, s.js, s.cfg.NATS)
	if err != nil {
		return err
	}
	s.checkpoints = audit.NewCheckpointer(signer, s.cfg.Audit.CheckpointInterval, s.log, s.store, s.checkpointLog, exported)
	s.log.Info("signing checkpoints", "every", s.cfg.Audit.CheckpointInterval, "key", signer.Name(), "log", s.checkpointLog.Path(),
		"stream", stream.CheckpointStream)
	return nil
}

// readCheckpoints reads the checkpoints audit verify --checkpoints names: "stream" (the
// CHECKPOINTS stream), "store" (the database's copy) or a checkpoint log file.
func readCheckpoints(ctx context.Context, cfg Config, from string, st interface {
	Checkpoints(context.Context) ([]audit.SignedCheckpoint, error)
}) ([]audit.SignedCheckpoint, error) {
	switch from {
	case "store":
		return st.Checkpoints(ctx)
	case "stream":
		if cfg.NATS.URL == "" {
			return nil, errors.New("--checkpoints stream needs the NATS server (nats.url); with the embedded default, read the checkpoint log instead")
		}
		nc, err := stream.Connect(ctx, cfg.NATS)
		if err != nil {
			return nil, err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, err
		}
		return stream.ReadCheckpoints(ctx, js, cfg.NATS.WithDefaults().Stream)
	}
	return checkpointlog.Read(from)
}

// checkpointVerifier is the public key audit verify checks checkpoints with: --key (the key
// itself, or a file holding it on its last line), else the configured key file's.
func checkpointVerifier(cfg Config, key string) (note.Verifier, error) {
	if key == "" {
		_, vkey, err := checkpointKey(cfg.checkpointKeyPath(), false)
		if err != nil {
			return nil, fmt.Errorf("%w (give the public key the checkpoints were signed with: --key)", err)
		}
		key = vkey
	} else if data, err := os.ReadFile(key); err == nil {
		lines := strings.Fields(string(data))
		if len(lines) == 0 {
			return nil, fmt.Errorf("--key %s: the file is empty", key)
		}
		key = lines[len(lines)-1]
	}
	v, err := note.NewVerifier(key)
	if err != nil {
		return nil, fmt.Errorf("--key: not a public key (%s+<hash>+<key>, as audit pubkey prints): %w", checkpointKeyName, err)
	}
	return v, nil
}

// reconcile reads the order stream's state (nats.url, or the embedded server of a serve running on
// the data directory) and the store's consumed stream sequences, and reconciles them.
func reconcile(ctx context.Context, cfg Config, st *store.Store) (audit.Reconciliation, error) {
	nc, err := stream.Connect(ctx, cfg.NATS)
	if err != nil {
		return audit.Reconciliation{}, fmt.Errorf("--reconcile reads the order stream: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return audit.Reconciliation{}, err
	}
	state, err := stream.ReadStreamState(ctx, js, cfg.NATS)
	if err != nil {
		return audit.Reconciliation{}, err
	}
	seqs, sources, err := st.ConsumedStreamSeqs(ctx)
	if err != nil {
		return audit.Reconciliation{}, err
	}
	return audit.Reconcile(state, seqs, sources), nil
}

// verifyOptions are audit verify's options when the console runs it: with the service's
// checkpoint key, the stored checkpoints are held against the chains too.
func (s *service) verifyOptions(ctx context.Context) (audit.VerifyOptions, error) {
	var opts audit.VerifyOptions
	if s.checkpointKey == nil {
		return opts, nil
	}
	cps, err := s.store.Checkpoints(ctx)
	if err != nil || len(cps) == 0 {
		return opts, err
	}
	opts.Checkpoints, opts.CheckpointKey = cps, s.checkpointKey
	return opts, nil
}

// reconcileLoop reconciles the store with the order stream every interval until ctx ends: the
// metrics say how many events were lost and how many are pending, and a loss that grew is an
// ERROR (audit verify --reconcile names the sequences).
func (s *service) reconcileLoop(ctx context.Context) error {
	every := s.cfg.Audit.ReconcileInterval
	if every <= 0 {
		return nil
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var reported uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		state, err := stream.ReadStreamState(ctx, s.js, s.cfg.NATS)
		if err == nil {
			var seqs []uint64
			var sources []string
			if seqs, sources, err = s.store.ConsumedStreamSeqs(ctx); err == nil {
				r := audit.Reconcile(state, seqs, sources)
				if r.Skipped == "" {
					s.metrics.Reconciled(r.Lost, r.Pending)
					if r.Lost > reported {
						s.log.Error("order events were lost from the stream before they were decided: run audit verify --reconcile",
							"lost", r.Lost, "pending", r.Pending)
					}
					reported = r.Lost
				}
			}
		}
		if err != nil && ctx.Err() == nil {
			s.log.Warn("reconciling with the stream", "err", err)
		}
	}
}
