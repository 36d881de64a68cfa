package stream

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The subject convention. With the prefix "orders" (Config.Subjects "orders.>") and P partitions:
//
//	orders.<program token>.<affiliate token>           where a publisher publishes an order event
//	orders.p.<n>.<program token>.<affiliate token>     where the stream stores it: n = partition(P)
//	orders.dead.<program token>.<affiliate token>      a dead letter, never read back
//
// The stream captures exactly the first and the last shape (orders.*.* and orders.dead.*.*); a
// publish to any other subject under the prefix gets no stream ack, so it fails instead of
// being stored where no consumer reads. The stream's subject transform rewrites orders.*.* to
// orders.p.{{partition(P,1,2)}}.{{wildcard(1)}}.{{wildcard(2)}}: the server computes n from the
// two tokens (FNV-1a over the program token followed by the affiliate token, modulo P), so every
// event of one (program, affiliate) lands in one partition, in publish order, and a publisher
// never computes partitions. Dead letters have one token more than an order event, so the
// transform never captures them.

// Token maps an id (a program or an affiliate id) to the subject token it is published under.
// The escaping is deterministic and reversible (ParseToken), and every id has exactly one token:
//   - an id of one or more ASCII letters, digits, '-' and '_' is its own token: "aff-17" → "aff-17";
//   - any other id — empty, or with any other byte ('.', '*', '>', a space, non-ASCII, …) — is '~'
//     followed by the lower-case hexadecimal of its bytes (UTF-8): "" → "~", "a.b" → "~612e62",
//     "José" → "~4a6f73c3a9".
//
// A publisher that cannot read an id from the event (no such field, not a string, malformed
// JSON) publishes it as the empty id, "~": the event still reaches a partition, whose consumer
// dead-letters it with the engine's reason.
func Token(id string) string {
	if plainToken(id) {
		return id
	}
	b := make([]byte, 1+hex.EncodedLen(len(id)))
	b[0] = '~'
	hex.Encode(b[1:], []byte(id))
	return string(b)
}

// ParseToken is the inverse of Token. It refuses a token Token never produces: one with a byte
// other than letters, digits, '-', '_' and a leading '~'; '~' followed by anything but an even
// number of lower-case hexadecimal digits; or the '~' form of an id that is its own token.
func ParseToken(tok string) (string, error) {
	if plainToken(tok) {
		return tok, nil
	}
	rest, ok := strings.CutPrefix(tok, "~")
	if !ok {
		return "", fmt.Errorf("%w: %q is not a token (letters, digits, - and _, or ~ and hexadecimal)", ErrNotOrderSubject, tok)
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", fmt.Errorf("%w: %q: want lower-case hexadecimal after ~", ErrNotOrderSubject, tok)
		}
	}
	b, err := hex.DecodeString(rest)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrNotOrderSubject, tok, err)
	}
	id := string(b)
	if plainToken(id) {
		return "", fmt.Errorf("%w: %q: %q is its own token, not escaped", ErrNotOrderSubject, tok, id)
	}
	return id, nil
}

// plainToken: one or more ASCII letters, digits, '-' and '_'.
func plainToken(s string) bool {
	if s == "" {
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

// ErrNotOrderSubject: a subject or token that does not follow the convention.
var ErrNotOrderSubject = errors.New("not an order event subject")

const (
	partitionToken = "p"    // <prefix>.p.<n>.… holds the stored order events
	deadToken      = "dead" // <prefix>.dead.… holds dead letters
)

// OrderSubject is the subject a publisher publishes an order event of (program, affiliate) to:
// <prefix>.<Token(program)>.<Token(affiliate)>.
func (c Config) OrderSubject(program, affiliate string) string {
	return c.WithDefaults().prefix() + "." + Token(program) + "." + Token(affiliate)
}

// DeadSubject is the subject a dead letter of (program, affiliate) is published to:
// <prefix>.dead.<Token(program)>.<Token(affiliate)>.
func (c Config) DeadSubject(program, affiliate string) string {
	return c.WithDefaults().prefix() + "." + deadToken + "." + Token(program) + "." + Token(affiliate)
}

// PartitionFilter is the filter of partition n's stored events, <prefix>.p.<n>.*.*: its
// consumer's filter subject.
func (c Config) PartitionFilter(n int) string {
	return c.WithDefaults().prefix() + "." + partitionToken + "." + strconv.Itoa(n) + ".*.*"
}

// EventsFilter is the filter of every stored order event, <prefix>.p.*.*.*, or with a program
// only that program's, <prefix>.p.*.<Token(program)>.*. A consumer on it reads them in stream order.
func (c Config) EventsFilter(program string) string {
	p := c.WithDefaults().prefix() + "." + partitionToken + ".*."
	if program == "" {
		return p + "*.*"
	}
	return p + Token(program) + ".*"
}

// PartitionConsumer is the name of partition n's durable consumer, <durable>-p<n>.
func (c Config) PartitionConsumer(n int) string {
	return c.WithDefaults().Durable + "-p" + strconv.Itoa(n)
}

// OwnersBucket is the name of the KV bucket of partition leases and members,
// <stream>_<durable>_owners.
func (c Config) OwnersBucket() string {
	c = c.WithDefaults()
	return c.Stream + "_" + c.Durable + "_owners"
}

// ParseSubject reads a stored order event's subject, <prefix>.p.<n>.<program token>.<affiliate
// token>, back into its partition and ids (ParseToken). An id the publisher could not read comes
// back as "". Any other subject is an error matching ErrNotOrderSubject.
func (c Config) ParseSubject(subject string) (partition int, program, affiliate string, err error) {
	c = c.WithDefaults()
	rest, ok := strings.CutPrefix(subject, c.prefix()+"."+partitionToken+".")
	if !ok {
		return 0, "", "", fmt.Errorf("%w: %q does not start with %s.%s.", ErrNotOrderSubject, subject, c.prefix(), partitionToken)
	}
	toks := strings.Split(rest, ".")
	if len(toks) != 3 {
		return 0, "", "", fmt.Errorf("%w: %q: want %s.%s.<partition>.<program>.<affiliate>", ErrNotOrderSubject, subject, c.prefix(), partitionToken)
	}
	n, err := strconv.Atoi(toks[0])
	if err != nil || n < 0 || n >= c.Partitions || strconv.Itoa(n) != toks[0] {
		return 0, "", "", fmt.Errorf("%w: %q: partition %q is not 0…%d", ErrNotOrderSubject, subject, toks[0], c.Partitions-1)
	}
	if program, err = ParseToken(toks[1]); err != nil {
		return 0, "", "", fmt.Errorf("%q: program: %w", subject, err)
	}
	if affiliate, err = ParseToken(toks[2]); err != nil {
		return 0, "", "", fmt.Errorf("%q: affiliate: %w", subject, err)
	}
	return n, program, affiliate, nil
}

// deadSubjectFor is the dead-letter subject of a stored event's subject: its two id tokens
// under <prefix>.dead. A subject off the convention (which the consumer's filter never gives)
// falls back to the tokens of the empty ids.
func (c Config) deadSubjectFor(stored string) string {
	head := c.prefix() + "." + deadToken + "."
	if rest, ok := strings.CutPrefix(stored, c.prefix()+"."+partitionToken+"."); ok {
		if toks := strings.Split(rest, "."); len(toks) == 3 {
			return head + toks[1] + "." + toks[2]
		}
	}
	return head + Token("") + "." + Token("")
}

// transformSource and transformDestination are the stream's subject transform: an order event
// published to <prefix>.<program>.<affiliate> is stored on <prefix>.p.<n>.<program>.<affiliate>.
func (c Config) transformSource() string { return c.prefix() + ".*.*" }

func (c Config) transformDestination() string {
	return fmt.Sprintf("%s.%s.{{partition(%d,1,2)}}.{{wildcard(1)}}.{{wildcard(2)}}", c.prefix(), partitionToken, c.Partitions)
}

// streamSubjects are what the stream captures: order events as published, and nothing else, so
// that every sequence of the stream is an order event (reconciliation: Reconcile).
func (c Config) streamSubjects() []string { return []string{c.transformSource()} }

// deadSubjects are what the dead-letter stream captures.
func (c Config) deadSubjects() []string { return []string{c.prefix() + "." + deadToken + ".*.*"} }

// DeadStream is the name of the stream the dead letters are published to: Stream + "_DEAD".
func (c Config) DeadStream() string { return c.Stream + "_DEAD" }
