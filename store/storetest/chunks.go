package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// appendChunks appends each value as a chunk of job id, whatever its state.
func appendChunks(t *testing.T, s store.Store, id string, data ...string) {
	t.Helper()
	state := get(t, s, id).State
	for _, d := range data {
		ok, err := s.AppendChunk(t.Context(), store.AppendChunkParams{ID: id, Expect: store.Expect{State: state}, Data: json.RawMessage(d)})
		require.NoError(t, err)
		require.True(t, ok)
	}
}

// chunk builds the expected chunk seq with data d.
func chunk(seq int64, d string) spool.Chunk { return spool.Chunk{Seq: seq, Data: json.RawMessage(d)} }

func testAppendChunk(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	running := with(queued("j", "ep"), func(j *spool.Job) { j.State, j.WorkerID, j.Attempt = spool.StateInProgress, "w", 2 })
	create(t, s, running)

	for _, e := range []store.Expect{
		{State: spool.StateInQueue},
		{State: spool.StateInProgress, WorkerID: "other"},
		{State: spool.StateInProgress, WorkerID: "w", Attempt: 1},
		{State: spool.StateInProgress, Endpoint: "other"},
	} {
		ok, err := s.AppendChunk(ctx, store.AppendChunkParams{ID: "j", Expect: e, Data: json.RawMessage(`1`)})
		require.NoError(t, err)
		require.False(t, ok, "%+v", e)
	}
	requireStored(t, s, running)
	_, chunks, err := s.ReadChunks(ctx, store.ReadChunksParams{ID: "j"})
	require.NoError(t, err)
	require.Empty(t, chunks)

	holder := store.Expect{State: spool.StateInProgress, Endpoint: "ep", WorkerID: "w", Attempt: 2}
	for i, d := range []string{` {"a" : 1} `, `"two"`, `[3]`} {
		ok, err := s.AppendChunk(ctx, store.AppendChunkParams{ID: "j", Expect: holder, Data: json.RawMessage(d)})
		require.NoError(t, err)
		require.True(t, ok)
		requireStored(t, s, with(running.Clone(), func(j *spool.Job) { j.StreamCount = int64(i + 1) }))
	}
	j, chunks, err := s.ReadChunks(ctx, store.ReadChunksParams{ID: "j"})
	require.NoError(t, err)
	require.Equal(t, []spool.Chunk{chunk(1, ` {"a" : 1} `), chunk(2, `"two"`), chunk(3, `[3]`)}, chunks)
	requireJob(t, head(with(running.Clone(), func(j *spool.Job) { j.StreamCount = 3 })), j)
}

func testReadChunks(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	create(t, s, queued("j", "ep"), queued("other", "ep"))
	appendChunks(t, s, "j", `1`, `2`, `3`)
	appendChunks(t, s, "other", `"x"`)

	for _, tc := range []struct {
		name string
		p    store.ReadChunksParams
		want []spool.Chunk
	}{
		{"all", store.ReadChunksParams{ID: "j"}, []spool.Chunk{chunk(1, `1`), chunk(2, `2`), chunk(3, `3`)}},
		{"after", store.ReadChunksParams{ID: "j", After: 1}, []spool.Chunk{chunk(2, `2`), chunk(3, `3`)}},
		{"limit", store.ReadChunksParams{ID: "j", After: 1, Limit: 1}, []spool.Chunk{chunk(2, `2`)}},
		{"after the last", store.ReadChunksParams{ID: "j", After: 3}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j, chunks, err := s.ReadChunks(ctx, tc.p)
			require.NoError(t, err)
			require.Equal(t, int64(3), j.StreamCount)
			require.Zero(t, j.StreamCursor, "a plain read does not move the cursor")
			if tc.want == nil {
				require.Empty(t, chunks)
			} else {
				require.Equal(t, tc.want, chunks)
			}
		})
	}
	require.Zero(t, get(t, s, "j").StreamCursor)

	// The job comes with the payloads asked for.
	j, _, err := s.ReadChunks(ctx, store.ReadChunksParams{ID: "j"})
	require.NoError(t, err)
	require.Nil(t, j.Input)
	j, _, err = s.ReadChunks(ctx, store.ReadChunksParams{ID: "j", With: store.PayloadInput})
	require.NoError(t, err)
	require.Equal(t, `{"prompt":"hi"}`, string(j.Input))
	j, _, err = s.ReadChunks(ctx, store.ReadChunksParams{ID: "j", Drain: true, With: store.PayloadInput})
	require.NoError(t, err)
	require.Equal(t, `{"prompt":"hi"}`, string(j.Input))
}

func testDrainChunks(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	create(t, s, queued("j", "ep"))
	drain := func(limit int) (*spool.Job, []spool.Chunk) {
		t.Helper()
		// After is ignored by a drain.
		j, chunks, err := s.ReadChunks(ctx, store.ReadChunksParams{ID: "j", Drain: true, After: 100, Limit: limit})
		require.NoError(t, err)
		return j, chunks
	}

	j, chunks := drain(0)
	require.Empty(t, chunks)
	require.Zero(t, j.StreamCursor)

	appendChunks(t, s, "j", `1`, `2`)
	j, chunks = drain(0)
	require.Equal(t, []spool.Chunk{chunk(1, `1`), chunk(2, `2`)}, chunks)
	require.Equal(t, int64(2), j.StreamCursor)
	require.Equal(t, int64(2), j.StreamCount)
	require.Equal(t, int64(2), get(t, s, "j").StreamCursor)

	j, chunks = drain(0)
	require.Empty(t, chunks, "each chunk is drained once")
	require.Equal(t, int64(2), j.StreamCursor)

	appendChunks(t, s, "j", `3`)
	_, chunks = drain(0)
	require.Equal(t, []spool.Chunk{chunk(3, `3`)}, chunks)

	appendChunks(t, s, "j", `4`, `5`)
	j, chunks = drain(1)
	require.Equal(t, []spool.Chunk{chunk(4, `4`)}, chunks)
	require.Equal(t, int64(4), j.StreamCursor)
	_, chunks = drain(0)
	require.Equal(t, []spool.Chunk{chunk(5, `5`)}, chunks)

	// A plain read still sees everything.
	_, chunks, err := s.ReadChunks(ctx, store.ReadChunksParams{ID: "j"})
	require.NoError(t, err)
	require.Len(t, chunks, 5)
}

// testDrainChunksConcurrent drains from several goroutines while chunks are appended: every chunk
// must come out exactly once.
func testDrainChunksConcurrent(t *testing.T, open opener) {
	const chunks, drainers = 40, 4
	s := open(t)
	ctx := t.Context()
	create(t, s, queued("j", "ep"))

	appended := make(chan struct{})
	var (
		mu   sync.Mutex
		seen = map[int64]int{}
		errs []error
		wg   sync.WaitGroup
	)
	wg.Go(func() {
		defer close(appended)
		for i := range chunks {
			_, err := s.AppendChunk(ctx, store.AppendChunkParams{ID: "j", Expect: store.Expect{State: spool.StateInQueue}, Data: json.RawMessage(fmt.Sprint(i))})
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
		}
	})
	for range drainers {
		wg.Go(func() {
			for {
				// Read "done" before draining: an empty drain after every append has committed
				// means there is nothing left.
				done := isClosed(appended)
				_, got, err := s.ReadChunks(ctx, store.ReadChunksParams{ID: "j", Drain: true})
				mu.Lock()
				errs = append(errs, err)
				for _, c := range got {
					seen[c.Seq]++
				}
				mu.Unlock()
				if err != nil || (done && len(got) == 0) {
					return
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	require.Len(t, seen, chunks)
	for seq := int64(1); seq <= chunks; seq++ {
		require.Equal(t, 1, seen[seq], "chunk %d", seq)
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
