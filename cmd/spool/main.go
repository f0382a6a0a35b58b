// Command spool is Spool's one binary: the server (spool serve) and its helpers.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/version"
)

func main() {
	ctx, stop := signalContext()
	defer stop()
	if err := newRootCmd(os.Getenv).ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}

// signalContext returns a context cancelled by the first SIGINT or SIGTERM, which starts a graceful
// shutdown; a second signal exits at once.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		if _, ok := <-ch; !ok {
			return
		}
		// The commands say what stopping means for them (the server logs its shutdown).
		cancel()
		if _, ok := <-ch; ok {
			fmt.Fprintln(os.Stderr, "spool: second signal, exiting now")
			os.Exit(1)
		}
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}

func newRootCmd(getenv func(string) string) *cobra.Command {
	root := &cobra.Command{
		Use:           "spool",
		Short:         "Spool: a self-hosted serverless job queue, wire-compatible with RunPod",
		Version:       version.Get().String(),
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	root.SetVersionTemplate("{{.Version}}\n") // spool --version prints what spool version prints
	root.AddCommand(newServeCmd(getenv), newDevCmd(getenv), newHashKeyCmd(), newBenchCmd(getenv), newBaselineCmd(), newVersionCmd(),
		newHealthcheckCmd(getenv))
	root.AddCommand(newClientCmds(getenv)...)
	root.AddCommand(newAdminCmds(getenv)...)
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print Spool's version, commit and build (also: spool --version)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), version.Get().String())
			return err
		},
	}
}

func newHashKeyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "hash-key [KEY]",
		Short: "Print the hash of a key for the keys section of spool.yaml (reads the key from stdin without an argument)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			secret := ""
			if len(args) == 1 {
				secret = args[0]
			} else {
				b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 4096))
				if err != nil {
					return err
				}
				secret = string(trimNewline(b))
			}
			if secret == "" {
				return fmt.Errorf("no key given")
			}
			fmt.Fprintln(cmd.OutOrStdout(), spool.HashKey(secret))
			return nil
		},
	}
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
