package main

// replay --source stream: the order events come from the NATS stream's history instead of the
// store (stream.History); this file only connects to the server.

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
)

// openStreamHistory connects to NATS: the configured server, the embedded server of a running
// service on the data directory, or, when none runs, an embedded server started here on the
// data directory for the replay's duration. The returned func closes what was opened.
func openStreamHistory(ctx context.Context, cfg Config, st *store.Store, f store.EventFilter) (*stream.History, func(), error) {
	var embedded *stream.Embedded
	nc, err := stream.Connect(ctx, cfg.NATS)
	if err != nil && cfg.NATS.URL == "" {
		// No service is running on this data directory: read its JetStream store ourselves.
		if embedded, err = stream.StartEmbedded(ctx, cfg.NATS); err != nil {
			return nil, nil, fmt.Errorf("replaying from the stream: %w", err)
		}
		nc, err = stream.Connect(ctx, cfg.NATS)
	}
	closeAll := func() {
		if nc != nil {
			nc.Close()
		}
		if embedded != nil {
			if err := embedded.Shutdown(); err != nil {
				slog.Warn("stopping the embedded NATS server", "err", err)
			}
		}
	}
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("replaying from the stream: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("replaying from the stream: opening JetStream: %w", err)
	}
	return stream.NewHistory(js, cfg.NATS, st, f), closeAll, nil
}
