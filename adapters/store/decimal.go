package store

import (
	"database/sql/driver"
	"fmt"

	"github.com/cockroachdb/apd/v3"
	"modernc.org/sqlite"

	"github.com/commissioner/commissioner/engine"
)

// decimalSumFunc is the SQLite aggregate that sums decimal TEXT exactly.
const decimalSumFunc = "commissioner_decimal_sum"

// decimalSum is one evaluation of commissioner_decimal_sum(x): the exact sum of the non-NULL
// decimal strings x, as a decimal string; NULL when there are none.
type decimalSum struct {
	sum apd.Decimal
	n   int
}

func (a *decimalSum) Step(_ *sqlite.FunctionContext, args []driver.Value) error {
	var s string
	switch v := args[0].(type) {
	case nil:
		return nil
	case string:
		s = v
	case []byte:
		s = string(v)
	case int64:
		s = fmt.Sprint(v)
	default:
		return fmt.Errorf("%s: %T is not a decimal string", decimalSumFunc, v)
	}
	var d apd.Decimal
	if _, _, err := d.SetString(s); err != nil {
		return fmt.Errorf("%s: %q is not a decimal: %w", decimalSumFunc, s, err)
	}
	if _, err := engine.SumContext.Add(&a.sum, &a.sum, &d); err != nil {
		return fmt.Errorf("%s: adding %s: %w", decimalSumFunc, s, err)
	}
	a.n++
	return nil
}

func (a *decimalSum) WindowInverse(_ *sqlite.FunctionContext, args []driver.Value) error {
	return fmt.Errorf("%s is not a window function", decimalSumFunc)
}

func (a *decimalSum) WindowValue(*sqlite.FunctionContext) (driver.Value, error) {
	if a.n == 0 {
		return nil, nil
	}
	return a.sum.Text('f'), nil
}

func (a *decimalSum) Final(*sqlite.FunctionContext) {}

// parseDecimal reads an exact decimal column value.
func parseDecimal(s, what string) (apd.Decimal, error) {
	var d apd.Decimal
	if _, _, err := d.SetString(s); err != nil {
		return d, fmt.Errorf("reading %s %q: %w", what, s, err)
	}
	return d, nil
}
