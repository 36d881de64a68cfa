package stream

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
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
	// User and Password (or PasswordFile, whose first line is the password: keep it off the
	// command line) authenticate to an external server. Secret: String masks the password.
	User         string `koanf:"user"`
	Password     string `koanf:"password"`
	PasswordFile string `koanf:"password_file"`
	// TLS: the CA that signed an external server's certificate, and a client certificate.
	TLS TLSConfig `koanf:"tls"`
	// DataDir holds the embedded server's JetStream store and its nats.url file.
	DataDir string `koanf:"data_dir"`
	// EmbeddedListen is the embedded server's host:port; port -1 picks a free one, so the
	// embedded server never collides with a server already listening on 4222.
	EmbeddedListen string `koanf:"embedded_listen"`

	// Stream is the order stream's name; the dead letters go to Stream + "_DEAD".
	Stream string `koanf:"stream"`
	// Subjects is the subject namespace, "<prefix>.>": order events are published to
	// <prefix>.<program token>.<affiliate token>, stored on <prefix>.p.<n>.… and dead letters go to
	// <prefix>.dead.… (see OrderSubject). The streams capture exactly those shapes.
	Subjects string `koanf:"subjects"`
	// Partitions is how many partitions the stream maps (program, affiliate) onto (default 8).
	// It is fixed once the stream exists: an event's partition must never change, so
	// EnsureStream refuses a stream made with another count.
	Partitions int `koanf:"partitions"`
	// Replicas is how many servers of a cluster keep the stream and the owners bucket (1…5,
	// default 1); partition consumers follow the stream.
	Replicas int `koanf:"replicas"`
	// DuplicateWindow is how long the stream remembers a Nats-Msg-Id to drop a re-published event.
	// It is an optimisation, not what keeps an order from being counted twice: an event
	// re-published after it has the same id, and the store keeps one event and one decision per
	// id. The server holds every id of the window in memory (about 115 bytes each, marked by the
	// garbage collector at every cycle), so the window costs publish rate × window of memory:
	// 30 s, the default, is ~45 MB at 13 000 orders/s; NATS's own default of 2 minutes was ~180 MB,
	// and over 1 000 000 orders through `load` it cost a quarter more CPU per order.
	DuplicateWindow time.Duration `koanf:"duplicate_window"`
	// MaxAge and MaxBytes bound the order stream and the dead-letter stream: older events, or the
	// oldest beyond the size, are dropped by the server. The store keeps every decided event's
	// raw bytes, so the stream only needs them until they are decided (and for replay --stream):
	// MaxAge defaults to 30 days; MaxBytes to none (-1). An event dropped before it was decided
	// is a gap audit verify reports.
	MaxAge   time.Duration `koanf:"max_age"`
	MaxBytes int64         `koanf:"max_bytes"`
	// AsyncPersist lets the server acknowledge a publish before the event is written to its
	// store file (JetStream's async persist mode): publishing is about 1.5–2× faster, but events
	// acknowledged in the last moments before the server process dies can be lost. Off by
	// default; never turn it on when the server runs inside a process that may be killed.
	AsyncPersist bool `koanf:"async_persist"`

	// Durable names the consumers: partition n is read by the durable pull consumer
	// <durable>-p<n>, and the owners bucket is <stream>_<durable>_owners.
	Durable string `koanf:"durable"`
	// BatchSize is the most events handed to the Processor at once.
	BatchSize int `koanf:"batch_size"`
	// FetchWait is the longest a batch waits to fill up once its first event has arrived. Each
	// partition fetches for itself, from a consumer the server fills by scanning for its
	// partition's subjects: 5 ms gave batches of ~440 events out of 1 000 under load, and every
	// batch pays its history read, its fence, its commit. 25 ms (the default) gave ~760 and a
	// quarter more orders/s on PostgreSQL (load --orders 200000: 9 798 → 12 729), ~5% on SQLite;
	// it adds at most that much latency to a lone event.
	FetchWait time.Duration `koanf:"fetch_wait"`
	// AckWait is how long the server waits for an ack before redelivering an event. While a
	// batch is processed, or waits to be tried again, the consumer extends it with in-progress
	// acks every AckWait/3.
	AckWait time.Duration `koanf:"ack_wait"`
	// MaxAckPending bounds a partition consumer's events delivered and not yet acknowledged
	// (default 2 × BatchSize: one batch at a time, and room for acks still on their way).
	MaxAckPending int `koanf:"max_ack_pending"`
	// LeaseTTL is how long a partition's lease lives without renewal (default 6 s; at least 1 s).
	// An owner renews every LeaseTTL/3 and gives a partition up as soon as a renewal fails; a
	// dead owner's partitions are taken over once its leases expire: within LeaseTTL + about
	// 1.5 s (a poll every second, the server's expiry check), plus the new owner's Acquire —
	// under 10 s with the default. Every process on one owners bucket must use the same TTL.
	LeaseTTL time.Duration `koanf:"lease_ttl"`
	// NakDelay is the first wait before a failed batch is tried again (by the same owner, so
	// that its partition stays in order); the wait doubles with every further failure of the
	// batch, up to NakMaxDelay. It is also the first wait before a partition this process gave
	// up after an error (a failed Acquire, a fenced batch) is taken again.
	NakDelay    time.Duration `koanf:"nak_delay"`
	NakMaxDelay time.Duration `koanf:"nak_max_delay"`
}

// DefaultConfig returns the defaults: the embedded server on a free port with its data in
// "data/nats", stream ORDERS on orders.> with 8 partitions, durable "commissioner", batches of
// 1 000, leases of 6 s.
func DefaultConfig() Config {
	return Config{
		DataDir:         "data/nats",
		EmbeddedListen:  "127.0.0.1:-1",
		Stream:          "ORDERS",
		Subjects:        "orders.>",
		DuplicateWindow: 30 * time.Second,
		MaxAge:          30 * 24 * time.Hour,
		MaxBytes:        -1,
		Partitions:      8,
		Replicas:        1,
		Durable:         "commissioner",
		BatchSize:       1000,
		FetchWait:       25 * time.Millisecond,
		AckWait:         30 * time.Second,
		LeaseTTL:        6 * time.Second,
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
	setD(&c.MaxAge, d.MaxAge)
	if c.MaxBytes == 0 {
		c.MaxBytes = d.MaxBytes
	}
	setD(&c.FetchWait, d.FetchWait)
	setD(&c.AckWait, d.AckWait)
	setD(&c.LeaseTTL, d.LeaseTTL)
	setD(&c.NakDelay, d.NakDelay)
	setD(&c.NakMaxDelay, d.NakMaxDelay)
	if c.BatchSize == 0 {
		c.BatchSize = d.BatchSize
	}
	if c.Partitions == 0 {
		c.Partitions = d.Partitions
	}
	if c.Replicas == 0 {
		c.Replicas = d.Replicas
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = 2 * c.BatchSize
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
	if c.MaxAge < 0 {
		bad("max_age", "%v is negative (0: the default, 30 days)", c.MaxAge)
	} else if c.MaxAge > 0 && c.MaxAge < c.DuplicateWindow {
		bad("max_age", "%v is shorter than duplicate_window %v", c.MaxAge, c.DuplicateWindow)
	}
	if c.Password != "" && c.PasswordFile != "" {
		bad("password", "give password or password_file, not both")
	}
	if (c.Password != "" || c.PasswordFile != "") && c.User == "" {
		bad("user", "required with a password")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "cert_file and key_file go together")
	}
	if c.MaxBytes < -1 {
		bad("max_bytes", "%d: give a size in bytes, or -1 for none", c.MaxBytes)
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
	if c.MaxAckPending < c.BatchSize {
		bad("max_ack_pending", "got %d, want ≥ batch_size %d", c.MaxAckPending, c.BatchSize)
	}
	if c.Partitions < 1 || c.Partitions > maxPartitions {
		bad("partitions", "got %d, want 1…%d", c.Partitions, maxPartitions)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		bad("replicas", "got %d, want 1…5", c.Replicas)
	}
	if c.LeaseTTL < time.Second {
		bad("lease_ttl", "got %v, want ≥ 1s", c.LeaseTTL)
	}
	if validName(c.Stream) && validName(c.Durable) && len(c.OwnersBucket()) > 200 {
		bad("durable", "stream and durable names too long for the owners bucket %q", c.OwnersBucket())
	}
	return errors.Join(errs...)
}

// TLSConfig is TLS to an external server.
type TLSConfig struct {
	CAFile   string `koanf:"ca_file"`
	CertFile string `koanf:"cert_file"`
	KeyFile  string `koanf:"key_file"`
}

// password is Password, or PasswordFile's first line.
func (c Config) password() (string, error) {
	if c.PasswordFile == "" {
		return c.Password, nil
	}
	b, err := os.ReadFile(c.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("nats.password_file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line), nil
}

// RedactedURL is URL with the passwords in it masked.
func (c Config) RedactedURL() string {
	urls := splitURLs(c.URL)
	for i, u := range urls {
		urls[i] = redactURL(u)
	}
	return strings.Join(urls, ",")
}

// String prints the configuration with secrets masked: the token, and passwords in URLs.
func (c Config) String() string {
	var b strings.Builder
	token := ""
	if c.Token != "" {
		token = "****"
	}
	password := ""
	if c.Password != "" {
		password = "****"
	}
	fmt.Fprintf(&b, "url=%q token=%q creds_file=%q user=%q password=%q password_file=%q tls=%+v data_dir=%q embedded_listen=%q ",
		c.RedactedURL(), token, c.CredsFile, c.User, password, c.PasswordFile, c.TLS, c.DataDir, c.EmbeddedListen)
	fmt.Fprintf(&b, "stream=%q subjects=%q partitions=%d replicas=%d duplicate_window=%v async_persist=%t ",
		c.Stream, c.Subjects, c.Partitions, c.Replicas, c.DuplicateWindow, c.AsyncPersist)
	fmt.Fprintf(&b, "durable=%q batch_size=%d fetch_wait=%v ack_wait=%v max_ack_pending=%d lease_ttl=%v nak_delay=%v nak_max_delay=%v",
		c.Durable, c.BatchSize, c.FetchWait, c.AckWait, c.MaxAckPending, c.LeaseTTL, c.NakDelay, c.NakMaxDelay)
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

// maxPartitions bounds Config.Partitions: each partition is a durable consumer and a lease.
const maxPartitions = 1024

// validName: 1…128 ASCII letters, digits, '-' and '_' — valid as a subject token, a stream
// name, a consumer name and a KV bucket name.
func validName(s string) bool {
	return len(s) <= 128 && plainToken(s)
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
