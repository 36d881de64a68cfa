package rules

import (
	"fmt"
	"reflect"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"github.com/cockroachdb/apd/v3"
)

// DecimalType is the CEL type of exact decimal amounts (order amounts, refunded amounts and
// decimal constants). Rules compare decimals with <, <=, >, >= against other decimals or ints,
// test equality against another decimal (decimal(0), decimal("12.50")), and never see a float.
// It carries the Comparer trait: the standard ordering operators dispatch on it at runtime (an
// opaque type has no traits of its own, and <, <=, >, >= on decimals failed with "no such overload").
var DecimalType = cel.OpaqueType("commissioner.Decimal").WithTraits(traits.ComparerType)

// Decimal is the CEL value of an exact decimal. It wraps an apd.Decimal, which it never mutates.
type Decimal struct{ D *apd.Decimal }

var (
	_ ref.Val = Decimal{}
)

// ConvertToNative implements ref.Val.
func (d Decimal) ConvertToNative(t reflect.Type) (any, error) {
	switch t {
	case reflect.TypeFor[*apd.Decimal]():
		return d.D, nil
	case reflect.TypeFor[string]():
		return d.D.Text('f'), nil
	}
	return nil, fmt.Errorf("decimal: no conversion to %v", t)
}

// ConvertToType implements ref.Val.
func (d Decimal) ConvertToType(t ref.Type) ref.Val {
	switch t {
	case types.TypeType:
		return DecimalType
	case types.StringType:
		return types.String(d.D.Text('f'))
	case DecimalType:
		return d
	}
	return types.NewErr("type conversion error from decimal to '%s'", t)
}

// Equal implements ref.Val: decimals are equal when their values are, whatever their scale.
func (d Decimal) Equal(other ref.Val) ref.Val {
	switch o := other.(type) {
	case Decimal:
		return types.Bool(d.D.Cmp(o.D) == 0)
	case types.Int:
		var x apd.Decimal
		x.SetInt64(int64(o))
		return types.Bool(d.D.Cmp(&x) == 0)
	}
	return types.False
}

// Compare implements traits.Comparer for decimal and int operands.
func (d Decimal) Compare(other ref.Val) ref.Val {
	switch o := other.(type) {
	case Decimal:
		return types.Int(d.D.Cmp(o.D))
	case types.Int:
		var x apd.Decimal
		x.SetInt64(int64(o))
		return types.Int(d.D.Cmp(&x))
	}
	return types.MaybeNoSuchOverloadErr(other)
}

// Type implements ref.Val.
func (d Decimal) Type() ref.Type { return DecimalType }

// Value implements ref.Val.
func (d Decimal) Value() any { return d.D }

// decimalLibrary declares the decimal type's functions: the decimal() constructor and the ordering
// operators. Equality needs no declaration: CEL's == works on any two values of one type.
func decimalLibrary() cel.EnvOption {
	var opts []cel.EnvOption
	opts = append(opts, cel.Types(DecimalType))
	for _, op := range []struct{ name, id string }{
		{operators.Less, "less"}, {operators.LessEquals, "less_equals"},
		{operators.Greater, "greater"}, {operators.GreaterEquals, "greater_equals"},
	} {
		opts = append(opts, cel.Function(op.name,
			cel.Overload(op.id+"_decimal_decimal", []*cel.Type{DecimalType, DecimalType}, cel.BoolType),
			cel.Overload(op.id+"_decimal_int", []*cel.Type{DecimalType, cel.IntType}, cel.BoolType),
		))
	}
	opts = append(opts, cel.Function("decimal",
		cel.Overload("decimal_string", []*cel.Type{cel.StringType}, DecimalType,
			cel.UnaryBinding(func(v ref.Val) ref.Val {
				d, _, err := apd.NewFromString(string(v.(types.String)))
				if err != nil || d.Form != apd.Finite {
					return types.NewErr("decimal(%q): not a decimal number", string(v.(types.String)))
				}
				return Decimal{D: d}
			})),
		cel.Overload("decimal_int", []*cel.Type{cel.IntType}, DecimalType,
			cel.UnaryBinding(func(v ref.Val) ref.Val {
				n := int64(v.(types.Int))
				if 0 <= n && n < int64(len(smallDecimals)) {
					return smallDecimals[n]
				}
				return Decimal{D: apd.New(n, 0)}
			})),
	))
	return cel.Lib(libOpts(opts))
}

// smallDecimals are decimal(0) … decimal(100), made once: rules compare against them on every
// order (order.refunded_amount == decimal(0)), and CEL values are never changed in place.
var smallDecimals = func() (d [101]ref.Val) {
	for i := range d {
		d[i] = Decimal{D: apd.New(int64(i), 0)}
	}
	return d
}()

type libOpts []cel.EnvOption

func (l libOpts) CompileOptions() []cel.EnvOption     { return l }
func (l libOpts) ProgramOptions() []cel.ProgramOption { return nil }
