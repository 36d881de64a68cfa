package stream

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureStream creates the stream (cfg.Stream on cfg.Subjects, file storage, cfg.DuplicateWindow)
// or updates an existing one to that configuration (except cfg.AsyncPersist, which the server
// cannot change on an existing stream: a mismatch is an error). Calling it again changes nothing. The
// stream keeps every event (limits retention, no limits): it is the history replay can read.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Stream, error) {
	cfg, err := cfg.complete()
	if err != nil {
		return nil, err
	}
	persist := jetstream.DefaultPersistMode
	if cfg.AsyncPersist {
		persist = jetstream.AsyncPersistMode
	}
	if s, err := js.Stream(ctx, cfg.Stream); err == nil {
		if have := s.CachedInfo().Config.PersistMode; have != persist {
			return nil, fmt.Errorf("ensuring stream %s: it was created with persist mode %v and async_persist=%t asks for %v; "+
				"the server cannot change it on an existing stream: set async_persist back, or delete the stream",
				cfg.Stream, have, cfg.AsyncPersist, persist)
		}
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "Commissioner order events and dead letters",
		Subjects:    []string{cfg.Subjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Duplicates:  cfg.DuplicateWindow,
		PersistMode: persist,
	})
	if err != nil {
		return nil, fmt.Errorf("ensuring stream %s on %s: %w", cfg.Stream, cfg.Subjects, err)
	}
	return s, nil
}

// consumerConfig is the durable pull consumer every process shares.
func consumerConfig(cfg Config) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		Description:   "Commissioner: decide and store order events",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1,
		FilterSubject: cfg.ConsumeSubject(),
		MaxAckPending: cfg.MaxAckPending,
		MaxWaiting:    512,
	}
}
