package stream

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureStream creates the stream (cfg.Stream on cfg.Subjects, file storage, cfg.DuplicateWindow)
// or updates an existing one to that configuration. Calling it again changes nothing. The
// stream keeps every event (limits retention, no limits): it is the history replay can read.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Stream, error) {
	cfg, err := cfg.complete()
	if err != nil {
		return nil, err
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "Commissioner order events and dead letters",
		Subjects:    []string{cfg.Subjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Duplicates:  cfg.DuplicateWindow,
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
