package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"regexp"

	"github.com/uptrace/bun/driver/pgdriver"
)

// Scratch is a PostgreSQL schema of its own for a run that must not touch the database's data
// (commissioner load, the tests): created by NewScratch, dropped by Close. Its DSN names the
// schema (search_path) and names the connections (application_name), so the server processes
// serving them can be found (ServerPIDs).
type Scratch struct {
	DSN    string // the given DSN with search_path and application_name set
	Schema string // "" when the given DSN named its own search_path (nothing is created or dropped)
	Name   string // the connections' application_name
	admin  *sql.DB
	keep   bool
}

var scratchPrefix = regexp.MustCompile(`^[a-z][a-z0-9_]{0,30}$`)

// NewScratch gives a PostgreSQL DSN without a search_path a new schema named prefix_<random hex>,
// created now. A DSN with a search_path is used as it is (Schema ""). With keep, Close leaves the
// schema in place.
func NewScratch(ctx context.Context, dsn, prefix string, keep bool) (*Scratch, error) {
	if !scratchPrefix.MatchString(prefix) {
		return nil, fmt.Errorf("scratch schema prefix %q: want lower-case letters, digits and _", prefix)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, fmt.Errorf("store dsn: %w", err)
	}
	var b [6]byte
	rand.Read(b[:])
	s := &Scratch{Name: prefix + "_" + hex.EncodeToString(b[:]), keep: keep}
	s.admin = sql.OpenDB(pgdriver.NewConnector(pgdriver.WithDSN(dsn)))
	q := u.Query()
	if q.Get("search_path") == "" {
		if _, err := s.admin.ExecContext(ctx, "CREATE SCHEMA "+s.Name); err != nil {
			s.admin.Close()
			return nil, fmt.Errorf("creating schema %s: %w", s.Name, err)
		}
		s.Schema = s.Name
		q.Set("search_path", s.Schema)
	}
	q.Set("application_name", s.Name)
	u.RawQuery = q.Encode()
	s.DSN = u.String()
	return s, nil
}

// Close drops the schema (unless kept, or not created here) and closes the admin connection.
func (s *Scratch) Close() error {
	defer s.admin.Close()
	if s.Schema == "" || s.keep {
		return nil
	}
	if _, err := s.admin.ExecContext(context.Background(), "DROP SCHEMA "+s.Schema+" CASCADE"); err != nil {
		return fmt.Errorf("dropping schema %s: %w", s.Schema, err)
	}
	return nil
}

// ServerPIDs returns the process ids of the server processes serving the DSN's connections (to
// read their CPU time when the server runs on this machine).
func (s *Scratch) ServerPIDs(ctx context.Context) ([]int, error) {
	rows, err := s.admin.QueryContext(ctx, "SELECT pid FROM pg_stat_activity WHERE application_name = $1", s.Name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			return nil, err
		}
		out = append(out, pid)
	}
	return out, rows.Err()
}
