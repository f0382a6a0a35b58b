package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/leader"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/store"
	"github.com/spool-run/spool/store/pgstore"
	"github.com/spool-run/spool/store/pgstore/pgclock"
	"github.com/spool-run/spool/store/pgstore/pglead"
	"github.com/spool-run/spool/store/pgstore/pgnotify"
	"github.com/spool-run/spool/store/sqlitestore"
)

// isPostgres says whether a store setting names PostgreSQL rather than the embedded store.
func isPostgres(setting string) bool {
	return strings.HasPrefix(setting, "postgres://") || strings.HasPrefix(setting, "postgresql://")
}

// checkStoreSetting validates the store setting without echoing it: a URL may hold a password.
func checkStoreSetting(setting string) error {
	switch {
	case setting == "" || setting == "sqlite" || isPostgres(setting):
		return nil
	case strings.Contains(setting, "://"):
		scheme, _, _ := strings.Cut(setting, "://")
		return fmt.Errorf("config: store: %q URLs are not a store Spool knows; use sqlite (the default) or a postgres:// URL", scheme)
	default:
		return errors.New("config: store (or SPOOL_STORE, --store) must be sqlite or a postgres:// URL")
	}
}

// describeStore names the store for logs and --check-config: the URL without its password.
func describeStore(cfg *config) string {
	if !isPostgres(cfg.Store) {
		return "sqlite in " + cfg.Data
	}
	u, err := url.Parse(cfg.Store)
	if err != nil {
		return "postgres (an unparsable URL)" // url's error would quote the URL
	}
	u.RawQuery, u.Fragment = "", ""
	return u.Redacted()
}

// prepareDataDir makes the data directory of the embedded store (where the secret key file is
// made too) and warns about its permissions. A PostgreSQL store keeps nothing there.
func prepareDataDir(cfg *config, log *slog.Logger) error {
	if isPostgres(cfg.Store) {
		return nil
	}
	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	checkDataDir(cfg.Data, log)
	return nil
}

// openedStore is the store a server runs on, with what depends on it: how replicas wake each
// other, whose clock they share and which of them leads.
type openedStore struct {
	store.Store
	notifier notify.Notifier
	clock    clock.Clock
	leader   leader.Leader
	// stats reports the write batching of the embedded store (batches, ops); nil otherwise.
	stats func() (int64, int64)
	// onCommit sets what is told of each write transaction the store commits, its time and how
	// many writes it held (the metrics): a group commit of the embedded store, a pipelined batch or
	// a single write of PostgreSQL's.
	onCommit func(func(d time.Duration, writes int))
	// closers release, in order, what was opened besides the store.
	closers []func()
}

// Close closes what openStore opened, the store last.
func (o *openedStore) Close() error {
	for _, c := range o.closers {
		c()
	}
	o.closers = nil
	return o.Store.Close()
}

// openStore opens the store the config names: the embedded SQLite file in the data directory
// (one process, which always leads, on its own clock), or a PostgreSQL database shared with other
// replicas (LISTEN/NOTIFY between them, the database's clock, an advisory-lock leader).
func openStore(ctx context.Context, cfg *config, log *slog.Logger) (_ *openedStore, err error) {
	if !isPostgres(cfg.Store) {
		st, err := sqlitestore.Open(ctx, filepath.Join(cfg.Data, "spool.db"))
		if err != nil {
			return nil, err
		}
		return &openedStore{Store: st, notifier: notify.NewHub(), clock: clock.Real{}, leader: leader.Always{},
			stats:    func() (int64, int64) { s := st.Stats(); return s.Batches, s.Ops },
			onCommit: st.OnCommit}, nil
	}
	st, err := pgstore.Open(ctx, cfg.Store)
	if err != nil {
		return nil, err
	}
	o := &openedStore{Store: st, onCommit: st.OnCommit}
	defer func() {
		if err != nil {
			_ = o.Close()
		}
	}()
	// The clock reads the database's time over a connection of its own, so that a busy store
	// pool never delays a measurement (which would skew it by the wait).
	clockDB, err := pgstore.SmallPool(ctx, cfg.Store, 1)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	o.closers = append(o.closers, clockDB.Close)
	dbClock, err := pgclock.New(ctx, pgclock.Config{DB: clockDB, Logger: log})
	if err != nil {
		return nil, err
	}
	o.clock = dbClock
	o.closers = append([]func(){dbClock.Close}, o.closers...)
	n, err := pgnotify.New(ctx, pgnotify.Config{URL: cfg.Store, Logger: log})
	if err != nil {
		return nil, err
	}
	o.notifier = n
	o.closers = append([]func(){n.Close}, o.closers...)
	lease := pglead.New(ctx, pglead.Config{URL: cfg.Store, Logger: log})
	o.leader = lease
	o.closers = append([]func(){lease.Close}, o.closers...)
	return o, nil
}
