package main

// replay --source stream: the order events come from the NATS stream's history instead of the
// store. An ordered ephemeral consumer reads the ORDERS stream from the start, in stream order
// across all partitions, filtered to the stored order events (orders.p.*.*.*, or one program's,
// orders.p.*.<program>.*; dead letters are not read); the recorded decisions are looked up in
// the store by event id, a batch at a time.

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine"
)

// streamHistory is the stream's order events the filter selects, with the decisions recorded
// in the store. Messages that are not valid orders are skipped (the service dead-lettered
// them; the store holds no event for them either) and counted in Skipped.
type streamHistory struct {
	js      jetstream.JetStream
	cfg     stream.Config
	store   *store.Store
	filter  store.EventFilter
	batch   int
	Skipped int64
}

var _ engine.History = (*streamHistory)(nil)

// openStreamHistory connects to NATS: the configured server, the embedded server of a running
// service on the data directory, or, when none runs, an embedded server started here on the
// data directory for the replay's duration. The returned func closes what was opened.
func openStreamHistory(ctx context.Context, cfg Config, st *store.Store, f store.EventFilter) (*streamHistory, func(), error) {
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
	return &streamHistory{js: js, cfg: cfg.NATS.WithDefaults(), store: st, filter: f, batch: 512}, closeAll, nil
}

// subject is the consumer's filter: one program's stored events, or every stored order event.
func (h *streamHistory) subject() string {
	return h.cfg.EventsFilter(h.filter.Program)
}

// each reads every message on the subject from the start of the stream, in stream order, and
// calls fn with it. It ends at the last message stored when it began.
func (h *streamHistory) each(ctx context.Context, fn func(jetstream.Msg) error) error {
	s, err := h.js.Stream(ctx, h.cfg.Stream)
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", h.cfg.Stream, err)
	}
	subject := h.subject()
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", h.cfg.Stream, err)
	}
	var total uint64
	for _, n := range info.State.Subjects {
		total += n
	}
	if total == 0 {
		return nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("reading stream %s: creating an ordered consumer on %s: %w", h.cfg.Stream, subject, err)
	}
	msgs, err := cons.Messages(jetstream.PullMaxMessages(2048))
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", h.cfg.Stream, err)
	}
	defer msgs.Stop()
	stop := context.AfterFunc(ctx, msgs.Stop)
	defer stop()
	for {
		m, err := msgs.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("reading stream %s: %w", h.cfg.Stream, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", h.cfg.Stream, err)
		}
		if err := fn(m); err != nil {
			return err
		}
		if md.NumPending == 0 {
			return nil
		}
	}
}

// eventID is the identity the consumer gives a message: its Nats-Msg-Id, or its sequence.
func eventID(m jetstream.Msg, seq uint64) string {
	if id := m.Headers().Get(jetstream.MsgIDHeader); id != "" {
		return id
	}
	return "seq:" + strconv.FormatUint(seq, 10)
}

type orderKey struct{ program, orderID string }

// Walk reads the stream (twice with LatestPerOrder: first to find each order's last event) and
// passes the selected events with their recorded decisions.
func (h *streamHistory) Walk(ctx context.Context, fn func([]engine.ReplayEvent) error) error {
	var latest map[orderKey]uint64
	if h.filter.LatestPerOrder {
		latest = map[orderKey]uint64{}
		err := h.each(ctx, func(m jetstream.Msg) error {
			md, _ := m.Metadata()
			if o, err := engine.DecodeOrder(m.Data()); err == nil {
				latest[orderKey{o.Program, o.OrderID}] = md.Sequence.Stream
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	batch := make([]engine.ReplayEvent, 0, h.batch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		ids := make([]string, len(batch))
		for i := range batch {
			ids[i] = batch[i].Event.ID
		}
		recs, err := h.store.RecordedDecisions(ctx, ids)
		if err != nil {
			return err
		}
		for i := range batch {
			batch[i].Recorded = recs[batch[i].Event.ID]
		}
		err = fn(batch)
		batch = make([]engine.ReplayEvent, 0, h.batch)
		return err
	}
	f := h.filter
	err := h.each(ctx, func(m jetstream.Msg) error {
		md, _ := m.Metadata()
		seq := md.Sequence.Stream
		o, err := engine.DecodeOrder(m.Data())
		switch {
		case err != nil:
			h.Skipped++
			return nil
		case latest != nil && latest[orderKey{o.Program, o.OrderID}] != seq,
			f.Program != "" && o.Program != f.Program,
			!f.From.IsZero() && o.PlacedAt.Before(f.From),
			!f.To.IsZero() && !o.PlacedAt.Before(f.To),
			f.Affiliate != "" && o.AffiliateID != f.Affiliate:
			return nil
		}
		batch = append(batch, engine.ReplayEvent{Event: engine.Event{ID: eventID(m, seq), Subject: m.Subject(), StreamSeq: seq,
			Raw: m.Data(), ReceivedAt: md.Timestamp}})
		if len(batch) == h.batch {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}
