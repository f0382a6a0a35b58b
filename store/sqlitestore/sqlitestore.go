// Package sqlitestore is Spool's embedded store: one SQLite file in WAL mode with
// synchronous=FULL, so that every acknowledged write has been fsync'd.
//
// All writes go through a single writer goroutine that owns the only write connection. It groups
// whatever writes are pending when it becomes free into one transaction (group commit), so that
// one fsync acknowledges many callers; a failing write never takes its neighbours down with it (a
// batch in which one fails runs again with a savepoint around each write). Because there is only one writer, selection and update
// need no row locks: two TakeJobs calls can never see the same queued job. Reads that change
// nothing use a separate pool of read-only connections, which WAL lets run alongside the writer.
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/spool-run/spool/store"
)

// readConns bounds the read pool. Readers never block each other or the writer in WAL mode, so a
// few connections are enough to serve concurrent status polls.
const readConns = 4

// Store is the SQLite implementation of store.Store. It is safe for concurrent use.
type Store struct {
	writeDB *sql.DB   // holds exactly one connection: conn
	conn    *sql.Conn // the write connection, used only by the writer goroutine after Open
	w       *prepared // conn, with prepared statements; the writer goroutine's only
	readDB  *sql.DB
	reads   *prepared // readDB with prepared statements

	// mu guards closed and the send side of ops: Close takes it exclusively, so no caller can be
	// sending (or reading) while the store shuts down.
	mu     sync.RWMutex
	closed bool
	ops    chan *op
	done   chan struct{} // closed when the writer goroutine has exited

	stats     counters
	onCommit  atomic.Pointer[func(time.Duration, int)] // see OnCommit
	counts    *counts
	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the SQLite database at path, applies pending schema migrations
// and starts the writer. The parent directory must exist. The database and its -wal and -shm files
// are made readable and writable by their owner only (see restrictFiles).
func Open(ctx context.Context, path string) (*Store, error) {
	s := &Store{ops: make(chan *op, maxBatch), done: make(chan struct{}), counts: newCounts()}
	if err := s.open(ctx, path); err != nil {
		s.release()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	go s.writeLoop()
	return s, nil
}

func (s *Store) open(ctx context.Context, path string) error {
	if err := restrictFiles(path); err != nil {
		return err
	}
	var err error
	// secure_delete(FAST) zeroes what a write frees on the pages it writes anyway, at no extra
	// I/O: a value replaced in place (a plaintext secret sealed by an upgrade) does not linger in
	// the file's free space.
	s.writeDB, err = sql.Open("sqlite", dsn(path,
		"busy_timeout(5000)", "foreign_keys(1)", "journal_mode(WAL)", "synchronous(FULL)", "secure_delete(FAST)"))
	if err != nil {
		return err
	}
	s.writeDB.SetMaxOpenConns(1)
	s.writeDB.SetMaxIdleConns(1)
	if s.conn, err = s.writeDB.Conn(ctx); err != nil {
		return err
	}
	if err := checkDurability(ctx, s.conn); err != nil {
		return err
	}
	if err := migrate(ctx, s.conn); err != nil {
		return err
	}
	if err := s.counts.load(ctx, s.conn); err != nil {
		return err
	}
	s.w = newPrepared(s.conn)
	// Readers are opened after the writer has switched the file to WAL; query_only makes a write
	// slipping onto the read path fail loudly instead of bypassing the writer.
	s.readDB, err = sql.Open("sqlite", dsn(path, "busy_timeout(5000)", "query_only(1)"))
	if err != nil {
		return err
	}
	s.readDB.SetMaxOpenConns(readConns)
	s.readDB.SetMaxIdleConns(readConns)
	s.reads = newPrepared(s.readDB)
	return s.readDB.PingContext(ctx)
}

// fileMode is the mode of the database files: they hold every job's input and output, so nobody
// but the server's user may read them, whatever the umask and the directory's mode.
const fileMode fs.FileMode = 0o600

// restrictFiles creates the database file with fileMode before SQLite opens it, and takes group
// and other access away from the files a previous run (or an older version) left looser. SQLite
// creates the main file 0644 but gives -wal, -shm and -journal the mode of the main file, so
// creating that one first is enough for new files; the others are fixed too when a crash left
// them behind.
func restrictFiles(path string) error {
	if err := restrictPath(path, os.O_RDWR|os.O_CREATE); err != nil {
		return err
	}
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		if err := restrictPath(path+suffix, os.O_RDWR); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// restrictPath opens path with flag (creating it with fileMode if flag says so) and restricts it.
func restrictPath(path string, flag int) error {
	f, err := os.OpenFile(path, flag, fileMode)
	if err != nil {
		return err
	}
	err = restrictFile(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// restrictFile sets fileMode on f when group or others have any access to it.
func restrictFile(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", f.Name())
	}
	if st.Mode().Perm()&0o077 == 0 {
		return nil
	}
	if err := f.Chmod(fileMode); err != nil {
		return fmt.Errorf("restrict %s to its owner: %w", f.Name(), err)
	}
	return nil
}

// checkDurability makes sure the pragmas that the durability promise rests on took effect: an
// unsupported filesystem can leave SQLite in another journal mode without an error.
func checkDurability(ctx context.Context, conn *sql.Conn) error {
	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("read journal_mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal_mode is %q, want wal", mode)
	}
	var sync int
	if err := conn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		return fmt.Errorf("read synchronous: %w", err)
	}
	if sync != 2 {
		return fmt.Errorf("synchronous is %d, want 2 (FULL)", sync)
	}
	return nil
}

// dsn builds a modernc.org/sqlite data source name. The path goes through SQLite's URI parser
// (because of the file: prefix), so the characters that parser treats specially are escaped.
func dsn(path string, pragmas ...string) string {
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	var b strings.Builder
	b.WriteString("file:" + esc)
	for i, p := range pragmas {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString("_pragma=" + p)
	}
	return b.String()
}

// Close commits every write already queued, stops the writer and closes the database. Later calls
// return the first call's result; every other method returns store.ErrClosed afterwards.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.ops)
		s.mu.Unlock()
		<-s.done
		s.closeErr = s.release()
	})
	return s.closeErr
}

// release closes whatever Open managed to open. Closing the last connection checkpoints the WAL
// into the main file, so a closed store is a single self-contained file.
func (s *Store) release() error {
	var errs []error
	if s.reads != nil {
		errs = append(errs, s.reads.Close())
	}
	if s.readDB != nil {
		errs = append(errs, s.readDB.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if s.conn != nil {
		errs = append(errs, s.conn.Close())
	}
	if s.writeDB != nil {
		errs = append(errs, s.writeDB.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sqlite store: %w", err)
	}
	return nil
}

// read runs fn on the read pool unless the store is closed. Holding the read lock for the whole
// call lets Close wait for in-flight reads instead of pulling the pool from under them.
func (s *Store) read(fn func(db queryer) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	return fn(s.reads)
}

// queryer is what the job and chunk loaders need; *sql.DB, *sql.Tx and the prepared read pool and
// writer connection all satisfy it, so the same code serves the read pool and the writer's
// transaction.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// isUnique reports whether err is a UNIQUE or PRIMARY KEY constraint violation.
func isUnique(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// notFound turns sql.ErrNoRows into store.ErrNotFound and leaves other errors alone.
func notFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// placeholders returns "?,?,?" for n parameters.
func placeholders(n int) string {
	if n == 0 {
		return ""
	}
	return strings.Repeat("?,", n-1) + "?"
}
