package audit

import (
	"fmt"
	"sort"
)

// FindingStreamGap: stream sequences of the order stream that are gone from it (purged,
// deleted, expired) without the store holding an outcome for them: order events lost before any
// partition decided or dead-lettered them.
const FindingStreamGap = "stream_gap"

// StreamState is the order stream as reconciliation reads it: its identity (name and creation
// time, as the partitions record their source), its first and last sequence now, and the
// sequences between them it no longer holds.
type StreamState struct {
	Source      string
	First, Last uint64
	Deleted     []uint64
}

// Reconciliation is what Reconcile found.
type Reconciliation struct {
	Consumed uint64 // sequences the store holds an outcome for
	Gone     uint64 // sequences gone from the stream whose outcome the store holds (fine: it keeps the event)
	Pending  uint64 // sequences in the stream the store holds no outcome for yet (not decided yet)
	Lost     uint64 // sequences gone from the stream with no outcome: the findings
	Findings []Finding
	// Skipped says why nothing was reconciled ("" when it was).
	Skipped string
}

// maxGapFindings bounds the gap findings (each a range of sequences); the rest are counted.
const maxGapFindings = 100

// Reconcile holds the stored outcomes (consumed: the stream sequences the store has an outcome
// for, sorted, each once; sources: the streams the partitions read) against the order stream:
// every sequence from 1 to st.Last is an order event, so each one the stream no longer holds must
// have an outcome stored. The order stream holds order events only (dead letters go to a stream
// of their own), which is what makes every sequence count.
func Reconcile(st StreamState, consumed []uint64, sources []string) Reconciliation {
	var out Reconciliation
	for _, s := range sources {
		if s != "" && s != st.Source {
			out.Skipped = fmt.Sprintf("a partition read another stream (%s), not %s: its stream sequences are not this stream's", s, st.Source)
			return out
		}
	}
	deleted := append([]uint64(nil), st.Deleted...)
	sort.Slice(deleted, func(i, j int) bool { return deleted[i] < deleted[j] })
	isGone := func(seq uint64) bool {
		if seq < st.First || st.Last == 0 {
			return true
		}
		i := sort.Search(len(deleted), func(i int) bool { return deleted[i] >= seq })
		return i < len(deleted) && deleted[i] == seq
	}
	var run struct{ from, to uint64 }
	flush := func() {
		if run.from == 0 {
			return
		}
		n := run.to - run.from + 1
		out.Lost += n
		if len(out.Findings) < maxGapFindings {
			what := fmt.Sprintf("stream sequence %d is", run.from)
			if n > 1 {
				what = fmt.Sprintf("stream sequences %d–%d (%d events) are", run.from, run.to, n)
			}
			out.Findings = append(out.Findings, Finding{Kind: FindingStreamGap, Leaf: -1,
				Detail: fmt.Sprintf("%s gone from the order stream %s, and the store holds no decision or dead letter for them: "+
					"they were purged, deleted or expired before any partition stored them", what, st.Source)})
		}
		run.from, run.to = 0, 0
	}
	lost := func(seq uint64) {
		if run.from != 0 && seq == run.to+1 {
			run.to = seq
			return
		}
		flush()
		run.from, run.to = seq, seq
	}
	c := 0
	for seq := uint64(1); seq <= st.Last; seq++ {
		for c < len(consumed) && consumed[c] < seq {
			c++
		}
		stored := c < len(consumed) && consumed[c] == seq
		gone := isGone(seq)
		switch {
		case stored:
			out.Consumed++
			if gone {
				out.Gone++
			}
		case gone:
			lost(seq)
		default:
			out.Pending++
		}
	}
	flush()
	return out
}
