// Package pgtest gives tests a PostgreSQL database of their own: a fresh schema of the server
// that SPOOL_TEST_POSTGRES names, dropped when the test ends. A test that calls URL skips when
// the variable is unset.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Env names the variable that holds the URL of the server tests use.
const Env = "SPOOL_TEST_POSTGRES"

// SkipMessage is why a test skips without a server.
const SkipMessage = "set " + Env + " to a PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable, " +
	"to run the PostgreSQL store's tests"

// BaseURL returns the URL of the server tests use, or skips t when there is none.
func BaseURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(Env)
	if base == "" {
		t.Skip(SkipMessage)
	}
	return base
}

// URL creates a fresh schema (spool_test_ and random hex) on the server that SPOOL_TEST_POSTGRES
// names and returns a URL whose sessions live in it (search_path), with at most four pooled
// connections unless the variable's URL sets pool_max_conns: parallel tests each open stores, and
// the server's connections are few. The schema is dropped, with everything in it, when t ends,
// after the cleanups registered later (close the stores opened on it first). It skips t when the
// variable is unset.
func URL(t testing.TB) string {
	t.Helper()
	base := BaseURL(t)
	schema := NewSchema(t)
	u := WithParam(base, "search_path", schema)
	if !strings.Contains(base, "pool_max_conns") {
		u = WithParam(u, "pool_max_conns", "4")
	}
	return u
}

// NewSchema creates a fresh schema on the server and drops it when t ends; it returns its name.
func NewSchema(t testing.TB) string {
	t.Helper()
	base := BaseURL(t)
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	schema := "spool_test_" + hex.EncodeToString(b)
	Exec(t, base, "CREATE SCHEMA "+schema)
	t.Cleanup(func() { Exec(t, base, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	return schema
}

// Exec runs statements through a connection of its own to connString (a URL from URL, or the
// server's): for tests that set up or inspect a database behind a store's back.
func Exec(t testing.TB, connString string, stmts ...string) {
	t.Helper()
	// Not t.Context(): cleanups run after it is cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		t.Fatalf("pgtest: parse %s: %v", Env, err)
	}
	delete(cfg.RuntimeParams, "pool_max_conns")
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, stmt := range stmts {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("pgtest: %s: %v", stmt, err)
		}
	}
}

// WithParam returns connString with the connection parameter key set to value: a query
// parameter of a postgres:// URL, or a pair appended to a key=value string.
func WithParam(connString, key, value string) string {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err == nil {
			q := u.Query()
			q.Set(key, value)
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return strings.TrimSpace(connString) + " " + key + "='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(value) + "'"
}
