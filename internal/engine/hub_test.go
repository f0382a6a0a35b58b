package engine

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHubWakesWaitersAndForgetsAbandonedKeys(t *testing.T) {
	t.Parallel()
	h := newHub()
	a, releaseA := h.wait("k")
	b, releaseB := h.wait("k")
	h.notify("k")
	<-a
	<-b
	releaseA()
	releaseB()
	require.Zero(t, h.size())

	// A waiter that gives up (its wait ran out) must not leave its key behind: otherwise every
	// /status-sync of an unknown id would grow the map for ever.
	_, release := h.wait("unknown-job")
	_, release2 := h.wait("unknown-job")
	release()
	require.Equal(t, 1, h.size(), "a key stays while someone still waits on it")
	release2()
	require.Zero(t, h.size())

	// A release after the notify of its generation does not drop the next generation.
	_, old := h.wait("k")
	h.notify("k")
	next, releaseNext := h.wait("k")
	old()
	require.Equal(t, 1, h.size())
	h.notify("k")
	<-next
	releaseNext()
	require.Zero(t, h.size())
}
