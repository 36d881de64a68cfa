package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
	"gopkg.in/yaml.v3"
)

// Scalar is a YAML scalar as written, with its position: the policy loader keeps positions so
// that every problem names file:line:col.
type Scalar struct {
	Value  string
	Tag    string // the YAML tag: !!str, !!int, !!float, !!bool, !!null, !!timestamp
	Line   int
	Column int
}

// posKey holds, in every mapping the parser returns, the position of the mapping itself.
const posKey = "@pos"

// positionalYAML is a koanf.Parser that keeps every scalar as written (never through float64)
// together with its position. Mappings become map[string]any (with posKey), sequences []any.
type positionalYAML struct{}

func (positionalYAML) Unmarshal(b []byte) (map[string]any, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) { // no document at all: empty, or only comments
			return nil, posErr(1, 1, "the policy file is empty")
		}
		return nil, yamlError(err)
	}
	if len(doc.Content) == 0 {
		return nil, posErr(1, 1, "the policy file is empty")
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, posErr(root.Line, root.Column, "the policy must be a mapping of keys (program, version, …)")
	}
	v, err := nodeValue(root, &expansion{budget: maxNodes, active: map[*yaml.Node]bool{}})
	if err != nil {
		return nil, err
	}
	return v.(map[string]any), nil
}

func (positionalYAML) Marshal(map[string]any) ([]byte, error) {
	return nil, fmt.Errorf("policies are not written back")
}

// syntaxError is a problem found while reading the YAML itself, with its position.
type syntaxError struct {
	Line, Column int
	Msg          string
}

func (e *syntaxError) Error() string { return fmt.Sprintf("%d:%d: %s", e.Line, e.Column, e.Msg) }

func posErr(line, col int, format string, args ...any) error {
	return &syntaxError{Line: line, Column: col, Msg: fmt.Sprintf(format, args...)}
}

// yamlError turns yaml.v3's "yaml: line 3: …" into a syntaxError at line 3.
func yamlError(err error) error {
	var line int
	msg := err.Error()
	if n, _ := fmt.Sscanf(msg, "yaml: line %d:", &line); n == 1 {
		return posErr(line, 0, "%s", strings.TrimSpace(msg[len(fmt.Sprintf("yaml: line %d:", line)):]))
	}
	return posErr(0, 0, "%s", strings.TrimPrefix(msg, "yaml: "))
}

// maxNodes bounds how many values a document may expand to through aliases (no "billion laughs").
const maxNodes = 200_000

// expansion is the state of converting one document: how many more values it may expand to,
// and the anchored nodes being expanded now (an alias to one of them is a cycle, which would
// otherwise recurse until the budget ran out, hundreds of thousands of frames deep).
type expansion struct {
	budget int
	active map[*yaml.Node]bool
}

// nodeValue converts a node. Anchors and aliases are allowed, and so are merge keys (<<: *base),
// which let test orders share a base: keys written in the mapping win over merged ones.
func nodeValue(n *yaml.Node, x *expansion) (any, error) {
	if x.budget--; x.budget < 0 {
		return nil, posErr(n.Line, n.Column, "the document expands to too many values through aliases")
	}
	switch n.Kind {
	case yaml.AliasNode:
		if x.active[n.Alias] {
			return nil, posErr(n.Line, n.Column, "alias *%s is used inside the value it names", n.Value)
		}
		x.active[n.Alias] = true
		v, err := nodeValue(n.Alias, x)
		delete(x.active, n.Alias)
		return v, err
	case yaml.ScalarNode:
		return Scalar{Value: n.Value, Tag: n.ShortTag(), Line: n.Line, Column: n.Column}, nil
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := nodeValue(c, x)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2+1)
		out[posKey] = Scalar{Line: n.Line, Column: n.Column}
		var merges []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, vn := n.Content[i], n.Content[i+1]
			if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
				if vn.Kind == yaml.SequenceNode {
					merges = append(merges, vn.Content...)
				} else {
					merges = append(merges, vn)
				}
				continue
			}
			if k.Kind != yaml.ScalarNode {
				return nil, posErr(k.Line, k.Column, "mapping keys must be plain names")
			}
			if _, dup := out[k.Value]; dup {
				return nil, posErr(k.Line, k.Column, "key %q appears twice", k.Value)
			}
			v, err := nodeValue(vn, x)
			if err != nil {
				return nil, err
			}
			out[k.Value] = v
		}
		for _, mn := range merges {
			mv, err := nodeValue(mn, x)
			if err != nil {
				return nil, err
			}
			mm, ok := mv.(map[string]any)
			if !ok {
				return nil, posErr(mn.Line, mn.Column, "<< merges a mapping, not a %s", mn.ShortTag())
			}
			for k, v := range mm {
				if _, set := out[k]; !set {
					out[k] = v
				}
			}
		}
		return out, nil
	}
	return nil, posErr(n.Line, n.Column, "unsupported YAML node")
}

// parseSource reads a policy document through koanf with the positional parser.
func parseSource(data []byte) (map[string]any, error) {
	k := koanf.New("\x00") // keys are never split: the tree is read as written
	if err := k.Load(rawbytes.Provider(data), positionalYAML{}); err != nil {
		return nil, err
	}
	return k.Raw(), nil
}

// position returns the position of a parsed value (a Scalar, or a mapping's posKey).
func position(v any) (line, col int) {
	switch x := v.(type) {
	case Scalar:
		return x.Line, x.Column
	case map[string]any:
		if p, ok := x[posKey].(Scalar); ok {
			return p.Line, p.Column
		}
	case []any:
		if len(x) > 0 {
			return position(x[0])
		}
	}
	return 0, 0
}

// toJSON writes a parsed YAML value as JSON, numbers as written (exact), so that a test order
// in a policy file goes through the same decoder as an order from the stream.
func toJSON(buf *bytes.Buffer, v any) error {
	switch x := v.(type) {
	case Scalar:
		switch x.Tag {
		case "!!int", "!!float":
			if !json.Valid([]byte(x.Value)) {
				return posErr(x.Line, x.Column, "%q is not a JSON number; quote it", x.Value)
			}
			buf.WriteString(x.Value)
		case "!!bool":
			b, err := strconv.ParseBool(x.Value)
			if err != nil {
				return posErr(x.Line, x.Column, "%q is not a boolean", x.Value)
			}
			buf.WriteString(strconv.FormatBool(b))
		case "!!null":
			buf.WriteString("null")
		default:
			b, _ := json.Marshal(x.Value)
			buf.Write(b)
		}
	case []any:
		buf.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := toJSON(buf, e); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case map[string]any:
		buf.WriteByte('{')
		first := true
		for _, k := range sortedKeys(x) {
			if !first {
				buf.WriteByte(',')
			}
			first = false
			b, _ := json.Marshal(k)
			buf.Write(b)
			buf.WriteByte(':')
			if err := toJSON(buf, x[k]); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	default:
		return fmt.Errorf("unsupported value %T", v)
	}
	return nil
}

// exprPosition maps a position inside a rule's expression (CEL's 1-based line and 0-based column,
// in characters) to the file position of that character. The expression is v's value; source is
// the file. A plain scalar starts at v's column, a quoted one just after its quote, and a block
// scalar (| or >) on the next line, indented. Folding (of > and of multi-line plain or quoted
// scalars) turns line breaks into spaces, so the value's characters are matched to the source
// lines one line at a time. Escapes in double-quoted scalars are not undone: a position after
// one may be off by the escape's length.
func exprPosition(source []byte, v Scalar, line, col int) (int, int) {
	// the byte offset of the character within the value
	off := 0
	for l := 1; l < line; l++ {
		i := strings.IndexByte(v.Value[off:], '\n')
		if i < 0 {
			break
		}
		off += i + 1
	}
	for ; col > 0 && off < len(v.Value) && v.Value[off] != '\n'; col-- {
		_, n := utf8.DecodeRuneInString(v.Value[off:])
		off += n
	}

	lines := strings.Split(string(source), "\n")
	first := v.Line - 1
	if first < 0 || first >= len(lines) || v.Column < 1 {
		return v.Line, v.Column
	}
	start := byteIndex(lines[first], v.Column-1) // the scalar's first character
	if start >= len(lines[first]) {
		return v.Line, v.Column
	}
	var segLine, segStart int // where the text of each source line starts
	switch lines[first][start] {
	case '|', '>':
		first, start = first+1, -1
	case '"', '\'':
		start++
	}
	pos := 0 // how much of the value the source lines so far account for
	lastLine, lastCol := v.Line, v.Column
	for li := first; li < len(lines) && pos <= len(v.Value); li++ {
		text := lines[li]
		segLine, segStart = li, 0
		if li == v.Line-1 && start >= 0 {
			segStart = start
		}
		text = text[segStart:]
		trimmed := strings.TrimLeft(text, " \t")
		segStart += len(text) - len(trimmed)
		text = strings.TrimRight(trimmed, "\r")
		if text == "" {
			continue
		}
		for pos < len(v.Value) && v.Value[pos] != text[0] && (v.Value[pos] == ' ' || v.Value[pos] == '\n' || v.Value[pos] == '\t') {
			pos++
		}
		n := 0
		for n < len(text) && pos+n < len(v.Value) && text[n] == v.Value[pos+n] {
			n++
		}
		if off < pos+n {
			if off < pos {
				return lastLine, lastCol
			}
			return segLine + 1, utf8.RuneCountInString(lines[segLine][:segStart+off-pos]) + 1
		}
		pos += n
		lastLine, lastCol = segLine+1, utf8.RuneCountInString(lines[segLine][:segStart+n])+1
		if pos >= len(v.Value) {
			break
		}
	}
	return lastLine, lastCol
}

// byteIndex returns the byte index of the n-th character of s (len(s) when s is shorter).
func byteIndex(s string, n int) int {
	i := 0
	for ; n > 0 && i < len(s); n-- {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return i
}
