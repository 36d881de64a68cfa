package stream

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/engine/audit"
)

// MinServerVersion is the oldest nats-server the adapter works with: stream subject transforms
// (and their partition() function) came with 2.10.0. An older server accepts the stream's
// configuration but silently ignores the transform, so no event would ever reach a partition.
const MinServerVersion = "2.10.0"

// ErrServerTooOld: the NATS server is older than MinServerVersion.
var ErrServerTooOld = errors.New("NATS server too old")

// CheckServerVersion refuses a connection to a server older than MinServerVersion, with an error
// naming the version found and the one needed. In a cluster it checks the server connected to;
// every server holding the stream must be as new.
func CheckServerVersion(nc *nats.Conn) error {
	return checkVersion(nc.ConnectedServerVersion(), nc.ConnectedUrlRedacted())
}

func checkVersion(version, at string) error {
	v, ok := parseVersion(version)
	min, _ := parseVersion(MinServerVersion)
	if !ok || v[0] < min[0] || v[0] == min[0] && (v[1] < min[1] || v[1] == min[1] && v[2] < min[2]) {
		if version == "" {
			version = "unknown"
		}
		return fmt.Errorf("%w: nats-server %s at %s; Commissioner needs nats-server %s or later (stream subject transforms with partition())",
			ErrServerTooOld, version, at, MinServerVersion)
	}
	return nil
}

// parseVersion reads "major.minor.patch", ignoring anything after the patch number ("-beta.1").
func parseVersion(s string) ([3]int, bool) {
	var v [3]int
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return v, false
	}
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	return v, true
}

var versionRE = regexp.MustCompile(`^v?(\d+)\.(\d+)\.(\d+)`)

// ErrPartitionsChanged: the configured partition count is not the existing stream's.
var ErrPartitionsChanged = errors.New("the partition count of an existing stream cannot change")

// EnsureStream creates the stream (cfg.Stream capturing the order events under cfg.Subjects, a
// subject transform into cfg.Partitions partitions, file storage, cfg.DuplicateWindow,
// cfg.MaxAge and cfg.MaxBytes, cfg.Replicas) and the dead-letter stream beside it
// (cfg.DeadStream, on <prefix>.dead.*.*), or updates existing ones to that configuration. It
// refuses, changing nothing: a server older than MinServerVersion; an existing stream with
// another partition count (ErrPartitionsChanged, naming both counts) or without the transform
// (made by a Commissioner before partitions); and a change of cfg.AsyncPersist, which the
// server cannot make on an existing stream. Calling it again changes nothing. The order stream
// holds order events only, so that each of its sequences is an event some partition must store
// (Reconcile).
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Stream, error) {
	cfg, err := cfg.complete()
	if err != nil {
		return nil, err
	}
	if err := CheckServerVersion(js.Conn()); err != nil {
		return nil, fmt.Errorf("ensuring stream %s: %w", cfg.Stream, err)
	}
	persist := jetstream.DefaultPersistMode
	if cfg.AsyncPersist {
		persist = jetstream.AsyncPersistMode
	}
	want := jetstream.SubjectTransformConfig{Source: cfg.transformSource(), Destination: cfg.transformDestination()}
	if s, err := js.Stream(ctx, cfg.Stream); err == nil {
		have := s.CachedInfo().Config
		if have.PersistMode != persist {
			return nil, fmt.Errorf("ensuring stream %s: it was created with persist mode %v and async_persist=%t asks for %v; "+
				"the server cannot change it on an existing stream: set async_persist back, or delete the stream",
				cfg.Stream, have.PersistMode, cfg.AsyncPersist, persist)
		}
		if err := checkTransform(cfg, have.SubjectTransform, want); err != nil {
			return nil, fmt.Errorf("ensuring stream %s: %w", cfg.Stream, err)
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("ensuring stream %s: %w", cfg.Stream, err)
	}
	// The order stream and the dead-letter stream share their storage, limits and persistence.
	streamConfig := func(name, description string, subjects []string) jetstream.StreamConfig {
		return jetstream.StreamConfig{Name: name, Description: description, Subjects: subjects, Storage: jetstream.FileStorage,
			Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld, Duplicates: cfg.DuplicateWindow, MaxAge: cfg.MaxAge,
			MaxBytes: cfg.MaxBytes, Replicas: cfg.Replicas, PersistMode: persist}
	}
	orders := streamConfig(cfg.Stream, fmt.Sprintf("Commissioner order events in %d partitions", cfg.Partitions), cfg.streamSubjects())
	orders.SubjectTransform = &want
	s, err := js.CreateOrUpdateStream(ctx, orders)
	if err != nil {
		return nil, fmt.Errorf("ensuring stream %s on %v: %w", cfg.Stream, cfg.streamSubjects(), err)
	}
	// After the order stream: one made by an earlier build captured the dead letters too.
	dead := streamConfig(cfg.DeadStream(), "Commissioner's dead letters: order events that got no decision, with the reason", cfg.deadSubjects())
	if _, err := js.CreateOrUpdateStream(ctx, dead); err != nil {
		return nil, fmt.Errorf("ensuring the dead-letter stream %s on %v: %w", cfg.DeadStream(), cfg.deadSubjects(), err)
	}
	return s, nil
}

var partitionCountRE = regexp.MustCompile(`\{\{\s*[pP]artition\s*\(\s*(\d+)\s*,`)

// checkTransform compares an existing stream's transform with the one cfg asks for.
func checkTransform(cfg Config, have *jetstream.SubjectTransformConfig, want jetstream.SubjectTransformConfig) error {
	if have == nil {
		return fmt.Errorf("the stream has no partition transform (it was made by a Commissioner before partitions, "+
			"with events on %s.<program> that no consumer reads any more): delete it, or configure another stream name", cfg.prefix())
	}
	if *have == want {
		return nil
	}
	if m := partitionCountRE.FindStringSubmatch(have.Destination); m != nil && m[1] != strconv.Itoa(cfg.Partitions) {
		return fmt.Errorf("%w: the stream has %s partitions and nats.partitions is %d; an event's partition must never change, "+
			"so set nats.partitions to %s (or move the events to a new stream)", ErrPartitionsChanged, m[1], cfg.Partitions, m[1])
	}
	return fmt.Errorf("the stream maps %s to %s, and this configuration asks for %s to %s: delete the stream, or configure another stream name",
		have.Source, have.Destination, want.Source, want.Destination)
}

// partitionConsumerConfig is partition n's durable pull consumer, delivering from stream
// sequence start (0 or 1: from the first event).
func partitionConsumerConfig(cfg Config, n int, start uint64) jetstream.ConsumerConfig {
	cc := jetstream.ConsumerConfig{
		Durable:       cfg.PartitionConsumer(n),
		Description:   fmt.Sprintf("Commissioner: partition %d of %d, read by its owner only", n, cfg.Partitions),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1,
		FilterSubject: cfg.PartitionFilter(n),
		MaxAckPending: cfg.MaxAckPending,
		MaxWaiting:    16,
	}
	if start > 1 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	return cc
}

// PartitionConsumers returns the state of every partition's durable consumer, indexed by
// partition; nil for a partition whose consumer does not exist (yet).
func PartitionConsumers(ctx context.Context, js jetstream.JetStream, cfg Config) ([]*jetstream.ConsumerInfo, error) {
	cfg, err := cfg.complete()
	if err != nil {
		return nil, err
	}
	s, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("reading stream %s: %w", cfg.Stream, err)
	}
	out := make([]*jetstream.ConsumerInfo, cfg.Partitions)
	for n := range out {
		c, err := s.Consumer(ctx, cfg.PartitionConsumer(n))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading consumer %s: %w", cfg.PartitionConsumer(n), err)
		}
		out[n] = c.CachedInfo()
	}
	return out, nil
}

// Settled reports whether every order event up to stream sequence upTo (0: the stream's last
// sequence now) has been settled — acknowledged or terminated — by its partition's consumer,
// whichever process owns the partition. For each partition it reads the consumer's ack floor
// and asks the stream for the partition's first event after it: settled when there is none at
// or below upTo. NumPending alone would not
// do right after a publish: the server counts a new event into a consumer asynchronously, after
// acknowledging the publish; the ack floor cannot run ahead that way.
func Settled(ctx context.Context, js jetstream.JetStream, cfg Config, upTo uint64) (bool, error) {
	cfg, err := cfg.complete()
	if err != nil {
		return false, err
	}
	s, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return false, fmt.Errorf("reading stream %s: %w", cfg.Stream, err)
	}
	if upTo == 0 {
		upTo = s.CachedInfo().State.LastSeq
	}
	infos, err := PartitionConsumers(ctx, js, cfg)
	if err != nil {
		return false, err
	}
	for n, ci := range infos {
		var floor uint64
		if ci != nil {
			floor = ci.AckFloor.Stream
		}
		if floor >= upTo {
			continue
		}
		m, err := s.GetMsg(ctx, floor+1, jetstream.WithGetMsgSubject(cfg.PartitionFilter(n)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("reading partition %d of stream %s: %w", n, cfg.Stream, err)
		}
		if m.Sequence <= upTo {
			return false, nil
		}
	}
	return true, nil
}

// DeleteStream deletes the stream (with its consumers) and its owners bucket: for tests and
// measurements that made a stream of their own. A stream or bucket already gone is no error.
func DeleteStream(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	cfg, err := cfg.complete()
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range []string{cfg.Stream, cfg.DeadStream()} {
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, fmt.Errorf("deleting stream %s: %w", name, err))
		}
	}
	if err := js.DeleteKeyValue(ctx, cfg.OwnersBucket()); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		errs = append(errs, fmt.Errorf("deleting bucket %s: %w", cfg.OwnersBucket(), err))
	}
	return errors.Join(errs...)
}

// Source names a stream as the partitions record where their positions are: its name and
// creation time (a stream deleted and made again is another source).
func Source(info *jetstream.StreamInfo) string {
	return info.Config.Name + "@" + info.Created.UTC().Format(time.RFC3339Nano)
}

// ReadStreamState reads the order stream's state for reconciliation (audit.Reconcile): its
// source, first and last sequence, and the sequences between them it no longer holds.
func ReadStreamState(ctx context.Context, js jetstream.JetStream, cfg Config) (audit.StreamState, error) {
	cfg, err := cfg.complete()
	if err != nil {
		return audit.StreamState{}, err
	}
	s, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return audit.StreamState{}, fmt.Errorf("reading stream %s: %w", cfg.Stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithDeletedDetails(true))
	if err != nil {
		return audit.StreamState{}, fmt.Errorf("reading stream %s: %w", cfg.Stream, err)
	}
	return audit.StreamState{Source: Source(info), First: info.State.FirstSeq, Last: info.State.LastSeq, Deleted: info.State.Deleted}, nil
}
