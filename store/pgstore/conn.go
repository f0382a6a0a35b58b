package pgstore

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// errURL is the error of a store URL that does not parse: pgx's own message may quote the URL,
// password included.
var errURL = errors.New("the PostgreSQL store URL does not parse")

// Connect opens one connection of its own to the store's URL (the notifier's listener, the
// leader's lock), for a session that must outlive any pool's. The URL may carry pgxpool's settings
// (pool_max_conns …), which pgx would otherwise send to the server as session settings it refuses.
func Connect(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, errURL
	}
	return pgx.ConnectConfig(ctx, cfg.ConnConfig)
}

// SmallPool opens a pool of at most maxConns connections to the store's URL, apart from the
// store's own, for work that must not wait behind the store's queries (the notifier's sender,
// the clock's reads).
func SmallPool(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, errURL
	}
	cfg.MaxConns = maxConns
	return pgxpool.NewWithConfig(ctx, cfg)
}
