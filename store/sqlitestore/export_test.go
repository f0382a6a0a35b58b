package sqlitestore

import (
	"context"
	"database/sql"
	"strings"

	"github.com/spool-run/spool/store"
)

// WriterPragma reads a pragma on the write connection, through the writer like any write.
func (s *Store) WriterPragma(ctx context.Context, name string) (string, error) {
	return doResult(ctx, s, func(ctx context.Context, tx queryer) (string, error) {
		var v string
		err := tx.QueryRowContext(ctx, "PRAGMA "+name).Scan(&v)
		return v, err
	})
}

// SchemaVersions lists the applied migrations.
func (s *Store) SchemaVersions(ctx context.Context) ([]int, error) {
	rows, err := s.readDB.QueryContext(ctx, "SELECT version FROM schema_migrations ORDER BY version")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var vs []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	return vs, rows.Err()
}

// Migrations is the number of migrations this package knows.
var Migrations = len(migrations)

// BlockWriter occupies the writer: it closes started once the writer runs it, then waits for
// release. Writes submitted meanwhile queue up behind it.
func (s *Store) BlockWriter(ctx context.Context, started chan<- struct{}, release <-chan struct{}) error {
	return s.do(ctx, func(context.Context, queryer) error {
		close(started)
		<-release
		return nil
	})
}

// Queued reports how many writes wait for the writer.
func (s *Store) Queued() int { return len(s.ops) }

// CreateAtVersion creates a database at path with only the first v migrations applied, and runs
// stmts on it: a file as an older binary left it.
func CreateAtVersion(ctx context.Context, path string, v int, stmts ...string) error {
	db, err := sql.Open("sqlite", dsn(path, "journal_mode(WAL)"))
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := migrateTo(ctx, conn, migrations[:v]); err != nil {
		return err
	}
	for _, q := range stmts {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// FindJobsPlan is SQLite's plan for the query FindJobs makes of f, one step a line.
func (s *Store) FindJobsPlan(ctx context.Context, f store.JobFilter) (string, error) {
	query, args, err := findJobsQuery(f)
	if err != nil {
		return "", err
	}
	steps, err := readAll(ctx, s, func(row scanner) (string, error) {
		var id, parent, unused int
		var detail string
		return detail, row.Scan(&id, &parent, &unused, &detail)
	}, "EXPLAIN QUERY PLAN "+query, args...)
	return strings.Join(steps, "\n"), err
}
