package rules

import (
	"strings"

	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/types"
)

// MaxStringLen bounds every string of an order (ids, countries, skus, categories); the engine
// rejects longer ones, so the cost estimate below holds for every order it evaluates.
const MaxStringLen = 256

// sizeEstimator tells cel-go's cost estimator how large order values can be, so a rule's
// estimated cost is a real upper bound rather than "unbounded".
// Constants have the size they were written with.
type sizeEstimator struct {
	constants map[string]uint64
}

func (e sizeEstimator) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	if t := n.Type(); t != nil && t.IsExactType(DecimalType) {
		s := cost.FixedSizeEstimate(1)
		return &s
	}
	path := n.Path()
	if len(path) == 0 {
		return nil
	}
	if size, ok := e.constants[path[0]]; ok && len(path) == 1 {
		s := cost.FixedSizeEstimate(size)
		return &s
	}
	if path[0] == "order.items" && len(path) == 1 {
		s := cost.RangedSizeEstimate(0, MaxItems)
		return &s
	}
	if n.Type() != nil && n.Type().Kind() == types.StringKind {
		s := cost.RangedSizeEstimate(0, MaxStringLen)
		return &s
	}
	return nil
}

// EstimateCallCost prices the decimal functions: each is one comparison or one parse.
func (sizeEstimator) EstimateCallCost(fn, overload string, _ *cost.AstNode, _ []cost.AstNode) *cost.CallEstimate {
	if strings.Contains(overload, "decimal") {
		return &cost.CallEstimate{CostEstimate: cost.CostEstimate{Min: 1, Max: 1}}
	}
	return nil
}
