package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// BenchmarkHTTPRunTakeDone drives the whole server in process, over loopback HTTP: each op is one
// job's /run, job-take and job-done, from as many goroutines as -cpu says (times 8), so that
// benchstat can compare the HTTP path between commits. spool bench measures the same from outside,
// against a baseline.
func BenchmarkHTTPRunTakeDone(b *testing.B) {
	dir := b.TempDir()
	const key = "bench_admin_key_for_the_http_benchmark"
	cfgPath := filepath.Join(dir, "spool.yaml")
	yaml := fmt.Sprintf("addr: 127.0.0.1:0\ndata: %s\nlogLevel: warn\nendpoints:\n  - name: bench\n", filepath.Join(dir, "data"))
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg, err := loadConfig(cfgPath, func(k string) string {
		if k == "SPOOL_ADMIN_KEY" {
			return key
		}
		return ""
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := openServer(ctx, cfg, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.run(ctx, nil) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	base := srv.URL() + "/v2/bench"
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512}}
	defer hc.CloseIdleConnections()
	call := func(method, url string, body []byte) ([]byte, error) {
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer res.Body.Close()
		out, err := io.ReadAll(res.Body)
		if err != nil {
			return nil, err
		}
		if res.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s %s: %d %s", method, url, res.StatusCode, out)
		}
		return out, nil
	}
	var worker atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := fmt.Sprintf("w%d", worker.Add(1))
		for pb.Next() {
			if _, err := call("POST", base+"/run", []byte(`{"input":{"n":1}}`)); err != nil {
				b.Error(err)
				return
			}
			out, err := call("GET", base+"/job-take/"+w, nil)
			if err != nil {
				b.Error(err)
				return
			}
			var j struct{ ID string }
			if err := json.Unmarshal(out, &j); err != nil || j.ID == "" {
				b.Errorf("job-take: %s", out)
				return
			}
			if _, err := call("POST", base+"/job-done/"+w+"/"+j.ID, []byte(`{"output":{"ok":true}}`)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
