package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

// probe asks scheme://target/healthz within 3 s; over HTTPS the certificate is not checked: it is
// this machine's own server.
func probe(ctx context.Context, scheme, target string) (int, error) {
	tr := &http.Transport{Proxy: nil}
	if scheme == "https" {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // a liveness probe of this machine's own server
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+target+"/healthz", nil)
	if err != nil {
		return 0, err
	}
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, err
	}
	_ = res.Body.Close()
	return res.StatusCode, nil
}

// newHealthcheckCmd is the probe of a container (the image's HEALTHCHECK, which has no shell or
// curl on scratch): GET /healthz of the server on this machine, exit 0 when it answers 200.
func newHealthcheckCmd(getenv func(string) string) *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 when the server on this machine answers /healthz (for container health checks)",
		Long: `Ask the server listening on --addr (default $SPOOL_ADDR, else 127.0.0.1:8080) for /healthz, over
HTTPS when SPOOL_TLS_CERT is set or the server answers a plain request as an HTTPS server does
(the certificate is not checked: it is this machine's own server), and exit 0 when it answers
200 within 3 seconds, 1 otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("addr") {
				if v := getenv("SPOOL_ADDR"); v != "" {
					addr = v
				}
			}
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return fmt.Errorf("--addr %q: %w", addr, err)
			}
			if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
				host = "127.0.0.1" // a server listening on every address answers on loopback
			}
			target := net.JoinHostPort(host, port)
			status, err := probe(cmd.Context(), "http", target)
			if getenv("SPOOL_TLS_CERT") != "" || err == nil && status == http.StatusBadRequest {
				// HTTPS: set by the environment, or by the config file, which a plain request to
				// an HTTPS server reveals with its 400.
				status, err = probe(cmd.Context(), "https", target)
			}
			if err != nil {
				return fmt.Errorf("unhealthy: %w", err)
			}
			if status != http.StatusOK {
				return fmt.Errorf("unhealthy: /healthz answered %d %s", status, http.StatusText(status))
			}
			fmt.Fprintln(cmd.OutOrStdout(), "healthy")
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8080", "the server's listen address")
	return cmd
}
