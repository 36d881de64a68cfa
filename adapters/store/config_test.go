package store

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		dsn      string
		kind     Backend
		err      string // a substring of the Validate error; "" for valid
		redacted string // String(); "" for the DSN itself
	}{
		{dsn: "", err: "store.dsn is empty"},
		{dsn: "   ", err: "store.dsn is empty"},
		{dsn: "sqlite:///var/lib/commissioner/c.db", kind: SQLite},
		{dsn: "sqlite://data/c.db", kind: SQLite},
		{dsn: "data/c.db", kind: SQLite},
		{dsn: "sqlite://", err: "names no SQLite file"},
		{dsn: "sqlite:///tmp/c.db?mode=memory", err: "may not contain '?'"},
		{dsn: ":memory:", err: "may not be :memory:"},
		{dsn: "mysql://u:p@h/db", err: `scheme "mysql" is not supported`, redacted: "mysql://u:xxxxx@h/db"},
		{dsn: "postgres://app:s3cret@db.internal:5432/commissioner?sslmode=disable", kind: Postgres,
			redacted: "postgres://app:xxxxx@db.internal:5432/commissioner?sslmode=disable"},
		{dsn: "postgresql://app@db/commissioner?password=s3cret", kind: Postgres,
			redacted: "postgresql://app@db/commissioner?password=xxxxx"},
		{dsn: "postgres:///commissioner", err: "names no host"},
		{dsn: "postgres://app:s3cret@db:bad port/x", err: "store.dsn", redacted: "postgres://(unparsable, hidden)"},
	} {
		cfg := Config{DSN: tc.dsn}
		err := cfg.Validate()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("Validate(%q) = %v, want nil", tc.dsn, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrConfig)):
			t.Errorf("Validate(%q) = %v, want an ErrConfig saying %q", tc.dsn, err, tc.err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Validate(%q) error %q shows the password", tc.dsn, err)
		}
		if got := cfg.Backend(); got != tc.kind {
			t.Errorf("Kind(%q) = %q, want %q", tc.dsn, got, tc.kind)
		}
		want := tc.redacted
		if want == "" {
			want = tc.dsn
		}
		if got := cfg.String(); got != want {
			t.Errorf("String(%q) = %q, want %q", tc.dsn, got, want)
		}
	}
}

func TestOpenRefusesAnInvalidConfig(t *testing.T) {
	if s, err := Open(context.Background(), Config{}); err == nil || !errors.Is(err, ErrConfig) {
		t.Errorf("Open(empty DSN) = %v, %v; want an ErrConfig", s, err)
	}
}
