package store

import (
	"fmt"
	"time"
)

// sqliteTimeLayout is how bun writes times into SQLite: UTC, microseconds, trailing zeros dropped.
const sqliteTimeLayout = "2006-01-02 15:04:05.999999-07:00"

// timeCol selects a time column so that it scans fast: SQLite's driver would try several layouts
// on every TIMESTAMP value (a third of the time of streaming events); as text, parseTime reads
// bun's one layout directly.
func (s *Store) timeCol(col string) string {
	if s.backend == SQLite {
		return "CAST(" + col + " AS TEXT)"
	}
	return col
}

// timeScanner scans a time column read as a time.Time (PostgreSQL) or as text (SQLite).
type timeScanner struct{ t *time.Time }

func (ts timeScanner) Scan(v any) error {
	switch x := v.(type) {
	case time.Time:
		*ts.t = x.UTC()
		return nil
	case string:
		return parseTime(x, ts.t)
	case []byte:
		return parseTime(string(x), ts.t)
	}
	return fmt.Errorf("scanning a time: unexpected %T", v)
}

// parseTime parses "2006-01-02 15:04:05[.ffffff]+00:00" without time.Parse; anything else goes to
// time.Parse with bun's layout.
func parseTime(s string, t *time.Time) error {
	num := func(i, n int) (int, bool) {
		v := 0
		for j := i; j < i+n; j++ {
			c := s[j]
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		return v, true
	}
	if len(s) >= 25 && s[4] == '-' && s[7] == '-' && s[10] == ' ' && s[13] == ':' && s[16] == ':' && s[len(s)-6:] == "+00:00" {
		y, ok1 := num(0, 4)
		mo, ok2 := num(5, 2)
		d, ok3 := num(8, 2)
		h, ok4 := num(11, 2)
		mi, ok5 := num(14, 2)
		sec, ok6 := num(17, 2)
		frac, nanos, ok := s[19:len(s)-6], 0, ok1 && ok2 && ok3 && ok4 && ok5 && ok6
		if ok && frac != "" {
			if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
				ok = false
			} else {
				for k := 1; k < 10; k++ {
					nanos *= 10
					if k < len(frac) {
						c := frac[k]
						if c < '0' || c > '9' {
							ok = false
						}
						nanos += int(c - '0')
					}
				}
			}
		}
		if ok {
			*t = time.Date(y, time.Month(mo), d, h, mi, sec, nanos, time.UTC)
			return nil
		}
	}
	p, err := time.Parse(sqliteTimeLayout, s)
	if err != nil {
		return fmt.Errorf("scanning a time: %w", err)
	}
	*t = p.UTC()
	return nil
}

// optTimeScanner scans a nullable time: NULL leaves *t nil.
type optTimeScanner struct{ t **time.Time }

func (o optTimeScanner) Scan(v any) error {
	if v == nil {
		*o.t = nil
		return nil
	}
	var t time.Time
	if err := (timeScanner{&t}).Scan(v); err != nil {
		return err
	}
	*o.t = &t
	return nil
}
