package sqlitestore

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/spool-run/spool/store"
)

// maxBatch bounds how many writes share one transaction, and so how long the last of them waits
// behind the others before its commit.
const maxBatch = 256

// An op's state moves once, from pending to taken (by the writer) or to cancelled (by its caller
// whose ctx ended first). The compare-and-swap decides who wins, so a write is either skipped
// and reported as cancelled, or run and reported with its commit result: never both.
const (
	opPending int32 = iota
	opTaken
	opCancelled
)

// opFunc is one write. It runs on the writer goroutine, inside the batch transaction; returning
// an error undoes its changes only (runTx). It may run more than once, each time in a fresh
// transaction, so it must not change anything but the transaction and its own result.
type opFunc func(ctx context.Context, tx queryer) error

type op struct {
	fn    opFunc
	state atomic.Int32
	done  chan error // buffered: the writer never blocks on a caller that gave up
}

// Stats counts the writer's work since Open. Ops/Batches is the average group-commit size.
type Stats struct {
	Batches int64 // committed (or failed) transactions
	Ops     int64 // writes run in them
	Retried int64 // batches run a second time, with savepoints, because one of their writes failed
}

type counters struct{ batches, ops, retried atomic.Int64 }

// Stats returns the writer's counters.
func (s *Store) Stats() Stats {
	return Stats{Batches: s.stats.batches.Load(), Ops: s.stats.ops.Load(), Retried: s.stats.retried.Load()}
}

// OnCommit sets what is told of each group commit: how long its transaction took, fsync
// included, and how many writes it held (metrics).
func (s *Store) OnCommit(f func(d time.Duration, writes int)) { s.onCommit.Store(&f) }

// do queues fn for the writer and waits until the transaction that ran it has committed. If ctx
// ends before the writer has picked fn up, fn never runs and do returns ctx.Err(); once picked up,
// do waits for the commit, so a write that committed is never reported as failed.
func (s *Store) do(ctx context.Context, fn opFunc) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := &op{fn: fn, done: make(chan error, 1)}
	if err := s.enqueue(ctx, o); err != nil {
		return err
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

// doResult is do for writes that produce a value.
func doResult[T any](ctx context.Context, s *Store, fn func(ctx context.Context, tx queryer) (T, error)) (T, error) {
	var res T
	err := s.do(ctx, func(ctx context.Context, tx queryer) error {
		var err error
		res, err = fn(ctx, tx)
		return err
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return res, nil
}

func (s *Store) enqueue(ctx context.Context, o *op) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	select {
	case s.ops <- o:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writeLoop is the writer goroutine. It blocks for one op, then takes every op already queued
// without waiting for more (no timer: the batch grows by itself while the previous commit is
// fsyncing), and runs them in one transaction. It exits once Close has closed ops and every op
// queued before that has been committed.
func (s *Store) writeLoop() {
	defer close(s.done)
	batch := make([]*op, 0, maxBatch)
	for {
		o, ok := <-s.ops
		if !ok {
			return
		}
		batch, ok = s.gather(append(batch[:0], o))
		s.runBatch(batch)
		clear(batch) // drop references to finished ops
		if !ok {
			return
		}
	}
}

// gather appends the ops already queued, up to maxBatch. ok is false once ops has been closed.
func (s *Store) gather(batch []*op) (_ []*op, ok bool) {
	for len(batch) < maxBatch {
		select {
		case o, ok := <-s.ops:
			if !ok {
				return batch, false
			}
			batch = append(batch, o)
		default:
			return batch, true
		}
	}
	return batch, true
}

// runBatch runs the live ops of batch in one transaction and answers each of them.
func (s *Store) runBatch(batch []*op) {
	live := make([]*op, 0, len(batch))
	for _, o := range batch {
		if o.state.CompareAndSwap(opPending, opTaken) {
			live = append(live, o)
		}
	}
	if len(live) == 0 {
		return
	}
	start := time.Now()
	errs, err := s.runTx(live)
	if f := s.onCommit.Load(); f != nil {
		(*f)(time.Since(start), len(live))
	}
	s.stats.batches.Add(1)
	s.stats.ops.Add(int64(len(live)))
	for i, o := range live {
		if err != nil {
			o.done <- err
		} else {
			o.done <- errs[i]
		}
	}
}

// runTx runs ops in one IMMEDIATE transaction and commits. It returns each op's own error, or a
// batch error (begin, a savepoint statement, commit) that every op shares because none of their
// changes were kept.
//
// Nearly every batch is all successes, so the first attempt runs the ops back to back with no
// savepoints: three statements fewer per op. The first op that fails rolls that attempt back, and
// the batch runs again with a savepoint around each op, so the failure undoes only its own op.
// Running an op twice is safe: an op is a function of the transaction it is given, and what it
// tells the counts is kept only with its transaction.
func (s *Store) runTx(ops []*op) ([]error, error) {
	errs, err := s.attemptTx(ops, false)
	if errors.Is(err, errOpFailed) {
		s.stats.retried.Add(1)
		errs, err = s.attemptTx(ops, true)
	}
	return errs, err
}

// errOpFailed ends an attempt without savepoints at its first failed op.
var errOpFailed = errors.New("sqlitestore: an op failed")

func (s *Store) attemptTx(ops []*op, savepoints bool) ([]error, error) {
	// The writer's statements ignore callers' contexts: cancelling a statement halfway through a
	// shared transaction would fail the writes of every other caller in the batch.
	ctx := context.Background()
	if _, err := s.w.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return nil, fmt.Errorf("sqlitestore: begin: %w", err)
	}
	errs := make([]error, len(ops))
	for i, o := range ops {
		s.counts.beginOp()
		if !savepoints {
			if callOp(ctx, s.w, o.fn) != nil {
				s.rollback(ctx)
				return nil, errOpFailed
			}
			s.counts.keepOp()
			continue
		}
		var err error
		if errs[i], err = runOp(ctx, s.w, o.fn); err != nil {
			s.rollback(ctx)
			return nil, fmt.Errorf("sqlitestore: %w", err)
		}
		if errs[i] == nil {
			s.counts.keepOp()
		}
	}
	if err := s.counts.settle(ctx, s.w); err != nil {
		s.rollback(ctx)
		return nil, fmt.Errorf("sqlitestore: %w", err)
	}
	if _, err := s.w.ExecContext(ctx, "COMMIT"); err != nil {
		s.rollback(ctx)
		return nil, fmt.Errorf("sqlitestore: commit: %w", err)
	}
	s.counts.publish()
	return errs, nil
}

// rollback abandons the current transaction, and the counts its writes recorded. Its error is not
// interesting: SQLite may already have rolled back on its own (that is why we are here), and the
// batch error is what callers need.
func (s *Store) rollback(ctx context.Context) {
	s.counts.discard()
	_, _ = s.w.ExecContext(ctx, "ROLLBACK")
}

// runOp runs fn inside a savepoint. opErr is fn's error (its changes rolled back); fatal is a
// failure of the savepoint statements themselves, after which the transaction cannot be trusted.
func runOp(ctx context.Context, conn *prepared, fn opFunc) (opErr, fatal error) {
	if _, err := conn.ExecContext(ctx, "SAVEPOINT op"); err != nil {
		return nil, fmt.Errorf("savepoint: %w", err)
	}
	if opErr = callOp(ctx, conn, fn); opErr != nil {
		if _, err := conn.ExecContext(ctx, "ROLLBACK TO op"); err != nil {
			return nil, fmt.Errorf("rollback to savepoint after %v: %w", opErr, err)
		}
	}
	if _, err := conn.ExecContext(ctx, "RELEASE op"); err != nil {
		return nil, fmt.Errorf("release savepoint: %w", err)
	}
	return opErr, nil
}

// callOp runs fn, turning a panic (in a caller's Apply function, say) into that op's error: the
// writer goroutine is shared, and one caller's bug must not leave every other caller waiting.
func callOp(ctx context.Context, tx queryer, fn opFunc) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("sqlitestore: write panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return fn(ctx, tx)
}
