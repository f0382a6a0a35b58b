package e2e_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/store/pgstore/pgtest"
)

// TestBenchQuick runs `spool bench --quick --json` as a smoke test: it completes, and its JSON
// report holds every figure, each a real measurement (positive, with the baseline's beside it
// where there is one). It asserts no speed: these machines are shared and noisy.
func TestBenchQuick(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, spoolBin, "bench", "--quick", "--json", "--dir", t.TempDir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "spool bench --quick: %s", stderr.String())

	var rep struct {
		Machine struct{ CPUs int } `json:"machine"`
		Rows    []struct {
			Name     string    `json:"name"`
			Unit     string    `json:"unit"`
			Spool    float64   `json:"spool"`
			Baseline *float64  `json:"baseline"`
			Ratio    *float64  `json:"ratio"`
			Runs     []float64 `json:"runs"`
		} `json:"rows"`
	}
	require.NoError(t, json.Unmarshal(out, &rep), "%s", out)
	require.Positive(t, rep.Machine.CPUs)
	byName := map[string]bool{}
	for _, r := range rep.Rows {
		byName[r.Name] = true
		require.NotEmpty(t, r.Unit, r.Name)
		require.NotEmpty(t, r.Runs, r.Name)
		if strings.Contains(r.Name, "CPU") {
			require.GreaterOrEqual(t, r.Spool, 0.0, r.Name) // 10 ms clock ticks: a short cell may read 0
		} else {
			require.Positive(t, r.Spool, r.Name)
		}
		if r.Baseline != nil {
			require.NotNil(t, r.Ratio, r.Name)
		}
	}
	for _, want := range []string{
		"/run → COMPLETED, 4 workers", "server CPU per job, 4 workers", "/runsync p50, 1 warm worker",
		"idle pickup p50 (/run → worker has it)", "/health p50, 1000 queued", "server RSS, 1000 queued",
	} {
		require.True(t, byName[want], "no %q in the report: %s", want, out)
	}
	for _, r := range rep.Rows {
		if strings.HasPrefix(r.Name, "/run → COMPLETED") || strings.HasPrefix(r.Name, "/runsync p50") {
			require.NotNil(t, r.Baseline, "%s has no baseline", r.Name)
		}
	}
	flat := strings.Join(strings.Fields(string(out)), " ")
	t.Logf("spool bench --quick: %s", flat[:min(400, len(flat))])
}

// TestBenchQuickOnPostgreSQL runs `spool bench --quick --json --store URL`: the servers run on
// PostgreSQL, each on a schema of its own that is gone afterwards, and the report says so.
func TestBenchQuickOnPostgreSQL(t *testing.T) {
	t.Parallel()
	base := pgtest.BaseURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	schemas := func() int {
		conn, err := pgx.Connect(ctx, base)
		require.NoError(t, err)
		defer conn.Close(context.Background())
		var n int
		require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'spool_bench_%'").Scan(&n))
		return n
	}
	before := schemas()
	cmd := exec.CommandContext(ctx, spoolBin, "bench", "--quick", "--json", "--dir", t.TempDir(), "--store", base)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "spool bench --quick --store: %s", stderr.String())
	var rep struct {
		Store string `json:"store"`
		Deep  int    `json:"deep"`
		Rows  []struct {
			Name  string  `json:"name"`
			Spool float64 `json:"spool"`
		} `json:"rows"`
	}
	require.NoError(t, json.Unmarshal(out, &rep), "%s", out)
	require.Equal(t, "postgres", rep.Store)
	require.Zero(t, rep.Deep, "the deep-queue cell needs the embedded store")
	require.NotEmpty(t, rep.Rows)
	for _, r := range rep.Rows {
		if strings.HasPrefix(r.Name, "/run → COMPLETED") {
			require.Positive(t, r.Spool, r.Name)
		}
	}
	require.LessOrEqual(t, schemas(), before, "the bench's schemas are dropped") // other runs may drop theirs meanwhile
}
