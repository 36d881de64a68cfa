package rules

import (
	"reflect"
	"sync"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// itemList is order.items as rules see it: a CEL list over the order's []Item that hands out
// each element without reflection. Adapting a []Item through the type registry looks up every
// element's Go type at each access (about a third of a rule like
// `order.items.exists(i, i.category in forbidden)`); itemList gives each element as an itemVal,
// whose fields cel-go's native-type getters read at a fixed offset. An Activation keeps one
// itemList and re-points it at each order, so reading order.items allocates nothing.
//
// Only the hot operations (size, index, fold, iterate) are written here; the rest (equality,
// concatenation, `in`, conversion) go to cel-go's list of the same itemVals.
type itemList struct {
	items []Item
	vals  []ref.Val // itemVal of each item, rebuilt by reset
}

var (
	_ traits.Lister   = (*itemList)(nil)
	_ traits.Foldable = (*itemList)(nil)
)

func (l *itemList) reset(items []Item) {
	l.items = items
	l.vals = l.vals[:0]
	for i := range items {
		l.vals = append(l.vals, itemVal{&items[i]})
	}
}

// generic is cel-go's list of the same elements, for the operations not written here.
func (l *itemList) generic() traits.Lister {
	return types.NewRefValList(baseAdapter(), l.vals)
}

func (l *itemList) Size() ref.Val { return types.Int(len(l.vals)) }

func (l *itemList) Get(index ref.Val) ref.Val {
	i, ok := index.(types.Int)
	if !ok {
		return l.generic().Get(index)
	}
	if i < 0 || int64(i) >= int64(len(l.vals)) {
		return types.NewErr("index out of range in list of size %d: %d", len(l.vals), int64(i))
	}
	return l.vals[i]
}

func (l *itemList) Fold(f traits.Folder) {
	for i, v := range l.vals {
		if !f.FoldEntry(types.Int(i), v) {
			return
		}
	}
}

func (l *itemList) Iterator() traits.Iterator { return l.generic().Iterator() }

func (l *itemList) Add(other ref.Val) ref.Val        { return l.generic().Add(other) }
func (l *itemList) Contains(elem ref.Val) ref.Val    { return l.generic().Contains(elem) }
func (l *itemList) Equal(other ref.Val) ref.Val      { return l.generic().Equal(other) }
func (l *itemList) ConvertToType(t ref.Type) ref.Val { return l.generic().ConvertToType(t) }
func (l *itemList) ConvertToNative(t reflect.Type) (any, error) {
	return l.generic().ConvertToNative(t)
}
func (l *itemList) Type() ref.Type { return types.ListType }
func (l *itemList) Value() any     { return l.items }

// itemVal is one order item as a CEL value of type rules.Item. Its Value is the *Item, which
// cel-go's native-type field getters read directly. It is one pointer wide, so making one
// allocates nothing. (Rules cannot construct a rules.Item: such an expression has no cost bound
// and Compile refuses it, so an itemVal only ever meets other itemVals.)
type itemVal struct{ it *Item }

var (
	itemGoType  = reflect.TypeFor[Item]()
	itemObjType = sync.OnceValue(func() ref.Type { return baseAdapter().NativeToValue(&Item{}).Type() })
)

// native is the item as cel-go's registry adapts it, for the rare operations not written here.
func (v itemVal) native() ref.Val { return baseAdapter().NativeToValue(v.it) }

func (v itemVal) ConvertToNative(t reflect.Type) (any, error) {
	switch t {
	case itemGoType:
		return *v.it, nil
	case reflect.PointerTo(itemGoType):
		return v.it, nil
	}
	return v.native().ConvertToNative(t)
}

func (v itemVal) ConvertToType(t ref.Type) ref.Val { return v.native().ConvertToType(t) }

// Equal: two items are equal when every field is, the amount by value.
func (v itemVal) Equal(other ref.Val) ref.Val {
	var o *Item
	switch x := other.Value().(type) {
	case *Item:
		o = x
	case Item:
		o = &x
	default:
		return types.False
	}
	a := v.it
	return types.Bool(a.SKU == o.SKU && a.Category == o.Category && a.Quantity == o.Quantity &&
		(a.Amount == nil) == (o.Amount == nil) && (a.Amount == nil || a.Amount.Cmp(o.Amount) == 0))
}

func (v itemVal) Type() ref.Type { return itemObjType() }
func (v itemVal) Value() any     { return v.it }

// Get and IsSet serve a field read the planner could not give a typed getter (a dyn operand).
func (v itemVal) Get(field ref.Val) ref.Val   { return v.native().(traits.Indexer).Get(field) }
func (v itemVal) IsSet(field ref.Val) ref.Val { return v.native().(traits.FieldTester).IsSet(field) }
