package audit

import "sort"

// InStreamOrder sorts an order's decisions by stream sequence — the order its events arrived in
// and took effect in; decision ids follow commits, which batches of different partitions make out
// of order — and says which is current in each program: of the decisions the order's state
// followed when they were stored, the last stored. explain and the console list an order so.
func InStreamOrder(ds []StoredDecision) ([]StoredDecision, map[int64]bool) {
	sort.SliceStable(ds, func(i, j int) bool {
		if ds[i].StreamSeq != ds[j].StreamSeq {
			return ds[i].StreamSeq < ds[j].StreamSeq
		}
		return ds[i].ID < ds[j].ID
	})
	last := map[string]int64{}
	for _, d := range ds {
		if d.Current && d.ID > last[d.Program] {
			last[d.Program] = d.ID
		}
	}
	current := make(map[int64]bool, len(last))
	for _, id := range last {
		current[id] = true
	}
	return ds, current
}
