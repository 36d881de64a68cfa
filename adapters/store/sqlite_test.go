package store

import (
	"path/filepath"
	"testing"
)

// sqliteBackend makes each database a file in the test's temp dir.
func sqliteBackend() backend {
	return backend{
		fresh: func(tb testing.TB) Config {
			return Config{DSN: "sqlite://" + filepath.Join(tb.TempDir(), "commissioner.db")}
		},
	}
}

func TestSQLite(t *testing.T) { runSuite(t, sqliteBackend()) }
