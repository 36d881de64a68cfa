package audit

import "time"

// DeadLetter is a stored dead letter: an event that got no decision, and why.
type DeadLetter struct {
	ID          int64
	EventID     string
	Subject     string
	StreamSeq   uint64
	Raw         []byte
	Program     string // "" when the event did not decode that far
	OrderID     string
	AffiliateID string
	PlacedAt    *time.Time // nil when the event did not decode
	Kind        string     // engine.ErrorKind: invalid, unknown_program, no_policy, pin_missing, rule_error
	Reason      string
	ReceivedAt  time.Time
	Partition   int
	BatchSeq    uint64
	Leaf        int
}

// DeadLetterFilter selects dead letters; zero fields select all.
type DeadLetterFilter struct {
	Kind, Program, OrderID string
	From, To               time.Time // received_at in [From, To)
	AfterID                int64     // ids above this one (paging)
	Limit                  int       // 0: 1 000
}
