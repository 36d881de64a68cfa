package rules

import (
	"fmt"
	"strings"
	"time"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// FormatValue renders a CEL value the way an auditor reads it: strings quoted, timestamps in
// RFC 3339 (an absent one, the zero time or the Unix epoch, as "(absent)"), decimals exact,
// lists in brackets with an order's items as {sku, category, quantity}, nil as "null". It is
// what an explanation shows for each input a rule read (ResolveName).
func FormatValue(v ref.Val) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case types.String:
		return fmt.Sprintf("%q", string(x))
	case types.Bool:
		return fmt.Sprint(bool(x))
	case types.Int:
		return fmt.Sprint(int64(x))
	case types.Timestamp:
		if x.Time.Equal(time.Unix(0, 0)) || x.Time.IsZero() {
			return "(absent)"
		}
		return x.Time.UTC().Format(time.RFC3339Nano)
	case types.Duration:
		return x.Duration.String()
	case Decimal:
		return x.D.Text('f')
	}
	if l, ok := v.(traits.Lister); ok {
		return formatList(l)
	}
	return fmt.Sprint(v.Value())
}

// formatList renders a CEL list: "[a, b]", each element with FormatValue, an order's items
// (the elements of order.items, see ResolveName) as {sku: "…", category: "…", quantity: n}.
func formatList(l traits.Lister) string {
	var parts []string
	it := l.Iterator()
	for it.HasNext() == types.True {
		e := it.Next()
		if item, ok := e.Value().(*Item); ok {
			parts = append(parts, fmt.Sprintf("{sku: %q, category: %q, quantity: %d}", item.SKU, item.Category, item.Quantity))
			continue
		}
		parts = append(parts, FormatValue(e))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
