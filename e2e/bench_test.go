package e2e_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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
