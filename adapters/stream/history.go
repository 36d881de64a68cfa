package stream

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/engine"
)

// History is the stream's order events the filter selects, with the decisions recorded in the
// store (replay --source stream): an ordered ephemeral consumer reads the stream from its start,
// in stream order across all partitions, filtered to the stored order events (one program's, or
// all; dead letters are not read); the recorded decisions are looked up a batch at a time by
// event identity. Messages that are not valid orders are skipped (the service dead-lettered them)
// and counted in Skipped.
type History struct {
	js      jetstream.JetStream
	cfg     Config
	rec     RecordedDecisions
	filter  engine.EventFilter
	batch   int
	Skipped int64
}

// RecordedDecisions is what History reads from the store: the decisions recorded for events, by
// identity (absent: none recorded).
type RecordedDecisions interface {
	RecordedDecisions(ctx context.Context, eventIDs []string) (map[string]*engine.RecordedDecision, error)
}

var _ engine.History = (*History)(nil)

// NewHistory reads the stream's history through js (see History).
func NewHistory(js jetstream.JetStream, cfg Config, rec RecordedDecisions, f engine.EventFilter) *History {
	return &History{js: js, cfg: cfg.WithDefaults(), rec: rec, filter: f, batch: 512}
}

// subject is the consumer's filter: one program's stored events, or every stored order event.
func (h *History) subject() string {
	return h.cfg.EventsFilter(h.filter.Program)
}

// each reads every message on the subject from the start of the stream, in stream order, and
// calls fn with it. It ends at the last message stored when it began.
func (h *History) each(ctx context.Context, fn func(jetstream.Msg) error) error {
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

type orderKey struct{ program, orderID string }

// Walk reads the stream (twice with LatestPerOrder: first to find each order's last event) and
// passes the selected events with their recorded decisions.
func (h *History) Walk(ctx context.Context, fn func([]engine.ReplayEvent) error) error {
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
		recs, err := h.rec.RecordedDecisions(ctx, ids)
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
		ev := engine.Event{ID: engine.IdentityOf(messageEventID(m, seq), o), Subject: m.Subject(), StreamSeq: seq,
			Raw: m.Data(), ReceivedAt: md.Timestamp} // identified as the service identified it
		batch = append(batch, engine.ReplayEvent{Event: ev})
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
