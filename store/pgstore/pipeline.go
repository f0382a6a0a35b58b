package pgstore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The hot writes (a submission, a claim, a job's end) are single statements. Under load, the
// pipeline gathers those that are waiting and sends them in one round trip as one transaction
// (BEGIN, the statements, COMMIT, pipelined), so that a busy server pays one round trip and one
// WAL flush for many of them instead of one each. Alone, a statement runs as before: by itself,
// one round trip.

const (
	// pipeWriters is how many batches may be in flight at once, each on a connection of its own.
	pipeWriters = 4
	// pipeMax bounds the statements of one batch.
	pipeMax = 64
	// pipeTimeout bounds one batch: a server that does not answer fails its writes (unavailable)
	// rather than holding a writer for ever.
	pipeTimeout = 30 * time.Second
)

// A statement is one write for the pipeline.
type statement struct {
	sql  string
	args []any
	// read reads the statement's rows (nil reads none). It may run twice, the first time in a
	// batch that is then rolled back, so it must set its results afresh.
	read func(pgx.Rows) error
}

// An op's state moves once, from pending to taken (by a writer) or to cancelled (by its caller,
// whose ctx ended first): a write is either skipped and reported as cancelled, or run and
// reported with its outcome, never both.
const (
	opPending int32 = iota
	opTaken
	opCancelled
)

type pipeOp struct {
	st    statement
	state atomic.Int32
	done  chan error // buffered: a writer never blocks on a caller that gave up
}

type pipeline struct {
	pool    *pgxpool.Pool
	ops     chan *pipeOp
	wg      sync.WaitGroup
	commits *commitHook // the store's: told of each batch, and each statement alone, that committed

	// Counters: statements run, batches of more than one, and batches rolled back and run again
	// one by one.
	statements, batches, rerun atomic.Int64
}

func newPipeline(pool *pgxpool.Pool, commits *commitHook) *pipeline {
	p := &pipeline{pool: pool, ops: make(chan *pipeOp, pipeMax*pipeWriters), commits: commits}
	p.wg.Add(pipeWriters)
	for range pipeWriters {
		go p.writer()
	}
	return p
}

// close stops the writers once every queued statement has run. No pipe may be called after it.
func (p *pipeline) close() {
	close(p.ops)
	p.wg.Wait()
}

// pipe runs st through the pipeline and returns its outcome. If ctx ends before a writer has taken
// st, it never runs and pipe returns ctx.Err(); once taken, pipe waits for the outcome, so a write
// that committed is never reported as cancelled. The caller holds the store's enter.
func (s *Store) pipe(ctx context.Context, st statement) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := &pipeOp{st: st, done: make(chan error, 1)}
	select {
	case s.pipeline.ops <- o:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		if o.state.CompareAndSwap(opPending, opCancelled) {
			return ctx.Err()
		}
		return <-o.done
	}
}

func (p *pipeline) writer() {
	defer p.wg.Done()
	batch := make([]*pipeOp, 0, pipeMax)
	for o := range p.ops {
		batch = append(batch[:0], o)
	gather:
		for len(batch) < pipeMax {
			select {
			case o, ok := <-p.ops:
				if !ok {
					break gather
				}
				batch = append(batch, o)
			default:
				break gather
			}
		}
		p.run(batch)
		clear(batch)
	}
}

// run runs the live ops of a batch and answers each.
func (p *pipeline) run(batch []*pipeOp) {
	live := make([]*pipeOp, 0, len(batch))
	for _, o := range batch {
		if o.state.CompareAndSwap(opPending, opTaken) {
			live = append(live, o)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), pipeTimeout)
	defer cancel()
	// outcome marks the errors of a lost database, and the batch's own timeout, as unavailable:
	// a caller must not read its statement's outcome as its own context ending (not applied).
	outcome := func(err error) error {
		if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return unavailableError{err}
		}
		return unavailable(err)
	}
	p.statements.Add(int64(len(live)))
	if len(live) == 1 {
		live[0].done <- outcome(p.alone(ctx, live[0].st))
		return
	}
	if len(live) == 0 {
		return
	}
	p.batches.Add(1)
	errs, err := p.together(ctx, live)
	switch {
	case errors.Is(err, errRolledBack):
		p.rerun.Add(1)
		// A statement failed, so the server rolled the whole batch back: nothing of it was
		// applied, and each statement runs again by itself, to its own outcome.
		for _, o := range live {
			o.done <- outcome(p.alone(ctx, o.st))
		}
	case err != nil:
		// The connection failed: whether the batch committed is unknown.
		for _, o := range live {
			o.done <- outcome(err)
		}
	default:
		for i, o := range live {
			o.done <- errs[i]
		}
	}
}

// alone runs one statement by itself (its own transaction), and reports it to OnCommit when it
// succeeded.
func (p *pipeline) alone(ctx context.Context, st statement) error {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	start := time.Now()
	rows, err := conn.Query(ctx, st.sql, st.args...)
	if err != nil {
		return err
	}
	if err := readRows(rows, st.read); err != nil {
		return err
	}
	p.commits.committed(start, 1)
	return nil
}

// errRolledBack says a batch's transaction was rolled back because one of its statements failed.
var errRolledBack = errors.New("pgstore: the batch was rolled back")

// together runs statements as one pipelined transaction. errs holds each statement's own error
// when the batch committed: an error of reading its rows, after the statement had been applied.
// A batch that committed is reported to OnCommit with all its statements.
//
// The batch goes out with one Sync: after a statement fails, the server skips the rest, the
// COMMIT included, and the transaction is left aborted; every later result reports the same
// error. Nothing of the batch was applied, so the caller runs the statements again one by one,
// and the connection is rolled back before it returns to the pool.
func (p *pipeline) together(ctx context.Context, ops []*pipeOp) (errs []error, err error) {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if conn.Conn().PgConn().TxStatus() != 'I' { // left in a transaction: end it, or drop it
			if _, rerr := conn.Exec(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
				_ = conn.Conn().Close(context.WithoutCancel(ctx))
			}
		}
		conn.Release()
	}()
	start := time.Now()
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	for _, o := range ops {
		b.Queue(o.st.sql, o.st.args...)
	}
	b.Queue("COMMIT")
	br := conn.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return nil, err
	}
	errs = make([]error, len(ops))
	var stmtErr error // the statement error that aborted the transaction
	for i, o := range ops {
		rows, err := br.Query()
		if err == nil {
			err = readRows(rows, o.st.read)
		}
		var pgErr *pgconn.PgError
		switch {
		case err == nil || stmtErr != nil:
		case errors.As(err, &pgErr):
			stmtErr = err
		case isConnErr(err):
			_ = br.Close()
			return nil, err
		default:
			errs[i] = err // read after the statement was applied
		}
	}
	_, commitErr := br.Exec()
	closeErr := br.Close()
	var pgErr *pgconn.PgError
	switch {
	case stmtErr != nil:
		return nil, errRolledBack
	case commitErr != nil && errors.As(commitErr, &pgErr) && !isConnErr(commitErr):
		return nil, errRolledBack // the server refused the COMMIT: the transaction is gone
	case commitErr != nil:
		return nil, commitErr // unknown whether it committed
	case closeErr != nil:
		return nil, closeErr
	}
	p.commits.committed(start, len(ops))
	return errs, nil
}

// readRows hands rows to read (or drains them) and closes them, returning the first error.
func readRows(rows pgx.Rows, read func(pgx.Rows) error) error {
	var err error
	if read != nil {
		err = read(rows)
	}
	rows.Close()
	if err != nil {
		return err
	}
	return rows.Err()
}

// isConnErr reports whether err is a failure of the connection rather than of a statement.
func isConnErr(err error) bool {
	var u unavailableError
	return errors.As(unavailable(err), &u)
}
