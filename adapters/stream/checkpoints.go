package stream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/engine/audit"
)

// CheckpointStream is the JetStream stream the service exports its signed checkpoints to, one
// message each on checkpoints.<orders stream>. The stream denies deleting and purging messages,
// so a checkpoint once published stays: the partitions' heads are held where rewriting the
// database cannot reach them.
const CheckpointStream = "CHECKPOINTS"

// CheckpointSubject is the subject of the checkpoints of the orders stream named stream.
func CheckpointSubject(stream string) string { return "checkpoints." + stream }

// Checkpoints publishes signed checkpoints to the CHECKPOINTS stream (audit.CheckpointSink).
type Checkpoints struct {
	js      jetstream.JetStream
	subject string
}

var _ audit.CheckpointSink = (*Checkpoints)(nil)

// EnsureCheckpoints ensures the CHECKPOINTS stream (deny delete, deny purge, kept forever) and
// returns its publisher for the checkpoints of the orders stream in cfg.
func EnsureCheckpoints(ctx context.Context, js jetstream.JetStream, cfg Config) (*Checkpoints, error) {
	cfg = cfg.WithDefaults()
	_, err := js.Stream(ctx, CheckpointStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        CheckpointStream,
			Description: "Commissioner's signed checkpoints of its partitions' chain heads",
			Subjects:    []string{"checkpoints.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Replicas:    cfg.Replicas,
			DenyDelete:  true,
			DenyPurge:   true,
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			err = nil // another process made it meanwhile
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ensuring the %s stream: %w", CheckpointStream, err)
	}
	return &Checkpoints{js: js, subject: CheckpointSubject(cfg.Stream)}, nil
}

// WriteCheckpoint publishes a signed checkpoint and waits for the stream's ack. Its message id
// is the digest of the signed text, so a checkpoint published twice is stored once.
func (c *Checkpoints) WriteCheckpoint(ctx context.Context, _ *audit.Checkpoint, signed []byte) error {
	sum := sha256.Sum256(signed)
	msg := &nats.Msg{Subject: c.subject, Data: signed, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, hex.EncodeToString(sum[:]))
	if _, err := c.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publishing the checkpoint to %s: %w", c.subject, err)
	}
	return nil
}

// ReadCheckpoints reads every checkpoint published for the orders stream named stream, oldest
// first.
func ReadCheckpoints(ctx context.Context, js jetstream.JetStream, stream string) ([]audit.SignedCheckpoint, error) {
	s, err := js.Stream(ctx, CheckpointStream)
	if err != nil {
		return nil, fmt.Errorf("reading the %s stream: %w", CheckpointStream, err)
	}
	subject := CheckpointSubject(stream)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, fmt.Errorf("reading the %s stream: %w", CheckpointStream, err)
	}
	want := info.State.Subjects[subject]
	var out []audit.SignedCheckpoint
	if want == 0 {
		return out, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return nil, fmt.Errorf("reading the %s stream: %w", CheckpointStream, err)
	}
	for uint64(len(out)) < want {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return out, fmt.Errorf("reading the %s stream: %w", CheckpointStream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return out, err
			}
			out = append(out, audit.SignedCheckpoint{Where: fmt.Sprintf("stream %s seq %d", CheckpointStream, md.Sequence.Stream), Signed: m.Data()})
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return out, fmt.Errorf("reading the %s stream: %w", CheckpointStream, err)
		}
		if n == 0 {
			return out, fmt.Errorf("reading the %s stream: %d of %d checkpoints read, then nothing more came", CheckpointStream, len(out), want)
		}
	}
	return out, nil
}
