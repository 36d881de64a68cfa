package store

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun/driver/pgdriver"
)

// postgresURL is the test server: COMMISSIONER_TEST_POSTGRES, or the local one.
func postgresURL() string {
	if u := os.Getenv("COMMISSIONER_TEST_POSTGRES"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

var (
	pgAdminOnce sync.Once
	pgAdmin     *sql.DB
	pgAdminErr  error
)

// postgresAdmin returns a connection to the test server, skipping the test when there is none
// (failing when COMMISSIONER_INTEGRATION=1).
func postgresAdmin(tb testing.TB) *sql.DB {
	tb.Helper()
	pgAdminOnce.Do(func() {
		db := sql.OpenDB(pgdriver.NewConnector(pgdriver.WithDSN(postgresURL()), pgdriver.WithDialTimeout(3*time.Second)))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if pgAdminErr = db.PingContext(ctx); pgAdminErr != nil {
			db.Close()
			return
		}
		pgAdmin = db
	})
	if pgAdminErr != nil {
		msg := "PostgreSQL at " + Config{DSN: postgresURL()}.String() + " is not reachable: " + pgAdminErr.Error()
		if integrationRequired() {
			tb.Fatalf("%s (COMMISSIONER_INTEGRATION=1)", msg)
		}
		tb.Skipf("%s; set COMMISSIONER_INTEGRATION=1 to make this a failure", msg)
	}
	return pgAdmin
}

// freshSchema creates an empty schema, dropped when the test ends, and returns a config whose
// connections use it (search_path) and are named after it (application_name).
func freshSchema(tb testing.TB) Config {
	tb.Helper()
	postgresAdmin(tb) // skips (or fails) the test when PostgreSQL does not answer
	s, err := NewScratch(context.Background(), postgresURL(), "storetest", false)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return Config{DSN: s.DSN}
}

func postgresBackend() backend {
	return backend{
		fresh: freshSchema,
		kill: func(t *testing.T, cfg Config) {
			u, _ := url.Parse(cfg.DSN)
			app := u.Query().Get("application_name")
			if _, err := postgresAdmin(t).Exec(
				"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", app); err != nil {
				t.Fatalf("terminating the store's connections: %v", err)
			}
		},
	}
}

func TestPostgres(t *testing.T) {
	postgresAdmin(t) // skips (or fails) the whole suite once when there is no server
	runSuite(t, postgresBackend())
}
