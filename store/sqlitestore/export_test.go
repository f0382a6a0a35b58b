package sqlitestore

import "context"

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
