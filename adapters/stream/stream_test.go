package stream_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine"
)

func TestConfigDefaultsAreValid(t *testing.T) {
	cfg := stream.DefaultConfig().WithDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate(): got %v, want nil", err)
	}
	if got, want := cfg.MaxAckPending, 2*1000; got != want {
		t.Errorf("default MaxAckPending: got %d, want %d", got, want)
	}
	if cfg.Partitions != 8 || cfg.LeaseTTL != 6*time.Second || cfg.Replicas != 1 {
		t.Errorf("defaults: got partitions %d, lease_ttl %v, replicas %d; want 8, 6s, 1", cfg.Partitions, cfg.LeaseTTL, cfg.Replicas)
	}
	for _, tt := range []struct{ name, got, want string }{
		{"OrderSubject", cfg.OrderSubject("alibaba", "aff-1"), "orders.alibaba.aff-1"},
		{"OrderSubject escaped", cfg.OrderSubject("alibaba", "a.b"), "orders.alibaba.~612e62"},
		{"DeadSubject", cfg.DeadSubject("alibaba", "aff-1"), "orders.dead.alibaba.aff-1"},
		{"PartitionFilter", cfg.PartitionFilter(3), "orders.p.3.*.*"},
		{"EventsFilter", cfg.EventsFilter(""), "orders.p.*.*.*"},
		{"EventsFilter program", cfg.EventsFilter("alibaba"), "orders.p.*.alibaba.*"},
		{"PartitionConsumer", cfg.PartitionConsumer(3), "commissioner-p3"},
		{"OwnersBucket", cfg.OwnersBucket(), "ORDERS_commissioner_owners"},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestConfigValidateNamesEveryProblem(t *testing.T) {
	cfg := stream.DefaultConfig()
	cfg.Stream = "ORDERS.X"
	cfg.Subjects = "orders.*"
	cfg.Durable = "a b"
	cfg.BatchSize = -1
	cfg.NakDelay = time.Minute
	cfg.NakMaxDelay = time.Second
	cfg.URL = "nats://ok:4222, ::bad::"
	cfg.Partitions = -1
	cfg.Replicas = 7
	cfg.LeaseTTL = 100 * time.Millisecond
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate: got nil, want errors")
	}
	for _, field := range []string{"stream:", "subjects:", "durable:", "batch_size:", "nak_max_delay:", "url:", "partitions:", "replicas:", "lease_ttl:"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("Validate: got %q, want a problem with %s", err, field)
		}
	}
}

func TestConfigStringMasksSecrets(t *testing.T) {
	cfg := stream.DefaultConfig()
	cfg.URL = "nats://alice:s3cret@n1:4222,nats://t0ken@n2:4222"
	cfg.Token = "hunter2"
	s := cfg.String()
	for _, secret := range []string{"s3cret", "t0ken", "hunter2", "alice"} {
		if strings.Contains(s, secret) {
			t.Errorf("String(): got %q, want %q masked", s, secret)
		}
	}
	for _, want := range []string{"nats://****@n1:4222", "nats://****@n2:4222", `token="****"`} {
		if !strings.Contains(s, want) {
			t.Errorf("String(): got %q, want it to contain %q", s, want)
		}
	}
}

func TestPublisherMessage(t *testing.T) {
	p, err := stream.NewPublisher(nil, stream.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, raw         string
		subject, idPrefix string
		id                string // the whole Nats-Msg-Id, for an event with an event_id
	}{
		{"plain", `{"order_id":"o-1","program":"alibaba","affiliate_id":"aff-1","amount":"1"}`, "orders.alibaba.aff-1", "alibaba:o-1:", ""},
		{"keys after nested objects", `{"buyer":{"program":"x","order_id":"y","affiliate_id":"z"},"items":[{"program":"z"}],"order_id":"o-2", "program" : "alibaba","affiliate_id":"a"}`, "orders.alibaba.a", "alibaba:o-2:", ""},
		{"no program", `{"order_id":"o-3","affiliate_id":"a"}`, "orders.~.a", ":o-3:", ""},
		{"no affiliate", `{"order_id":"o-3","program":"alibaba"}`, "orders.alibaba.~", "alibaba:o-3:", ""},
		{"program dead is a program like any other", `{"program":"dead","order_id":"o-4","affiliate_id":"a"}`, "orders.dead.a", "dead:o-4:", ""},
		{"ids that are not tokens", `{"program":"a.b","order_id":"o-5","affiliate_id":"José *>"}`, "orders.~612e62.~4a6f73c3a9202a3e", "a.b:o-5:", ""},
		{"escaped values are decoded", `{"program":"ali\u0062aba","order_id":"o\n6","affiliate_id":"a\u002e1"}`, "orders.alibaba.~612e31", "::", ""},
		{"escaped key", `{"pro\u0067ram":"alibaba","order_id":"o-7","affiliate_id":"a"}`, "orders.alibaba.a", "alibaba:o-7:", ""},
		{"the last of a key given twice", `{"program":"x","order_id":"o-8","affiliate_id":"a","affiliate_id":"b","program":"alibaba"}`, "orders.alibaba.b", "alibaba:o-8:", ""},
		{"program not a string", `{"program":7,"order_id":"o-9","affiliate_id":"a"}`, "orders.~.a", ":o-9:", ""},
		{"invalid UTF-8", "{\"program\":\"alibaba\",\"order_id\":\"o-10\",\"affiliate_id\":\"a\xff\"}", "orders.alibaba.~", "alibaba:o-10:", ""},
		{"malformed after the ids", `{"order_id":"o-11","program":"alibaba","affiliate_id":"a","x":`, "orders.alibaba.a", "alibaba:o-11:", ""},
		{"malformed before the ids", `{"order_id":"o-12","x":[,"program":"alibaba"}`, "orders.~.~", ":o-12:", ""},
		{"not an object", `["program","alibaba"]`, "orders.~.~", "::", ""},
		{"empty", ``, "orders.~.~", "::", ""},
		{"the publisher's event_id", `{"program":"alibaba","order_id":"o-13","affiliate_id":"a","event_id":"evt-1"}`, "orders.alibaba.a", "",
			"alibaba:o-13:id:evt-1"},
		{"an event_id that is not plain is hashed", `{"program":"alibaba","order_id":"o-14","affiliate_id":"a","event_id":"evt 1"}`, "orders.alibaba.a", "",
			"alibaba:o-14:id#" + func() string { s := sha256.Sum256([]byte("evt 1")); return hex.EncodeToString(s[:8]) }()},
		{"an escaped event_id: the content", `{"program":"alibaba","order_id":"o-15","affiliate_id":"a","event_id":"e\u0031"}`, "orders.alibaba.a", "alibaba:o-15:", ""},
		{"an event_id not a string: the content", `{"program":"alibaba","order_id":"o-16","affiliate_id":"a","event_id":7}`, "orders.alibaba.a", "alibaba:o-16:", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := p.Message([]byte(tt.raw))
			if m.Subject != tt.subject {
				t.Errorf("subject: got %q, want %q", m.Subject, tt.subject)
			}
			sum := sha256.Sum256([]byte(tt.raw))
			want := tt.idPrefix + hex.EncodeToString(sum[:8])
			if tt.id != "" {
				want = tt.id
			}
			if got := m.Header.Get(jetstream.MsgIDHeader); got != want {
				t.Errorf("Nats-Msg-Id: got %q, want %q", got, want)
			}
		})
	}
}

func TestTokenEscaping(t *testing.T) {
	for _, tt := range []struct{ id, token string }{
		{"alibaba", "alibaba"},
		{"aff-0017_X", "aff-0017_X"},
		{"", "~"},
		{"a.b", "~612e62"},
		{"*", "~2a"},
		{">", "~3e"},
		{"a b", "~612062"},
		{"José", "~4a6f73c3a9"},
		{"~", "~7e"},
		{"~612e62", "~7e363132653632"},
	} {
		if got := stream.Token(tt.id); got != tt.token {
			t.Errorf("Token(%q): got %q, want %q", tt.id, got, tt.token)
		}
		if got, err := stream.ParseToken(tt.token); err != nil || got != tt.id {
			t.Errorf("ParseToken(%q): got %q, %v; want %q", tt.token, got, err, tt.id)
		}
	}
	for _, tok := range []string{"", "~6", "~ZZ", "~6A", "~616263" /* "abc" is its own token */, "a.b", "a b", "é", "x~"} {
		if id, err := stream.ParseToken(tok); !errors.Is(err, stream.ErrNotOrderSubject) {
			t.Errorf("ParseToken(%q): got %q, %v; want ErrNotOrderSubject", tok, id, err)
		}
	}
}

// FuzzToken: every id has one token, a valid NATS subject token, that reads back as the id.
func FuzzToken(f *testing.F) {
	for _, s := range []string{"", "alibaba", "a.b", "José", "~", "\x00\xff", "a*b>c d\t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		tok := stream.Token(id)
		if tok == "" || strings.ContainsAny(tok, ".*> \t\r\n") {
			t.Fatalf("Token(%q) = %q: not a subject token", id, tok)
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] < 0x21 || tok[i] > 0x7e {
				t.Fatalf("Token(%q) = %q: byte %#x is not printable ASCII", id, tok, tok[i])
			}
		}
		back, err := stream.ParseToken(tok)
		if err != nil || back != id {
			t.Fatalf("ParseToken(Token(%q)) = %q, %v", id, back, err)
		}
		if id2, err := stream.ParseToken(id); err == nil && stream.Token(id2) != id {
			t.Fatalf("ParseToken(%q) = %q, but Token of that is %q: two tokens for one id", id, id2, stream.Token(id2))
		}
	})
}

func TestParseSubject(t *testing.T) {
	cfg := stream.DefaultConfig()
	for _, tt := range []struct {
		subject, program, affiliate string
		partition                   int
	}{
		{"orders.p.3.alibaba.aff-1", "alibaba", "aff-1", 3},
		{"orders.p.0.~612e62.~", "a.b", "", 0},
		{"orders.p.7.~.~4a6f73c3a9", "", "José", 7},
	} {
		n, program, affiliate, err := cfg.ParseSubject(tt.subject)
		if err != nil || n != tt.partition || program != tt.program || affiliate != tt.affiliate {
			t.Errorf("ParseSubject(%q): got %d, %q, %q, %v; want %d, %q, %q", tt.subject, n, program, affiliate, err, tt.partition, tt.program, tt.affiliate)
		}
	}
	for _, bad := range []string{
		"orders.alibaba.aff-1",          // as published, not as stored
		"orders.dead.alibaba.aff-1",     // a dead letter
		"orders.p.8.alibaba.aff-1",      // partition out of range
		"orders.p.03.alibaba.aff-1",     // not the partition's spelling
		"orders.p.-1.alibaba.aff-1",     //
		"orders.p.x.alibaba.aff-1",      //
		"orders.p.3.alibaba",            // a token short
		"orders.p.3.alibaba.aff-1.more", // a token too many
		"orders.p.3.~ZZ.aff-1",          // not an escaping
		"other.p.3.alibaba.aff-1",       // another prefix
	} {
		if _, _, _, err := cfg.ParseSubject(bad); !errors.Is(err, stream.ErrNotOrderSubject) {
			t.Errorf("ParseSubject(%q): got %v, want ErrNotOrderSubject", bad, err)
		}
	}
}

// TestEmbeddedServerRequiresCredentials: a local process without the credentials in the data
// directory cannot connect to the embedded server; the publisher's user may publish order events
// but neither purge the stream nor read it; the service's own connections (no URL: Connect reads
// the data directory) may do anything.
func TestEmbeddedServerRequiresCredentials(t *testing.T) {
	ctx := context.Background()
	b := startBroker(t, testConfig(t))
	auth, err := stream.ReadEmbeddedAuth(b.cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(b.cfg.DataDir, stream.AuthFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, want mode 0600", stream.AuthFile, err)
	}
	url := b.cfg.URL
	if nc, err := nats.Connect(url, nats.Timeout(3*time.Second)); err == nil {
		nc.Close()
		t.Fatal("an unauthenticated client connected to the embedded server")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("unauthenticated: got %v, want an authorization error", err)
	}
	if nc, err := nats.Connect(url, nats.UserInfo(auth.Service.User, "guessed"), nats.Timeout(3*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a wrong password connected")
	}

	pub, err := nats.Connect(url, nats.UserInfo(auth.Publisher.User, auth.Publisher.Password), nats.Timeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	pjs, err := jetstream.New(pub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pjs.Publish(ctx, "orders.alibaba.aff-1", []byte(`{}`)); err != nil {
		t.Errorf("the publisher publishing an order event: %v", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := pjs.DeleteStream(tctx, b.cfg.Stream); err == nil {
		t.Error("the publisher deleted the stream")
	}
	if _, err := pjs.Stream(tctx, b.cfg.Stream); err == nil {
		t.Error("the publisher read the stream's info")
	}
	// The service's own connection, by the data directory alone.
	own := b.cfg
	own.URL, own.User, own.Password = "", "", ""
	nc, js := connect(t, own)
	defer nc.Close()
	s, err := js.Stream(ctx, b.cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("the stream holds %d messages, want the publisher's 1", n)
	}
}

func TestEmbeddedWritesItsURLAndRefusesASecondServer(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	emb, err := stream.StartEmbedded(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	urlFile := filepath.Join(cfg.DataDir, stream.URLFile)
	b, err := os.ReadFile(urlFile)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(b)), emb.ClientURL(); got != want {
		t.Errorf("%s: got %q, want %q", stream.URLFile, got, want)
	}
	if strings.HasSuffix(emb.ClientURL(), ":4222") {
		t.Errorf("ClientURL: got %q, want a free port, not 4222", emb.ClientURL())
	}

	// Another process (`commissioner publish`) finds it with no URL configured.
	nc, err := stream.Connect(ctx, cfg)
	if err != nil {
		t.Fatalf("Connect with no URL: got %v, want the embedded server", err)
	}
	if got := nc.ConnectedUrl(); got != emb.ClientURL() {
		t.Errorf("connected to %q, want %q", got, emb.ClientURL())
	}
	nc.Close()

	if _, err := stream.StartEmbedded(ctx, cfg); !errors.Is(err, stream.ErrEmbeddedRunning) {
		t.Errorf("second StartEmbedded on the same data dir: got %v, want ErrEmbeddedRunning", err)
	}
	if err := emb.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(urlFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Shutdown, %s: got %v, want it removed", stream.URLFile, err)
	}
	if _, err := stream.Connect(ctx, cfg); err == nil {
		t.Error("Connect after Shutdown: got nil, want an error")
	}

	// The data survives a restart.
	emb2, err := stream.StartEmbedded(ctx, cfg)
	if err != nil {
		t.Fatalf("restarting on the same data dir: %v", err)
	}
	if err := emb2.Shutdown(); err != nil {
		t.Fatal(err)
	}
}

func TestEnsureStreamIsIdempotent(t *testing.T) {
	b := startBroker(t, testConfig(t))
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		s, err := stream.EnsureStream(ctx, b.js, b.cfg)
		if err != nil {
			t.Fatalf("EnsureStream #%d: %v", i+2, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c := info.Config
		if c.Storage != jetstream.FileStorage || c.Duplicates != b.cfg.DuplicateWindow || !slices.Equal(c.Subjects, []string{"orders.*.*"}) {
			t.Errorf("stream config: got storage %v, duplicates %v, subjects %v; want file, %v, [orders.*.*]",
				c.Storage, c.Duplicates, c.Subjects, b.cfg.DuplicateWindow)
		}
		want := jetstream.SubjectTransformConfig{Source: "orders.*.*", Destination: "orders.p.{{partition(8,1,2)}}.{{wildcard(1)}}.{{wildcard(2)}}"}
		if c.SubjectTransform == nil || *c.SubjectTransform != want {
			t.Errorf("subject transform: got %+v, want %+v", c.SubjectTransform, want)
		}
		if c.PersistMode != jetstream.DefaultPersistMode {
			t.Errorf("persist mode: got %v, want the default (write before the publish ack)", c.PersistMode)
		}
		if c.MaxAge != 30*24*time.Hour || c.MaxBytes != -1 {
			t.Errorf("limits: max age %v, max bytes %d; want the defaults, 720h and none", c.MaxAge, c.MaxBytes)
		}
	}
	// A changed configuration updates the stream in place.
	cfg := b.cfg
	cfg.DuplicateWindow = time.Minute
	cfg.MaxAge, cfg.MaxBytes = 48*time.Hour, 1<<30
	s, err := stream.EnsureStream(ctx, b.js, cfg)
	if err != nil {
		t.Fatalf("EnsureStream with a changed config: %v", err)
	}
	if c := s.CachedInfo().Config; c.Duplicates != time.Minute || c.MaxAge != 48*time.Hour || c.MaxBytes != 1<<30 {
		t.Errorf("updated stream: got duplicate window %v, max age %v, max bytes %d; want 1m0s, 48h, 1 GiB", c.Duplicates, c.MaxAge, c.MaxBytes)
	}
	// except the persist mode, which the server cannot change,
	async := cfg
	async.AsyncPersist = true
	if _, err := stream.EnsureStream(ctx, b.js, async); err == nil || !strings.Contains(err.Error(), "async_persist") {
		t.Errorf("EnsureStream changing the persist mode: got %v, want an error naming async_persist", err)
	}
	// and the partition count, which would move events of one affiliate to another partition.
	more := cfg
	more.Partitions = 16
	_, err = stream.EnsureStream(ctx, b.js, more)
	if !errors.Is(err, stream.ErrPartitionsChanged) || !strings.Contains(err.Error(), "8 partitions") || !strings.Contains(err.Error(), "nats.partitions is 16") {
		t.Errorf("EnsureStream with 16 partitions on a stream of 8: got %v, want ErrPartitionsChanged naming both counts", err)
	}
	if got := s.CachedInfo().Config.SubjectTransform.Destination; !strings.Contains(got, "partition(8,") {
		t.Errorf("after the refusal the transform is %q, want it unchanged", got)
	}
}

// A stream made before partitions (events on orders.<program>) is refused, not silently
// turned into one whose old events nobody reads.
func TestEnsureStreamRefusesAStreamWithoutPartitions(t *testing.T) {
	cfg := testConfig(t)
	emb, err := stream.StartEmbedded(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emb.Shutdown() })
	// no URL: Connect finds the embedded server and its users in the data directory
	_, js := connect(t, cfg)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: cfg.Stream, Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.EnsureStream(ctx, js, cfg); err == nil || !strings.Contains(err.Error(), "no partition transform") {
		t.Errorf("EnsureStream on a stream without partitions: got %v, want an error saying it has no partition transform", err)
	}
}

// The server maps each (program, affiliate) to one partition and stores the event on a subject
// that names the partition and both ids; publishes off the convention fail instead of being
// stored where nobody reads.
func TestStreamPartitionsEventsByProgramAndAffiliate(t *testing.T) {
	b := startBroker(t, testConfig(t))
	ctx := context.Background()
	p := b.publisher(t)
	affiliates := []string{"aff-1", "aff-2", "a.b", "José", "", "aff-3", "aff-4", "aff-5", "aff-6", "aff-7", "aff-8"}
	partitionOf := map[[2]string]int{}
	used := map[int]bool{}
	for round := range 3 {
		for _, program := range []string{"alibaba", "x y"} {
			for _, aff := range affiliates {
				raw := fmt.Sprintf(`{"order_id":"o-%d","program":%q,"affiliate_id":%q}`, round, program, aff)
				if ok, err := p.Publish(ctx, []byte(raw)); err != nil || !ok {
					t.Fatalf("publishing %s: got %v, %v", raw, ok, err)
				}
			}
		}
	}
	s, err := b.js.Stream(ctx, b.cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for subj, count := range info.State.Subjects {
		n, program, aff, err := b.cfg.ParseSubject(subj)
		if err != nil {
			t.Errorf("stored subject %s: %v", subj, err)
			continue
		}
		key := [2]string{program, aff}
		if prev, ok := partitionOf[key]; ok && prev != n {
			t.Errorf("(%q, %q) stored in partitions %d and %d", program, aff, prev, n)
		}
		partitionOf[key] = n
		used[n] = true
		if count != 3 {
			t.Errorf("%s: got %d events, want 3", subj, count)
		}
		total += int(count)
	}
	if total != 3*2*len(affiliates) || len(partitionOf) != 2*len(affiliates) {
		t.Errorf("stored %d events of %d pairs, want %d of %d", total, len(partitionOf), 3*2*len(affiliates), 2*len(affiliates))
	}
	if len(used) < 4 {
		t.Errorf("22 pairs fell in %d of 8 partitions, want them spread", len(used))
	}
	for _, subj := range []string{"orders.alibaba", "orders.p.1.alibaba.aff-1", "orders.a.b.c"} {
		if _, err := b.js.Publish(ctx, subj, []byte(`{}`)); err == nil {
			t.Errorf("publishing to %s: got nil, want an error (no stream captures it)", subj)
		}
	}
}

func TestPublishConsumeEachEventOnce(t *testing.T) {
	b := startBroker(t, testConfig(t))
	const n = 3000
	lines := genOrders(n, 1)
	b.publish(t, lines)

	snk := newSink(b.cfg)
	proc := &engineProcessor{eng: newEngine(t), sink: snk}
	c := newConsumer(t, b, proc, nil)
	stop := run(t, c)
	waitFor(t, 30*time.Second, "every event processed", func() (bool, string) {
		return snk.count() == n, fmt.Sprintf("%d of %d", snk.count(), n)
	})
	waitSettled(t, b)
	if got := len(c.Owned()); got != b.cfg.Partitions {
		t.Errorf("a lone consumer owns %d partitions, want all %d", got, b.cfg.Partitions)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	snk.check(t)

	snk.mu.Lock()
	for _, line := range lines {
		var o struct {
			OrderID string `json:"order_id"`
		}
		if err := json.Unmarshal(line, &o); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(line)
		id := "alibaba:" + o.OrderID + ":" + hex.EncodeToString(sum[:8])
		if got := snk.processed[id]; got != 1 {
			t.Fatalf("event %s: processed %d times, want 1", id, got)
		}
	}
	if len(snk.dead) != 0 {
		t.Errorf("dead letters: got %d (%v), want none for valid orders", len(snk.dead), firstOf(snk.dead))
	}
	snk.mu.Unlock()
	st := c.Stats()
	if st.Consumed != n || st.Acked != n || st.Naked != 0 || st.Termed != 0 || st.SettleErrors != 0 || st.Acquired != uint64(b.cfg.Partitions) {
		t.Errorf("stats: got %+v, want %d consumed and acked, %d partitions acquired, nothing else", st, n, b.cfg.Partitions)
	}
	if st.Released != uint64(b.cfg.Partitions) || st.Lost != 0 {
		t.Errorf("after Run: got %d partitions released and %d lost, want %d and 0", st.Released, st.Lost, b.cfg.Partitions)
	}
	// Stopped, it left the owners bucket: no lease and no member is left behind.
	kv, err := b.js.KeyValue(context.Background(), b.cfg.OwnersBucket())
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := kv.Keys(context.Background()); !errors.Is(err, jetstream.ErrNoKeysFound) {
		t.Errorf("owners bucket after Run: got keys %v (%v), want none", keys, err)
	}
	proc.mu.Lock()
	defer proc.mu.Unlock()
	if len(proc.acquired) != b.cfg.Partitions || len(proc.released) != b.cfg.Partitions {
		t.Errorf("Acquire called %d times and Release %d, want %d each", len(proc.acquired), len(proc.released), b.cfg.Partitions)
	}
}

func firstOf(m map[string]string) string {
	for k, v := range m {
		return k + ": " + v
	}
	return ""
}

func TestRepublishedEventsAreDropped(t *testing.T) {
	b := startBroker(t, testConfig(t))
	ctx := context.Background()
	lines := genOrders(500, 2)
	b.publish(t, lines)

	p := b.publisher(t)
	st, err := p.PublishLines(ctx, bytes.NewReader(joinLines(lines)), 64)
	if err != nil {
		t.Fatal(err)
	}
	if want := (stream.PublishStats{Lines: 500, Duplicates: 500}); !reflect.DeepEqual(st, want) {
		t.Errorf("re-publishing: got %+v, want %+v", st, want)
	}
	if ok, err := p.Publish(ctx, lines[0]); err != nil || ok {
		t.Errorf("Publish of a published event: got accepted=%v, %v; want false, nil", ok, err)
	}
	// The same order with a new status is a new event.
	changed := bytes.Replace(lines[0], []byte(`"status":"`), []byte(`"status":"x`), 1)
	if ok, err := p.Publish(ctx, changed); err != nil || !ok {
		t.Errorf("Publish of a changed event: got accepted=%v, %v; want true, nil", ok, err)
	}
	s, err := b.js.Stream(ctx, b.cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.State.Msgs, uint64(501); got != want {
		t.Errorf("messages in the stream: got %d, want %d", got, want)
	}
}

// While the store is down each partition's owner tries the same batch again and again (with
// backoff), acking nothing; once it is back, every event is stored once, in stream order per
// partition, and nothing was ever handed back.
func TestStoreDownTheBatchIsRetriedInOrder(t *testing.T) {
	b := startBroker(t, testConfig(t))
	const n = 1000
	b.publish(t, genOrders(n, 3))

	var down atomic.Bool
	down.Store(true)
	var mu sync.Mutex
	attempts := map[uint64]int{} // first stream sequence of a batch -> attempts while down
	snk := newSink(b.cfg)
	proc := &engineProcessor{eng: newEngine(t), sink: snk, fail: func(_ stream.Partition, batch []engine.Event) error {
		if !down.Load() {
			return nil
		}
		mu.Lock()
		attempts[batch[0].StreamSeq]++
		mu.Unlock()
		return errStoreDown
	}}
	c := newConsumer(t, b, proc, nil)
	stop := run(t, c)

	// Every partition's first batch is offered, fails, and is offered again; nothing is acked.
	waitFor(t, 30*time.Second, "each partition's batch tried three times while the store is down", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		tried := 0
		for _, k := range attempts {
			if k >= 3 {
				tried++
			}
		}
		return tried == b.cfg.Partitions, fmt.Sprintf("batches tried: %v", attempts)
	})
	if st := c.Stats(); st.Acked != 0 || st.Termed != 0 || st.Naked != 0 || snk.count() != 0 {
		t.Fatalf("while the store is down: got %+v and %d stored, want nothing acked, termed, naked or stored", st, snk.count())
	}
	mu.Lock()
	if len(attempts) != b.cfg.Partitions {
		t.Errorf("while the store is down, %d different batches were tried, want one per partition (%d): %v", len(attempts), b.cfg.Partitions, attempts)
	}
	mu.Unlock()

	down.Store(false)
	waitFor(t, 30*time.Second, "every event processed after the store is back", func() (bool, string) {
		return snk.count() == n, fmt.Sprintf("%d of %d", snk.count(), n)
	})
	waitSettled(t, b)
	if err := stop(); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	snk.check(t)
	if st := c.Stats(); st.Acked != n || st.Naked != 0 || st.Lost != 0 {
		t.Errorf("stats: got %+v, want %d acked, nothing naked or lost", st, n)
	}
}

// TestNeedsOperatorKeepsTheBatchAndAlerts: a batch refused until an operator acts (a policy file
// changed under a used version, say) is kept — nothing acked, termed or dead-lettered — retried at
// the longest delay, and logged at ERROR; once the operator has acted, every event is stored.
func TestNeedsOperatorKeepsTheBatchAndAlerts(t *testing.T) {
	cfg := testConfig(t)
	cfg.NakMaxDelay = 300 * time.Millisecond
	b := startBroker(t, cfg)
	const n = 200
	b.publish(t, genOrders(n, 5))

	var refused atomic.Bool
	refused.Store(true)
	var attempts atomic.Int64
	snk := newSink(b.cfg)
	proc := &engineProcessor{eng: newEngine(t), sink: snk, fail: func(_ stream.Partition, batch []engine.Event) error {
		if !refused.Load() {
			return nil
		}
		attempts.Add(1)
		return fmt.Errorf("%w: alibaba version 1 is stored with another digest", stream.ErrNeedsOperator)
	}}
	logs := &syncBuffer{}
	c, err := stream.NewConsumer(context.Background(), b.js, b.cfg, proc, nil, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, c)
	waitFor(t, 30*time.Second, "the refusal logged at ERROR", func() (bool, string) {
		return strings.Contains(logs.String(), `level=ERROR msg="batch refused until an operator acts`), logs.String()
	})
	time.Sleep(time.Second)
	// At the longest delay, a partition tries its batch at most every 300 ms: a few times a second
	// in all, where a doubling delay from 20 ms would have tried it many more times.
	if got, most := attempts.Load(), int64(b.cfg.Partitions)*(1000/300+2); got > most {
		t.Errorf("%d attempts in about a second, want at most %d (one per partition per %v)", got, most, cfg.NakMaxDelay)
	}
	if st := c.Stats(); st.Acked != 0 || st.Termed != 0 || st.Naked != 0 || snk.count() != 0 {
		t.Fatalf("while refused: got %+v and %d stored, want nothing acked, termed, naked or stored", st, snk.count())
	}
	if strings.Contains(logs.String(), "batch failed; retrying it") {
		t.Errorf("a refusal that needs an operator was logged as a transient failure:\n%s", logs.String())
	}
	refused.Store(false)
	waitFor(t, 30*time.Second, "every event stored once the operator acted", func() (bool, string) {
		return snk.count() == n, fmt.Sprintf("%d of %d", snk.count(), n)
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	snk.check(t)
}

func TestMalformedEventsAreDeadLettered(t *testing.T) {
	b := startBroker(t, testConfig(t))
	ctx := context.Background()
	valid := genOrders(1000, 4)
	const good = `"affiliate_id":"a","status":"completed","placed_at":"2025-03-01T00:00:00Z","buyer":{"id":"b","country":"US","new":true},"currency":"USD","amount":"10.00"`
	var bads []string
	for i := 0; i < 50; i++ {
		bads = append(bads,
			fmt.Sprintf(`{"order_id":"trunc-%d","program":"alibaba"`, i),
			fmt.Sprintf(`not json %d`, i),
			fmt.Sprintf(`[%d]`, i),
			fmt.Sprintf(`{"order_id":"status-%d","program":"alibaba",%s,"status":"shipped"}`, i, good),
			fmt.Sprintf(`{"order_id":"neg-%d","program":"alibaba",%s,"amount":"-1"}`, i, strings.Replace(good, `,"amount":"10.00"`, "", 1)),
			fmt.Sprintf(`{"order_id":"nope-%d","program":"nope",%s}`, i, good),
			fmt.Sprintf(`{"order_id":"dead-%d","program":"dead",%s}`, i, good),
			fmt.Sprintf(`{"order_id":"dots-%d","program":"a.b",%s}`, i, good),
			fmt.Sprintf(`{"order_id":"missing-%d"}`, i),
		)
	}
	pub := b.publisher(t)
	var lines [][]byte
	wantDead := map[string]int{} // dead-letter subject -> count
	for i, v := range valid {
		lines = append(lines, v)
		if i < len(bads) {
			lines = append(lines, []byte(bads[i]))
			// orders.<program token>.<affiliate token> → orders.dead.<program token>.<affiliate token>
			wantDead["orders.dead."+strings.TrimPrefix(pub.Message([]byte(bads[i])).Subject, "orders.")]++
		}
	}
	b.publish(t, lines)

	snk := newSink(b.cfg)
	c := newConsumer(t, b, &engineProcessor{eng: newEngine(t), sink: snk}, nil)
	stop := run(t, c)
	waitFor(t, 30*time.Second, "every event processed", func() (bool, string) {
		return snk.count() == len(lines), fmt.Sprintf("%d of %d", snk.count(), len(lines))
	})
	waitSettled(t, b)
	if err := stop(); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	snk.check(t)

	snk.mu.Lock()
	if len(snk.decided) != len(valid) || len(snk.dead) != len(bads) {
		t.Errorf("got %d decided and %d dead, want %d and %d", len(snk.decided), len(snk.dead), len(valid), len(bads))
	}
	deadReasons := maps.Clone(snk.dead)
	snk.mu.Unlock()
	if st := c.Stats(); st.Termed != uint64(len(bads)) || st.Acked != uint64(len(valid)) {
		t.Errorf("stats: got %+v, want %d termed and %d acked", st, len(bads), len(valid))
	}

	// Every bad event is on orders.dead.<program token>.<affiliate token> in the dead-letter
	// stream, with its reason, and was never read back.
	s, err := b.js.Stream(ctx, b.cfg.DeadStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("orders.dead.>"))
	if err != nil {
		t.Fatal(err)
	}
	for subj, want := range wantDead {
		if got := info.State.Subjects[subj]; got != uint64(want) {
			t.Errorf("dead letters on %s: got %d, want %d", subj, got, want)
		}
	}
	if len(info.State.Subjects) != len(wantDead) {
		t.Errorf("dead-letter subjects: got %v, want %v", info.State.Subjects, wantDead)
	}
	oc, err := b.js.OrderedConsumer(ctx, b.cfg.DeadStream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{"orders.dead.>"}})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := oc.Fetch(len(bads), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		got++
		id := m.Headers().Get(stream.HeaderEventID)
		want, ok := deadReasons[id]
		if !ok {
			t.Errorf("dead letter %q: not an event the processor dead-lettered", id)
			continue
		}
		if r := m.Headers().Get(stream.HeaderReason); r != want || r == "" {
			t.Errorf("dead letter %s: reason header %q, want %q", id, r, want)
		}
		if m.Headers().Get(stream.HeaderStreamSeq) == "" || !strings.HasPrefix(m.Headers().Get(stream.HeaderSubject), "orders.p.") {
			t.Errorf("dead letter %s: headers %v, want the stored subject and stream sequence", id, m.Headers())
		}
	}
	if got != len(bads) {
		t.Errorf("dead letters read back: got %d, want %d", got, len(bads))
	}
}

func TestShutdownFinishesTheBatchInFlight(t *testing.T) {
	b := startBroker(t, testConfig(t))
	const n = 1000
	b.publish(t, genOrders(n, 6))

	snk := newSink(b.cfg)
	entered, release := make(chan []string, 1), make(chan struct{})
	var first atomic.Bool
	proc := &engineProcessor{eng: newEngine(t), sink: snk, before: func(_ stream.Partition, batch []engine.Event) {
		if first.CompareAndSwap(false, true) {
			ids := make([]string, len(batch))
			for i, ev := range batch {
				ids[i] = ev.ID
			}
			entered <- ids
			<-release
		}
	}}
	c := newConsumer(t, b, proc, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	var inFlight []string
	select {
	case inFlight = <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("no batch reached the processor")
	}
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Run returned %v before the batch in flight finished", err)
	default:
	}
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: got %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the batch in flight finished")
	}
	// The blocked batch (and any other that was in flight with it) was finished and acked.
	snk.mu.Lock()
	for _, id := range inFlight {
		if snk.processed[id] != 1 {
			t.Errorf("event %s of the batch in flight: processed %d times, want 1", id, snk.processed[id])
		}
	}
	stored := len(snk.processed)
	snk.mu.Unlock()
	if st := c.Stats(); st.Acked != uint64(stored) || st.Acked < uint64(len(inFlight)) {
		t.Errorf("after shutdown: got %+v with %d stored, want every stored event acked (at least the %d in flight)", st, stored, len(inFlight))
	}
	acked := int(c.Stats().Acked)

	// Another consumer takes the rest, from where the store is; nothing is processed twice.
	c2 := newConsumer(t, b, &engineProcessor{eng: newEngine(t), sink: snk}, nil)
	stop := run(t, c2)
	waitFor(t, 30*time.Second, "every event processed", func() (bool, string) {
		return snk.count() == n, fmt.Sprintf("%d of %d", snk.count(), n)
	})
	waitSettled(t, b)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	snk.check(t)
	if got := c2.Stats().Acked; got != uint64(n-acked) {
		t.Errorf("second consumer acked %d, want %d", got, n-acked)
	}
}

// badProcessor reports a dead letter outside its batch.
type badProcessor struct{}

func (badProcessor) Acquire(context.Context, stream.Partition) (uint64, error) { return 0, nil }
func (badProcessor) Release(stream.Partition)                                  {}
func (badProcessor) Process(_ context.Context, _ stream.Partition, batch []engine.Event) (stream.BatchOutcome, error) {
	return stream.BatchOutcome{Dead: []stream.DeadLetter{{Index: len(batch), Reason: "?"}}}, nil
}

func TestProcessorContractViolationStopsRun(t *testing.T) {
	b := startBroker(t, testConfig(t))
	b.publish(t, genOrders(10, 7))
	c := newConsumer(t, b, badProcessor{}, nil)
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, stream.ErrProcessorContract) {
			t.Fatalf("Run: got %v, want ErrProcessorContract", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop on a broken contract")
	}
	// Naked counts also what other partitions had fetched and not started when Run stopped.
	if st := c.Stats(); st.Acked != 0 || st.Termed != 0 || st.Consumed == 0 || st.Naked < st.Consumed {
		t.Errorf("stats: got %+v, want every event consumed naked, none acked or termed", st)
	}
}

// testNATSURL is the external NATS server of the integration tests: COMMISSIONER_TEST_NATS_URL,
// or the one .ci/run starts on 4223 (a nats-server built from the module version we embed).
func testNATSURL() string {
	if u := os.Getenv("COMMISSIONER_TEST_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4223"
}

// TestExternalServer runs publish → consume against the external NATS server on a stream,
// subjects and durable of its own, deleted afterwards.
func TestExternalServer(t *testing.T) {
	u := testNATSURL()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	if !reachable(pu.Host) {
		if integration() {
			t.Fatalf("COMMISSIONER_INTEGRATION=1 but no NATS server at %s (COMMISSIONER_TEST_NATS_URL)", u)
		}
		t.Skipf("no NATS server at %s (COMMISSIONER_TEST_NATS_URL; set COMMISSIONER_INTEGRATION=1 to require it)", u)
	}
	unique := fmt.Sprintf("t%d", time.Now().UnixNano())
	cfg := testConfig(t)
	cfg.URL = u
	cfg.Stream = "COMMISSIONER_TEST_" + unique
	cfg.Subjects = unique + ".orders.>"
	cfg.Durable = "test"
	b := startBroker(t, cfg)
	t.Cleanup(func() {
		if err := stream.DeleteStream(context.Background(), b.js, cfg); err != nil {
			t.Error(err)
		}
	})
	const n = 2000
	b.publish(t, genOrders(n, 8))
	snk := newSink(b.cfg)
	c := newConsumer(t, b, &engineProcessor{eng: newEngine(t), sink: snk}, nil)
	stop := run(t, c)
	waitFor(t, 30*time.Second, "every event processed", func() (bool, string) {
		return snk.count() == n, fmt.Sprintf("%d of %d", snk.count(), n)
	})
	waitSettled(t, b)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	snk.check(t)
	if st := c.Stats(); st.Acked != n {
		t.Errorf("acked: got %d, want %d", st.Acked, n)
	}
}

// The version check refuses a nats-server before 2.10, which would accept the stream but ignore
// its partition transform: against the machine's packaged server on 4222 when it is a 2.9.
func TestServerBefore210IsRefused(t *testing.T) {
	if !reachable("127.0.0.1:4222") {
		t.Skip("no NATS server at 127.0.0.1:4222")
	}
	nc, err := nats.Connect("nats://127.0.0.1:4222", nats.Timeout(3*time.Second))
	if err != nil {
		t.Skipf("connecting to 127.0.0.1:4222: %v", err)
	}
	defer nc.Close()
	v := nc.ConnectedServerVersion()
	if !strings.HasPrefix(v, "2.9.") {
		t.Skipf("the server at 127.0.0.1:4222 is nats-server %s, not a 2.9", v)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.URL = "nats://127.0.0.1:4222"
	cfg.Stream = fmt.Sprintf("COMMISSIONER_VERSION_%d", time.Now().UnixNano())
	ctx := context.Background()
	_, err = stream.EnsureStream(ctx, js, cfg)
	if !errors.Is(err, stream.ErrServerTooOld) || !strings.Contains(err.Error(), "nats-server "+v) || !strings.Contains(err.Error(), "2.10.0 or later") {
		t.Errorf("EnsureStream on nats-server %s: got %v, want ErrServerTooOld naming %s and 2.10.0", v, err, v)
	}
	if _, err := stream.NewConsumer(ctx, js, cfg, badProcessor{}, nil, nil); !errors.Is(err, stream.ErrServerTooOld) {
		t.Errorf("NewConsumer on nats-server %s: got %v, want ErrServerTooOld", v, err)
	}
	if _, err := js.Stream(ctx, cfg.Stream); !errors.Is(err, jetstream.ErrStreamNotFound) && !errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		t.Errorf("after the refusal, stream %s: got %v, want it not created", cfg.Stream, err)
	}
}

func TestClosedConnectionStopsRunAndLosesNothing(t *testing.T) {
	b := startBroker(t, testConfig(t))
	const n = 500
	b.publish(t, genOrders(n, 12))

	snk := newSink(b.cfg)
	nc, js := connect(t, b.cfg)
	var once sync.Once
	proc := &engineProcessor{eng: newEngine(t), sink: snk, before: func(stream.Partition, []engine.Event) {
		once.Do(nc.Close) // the connection dies while the batch is being stored
	}}
	c := newConsumerOn(t, js, b.cfg, proc, nil)
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("Run: got %v, want an error wrapping nats.ErrConnectionClosed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop when its connection closed")
	}
	if st := c.Stats(); st.Acked != 0 || st.SettleErrors == 0 {
		t.Errorf("stats: got %+v, want nothing acked and the failed acks counted", st)
	}

	// Another process gets everything once the dead one's leases expire; what the dead one
	// stored is not processed again.
	c2 := newConsumer(t, b, &engineProcessor{eng: newEngine(t), sink: snk}, nil)
	stop := run(t, c2)
	waitFor(t, 30*time.Second, "every event processed", func() (bool, string) {
		return snk.count() == n, fmt.Sprintf("%d of %d", snk.count(), n)
	})
	waitSettled(t, b)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	snk.check(t)
}

func TestPublishLinesCountsFailures(t *testing.T) {
	cfg := testConfig(t)
	b := startBroker(t, cfg)
	other := cfg
	other.Subjects = "elsewhere.>" // no stream captures these subjects
	p, err := stream.NewPublisher(b.js, other)
	if err != nil {
		t.Fatal(err)
	}
	input := "\n" + string(joinLines(genOrders(5, 13))) + "  \n"
	st, err := p.PublishLines(context.Background(), strings.NewReader(input), 2)
	if err == nil || !strings.Contains(err.Error(), "publishing line") {
		t.Errorf("PublishLines with no stream: got %v, want an error naming the line", err)
	}
	if want := (stream.PublishStats{Lines: 5, Failed: 5}); !reflect.DeepEqual(st, want) {
		t.Errorf("PublishLines with no stream: got %+v, want %+v", st, want)
	}
}

// TestSettledWaitsForTheAckFloor: the stream is Settled up to the last published event only
// once every partition consumer has settled its events up to it.
func TestSettledWaitsForTheAckFloor(t *testing.T) {
	b := startBroker(t, testConfig(t))
	snk := newSink(b.cfg)
	ctx := context.Background()
	const n = 50
	st, err := b.publisher(t).PublishLines(ctx, bytes.NewReader(joinLines(genOrders(n, 3))), 0)
	if err != nil || st.Accepted != n {
		t.Fatalf("publishing: got %+v, %v; want %d accepted", st, err, n)
	}
	if st.LastSeq != n { // a fresh stream numbers them 1…n
		t.Errorf("LastSeq: got %d, want %d", st.LastSeq, n)
	}
	if ok, err := stream.Settled(ctx, b.js, b.cfg, st.LastSeq); ok || err != nil {
		t.Fatalf("Settled before any consumer ran: got %v, %v; want false, nil", ok, err)
	}
	c := newConsumer(t, b, &engineProcessor{eng: newEngine(t), sink: snk}, nil)
	stop := run(t, c)
	waitFor(t, 30*time.Second, "the partitions settled up to the last event", func() (bool, string) {
		ok, err := stream.Settled(ctx, b.js, b.cfg, st.LastSeq)
		return ok, fmt.Sprint(err)
	})
	if got := snk.count(); got != n {
		t.Errorf("Settled with %d of %d events processed", got, n)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// 0: up to the stream's last sequence now.
	if ok, err := stream.Settled(ctx, b.js, b.cfg, 0); !ok || err != nil {
		t.Errorf("Settled after the run: got %v, %v; want true", ok, err)
	}
}

// TestPublishRejectsLines: a line Check refuses, and one over the server's max payload, are
// rejected with their line numbers and reasons and not published; the others are.
func TestPublishRejectsLines(t *testing.T) {
	b := startBroker(t, testConfig(t))
	p := b.publisher(t)
	p.Check = func(line []byte) error {
		if bytes.Contains(line, []byte(`"bad"`)) {
			return errors.New("a bad line")
		}
		return nil
	}
	good := genOrders(3, 17)
	huge := `{"order_id":"x","pad":"` + strings.Repeat("y", int(b.nc.MaxPayload())+10) + `"}`
	input := string(good[0]) + "\n{\"bad\":1}\n" + huge + "\n" + string(good[1]) + "\n\n" + string(good[2])
	st, err := p.PublishLines(context.Background(), strings.NewReader(input), 4)
	if err != nil {
		t.Fatal(err)
	}
	if st.Lines != 5 || st.Accepted != 3 || st.Rejected != 2 || len(st.Rejections) != 2 ||
		st.Rejections[0] != (stream.Rejection{Line: 2, Reason: "a bad line"}) || st.Rejections[1].Line != 3 ||
		!strings.Contains(st.Rejections[1].Reason, "over the server's max payload") {
		t.Errorf("got %+v; want 5 lines, 3 accepted, lines 2 and 3 rejected", st)
	}
}
