// Package stream is Commissioner's NATS JetStream adapter: an embedded nats-server for the
// zero-configuration default, the ORDERS stream, a publisher that gives every order event a
// Nats-Msg-Id so the stream drops re-published copies, and a durable pull consumer that hands
// batches of engine.Event to a Processor and acknowledges them only after it returned.
//
// Subjects, with the default prefix "orders":
//
//	orders.<program>          an order event (two tokens); the consumer reads orders.*
//	orders.unknown            an order event whose program could not be read, or is not a valid
//	                          subject token, or is the reserved word "dead"
//	orders.dead.<token>       a dead letter (three tokens), never read back by the consumer;
//	                          <token> is the second token of the subject the event came in on
//
// Delivery is at least once: an event can be processed again after a crash, a failed batch or
// an expired ack wait, always with the same engine.Event.ID, so a Processor must be idempotent
// on that identity (the store's unique keys make it so).
package stream

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config configures the JetStream adapter. The zero value of a field means its default
// (see DefaultConfig and WithDefaults).
type Config struct {
	// URL of the NATS server; comma-separated URLs for a cluster. "" means the embedded server
	// (StartEmbedded), whose URL Connect reads from DataDir/nats.url.
	URL string `koanf:"url"`
	// Token authenticates to an external server. Secret: String masks it.
	Token string `koanf:"token"`
	// CredsFile is the path of a NATS credentials file (JWT and NKey seed) for an external server.
	CredsFile string `koanf:"creds_file"`
	// DataDir holds the embedded server's JetStream store and its nats.url file.
	DataDir string `koanf:"data_dir"`
	// EmbeddedListen is the embedded server's host:port; port -1 picks a free one, so the
	// embedded server never collides with a server already listening on 4222.
	EmbeddedListen string `koanf:"embedded_listen"`

	// Stream is the JetStream stream's name.
	Stream string `koanf:"stream"`
	// Subjects is the stream's subject filter, "<prefix>.>". Order events go to
	// <prefix>.<program> and dead letters to <prefix>.dead.<program>.
	Subjects string `koanf:"subjects"`
	// DuplicateWindow is how long the stream remembers a Nats-Msg-Id to drop a re-published event.
	// It is an optimisation, not what keeps an order from being counted twice: an event
	// re-published after it has the same id, and the store keeps one event and one decision per
	// id. The server holds every id of the window in memory (about 115 bytes each, marked by the
	// garbage collector at every cycle), so the window costs publish rate × window of memory:
	// 30 s, the default, is ~45 MB at 13 000 orders/s; NATS's own default of 2 minutes was ~180 MB,
	// and over 1 000 000 orders through `load` it cost a quarter more CPU per order.
	DuplicateWindow time.Duration `koanf:"duplicate_window"`
	// AsyncPersist lets the server acknowledge a publish before the event is written to its
	// store file (JetStream's async persist mode): publishing is about 1.5–2× faster, but events
	// acknowledged in the last moments before the server process dies can be lost. Off by
	// default; never turn it on when the server runs inside a process that may be killed.
	AsyncPersist bool `koanf:"async_persist"`

	// Durable is the durable pull consumer's name, shared by every process that consumes.
	Durable string `koanf:"durable"`
	// BatchSize is the most events handed to the Processor at once.
	BatchSize int `koanf:"batch_size"`
	// FetchWait is the longest a batch waits to fill up once its first event has arrived.
	FetchWait time.Duration `koanf:"fetch_wait"`
	// AckWait is how long the server waits for an ack before redelivering an event. It must
	// cover a batch's time buffered in the client plus its processing.
	AckWait time.Duration `koanf:"ack_wait"`
	// MaxAckPending bounds the events delivered and not yet acknowledged, over all processes
	// sharing the durable. Default: BatchSize × (Workers+2) × 4, room for four processes.
	MaxAckPending int `koanf:"max_ack_pending"`
	// Workers is how many batches one consumer processes at once (default 2): with two, one
	// batch is decided while the previous one is being stored. Events of one order can then be
	// processed out of stream order, as they can with several processes; Event.StreamSeq orders them.
	Workers int `koanf:"workers"`
	// NakDelay is the redelivery delay after a failed batch; it doubles with every further
	// delivery of the same event, up to NakMaxDelay.
	NakDelay    time.Duration `koanf:"nak_delay"`
	NakMaxDelay time.Duration `koanf:"nak_max_delay"`
}

// DefaultConfig returns the defaults: the embedded server on a free port with its data in
// "data/nats", stream ORDERS on orders.>, durable "commissioner", batches of 1 000.
func DefaultConfig() Config {
	return Config{
		DataDir:         "data/nats",
		EmbeddedListen:  "127.0.0.1:-1",
		Stream:          "ORDERS",
		Subjects:        "orders.>",
		DuplicateWindow: 30 * time.Second,
		Durable:         "commissioner",
		BatchSize:       1000,
		FetchWait:       5 * time.Millisecond,
		AckWait:         30 * time.Second,
		Workers:         2,
		NakDelay:        time.Second,
		NakMaxDelay:     30 * time.Second,
	}
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	set := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	setD := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	set(&c.DataDir, d.DataDir)
	set(&c.EmbeddedListen, d.EmbeddedListen)
	set(&c.Stream, d.Stream)
	set(&c.Subjects, d.Subjects)
	set(&c.Durable, d.Durable)
	setD(&c.DuplicateWindow, d.DuplicateWindow)
	setD(&c.FetchWait, d.FetchWait)
	setD(&c.AckWait, d.AckWait)
	setD(&c.NakDelay, d.NakDelay)
	setD(&c.NakMaxDelay, d.NakMaxDelay)
	if c.BatchSize == 0 {
		c.BatchSize = d.BatchSize
	}
	if c.Workers == 0 {
		c.Workers = d.Workers
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = c.BatchSize * (c.Workers + 2) * 4
	}
	return c
}

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("stream config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	for _, u := range splitURLs(c.URL) {
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" {
			bad("url", "%q is not a URL like nats://host:4222", redactURL(u))
		}
	}
	if c.URL == "" {
		if c.DataDir == "" {
			bad("data_dir", "required for the embedded server")
		}
		if _, _, err := splitListen(c.EmbeddedListen); err != nil {
			bad("embedded_listen", "%v", err)
		}
	}
	if !validName(c.Stream) {
		bad("stream", "%q is not a stream name (letters, digits, - and _)", c.Stream)
	}
	if _, err := subjectPrefix(c.Subjects); err != nil {
		bad("subjects", "%v", err)
	}
	if !validName(c.Durable) {
		bad("durable", "%q is not a consumer name (letters, digits, - and _)", c.Durable)
	}
	positive := func(field string, d time.Duration) {
		if d <= 0 {
			bad(field, "got %v, want > 0", d)
		}
	}
	positive("duplicate_window", c.DuplicateWindow)
	positive("fetch_wait", c.FetchWait)
	positive("ack_wait", c.AckWait)
	positive("nak_delay", c.NakDelay)
	if c.NakMaxDelay < c.NakDelay {
		bad("nak_max_delay", "got %v, want ≥ nak_delay %v", c.NakMaxDelay, c.NakDelay)
	}
	if c.BatchSize < 1 {
		bad("batch_size", "got %d, want ≥ 1", c.BatchSize)
	}
	if c.Workers < 1 {
		bad("workers", "got %d, want ≥ 1", c.Workers)
	}
	if min := c.BatchSize * (c.Workers + 2); c.MaxAckPending < min {
		bad("max_ack_pending", "got %d, want ≥ batch_size × (workers+2) = %d", c.MaxAckPending, min)
	}
	return errors.Join(errs...)
}

// String prints the configuration with secrets masked: the token, and passwords in URLs.
func (c Config) String() string {
	var b strings.Builder
	urls := splitURLs(c.URL)
	for i, u := range urls {
		urls[i] = redactURL(u)
	}
	token := ""
	if c.Token != "" {
		token = "****"
	}
	fmt.Fprintf(&b, "url=%q token=%q creds_file=%q data_dir=%q embedded_listen=%q ",
		strings.Join(urls, ","), token, c.CredsFile, c.DataDir, c.EmbeddedListen)
	fmt.Fprintf(&b, "stream=%q subjects=%q duplicate_window=%v async_persist=%t durable=%q batch_size=%d fetch_wait=%v ",
		c.Stream, c.Subjects, c.DuplicateWindow, c.AsyncPersist, c.Durable, c.BatchSize, c.FetchWait)
	fmt.Fprintf(&b, "ack_wait=%v max_ack_pending=%d workers=%d nak_delay=%v nak_max_delay=%v",
		c.AckWait, c.MaxAckPending, c.Workers, c.NakDelay, c.NakMaxDelay)
	return b.String()
}

// complete applies the defaults and validates; every entry point calls it.
func (c Config) complete() (Config, error) {
	c = c.WithDefaults()
	return c, c.Validate()
}

// prefix returns the subject prefix ("orders" for "orders.>"); the config must be valid.
func (c Config) prefix() string {
	p, _ := subjectPrefix(c.Subjects)
	return p
}

// OrderSubject is the subject an order event of the program is published to:
// <prefix>.<program>, or <prefix>.unknown when program is not a usable subject token.
func (c Config) OrderSubject(program string) string {
	return c.WithDefaults().prefix() + "." + programToken(program)
}

// DeadSubject is the subject a dead letter of the program is published to: <prefix>.dead.<program>.
func (c Config) DeadSubject(program string) string {
	return c.WithDefaults().prefix() + "." + deadToken + "." + programToken(program)
}

// ConsumeSubject is the consumer's filter, <prefix>.*: order events, and never dead letters.
func (c Config) ConsumeSubject() string { return c.WithDefaults().prefix() + ".*" }

const (
	deadToken    = "dead"    // reserved: <prefix>.dead.… holds dead letters
	unknownToken = "unknown" // for events whose program is unreadable or unusable as a token
)

// programToken maps a program to the subject token it is published under.
func programToken(program string) string {
	if program == "" || program == deadToken || !validName(program) {
		return unknownToken
	}
	return program
}

// validName: a non-empty run of ASCII letters, digits, '-' and '_' — valid as a subject token,
// a stream name and a consumer name.
func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func subjectPrefix(subjects string) (string, error) {
	p, ok := strings.CutSuffix(subjects, ".>")
	if !ok || p == "" {
		return "", fmt.Errorf("%q must be <prefix>.>, e.g. orders.>", subjects)
	}
	for _, tok := range strings.Split(p, ".") {
		if !validName(tok) {
			return "", fmt.Errorf("%q: prefix token %q is not letters, digits, - and _", subjects, tok)
		}
	}
	return p, nil
}

func splitURLs(s string) []string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

func redactURL(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		if i := strings.LastIndex(u, "@"); i >= 0 {
			return "****@" + u[i+1:]
		}
		return u
	}
	if pu.User != nil { // a user, a password or a token: mask all of it
		// (not through url.User, which would print the mask escaped: %2A%2A%2A%2A)
		pu.User = nil
		return strings.Replace(pu.String(), "://", "://****@", 1)
	}
	return pu.String()
}

// splitListen parses host:port; port -1 means a free port.
func splitListen(hp string) (string, int, error) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port: %v", hp, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < -1 || n > 65535 {
		return "", 0, fmt.Errorf("%q: port %q is not -1 (any free port) or 0…65535", hp, port)
	}
	return host, n, nil
}
