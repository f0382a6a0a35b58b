package main

import (
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDevPrintsCommandsThatWork starts `spool dev` as a newcomer would, runs every command its
// banner prints, verbatim, in a shell, and stops it with Ctrl-C (SIGINT).
func TestDevPrintsCommandsThatWork(t *testing.T) {
	t.Parallel()
	e := &cliEnv{t: t}
	env := append(os.Environ(), "SPOOL_ADMIN_KEY=") // a newcomer has none: dev makes one
	p := e.start(env, "", "dev", "--addr", "127.0.0.1:0", "--data", t.TempDir())
	p.stdout.waitFor(t, "Ctrl-C stops Spool")
	banner := p.stdout.String()
	require.Regexp(t, `Spool dev is running at http://127\.0\.0\.1:\d+`, banner)
	key := regexp.MustCompile(`API key:\s+(spool_\w+)`).FindStringSubmatch(banner)
	require.NotNil(t, key, banner)

	// The dashboard it names answers, and takes the key it prints.
	dash := regexp.MustCompile(`Dashboard: (http://\S+/) \(sign in with the API key\)`).FindStringSubmatch(banner)
	require.NotNil(t, dash, banner)
	page, err := http.Get(dash[1])
	require.NoError(t, err)
	_ = page.Body.Close()
	require.Equal(t, "text/html; charset=utf-8", page.Header.Get("Content-Type"))
	signIn, err := http.Post(dash[1]+"ui/session", "application/json", strings.NewReader(`{"key":"`+key[1]+`"}`))
	require.NoError(t, err)
	_ = signIn.Body.Close()
	require.Equal(t, http.StatusOK, signIn.StatusCode, "the printed key signs in")

	var cmds []string
	for _, line := range strings.Split(banner, "\n") {
		if strings.HasPrefix(line, "  curl ") {
			cmds = append(cmds, strings.TrimSpace(line))
		}
	}
	require.Len(t, cmds, 3, banner)
	want := []*regexp.Regexp{
		regexp.MustCompile(`^\{"id":"sync-[^"]+","status":"COMPLETED",.*"output":\{"hello":"world"\},"workerId":"dev-echo"\}$`),
		regexp.MustCompile(`^\{"id":"sync-[^"]+","status":"FAILED",.*"error":"boom","workerId":"dev-fail"\}$`),
		regexp.MustCompile(`(?s)^id: 1\ndata: \{"output":"hello"\}\n\nid: 2\ndata: \{"output":"from"\}\n\nid: 3\ndata: \{"output":"spool"\}\n\nevent: done\ndata: \{"id":"[^"]+","status":"COMPLETED".*\}\n\n$`),
	}
	for i, c := range cmds {
		out, err := exec.Command("bash", "-c", c).Output()
		require.NoError(t, err, c)
		require.Regexp(t, want[i], string(out), c)
	}

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGINT))
	res := p.wait()
	require.Zero(t, res.code, res.stderr)
	require.Contains(t, res.stderr, "stopped cleanly")
}

// TestDevReplacesItsKey checks that a second start prints a new key that works while the old
// one no longer does, so dev never accumulates keys nor needs a stored plaintext.
func TestDevReplacesItsKey(t *testing.T) {
	t.Parallel()
	e := &cliEnv{t: t}
	data := t.TempDir()
	env := append(os.Environ(), "SPOOL_ADMIN_KEY=")
	start := func() (*proc, string, string) {
		p := e.start(env, "", "dev", "--addr", "127.0.0.1:0", "--data", data)
		p.stdout.waitFor(t, "Ctrl-C stops Spool")
		b := p.stdout.String()
		url := regexp.MustCompile(`running at (http://\S+)`).FindStringSubmatch(b)[1]
		key := regexp.MustCompile(`API key:\s+(spool_\w+)`).FindStringSubmatch(b)[1]
		return p, url, key
	}
	p, _, first := start()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGINT))
	require.Zero(t, p.wait().code)
	p, url, second := start()
	t.Cleanup(func() { _ = p.cmd.Process.Signal(syscall.SIGINT); p.wait() })
	require.NotEqual(t, first, second)
	health := func(key string) string {
		out, err := exec.Command("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url+"/v2/echo/health",
			"-H", "Authorization: Bearer "+key).Output()
		require.NoError(t, err)
		return string(out)
	}
	require.Equal(t, "200", health(second))
	require.Equal(t, "401", health(first))
}
