package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/driver/pgdriver"

	"github.com/commissioner/commissioner/engine"
)

// The bulk writes of a batch differ by dialect, and only here.
//
// SQLite: multi-row INSERT OR IGNOREs prepared once on the write
// connection, values bound as parameters (see sqliteChunks). The write transaction holds the
// database's only write lock, so what it reads stays true until commit.
//
// PostgreSQL: COPY … FROM STDIN (pgdriver.CopyFrom). A 1 000-row multi-row INSERT spends most of
// PostgreSQL's time parsing and analysing its ~20 000 literals (measured: ~45 ms of ~55 ms for
// the events of one batch); COPY skips that. COPY has no ON CONFLICT: a row that is stored already
// (an event re-published after the stream's duplicate window) fails the batch with a unique
// violation, and the writer passes it again without that event (engine.ErrEventsStored).
// On SQLite OR IGNORE skips such a row, and the row count tells (errNotAllStored).

// wtx is a write transaction and the connection it runs on (COPY on PostgreSQL, prepared
// statements on SQLite).
type wtx struct {
	bun.Tx
	conn bun.Conn
}

// --- SQLite: prepared multi-row INSERTs ---
//
// The hot path binds parameters to INSERTs prepared once on the writer connection rather than
// going through bun's query builder: bun writes every value of a 1 000-row INSERT into the SQL
// text, which SQLite then parses again, and the two cost more than storing the rows (measured in
// BenchmarkSaveBatch: see the commit that made this change). A statement prepared on the
// writer runs inside whatever transaction that connection has open — on SQLite a transaction
// belongs to its connection, and writeTx holds the writer for the whole transaction.

// sqliteMaxRows is the most rows one prepared INSERT carries. A batch is cut into statements of
// sqliteMaxRows rows and then of 64, 32, …, 1 for the rest, so each table needs at most eight
// statements, each prepared once for the writer's life.
const sqliteMaxRows = 128

// sqliteInsert is a multi-row INSERT: head, then cols placeholders per row, then tail.
type sqliteInsert struct {
	name string // names the statement in the writer's cache
	head string
	cols int
	tail string
}

// The INSERTs are OR IGNORE rather than ON CONFLICT DO NOTHING: a multi-row statement that could
// abort midway (a NOT NULL column) makes SQLite keep a statement journal of every page it
// changes, which cost ~15% of a batch; OR IGNORE cannot abort, so it needs none. OR IGNORE also
// skips a row with NULL in a NOT NULL column, which these statements never bind: every value
// bound below is a Go string, int64, bool or non-nil []byte (flat, the one nullable column,
// excepted). A skipped decision fails the batch anyway (the row count is checked), and only
// the unique keys can skip an event — what RETURNING reports.
// sqliteChunks cuts n rows into statements (see sqliteMaxRows) and calls fn with each one and
// the rows [lo, hi) it carries. The caller holds writeMu (writeTx).
func (s *Store) sqliteChunks(ctx context.Context, w *wtx, ins sqliteInsert, n int, fn func(st *sql.Stmt, lo, hi int) error) error {
	for lo := 0; lo < n; {
		k := chunkSize(n-lo, sqliteMaxRows)
		key := ins.name + "/" + strconv.Itoa(k)
		st := s.writerStmts[key]
		if st == nil {
			var b strings.Builder
			b.WriteString(ins.head)
			for r := 0; r < k; r++ {
				if r > 0 {
					b.WriteByte(',')
				}
				b.WriteByte('(')
				for c := 0; c < ins.cols; c++ {
					if c > 0 {
						b.WriteByte(',')
					}
					b.WriteByte('?')
				}
				b.WriteByte(')')
			}
			b.WriteString(ins.tail)
			var err error
			if st, err = w.conn.PrepareContext(ctx, b.String()); err != nil {
				return fmt.Errorf("preparing an insert of %d rows: %w", k, err)
			}
			if s.writerStmts == nil {
				s.writerStmts = map[string]*sql.Stmt{}
			}
			s.writerStmts[key] = st
		}
		if err := fn(st, lo, lo+k); err != nil {
			return err
		}
		lo += k
	}
	return nil
}

// --- the other tables of a batch (ledger.go): generic bulk writes ---

// bulkTable is a table and the columns insertRows and upsertRows write, in the order a row's
// values come.
type bulkTable struct {
	name string
	cols []string
	// pgTypes are the columns' PostgreSQL types, for upsertRows (its arrays are cast to them).
	pgTypes []string
}

// rowValues appends row i's values to args, one per column of its bulkTable, each a string,
// int64, bool, []byte, time.Time or nil (NULL). Decimals are strings.
type rowValues func(i int, args []any) []any

// errNotAllStored: a multi-row INSERT OR IGNORE skipped rows that broke a unique key.
var errNotAllStored = errors.New("not every row was stored")

// insertRows inserts n rows in the write transaction: on SQLite through prepared multi-row
// INSERTs with bound parameters, on PostgreSQL through COPY. A row that breaks a constraint (a
// unique key) fails the batch, as a plain INSERT would.
func (s *Store) insertRows(ctx context.Context, w *wtx, t bulkTable, n int, row rowValues) error {
	if n == 0 {
		return nil
	}
	if s.backend == SQLite {
		// OR IGNORE needs no statement journal (see eventsInsert); a row it skipped fails the
		// batch through sqliteExecRows' count, as the INSERT's constraint error would.
		ins := sqliteInsert{name: "insert " + t.name, head: "INSERT OR IGNORE INTO " + t.name + " (" + strings.Join(t.cols, ", ") + ") VALUES ",
			cols: len(t.cols)}
		return s.sqliteExecRows(ctx, w, ins, n, row)
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := (*bp)[:0]
	defer func() { *bp = buf[:0] }()
	args := make([]any, 0, len(t.cols))
	for i := 0; i < n; i++ {
		args = row(i, args[:0])
		if len(args) != len(t.cols) {
			return fmt.Errorf("inserting into %s: row %d has %d values for %d columns", t.name, i, len(args), len(t.cols))
		}
		for j, v := range args {
			if j > 0 {
				buf = append(buf, '\t')
			}
			var err error
			if buf, err = appendCopyValue(buf, v); err != nil {
				return fmt.Errorf("inserting into %s: column %s: %w", t.name, t.cols[j], err)
			}
		}
		buf = append(buf, '\n')
	}
	return copyIn(ctx, w.conn, t.name+" ("+strings.Join(t.cols, ", ")+")", buf, n)
}

// upsertRows inserts n rows or, for a row whose conflict key is stored, sets its update columns
// to the row's values: INSERT … ON CONFLICT (conflict) DO UPDATE (COPY has no ON CONFLICT), on
// SQLite prepared with bound parameters, on PostgreSQL as one INSERT … SELECT from unnested
// arrays, one per column. Two rows with one key in a call are an error on PostgreSQL.
func (s *Store) upsertRows(ctx context.Context, w *wtx, t bulkTable, conflict string, update []string, n int, row rowValues) error {
	if n == 0 {
		return nil
	}
	set := make([]string, len(update))
	for i, c := range update {
		set[i] = c + " = excluded." + c
	}
	head := "INSERT INTO " + t.name + " (" + strings.Join(t.cols, ", ") + ") VALUES "
	tail := " ON CONFLICT (" + conflict + ") DO UPDATE SET " + strings.Join(set, ", ")
	if s.backend == SQLite {
		// OR IGNORE for the constraints other than the conflict key, as in insertRows.
		return s.sqliteExecRows(ctx, w, sqliteInsert{name: "upsert " + t.name, head: "INSERT OR IGNORE" + strings.TrimPrefix(head, "INSERT"),
			cols: len(t.cols), tail: tail}, n, row)
	}
	// PostgreSQL: one statement for all the rows, each column sent as one array literal and
	// unnested. Prepared multi-row statements of 128 rows cost a Parse per statement size, a
	// Bind of ~1 700 parameters and a round trip per chunk: ~20 ms of a batch of 1 000 orders
	// in the write transaction, of which ~13 ms was the inserts themselves.
	sel, params, err := pgUnnest(t, n, row)
	if err != nil {
		return fmt.Errorf("storing %d rows of %s: %w", n, t.name, err)
	}
	q := head[:len(head)-len(" VALUES ")] + sel + tail
	if _, err := w.Tx.Tx.ExecContext(ctx, q, params...); err != nil {
		return fmt.Errorf("storing %d rows of %s: %w", n, t.name, err)
	}
	return nil
}

// pgUnnest is the SELECT of n rows of t for an INSERT on PostgreSQL — " SELECT * FROM
// unnest($1::type[], …) AS u" — and its parameters: each column's values as one array literal.
func pgUnnest(t bulkTable, n int, row rowValues) (string, []any, error) {
	if len(t.pgTypes) != len(t.cols) {
		return "", nil, fmt.Errorf("%d column types for %d columns", len(t.pgTypes), len(t.cols))
	}
	arrays := make([][]byte, len(t.cols))
	for j := range arrays {
		arrays[j] = append(make([]byte, 0, 16*n), '{')
	}
	args := make([]any, 0, len(t.cols))
	for i := 0; i < n; i++ {
		args = row(i, args[:0])
		if len(args) != len(t.cols) {
			return "", nil, fmt.Errorf("row %d has %d values for %d columns", i, len(args), len(t.cols))
		}
		for j, v := range args {
			if i > 0 {
				arrays[j] = append(arrays[j], ',')
			}
			var err error
			if arrays[j], err = appendArrayElem(arrays[j], v); err != nil {
				return "", nil, fmt.Errorf("column %s: %w", t.cols[j], err)
			}
		}
	}
	var q strings.Builder
	q.WriteString(" SELECT * FROM unnest(")
	params := make([]any, len(arrays))
	for j := range arrays {
		if j > 0 {
			q.WriteString(", ")
		}
		q.WriteString("$" + strconv.Itoa(j+1) + "::" + t.pgTypes[j] + "[]")
		params[j] = string(append(arrays[j], '}'))
	}
	q.WriteString(") AS u")
	return q.String(), params, nil
}

// appendArrayElem appends v as an element of a PostgreSQL array literal: strings (and times)
// double-quoted with backslash and double quote escaped, NULL unquoted.
func appendArrayElem(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "NULL"...), nil
	case string:
		b = append(b, '"')
		start := 0
		for i := 0; i < len(x); i++ {
			if c := x[i]; c == '"' || c == '\\' {
				b = append(b, x[start:i]...)
				b = append(b, '\\', c)
				start = i + 1
			}
		}
		b = append(b, x[start:]...)
		return append(b, '"'), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case bool:
		if x {
			return append(b, 't'), nil
		}
		return append(b, 'f'), nil
	case time.Time:
		b = append(b, '"')
		b = x.UTC().AppendFormat(b, "2006-01-02 15:04:05.999999Z07:00")
		return append(b, '"'), nil
	}
	return b, fmt.Errorf("%T is not a value upsertRows writes", v)
}

// chunkSize is the rows of the next statement for rest rows left: max, or the largest power of
// two not above rest. Few distinct statement sizes, each prepared once.
func chunkSize(rest, max int) int {
	k := max
	for k > rest {
		k >>= 1
	}
	return k
}

// sqliteExecRows executes a prepared multi-row statement over n rows, checking that each
// chunk changed every one of its rows.
func (s *Store) sqliteExecRows(ctx context.Context, w *wtx, ins sqliteInsert, n int, row rowValues) error {
	_, err := s.sqliteRows(ctx, w, ins, n, row, func(got, want int64) error {
		if got != want {
			return fmt.Errorf("%w: %d of %d rows stored, the others broke a constraint (a unique key)", errNotAllStored, got, want)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing %d rows (%s): %w", n, ins.name, err)
	}
	return nil
}

// sqliteRows executes a prepared multi-row statement over n rows, in chunks, and returns how many
// rows the chunks changed; check sees each chunk's count against its rows.
func (s *Store) sqliteRows(ctx context.Context, w *wtx, ins sqliteInsert, n int, row rowValues, check func(got, want int64) error) (int64, error) {
	args := make([]any, 0, sqliteMaxRows*ins.cols)
	var changed int64
	err := s.sqliteChunks(ctx, w, ins, n, func(st *sql.Stmt, lo, hi int) error {
		args = args[:0]
		for i := lo; i < hi; i++ {
			args = row(i, args)
		}
		if len(args) != (hi-lo)*ins.cols {
			return fmt.Errorf("%d values for %d rows of %d columns", len(args), hi-lo, ins.cols)
		}
		for j, v := range args {
			if t, ok := v.(time.Time); ok {
				args[j] = t.UTC().Format(sqliteTimeLayout)
			}
		}
		res, err := st.ExecContext(ctx, args...)
		if err != nil {
			return err
		}
		got, err := res.RowsAffected()
		if err != nil {
			return err
		}
		changed += got
		return check(got, int64(hi-lo))
	})
	return changed, err
}

// appendCopyValue appends one value of a row as a COPY text-format field.
func appendCopyValue(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, `\N`...), nil
	case string:
		return appendCopyText(b, x), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case bool:
		if x {
			return append(b, 't'), nil
		}
		return append(b, 'f'), nil
	case []byte:
		if x == nil {
			return append(b, `\N`...), nil
		}
		return appendCopyBytes(b, x), nil
	case time.Time:
		return appendCopyTime(b, x), nil
	}
	return b, fmt.Errorf("%T is not a value COPY writes", v)
}

// nullString is s's value for a bulk row: its string, or nil (NULL).
func nullString(s sql.NullString) any {
	if !s.Valid {
		return nil
	}
	return s.String
}

// nullInt64 is n's value for a bulk row: its int64, or nil (NULL).
func nullInt64(n sql.NullInt64) any {
	if !n.Valid {
		return nil
	}
	return n.Int64
}

// copyBufs are COPY data buffers, reused from batch to batch: a batch's decisions are about
// 1.5 MB of COPY text, and growing a new buffer to that size for every batch made ~1.8 GB of
// garbage per 200 000 orders (measured with load --memprofile).
var copyBufs = sync.Pool{New: func() any { return new([]byte) }}

// copyIn runs COPY table FROM STDIN with rows in PostgreSQL's text format and checks the count.

func copyIn(ctx context.Context, conn bun.Conn, table string, data []byte, rows int) error {
	res, err := pgdriver.CopyFrom(ctx, conn, bytes.NewReader(data), "COPY "+table+" FROM STDIN")
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n != int64(rows) {
		return fmt.Errorf("COPY stored %d rows, want %d", n, rows)
	}
	return nil
}

// appendCopyText appends s as a COPY text-format field: backslash, tab, newline and carriage
// return escaped.
func appendCopyText(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		var esc byte
		switch s[i] {
		case '\\':
			esc = '\\'
		case '\t':
			esc = 't'
		case '\n':
			esc = 'n'
		case '\r':
			esc = 'r'
		default:
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, '\\', esc)
		start = i + 1
	}
	return append(b, s[start:]...)
}

// appendCopyBytes appends bytes as a bytea field in hex (\x…, the backslash escaped for COPY).
func appendCopyBytes(b []byte, raw []byte) []byte {
	b = append(b, `\\x`...)
	n := len(b)
	b = append(b, make([]byte, hex.EncodedLen(len(raw)))...)
	hex.Encode(b[n:], raw)
	return b
}

// appendCopyTime appends a timestamptz field, in UTC with microseconds (PostgreSQL's precision).
func appendCopyTime(b []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(b, "2006-01-02 15:04:05.999999Z07:00")
}

// safeText makes s storable in a PostgreSQL TEXT column (and keeps SQLite's the same): invalid
// UTF-8 and NUL bytes become U+FFFD (engine.StorableText, the form leaves cover). Such bytes can
// reach the store only in ids the engine accepted from the order JSON; the raw event keeps the
// exact bytes. Without this, one such order would fail every retry of its batch.
func safeText(s string) string { return engine.StorableText(s) }
