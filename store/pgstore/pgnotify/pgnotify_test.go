package pgnotify_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/store/pgstore/pgnotify"
	"github.com/spool-run/spool/store/pgstore/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, url string) *pgnotify.Notifier {
	t.Helper()
	n, err := pgnotify.New(t.Context(), pgnotify.Config{URL: url})
	require.NoError(t, err)
	t.Cleanup(n.Close)
	return n
}

// woken waits for a subscription's channel, failing the test after 10 s.
func woken(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not woken within 10s", what)
	}
}

func TestNotifyWakesAnotherReplica(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	a, b := open(t, url), open(t, url)
	ch, release := b.Subscribe(notify.Job("j1"))
	defer release()
	local, releaseLocal := a.Subscribe(notify.Job("j1"))
	defer releaseLocal()
	a.Notify(notify.Job("j1"), notify.Work("ep"))
	woken(t, local, "a waiter of the notifying replica")
	woken(t, ch, "a waiter of another replica")
}

// TestOwnNotificationsAreIgnored: a replica's waiters wake when it notifies, not once more when
// its own NOTIFY comes back. PostgreSQL delivers one channel's notifications in commit order, so
// once b's later notification has arrived, a's own has been received and dropped.
func TestOwnNotificationsAreIgnored(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	a, b := open(t, url), open(t, url)
	first, release := b.Subscribe("first")
	defer release()
	a.Notify("first")
	woken(t, first, "b")
	second, release2 := a.Subscribe("second")
	defer release2()
	b.Notify("second")
	woken(t, second, "a")
	require.EqualValues(t, 1, a.Stats().Received, "a received b's notification and dropped its own")
}

// TestSchemasDoNotWakeEachOther: two Spools in two schemas of one database keep to themselves.
func TestSchemasDoNotWakeEachOther(t *testing.T) {
	t.Parallel()
	one, two := pgtest.URL(t), pgtest.URL(t)
	a1, c1 := open(t, one), open(t, one)
	a2, b2 := open(t, two), open(t, two)
	sent, release := c1.Subscribe("t")
	defer release()
	a1.Notify("t")
	woken(t, sent, "a replica of the same schema") // a1's NOTIFY is out
	later, release2 := b2.Subscribe("u")
	defer release2()
	a2.Notify("u")
	woken(t, later, "b2")
	require.EqualValues(t, 1, b2.Stats().Received, "b2 heard its own schema only")
}

// TestReconnectWakesEveryWaiter cuts the listening connection: the notifier listens again by
// itself, wakes its waiters (what was notified meanwhile is lost to it), and hears the other
// replicas again.
func TestReconnectWakesEveryWaiter(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	a, b := open(t, url), open(t, url)
	waiting, release := b.Subscribe(notify.Job("nobody-notifies-this"))
	defer release()

	conn, err := pgx.Connect(t.Context(), pgtest.BaseURL(t))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var ok bool
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT pg_terminate_backend($1)", int32(b.ListenerPID())).Scan(&ok))
	require.True(t, ok)
	woken(t, waiting, "a waiter of the replica that reconnected")
	require.EqualValues(t, 1, b.Stats().Reconnects)

	again, release2 := b.Subscribe("after")
	defer release2()
	a.Notify("after")
	woken(t, again, "a waiter after the reconnect")
}

func TestPayloads(t *testing.T) {
	t.Parallel()
	require.Empty(t, pgnotify.Payloads("o", nil))
	got := pgnotify.Payloads("o", []notify.Topic{"a", "b", "a", "", "bad\ntopic"})
	require.Equal(t, []string{"o\na\nb"}, got, "repeats, empty topics and newlines are dropped")
	origin, topics := pgnotify.ParsePayload(got[0])
	require.Equal(t, "o", origin)
	require.Equal(t, []notify.Topic{"a", "b"}, topics)

	var many []notify.Topic
	for i := range 2000 {
		many = append(many, notify.Job(strings.Repeat("x", 30)+string(rune('A'+i%26))+strings.Repeat("y", i%7)+"-"+string(rune('a'+i/26%26))+string(rune('a'+i/676))))
	}
	payloads := pgnotify.Payloads("origin", many)
	require.Greater(t, len(payloads), 1)
	var back []notify.Topic
	for _, p := range payloads {
		require.LessOrEqual(t, len(p), pgnotify.MaxPayload)
		o, ts := pgnotify.ParsePayload(p)
		require.Equal(t, "origin", o)
		back = append(back, ts...)
	}
	seen := map[notify.Topic]bool{}
	for _, tp := range many {
		seen[tp] = true
	}
	require.Len(t, back, len(seen), "every distinct topic is sent once")
}

func TestNewDoesNotShowThePassword(t *testing.T) {
	t.Parallel()
	const password = "pw-do-not-show-4e1"
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for _, url := range []string{"postgres://spool:" + password + "@127.0.0.1:1/spool?connect_timeout=2", "postgres://spool:" + password + "@[bad"} {
		_, err := pgnotify.New(ctx, pgnotify.Config{URL: url})
		require.Error(t, err)
		require.NotContains(t, err.Error(), password)
	}
}
