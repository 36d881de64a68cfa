package engine

import (
	"errors"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// scanner is a small JSON reader for the one schema engine decodes: orders. It reads strings
// (with every escape JSON allows), numbers as their exact text (never through float64),
// literals, and skips values it does not know. It allocates only for the strings it returns.
type scanner struct {
	b     []byte
	i     int
	depth int
}

const maxDepth = 32

var errEOF = errors.New("unexpected end of JSON")

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) syntax(what string) error {
	if s.i >= len(s.b) {
		return errEOF
	}
	return &syntaxError{offset: s.i, what: what}
}

// syntaxError is input that is not JSON: the decoder cannot step over it to read further fields.
type syntaxError struct {
	offset int
	what   string
}

func (e *syntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at offset %d: %s", e.offset, e.what)
}

// malformed reports whether err means the input is not JSON (or ends early), as opposed to a
// value of the wrong type or shape, which the scanner can step over.
func malformed(err error) bool {
	_, ok := err.(*syntaxError)
	return ok || err == errEOF
}

// peek returns the next non-space byte without consuming it (0 at the end).
func (s *scanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

func (s *scanner) consume(c byte) bool {
	if s.peek() == c {
		s.i++
		return true
	}
	return false
}

// str reads a JSON string; the scanner must be at its opening quote.
func (s *scanner) str() (string, error) {
	if s.peek() != '"' {
		return "", errNotString
	}
	s.i++
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			v := string(s.b[start:s.i])
			s.i++
			return v, nil
		case c == '\\':
			return s.strSlow(start)
		case c < 0x20:
			return "", s.syntax("control character in string")
		case c < utf8.RuneSelf:
			s.i++
		default:
			r, n := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && n == 1 {
				return "", s.syntax("invalid UTF-8 in string")
			}
			s.i += n
		}
	}
	return "", errEOF
}

// strBytes reads a JSON string like str, but returns its bytes: for a string without escapes
// they are the input's own bytes, not a copy, so they must not be kept beyond decoding. It lets
// the decoder compare, look up and parse values without allocating a string for each.
func (s *scanner) strBytes() ([]byte, error) {
	if s.peek() != '"' {
		return nil, errNotString
	}
	start := s.i + 1
	for i := start; i < len(s.b); i++ {
		c := s.b[i]
		if c == '"' {
			s.i = i + 1
			return s.b[start:i], nil
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			break // escapes, control characters and non-ASCII: let str check and decode them
		}
	}
	v, err := s.str()
	return []byte(v), err
}

// key reads an object key. The order schema's keys come back as constants, so reading an
// order allocates nothing for its keys.
func (s *scanner) key() (string, error) {
	b, err := s.strBytes()
	if err != nil {
		return "", err
	}
	if k, ok := orderKeys[string(b)]; ok { // a map index by string(b) does not allocate
		return k, nil
	}
	return string(b), nil
}

var orderKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"order_id", "program", "affiliate_id", "event_id", "status", "placed_at", "updated_at", "completed_at",
		"click_at", "buyer", "traffic_country", "currency", "amount", "refunded_amount", "items",
		"id", "country", "new", "sku", "category", "quantity"} {
		m[k] = k
	}
	return m
}()

// strSlow finishes a string that has escapes.
func (s *scanner) strSlow(start int) (string, error) {
	out := make([]byte, 0, s.i-start+16)
	out = append(out, s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return string(out), nil
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return "", errEOF
			}
			e := s.b[s.i+1]
			s.i += 2
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := s.hex4()
				if !ok {
					return "", s.syntax("bad \\u escape")
				}
				if utf16.IsSurrogate(r) {
					// A surrogate pair takes the next \u escape only when the two make a rune;
					// otherwise this one is U+FFFD and the next escape stands on its own, as in
					// encoding/json.
					save, pair := s.i, utf8.RuneError
					if s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
						s.i += 2
						if x, ok := s.hex4(); ok {
							pair = utf16.DecodeRune(r, x)
						}
					}
					if pair == utf8.RuneError {
						s.i = save
					}
					r = pair
				}
				out = utf8.AppendRune(out, r)
			default:
				return "", s.syntax("bad escape")
			}
		case c < 0x20:
			return "", s.syntax("control character in string")
		case c < utf8.RuneSelf:
			out = append(out, c)
			s.i++
		default:
			r, n := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && n == 1 {
				return "", s.syntax("invalid UTF-8 in string")
			}
			out = append(out, s.b[s.i:s.i+n]...)
			s.i += n
		}
	}
	return "", errEOF
}

func (s *scanner) hex4() (rune, bool) {
	if s.i+4 > len(s.b) {
		return 0, false
	}
	var r rune
	for _, c := range s.b[s.i : s.i+4] {
		r <<= 4
		switch {
		case '0' <= c && c <= '9':
			r |= rune(c - '0')
		case 'a' <= c && c <= 'f':
			r |= rune(c - 'a' + 10)
		case 'A' <= c && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	s.i += 4
	return r, true
}

// number reads a JSON number and returns its exact text.
func (s *scanner) number() ([]byte, error) {
	s.ws()
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	digits := func() int {
		n := 0
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.i < len(s.b) && s.b[s.i] == '0' {
		s.i++
	} else if digits() == 0 {
		return nil, s.syntax("bad number")
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if digits() == 0 {
			return nil, s.syntax("bad number")
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if digits() == 0 {
			return nil, s.syntax("bad number")
		}
	}
	return s.b[start:s.i], nil
}

func (s *scanner) literal(word string) error {
	s.ws()
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return s.syntax("bad literal")
	}
	s.i += len(word)
	return nil
}

// null consumes a null if one is next.
func (s *scanner) null() bool {
	if s.peek() == 'n' && s.literal("null") == nil {
		return true
	}
	return false
}

// boolean reads true or false.
func (s *scanner) boolean() (bool, error) {
	switch s.peek() {
	case 't':
		return true, s.literal("true")
	case 'f':
		return false, s.literal("false")
	}
	return false, errNotBool
}

// skip consumes any one JSON value.
func (s *scanner) skip() error {
	switch c := s.peek(); {
	case c == '"':
		_, err := s.str()
		return err
	case c == '{':
		return s.object(func(string) error { return s.skip() })
	case c == '[':
		return s.array(s.skip)
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		_, err := s.number()
		return err
	default:
		return s.syntax("expected a value")
	}
}

// object reads an object, calling field for each key with the scanner at its value; field
// must consume the value.
func (s *scanner) object(field func(key string) error) error {
	if !s.consume('{') {
		return errNotObject
	}
	if s.depth++; s.depth > maxDepth {
		return s.syntax("nested too deeply")
	}
	defer func() { s.depth-- }()
	if s.consume('}') {
		return nil
	}
	for {
		key, err := s.key()
		if err != nil {
			if err == errNotString {
				return s.syntax("expected a key")
			}
			return err
		}
		if !s.consume(':') {
			return s.syntax("expected ':'")
		}
		if err := field(key); err != nil {
			return err
		}
		if s.consume(',') {
			continue
		}
		if s.consume('}') {
			return nil
		}
		return s.syntax("expected ',' or '}'")
	}
}

// array reads an array, calling elem with the scanner at each element.
func (s *scanner) array(elem func() error) error {
	if !s.consume('[') {
		return errNotArray
	}
	if s.depth++; s.depth > maxDepth {
		return s.syntax("nested too deeply")
	}
	defer func() { s.depth-- }()
	if s.consume(']') {
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		if s.consume(',') {
			continue
		}
		if s.consume(']') {
			return nil
		}
		return s.syntax("expected ',' or ']'")
	}
}

// type mismatches, turned into field errors by the decoder
var (
	errNotString = errors.New("must be a string")
	errNotBool   = errors.New("must be true or false")
	errNotObject = errors.New("must be an object")
	errNotArray  = errors.New("must be a list")
)
