package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/spool-run/spool/internal/bench"
)

func newBenchCmd(getenv func(string) string) *cobra.Command {
	var (
		quick, asJSON bool
		cfg           bench.Config
		timeout       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure Spool on this machine against a no-store baseline measured in the same run",
		Long: `Measure what Spool adds to the cost of running a job on this machine. Each cell starts a fresh
spool serve on a temporary data directory (or uses --url) and a bare net/http baseline server
that does the same exchanges per job with an in-memory hand-off and no store, runs Go clients
and spoolworker workers with a no-op handler on loopback, and reports every figure with its
ratio to the baseline: throughput and server CPU per job, /runsync and pickup latency, /run
acknowledgements, and a deep queue (/health latency, memory, take rate). With --store the
servers run on PostgreSQL (the server's CPU then excludes the database's).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bin, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find the spool binary: %w", err)
			}
			run := cfg
			if quick {
				run = bench.Quick(bin)
				run.URL, run.Key, run.Batch, run.Store = cfg.URL, cfg.Key, cfg.Batch, cfg.Store
				if !cmd.Flags().Changed("timeout") {
					timeout = 3 * time.Minute
				}
			}
			run.Binary = bin
			if run.URL != "" && run.Key == "" {
				run.Key = getenv("SPOOL_API_KEY")
			}
			if run.URL != "" && run.Key == "" {
				return errors.New("--url needs an admin key: --key or $SPOOL_API_KEY")
			}
			if run.URL != "" && !loopbackURL(run.URL) {
				return fmt.Errorf("--url %s: the bench sends traffic only to loopback addresses", run.URL)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			bar := newProgressBar(cmd.ErrOrStderr())
			run.Progress = bar.update
			rep, err := bench.Run(ctx, run)
			bar.clear()
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					return fmt.Errorf("bench: not finished within --timeout %s: %w", timeout, err)
				}
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return rep.WriteTable(cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.BoolVar(&quick, "quick", false, "a smoke run of well under a minute (small counts, one run); not a measurement")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.StringVar(&cfg.URL, "url", "", "measure this running server (loopback only; its endpoint \"bench\" must exist) instead of fresh ones")
	f.StringVar(&cfg.Key, "key", "", "the admin key of --url (default $SPOOL_API_KEY)")
	f.IntVar(&cfg.Runs, "runs", 3, "runs of each cell, interleaved with the baseline; the report gives medians")
	f.IntVar(&cfg.Jobs, "jobs", 20000, "jobs per throughput cell")
	f.IntSliceVar(&cfg.Workers, "workers", []int{16, 64}, "worker slots of the throughput cells")
	f.IntVar(&cfg.Batch, "batch", 1, "jobs a worker takes at once (job-take-batch when over 1)")
	f.IntVar(&cfg.Clients, "clients", 32, "concurrent submitters")
	f.IntVar(&cfg.Samples, "samples", 2000, "/runsync and pickup measurements per run")
	f.IntVar(&cfg.Deep, "deep", 1000000, "jobs queued for the deep-queue cell (0 skips it)")
	f.StringVar(&cfg.Store, "store", "", "a postgres:// URL (loopback) to run the servers on PostgreSQL, each on a schema of its own; default the embedded store")
	f.StringVar(&cfg.Dir, "dir", "", "where the temporary data directories go (default the system's temp directory)")
	f.DurationVar(&timeout, "timeout", time.Hour, "stop and fail after this long")
	return cmd
}

// loopbackURL reports whether u's host is a loopback address.
func loopbackURL(u string) bool {
	rest, ok := strings.CutPrefix(u, "http://")
	if !ok {
		return false
	}
	host, _, err := net.SplitHostPort(strings.SplitN(rest, "/", 2)[0])
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// newBaselineCmd is the hidden command spool bench starts as its baseline server.
func newBaselineCmd() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:    bench.BaselineCommand,
		Short:  "The no-store baseline server of spool bench",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: bench.NewBaseline(2<<20, 20*time.Second).Handler(), ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-cmd.Context().Done()
				_ = srv.Close()
			}()
			fmt.Fprintln(cmd.OutOrStdout(), bench.BaselineListeningLine("http://"+ln.Addr().String()))
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:0", "listen address")
	return cmd
}

// progressBar draws what the bench is doing on one line of a terminal, redrawn in place; on
// anything else it draws nothing.
type progressBar struct {
	mu   sync.Mutex
	w    io.Writer
	on   bool
	cell string
	last time.Time
}

func newProgressBar(w io.Writer) *progressBar {
	return &progressBar{w: w, on: isTerminal(w)}
}

func (p *progressBar) update(cell string, frac float64) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cell != "" {
		p.cell = cell
	} else if time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	const width = 20
	filled := int(min(max(frac, 0), 1) * width)
	line := fmt.Sprintf("[%s%s] %3.0f%% %s", strings.Repeat("#", filled), strings.Repeat(".", width-filled), 100*frac, p.cell)
	if len(line) > 78 {
		line = line[:78]
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
}

func (p *progressBar) clear() {
	if p.on {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
