package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/pgdriver"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Config says which database to use. It is the store's part of Commissioner's configuration.
type Config struct {
	// DSN is one of:
	//   - postgres://user:password@host:port/database?sslmode=disable (or postgresql://…):
	//     PostgreSQL; query parameters other than pgdriver's own (sslmode, application_name,
	//     timeouts…) are sent as run-time parameters, e.g. search_path=myschema;
	//   - sqlite:///path/to/file.db (or sqlite://relative/file.db), or a plain file path: SQLite.
	DSN string
}

// Backend is the database behind a DSN: SQLite or PostgreSQL.
type Backend string

// The backends.
const (
	SQLite   Backend = "sqlite"
	Postgres Backend = "postgres"
)

// ErrConfig is matched (errors.Is) by every configuration error.
var ErrConfig = errors.New("invalid store configuration")

// parsed is a validated DSN.
type parsed struct {
	backend Backend
	path    string // SQLite file
	url     string // PostgreSQL URL
}

func (c Config) parse() (parsed, error) {
	dsn := strings.TrimSpace(c.DSN)
	switch {
	case dsn == "":
		return parsed{}, fmt.Errorf("%w: store.dsn is empty: give a PostgreSQL URL (postgres://…) or a SQLite file (sqlite:///path/to/file.db)", ErrConfig)
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		u, err := url.Parse(dsn)
		if err != nil {
			return parsed{}, fmt.Errorf("%w: store.dsn: %v", ErrConfig, redactErr(err, c.DSN))
		}
		if u.Host == "" {
			return parsed{}, fmt.Errorf("%w: store.dsn %s names no host", ErrConfig, c.String())
		}
		return parsed{backend: Postgres, url: dsn}, nil
	case strings.HasPrefix(dsn, "sqlite://"):
		return sqlitePath(strings.TrimPrefix(dsn, "sqlite://"), dsn)
	case strings.Contains(dsn, "://"):
		scheme, _, _ := strings.Cut(dsn, "://")
		return parsed{}, fmt.Errorf("%w: store.dsn scheme %q is not supported (postgres://, postgresql://, sqlite://, or a file path)", ErrConfig, scheme)
	default:
		return sqlitePath(dsn, dsn)
	}
}

func sqlitePath(path, dsn string) (parsed, error) {
	if path == "" {
		return parsed{}, fmt.Errorf("%w: store.dsn %q names no SQLite file", ErrConfig, dsn)
	}
	if strings.ContainsAny(path, "?#") || path == ":memory:" {
		return parsed{}, fmt.Errorf("%w: store.dsn %q: a SQLite file path may not contain '?' or '#' and may not be :memory: (decisions must be durable)", ErrConfig, dsn)
	}
	return parsed{backend: SQLite, path: path}, nil
}

// Validate reports whether the DSN names a database this package can open.
func (c Config) Validate() error {
	_, err := c.parse()
	return err
}

// Backend returns the database the DSN names ("" when it is invalid).
func (c Config) Backend() Backend {
	p, _ := c.parse()
	return p.backend
}

// String returns the DSN with any password masked, for logs and `commissioner config`.
func (c Config) String() string { return redactDSN(c.DSN) }

func redactDSN(dsn string) string {
	if !strings.Contains(dsn, "://") || strings.HasPrefix(dsn, "sqlite://") {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		// Unparsable: show only the scheme, never what might be a password.
		scheme, _, _ := strings.Cut(dsn, "://")
		return scheme + "://(unparsable, hidden)"
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// redactErr keeps url.Parse errors from quoting the DSN (and its password).
func redactErr(err error, dsn string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return errors.New(strings.ReplaceAll(err.Error(), dsn, redactDSN(dsn)))
}

// sqliteBusyTimeout is how long a SQLite writer waits for another process's write transaction.
const sqliteBusyTimeoutMS = 10000

// sqliteDSN builds the modernc.org/sqlite DSN.
//
//   - journal_mode=WAL: readers (replay, audit, the API) never block the writer, nor it them.
//   - synchronous=FULL: the WAL is fsynced at every commit. The pipeline acks a batch as soon as
//     WriteBatch returns, so a commit must survive a power cut or an OS crash, not only a process
//     crash (NORMAL would lose the last commits then, and those messages would never be
//     redelivered). One fsync per batch of ~1 000 orders costs little.
//   - busy_timeout: a second process's writer waits for the lock rather than failing at once.
//   - _txlock=immediate: every transaction takes the write lock at BEGIN, so a writer that read
//     the chain head can never fail to upgrade to a write lock (SQLITE_BUSY_SNAPSHOT) — the write
//     transaction itself is the lock on the chain.
func sqliteDSN(path string) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeoutMS))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	return path + "?" + q.Encode()
}

// sqliteWriterPragmas set up SQLite's one write connection (readers keep the defaults).
//
//   - temp_store=MEMORY keeps a multi-row statement's journal (the pages it changes, kept to undo
//     the statement alone) in memory: by default it spills to a temporary file past 64 KiB, and
//     writing it there cost more than the inserts themselves. The bulk INSERTs need none (OR
//     IGNORE, bulk.go); the other statements' journals last one statement and stay small.
//   - cache_size: the pages a batch changes, the index pages its random keys land on and the
//     upper levels of every B-tree stay in memory instead of being read back from the file; the
//     default 2 MiB holds less than one batch. The cache is bounded: memory stays flat.
//   - wal_autocheckpoint=0: the committing connection never copies the WAL into the database
//     itself (that cost ~8 ms of every batch's write lock at 10 000 pages); checkpointer does it
//     beside the writer, on another connection (PASSIVE: it never blocks the writer). Durability is
//     the WAL's, fsynced at every commit (synchronous=FULL).
var sqliteWriterPragmas = []string{
	"PRAGMA temp_store = MEMORY",
	"PRAGMA cache_size = -32768", // KiB: 32 MiB
	"PRAGMA wal_autocheckpoint = 0",
}

// checkpointEvery is how often the checkpointer copies the committed WAL into the database file
// (when something was committed since): the WAL stays at a few batches' pages, and each index page
// a burst of batches touches is copied once.
const checkpointEvery = 250 * time.Millisecond

// stopCheckpointer ends the checkpointer (SQLite) and waits for it.
func (s *Store) stopCheckpointer() {
	if s.stopCheckpoints != nil {
		close(s.stopCheckpoints)
		<-s.checkpointsDone
		s.stopCheckpoints = nil
	}
}

// checkpointer copies the WAL into the database beside the writer until stop is closed.
func (s *Store) checkpointer(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	seen := uint64(0)
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if n := s.commits.Load(); n != seen {
			seen = n
			// PASSIVE: copies what no reader still needs, without waiting for any lock; the
			// writer's next transaction restarts the WAL once all of it was copied.
			_, _ = s.db.ExecContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)")
		}
	}
}

// Store is the bun persistence layer. Make one with Open; Close it when done.
type Store struct {
	db      *bun.DB
	backend Backend
	cfg     Config

	// writeMu serialises this process's SQLite write transactions, so they queue in Go rather
	// than polling SQLite's busy handler (other processes still wait through busy_timeout), and
	// guards writer. Unused for PostgreSQL, where row locks do the work.
	writeMu sync.Mutex
	// writer is SQLite's one write connection, kept for the Store's life: its page cache stays
	// warm and valid (no other connection of this process writes), where a pooled connection
	// would find its cache stale after every other connection's commit.
	writer *bun.Conn
	// writerStmts are the INSERTs prepared on writer (bulk.go), by table and rows per statement;
	// they go with the connection.
	writerStmts map[string]*sql.Stmt

	// known caches the policy versions this Store has seen stored: "program\x00version" → digest.
	// Filled only after a commit, so a rolled-back batch never leaves a version marked as stored.
	knownMu sync.Mutex
	known   map[string]string

	// leaderMu lets one WriteBatch at a time write SQLite's waiting group of batches (group, under
	// groupMu): see writeGrouped.
	leaderMu sync.Mutex
	groupMu  sync.Mutex
	group    []*groupWrite

	// commits counts SQLite write transactions committed; stopCheckpoints ends the checkpointer.
	commits         atomic.Uint64
	stopCheckpoints chan struct{}
	checkpointsDone chan struct{}

	// hookBeforeCommit, when set (tests), runs at the end of WriteBatch's transaction.
	hookBeforeCommit func(ctx context.Context) error
}

// Open connects to the database the config names, checks that it answers, and migrates the
// schema to the latest version (Migrate). A failed Open closes what it opened.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	p, err := cfg.parse()
	if err != nil {
		return nil, err
	}
	s := &Store{backend: p.backend, cfg: cfg, known: map[string]string{}}
	switch p.backend {
	case SQLite:
		if dir := filepath.Dir(p.path); dir != "" {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, fmt.Errorf("opening store %s: %w", cfg, err)
			}
		}
		// The database holds every decision and the ledger: a new file is the owner's alone
		// (SQLite gives its -wal and -shm files the database file's mode).
		if f, err := os.OpenFile(p.path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
			f.Close()
		} else if !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("opening store %s: %w", cfg, err)
		}
		sqldb, err := sql.Open("sqlite", sqliteDSN(p.path))
		if err != nil {
			return nil, fmt.Errorf("opening store %s: %w", cfg, err)
		}
		// A few connections: one writer at a time (the write lock), readers beside it (WAL).
		sqldb.SetMaxOpenConns(4)
		sqldb.SetMaxIdleConns(4)
		s.db = bun.NewDB(sqldb, sqlitedialect.New())
		s.stopCheckpoints, s.checkpointsDone = make(chan struct{}), make(chan struct{})
		go s.checkpointer(s.stopCheckpoints, s.checkpointsDone)
	case Postgres:
		// pgdriver waits 10 s for a reply by default: too short for a report over millions of
		// rows or a sort before the first row of a replay. The DSN's read_timeout still wins;
		// callers bound their work with the context.
		sqldb := sql.OpenDB(pgdriver.NewConnector(pgdriver.WithReadTimeout(2*time.Minute),
			pgdriver.WithWriteTimeout(time.Minute), pgdriver.WithDSN(p.url)))
		sqldb.SetMaxOpenConns(8)
		sqldb.SetMaxIdleConns(8)
		s.db = bun.NewDB(sqldb, pgdialect.New())
	}
	if err := s.firstPing(ctx); err != nil {
		s.stopCheckpointer()
		s.db.Close()
		return nil, fmt.Errorf("opening store %s: %w", cfg, err)
	}
	if err := s.Migrate(ctx); err != nil {
		s.stopCheckpointer()
		s.db.Close()
		return nil, fmt.Errorf("opening store %s: %w", cfg, err)
	}
	return s, nil
}

// Backend returns the database behind the store.
func (s *Store) Backend() Backend { return s.backend }

// firstPing checks that the database answers. On SQLite the first connection also turns a new
// file to WAL mode, which needs the file to itself: when several processes open a new file at
// once, SQLite reports SQLITE_BUSY for that without waiting (busy_timeout does not apply), so the
// ping is retried until the busy timeout has passed.
func (s *Store) firstPing(ctx context.Context) error {
	deadline := time.Now().Add(sqliteBusyTimeoutMS * time.Millisecond)
	wait := time.Millisecond
	for {
		err := s.db.PingContext(ctx)
		var se *sqlite.Error
		if err == nil || s.backend != SQLite || !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// Ping checks that the database answers (readiness).
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("pinging store %s: %w", s.cfg, err)
	}
	return nil
}

// String names the store with its password masked.
func (s *Store) String() string { return string(s.backend) + " " + s.cfg.String() }

// DB returns the underlying bun database, for tests and one-off tools. Writing through it
// bypasses the hash chain.
func (s *Store) DB() *bun.DB { return s.db }

// Close closes the database. It waits for queries in flight; calls after Close fail.
func (s *Store) Close() error {
	s.stopCheckpointer()
	s.writeMu.Lock()
	s.closeWriter()
	s.writeMu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing store %s: %w", s.cfg, err)
	}
	return nil
}

// init registers the exact decimal aggregate on the "sqlite" driver (SQLite's own SUM goes
// through float64; commission totals must not). The driver requires registration before any
// connection opens, hence init rather than Open.
func init() {
	sqlite.MustRegisterFunction(decimalSumFunc, &sqlite.FunctionImpl{
		NArgs:         1,
		Deterministic: true,
		MakeAggregate: func(sqlite.FunctionContext) (sqlite.AggregateFunction, error) {
			return &decimalSum{}, nil
		},
	})
}

// writeTx runs fn in a write transaction: on SQLite on the Store's one write connection, under
// writeMu; on PostgreSQL on a pooled connection it keeps for the transaction (COPY needs it).
func (s *Store) writeTx(ctx context.Context, fn func(ctx context.Context, w *wtx) error) error {
	err := s.runWriteTx(ctx, fn)
	// database/sql rolls a transaction back when its context is cancelled, racing the commit:
	// the commit then fails with ErrTxDone. Report the cause, which callers branch on.
	if errors.Is(err, sql.ErrTxDone) && ctx.Err() != nil {
		return fmt.Errorf("%w (the transaction was rolled back)", context.Cause(ctx))
	}
	return err
}

func (s *Store) runWriteTx(ctx context.Context, fn func(ctx context.Context, w *wtx) error) error {
	if s.backend != SQLite {
		conn, err := s.db.Conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		return conn.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			return fn(ctx, &wtx{Tx: tx, conn: conn})
		})
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.writer == nil {
		c, err := s.db.Conn(ctx)
		if err != nil {
			return err
		}
		for _, pragma := range sqliteWriterPragmas {
			if _, err := c.ExecContext(ctx, pragma); err != nil {
				c.Close()
				return fmt.Errorf("setting up the write connection: %s: %w", pragma, err)
			}
		}
		s.writer = &c
	}
	err := s.writer.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		return fn(ctx, &wtx{Tx: tx, conn: *s.writer})
	})
	if err == nil {
		s.commits.Add(1)
	}
	if errors.Is(err, sql.ErrConnDone) || errors.Is(err, driver.ErrBadConn) {
		s.closeWriter()
	}
	return err
}

// closeWriter closes SQLite's write connection and its prepared statements (under writeMu).
func (s *Store) closeWriter() {
	for _, st := range s.writerStmts {
		st.Close()
	}
	s.writerStmts = nil
	if s.writer != nil {
		s.writer.Close()
		s.writer = nil
	}
}
