package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// AppendChunk implements store.Store.
func (s *Store) AppendChunk(ctx context.Context, p store.AppendChunkParams) (bool, error) {
	var w where
	w.add("jobs.id = ?", p.ID)
	w.expect(p.Expect)
	bump := "UPDATE jobs SET stream_count = stream_count + 1" + w.String() + " RETURNING stream_count"
	data := blob(p.Data)
	return doResult(ctx, s, func(ctx context.Context, tx queryer) (bool, error) {
		var seq int64
		err := tx.QueryRowContext(ctx, bump, w.args...).Scan(&seq)
		if errors.Is(err, sql.ErrNoRows) {
			var one int
			err := tx.QueryRowContext(ctx, "SELECT 1 FROM jobs WHERE id = ?", p.ID).Scan(&one)
			if err != nil {
				return false, fmt.Errorf("append chunk to job %s: %w", p.ID, notFound(err))
			}
			return false, nil // there, but not as expected
		}
		if err != nil {
			return false, fmt.Errorf("append chunk to job %s: %w", p.ID, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO stream_chunks (job_id, seq, data) VALUES (?, ?, ?)", p.ID, seq, data); err != nil {
			return false, fmt.Errorf("append chunk to job %s: %w", p.ID, err)
		}
		return true, nil
	})
}

// ReadChunks implements store.Store. A drain writes the cursor, so it goes through the writer;
// a plain read uses one read transaction, so the job and its chunks come from the same snapshot.
func (s *Store) ReadChunks(ctx context.Context, p store.ReadChunksParams) (*spool.Job, []spool.Chunk, error) {
	if p.Drain {
		return s.drainChunks(ctx, p)
	}
	var (
		j      *spool.Job
		chunks []spool.Chunk
	)
	err := s.read(func(queryer) error {
		// A transaction: one snapshot for every query (the prepared statements are for single ones).
		tx, err := s.readDB.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }() // read-only: nothing to commit
		if j, err = loadJob(ctx, tx, p.ID, p.With); err != nil {
			return err
		}
		chunks, err = loadChunks(ctx, tx, p.ID, p.After, p.Limit)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read chunks of job %s: %w", p.ID, err)
	}
	return j, chunks, nil
}

type drained struct {
	job    *spool.Job
	chunks []spool.Chunk
}

func (s *Store) drainChunks(ctx context.Context, p store.ReadChunksParams) (*spool.Job, []spool.Chunk, error) {
	d, err := doResult(ctx, s, func(ctx context.Context, tx queryer) (drained, error) {
		j, err := loadJob(ctx, tx, p.ID, p.With)
		if err != nil {
			return drained{}, err
		}
		chunks, err := loadChunks(ctx, tx, p.ID, j.StreamCursor, p.Limit)
		if err != nil || len(chunks) == 0 {
			return drained{j, chunks}, err
		}
		j.StreamCursor = chunks[len(chunks)-1].Seq
		if _, err := tx.ExecContext(ctx, "UPDATE jobs SET stream_cursor = ? WHERE id = ?", j.StreamCursor, j.ID); err != nil {
			return drained{}, err
		}
		return drained{j, chunks}, nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("drain chunks of job %s: %w", p.ID, err)
	}
	return d.job, d.chunks, nil
}

// loadChunks reads the chunks of a job with seq > after, at most limit of them (0: all).
func loadChunks(ctx context.Context, q queryer, id string, after int64, limit int) ([]spool.Chunk, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := q.QueryContext(ctx, "SELECT seq, data FROM stream_chunks WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
		id, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var chunks []spool.Chunk
	for rows.Next() {
		var c spool.Chunk
		if err := rows.Scan(&c.Seq, rawDest{&c.Data}); err != nil {
			return nil, err
		}
		chunks = append(chunks, c)
	}
	return chunks, rows.Err()
}
