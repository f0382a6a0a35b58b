package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// AppendChunk implements store.Store, in one statement: the job's counter moves, if the job meets
// the expectation, and the chunk is inserted under the new count. Only when nothing was appended
// does a second read tell a missing job from one that is not as expected.
func (s *Store) AppendChunk(ctx context.Context, p store.AppendChunkParams) (bool, error) {
	var ps params
	w := newWhere(&ps)
	w.add("jobs.id = ?", p.ID)
	w.expect(p.Expect)
	data := ps.add(bytea(p.Data))
	query := `WITH bumped AS (UPDATE jobs SET stream_count = stream_count + 1` + w.String() + ` RETURNING jobs.id, jobs.stream_count)
		INSERT INTO stream_chunks (job_id, seq, data) SELECT id, stream_count, ` + data + `::bytea FROM bumped`
	var appended bool
	err := s.write(ctx, func(ctx context.Context, q querier) error {
		tag, err := q.Exec(ctx, query, ps.args...)
		if err != nil {
			return err
		}
		if appended = tag.RowsAffected() == 1; appended {
			return nil
		}
		var one int
		return notFound(q.QueryRow(ctx, "SELECT 1 FROM jobs WHERE id = $1", p.ID).Scan(&one))
	})
	if err != nil {
		return false, fmt.Errorf("append chunk to job %s: %w", p.ID, err)
	}
	return appended, nil
}

// chunksQuery reads a job (with the payloads with names) and, in the same statement and so the
// same snapshot, its chunks after the value of the expression after, at most limit of them (a
// placeholder): their numbers and their data as two arrays in seq order. $1 is the job's id.
func chunksQuery(with store.Payloads, after, limit, suffix string) string {
	chunks := `FROM stream_chunks c WHERE c.job_id = jobs.id AND c.seq > ` + after + ` ORDER BY c.seq LIMIT ` + limit
	return "SELECT " + jobColumns(with) + `,
		ARRAY(SELECT c.seq ` + chunks + `),
		ARRAY(SELECT c.data ` + chunks + `)
	FROM jobs WHERE jobs.id = $1` + suffix
}

// scanChunks reads a row of chunksQuery.
func scanChunks(row pgx.Row, with store.Payloads) (*spool.Job, []spool.Chunk, error) {
	var (
		seqs []int64
		data [][]byte
	)
	j, err := scanJob(row, with, &seqs, &data)
	if err != nil {
		return nil, nil, notFound(err)
	}
	if len(seqs) != len(data) {
		return nil, nil, fmt.Errorf("pgstore: %d chunk numbers for %d chunks", len(seqs), len(data))
	}
	var chunks []spool.Chunk
	for i, seq := range seqs {
		chunks = append(chunks, spool.Chunk{Seq: seq, Data: rawJSON(data[i])})
	}
	return j, chunks, nil
}

// ReadChunks implements store.Store. A plain read is one statement; a drain locks the job's row,
// so that drains of one job take turns and each chunk comes out of exactly one, and writes the
// cursor in the same transaction.
func (s *Store) ReadChunks(ctx context.Context, p store.ReadChunksParams) (*spool.Job, []spool.Chunk, error) {
	if p.Drain {
		return s.drainChunks(ctx, p)
	}
	var (
		j      *spool.Job
		chunks []spool.Chunk
	)
	err := s.read(ctx, func(q querier) error {
		var err error
		j, chunks, err = scanChunks(q.QueryRow(ctx, chunksQuery(p.With, "$2", "$3", ""), p.ID, p.After, limit(p.Limit)), p.With)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read chunks of job %s: %w", p.ID, err)
	}
	return j, chunks, nil
}

func (s *Store) drainChunks(ctx context.Context, p store.ReadChunksParams) (*spool.Job, []spool.Chunk, error) {
	var (
		j      *spool.Job
		chunks []spool.Chunk
	)
	// The row lock is taken before the projection is computed: a drain that waited for another
	// reads the cursor that one wrote. NO KEY UPDATE leaves the foreign-key checks of chunk
	// inserts alone.
	query := chunksQuery(p.With, "jobs.stream_cursor", "$2", " FOR NO KEY UPDATE OF jobs")
	err := s.writeTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		if j, chunks, err = scanChunks(tx.QueryRow(ctx, query, p.ID, limit(p.Limit)), p.With); err != nil {
			return err
		}
		if len(chunks) == 0 {
			return nil
		}
		j.StreamCursor = chunks[len(chunks)-1].Seq
		_, err = tx.Exec(ctx, "UPDATE jobs SET stream_cursor = $1 WHERE id = $2", j.StreamCursor, j.ID)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("drain chunks of job %s: %w", p.ID, err)
	}
	return j, chunks, nil
}
