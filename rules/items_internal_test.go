package rules

import (
	"reflect"
	"testing"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"github.com/cockroachdb/apd/v3"
)

// TestItemListMatchesRegistryList checks itemList against the list cel-go's registry makes of
// the same []Item, operation by operation, including those no compiled rule reaches (a field read
// through dyn, iteration by iterator, conversion). Rules reach the rest through expressions in
// TestRuleEvaluation.
func TestItemListMatchesRegistryList(t *testing.T) {
	items := []Item{{SKU: "a", Category: "Toys", Quantity: 2, Amount: apd.New(1000, -2)}, {SKU: "b", Category: "books", Quantity: 1, Amount: apd.New(250, -2)}}
	var fast itemList
	fast.reset(items)
	slow := baseAdapter().NativeToValue(items).(traits.Lister)

	same := func(what string, got, want ref.Val) {
		t.Helper()
		if got.Type() != want.Type() || got.Equal(want) != types.True {
			t.Errorf("%s: got %v (%s), want %v (%s)", what, got, got.Type(), want, want.Type())
		}
	}
	same("size", fast.Size(), slow.Size())
	same("equal to itself", fast.Equal(&fast), types.True)
	same("equal to the registry's list", fast.Equal(slow), types.True)
	same("concatenated size", fast.Add(&fast).(traits.Sizer).Size(), types.Int(4))
	other := []Item{items[0], items[1]}
	other[1].Amount = apd.New(2500, -3) // 2.500 == 2.50
	var same2 itemList
	same2.reset(other)
	same("equal with amounts of another scale", fast.Equal(&same2), types.True)
	other[1].Quantity = 3
	same("unequal when a field differs", fast.Equal(&same2), types.False)
	for i := range items {
		e := fast.Get(types.Int(i))
		same("element type", e.Type().(ref.Val), slow.Get(types.Int(i)).Type().(ref.Val))
		same("element equality", e, slow.Get(types.Int(i)))
		same("contains", fast.Contains(fast.Get(types.Int(i))), types.True)
		same("dyn field read", e.(traits.Indexer).Get(types.String("sku")), types.String(items[i].SKU))
		same("presence", e.(traits.FieldTester).IsSet(types.String("category")), types.True)
	}
	if e := fast.Get(types.Int(2)); !types.IsError(e) {
		t.Errorf("index 2 of 2: got %v, want an error", e)
	}
	if e := fast.Get(types.Int(-1)); !types.IsError(e) {
		t.Errorf("index -1: got %v, want an error", e)
	}
	var skus []string
	for it := fast.Iterator(); it.HasNext() == types.True; {
		skus = append(skus, it.Next().Value().(*Item).SKU)
	}
	if !reflect.DeepEqual(skus, []string{"a", "b"}) {
		t.Errorf("iterator: got %v", skus)
	}
	native, err := fast.ConvertToNative(reflect.TypeFor[[]Item]())
	if err != nil || !reflect.DeepEqual(native, items) {
		t.Errorf("ConvertToNative: got %v, %v", native, err)
	}
	// re-pointed at another order, nothing of the first is left
	fast.reset(items[1:])
	same("size after reset", fast.Size(), types.Int(1))
	same("element after reset", fast.Get(types.Int(0)).(traits.Indexer).Get(types.String("sku")), types.String("b"))
}
