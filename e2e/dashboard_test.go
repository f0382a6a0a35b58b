package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// s3Canary is in every s3Config the dashboard tests submit: it must never appear in a page, an
// API answer or an SSE message.
const s3Canary = "CANARY-s3-secret-7f3a9c"

// chromiumPath is Debian's chromium (SPOOL_TEST_CHROMIUM overrides); the browser tests skip
// without it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SPOOL_TEST_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium: install Debian's chromium (apt-get install chromium) or set SPOOL_TEST_CHROMIUM; .ci/run installs it")
	return ""
}

// artifacts is where screenshots go: $SPOOL_TEST_ARTIFACTS (CI keeps them), else the test's
// temporary directory.
func artifacts(t *testing.T) string {
	dir := os.Getenv("SPOOL_TEST_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// browser starts a headless chromium that talks to loopback only.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("proxy-server", "direct://"),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	// The first call starts the browser, which lives as long as that call's context: no timeout
	// on it; the steps after it are bounded.
	require.NoError(t, chromedp.Do(bctx, chromedp.Navigate("about:blank")))
	// The page's console, shown if the test fails: a script error is the first thing to know.
	console := newLogBuffer()
	messages := chromedp.Console(bctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			fmt.Fprintf(console, "%s: %s\n", m.Type, m.Text)
		}
	}()
	tctx, cancelTimeout := context.WithTimeout(bctx, 2*time.Minute)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- browser console ----\n%s", console.String())
			if png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)); err == nil {
				path := filepath.Join(artifacts(t), t.Name()+"-failed.png")
				if os.WriteFile(path, png, 0o644) == nil {
					t.Logf("the page when the test failed: %s", path)
				}
			}
		}
		cancelTimeout()
		cancelBrowser()
		cancelAlloc()
	})
	return tctx
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	path := filepath.Join(artifacts(t), name+".png")
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot: %s", path)
}

// js runs a script in the page.
func js(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[any](expr)(ctx, t)
		return err
	})
}

// pageHTML is the rendered page, to look for what must not be there.
func pageHTML(t *testing.T, ctx context.Context) string {
	html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	require.NoError(t, err)
	return html
}

func submit(t *testing.T, s *server, ep, body string) string {
	t.Helper()
	r := s.do(t, "POST", "/v2/"+ep+"/run", adminHeader(s), []byte(body))
	require.Equal(t, 200, r.Code, "%s", r)
	var j struct{ ID string }
	require.NoError(t, json.Unmarshal(r.Body, &j))
	return j.ID
}

func jobStatus(t *testing.T, s *server, id string) string {
	r := s.do(t, "GET", "/api/jobs/"+id, adminHeader(s), nil)
	require.Equal(t, 200, r.Code, "%s", r)
	var j struct{ Status string }
	require.NoError(t, json.Unmarshal(r.Body, &j))
	return j.Status
}

// TestDashboard drives the dashboard in a real browser: a wrong key is refused; an admin signs
// in; a job submitted meanwhile appears without a reload; its page shows it; cancelling it shows
// the new state without a reload; purging asks first; limits are saved; a read-only admin key sees
// no action buttons; s3Config never shows. Each page is screenshotted.
func TestDashboard(t *testing.T) {
	t.Parallel()
	s := startServer(t, serverOpts{Config: "endpoints:\n  - name: gpu\n    workersMax: 2\n  - name: idle\n"})
	ctx := browser(t)
	s3 := `,"s3Config":{"accessId":"AKIA","accessSecret":"` + s3Canary + `","bucketName":"b","endpointUrl":"http://127.0.0.1:1"}`

	// A wrong key is refused, and says why.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(s.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#key`)),
		chromedp.SendKeys(chromedp.CSS(`#key`), "spool_wrong"),
		chromedp.Click(chromedp.CSS(`#sign-in`)),
		chromedp.WaitVisible(`//p[@id="signin-error" and contains(., "unknown API key")]`),
	))
	screenshot(t, ctx, "dashboard-signin")

	// The admin signs in and sees every endpoint.
	require.NoError(t, chromedp.Do(ctx,
		js(`document.getElementById("key").value = ""`),
		chromedp.SendKeys(chromedp.CSS(`#key`), s.Keys.Admin),
		chromedp.Click(chromedp.CSS(`#sign-in`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-endpoint="gpu"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-endpoint="idle"]`)),
	))

	// A job submitted while the endpoint's page is open appears there without a reload.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.URL+"/#/endpoint/gpu"), chromedp.WaitVisible(chromedp.CSS(`[data-testid="status-filter"]`))))
	id := submit(t, s, "gpu", `{"input":{"prompt":"a cat"}`+s3+`}`)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`a[href="#/job/`+id+`"]`)),
		chromedp.WaitVisible(`//div[@data-stat="queue" and normalize-space(.)="1 / 0"]`),
	))
	screenshot(t, ctx, "dashboard-endpoint")

	// Its page shows it, and nothing of its s3Config but that it has one.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`a[href="#/job/`+id+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="job-status"] [data-state="IN_QUEUE"]`)),
		chromedp.WaitVisible(`//dd[contains(., "set (never shown)")]`),
		chromedp.WaitVisible(`//pre[@data-testid="json-input" and contains(., "a cat")]`),
	))
	screenshot(t, ctx, "dashboard-job")
	require.NotContains(t, pageHTML(t, ctx), s3Canary)

	// Cancel: the state changes on the page by itself (Server-Sent Events), no reload.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`[data-action="cancel"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="job-status"] [data-state="CANCELLED"]`)),
	))
	require.Equal(t, "CANCELLED", jobStatus(t, s, id))

	// Purge asks first: "Keep" keeps the queue, "Purge" empties it.
	queued := []string{submit(t, s, "gpu", `{"input":{}}`), submit(t, s, "gpu", `{"input":{},"policy":{"lowPriority":true}}`)}
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(s.URL+"/#/endpoint/gpu"),
		chromedp.WaitVisible(`//div[@data-stat="queue" and normalize-space(.)="1 / 1"]`),
		chromedp.Click(chromedp.CSS(`[data-action="purge"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="confirm-no"]`)),
	))
	screenshot(t, ctx, "dashboard-purge-confirm")
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-testid="confirm-no"]`)), chromedp.WaitNotPresent(chromedp.CSS(`.modal`))))
	for _, q := range queued {
		require.Equal(t, "IN_QUEUE", jobStatus(t, s, q), "Keep purged nothing")
	}
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`[data-action="purge"]`)),
		chromedp.Click(chromedp.CSS(`[data-testid="confirm-yes"]`)),
		chromedp.WaitVisible(`//div[@data-stat="queue" and normalize-space(.)="0 / 0"]`),
	))
	for _, q := range queued {
		require.NotEqual(t, "IN_QUEUE", jobStatus(t, s, q))
	}

	// Scale limits are saved through the API.
	require.NoError(t, chromedp.Do(ctx,
		js(`document.querySelector('[data-testid="workers-max"]').value = "5"`),
		chromedp.Click(chromedp.CSS(`[data-action="scale"]`)),
		chromedp.WaitVisible(`//div[@id="toast" and contains(., "Workers 0–5")]`),
	))
	r := s.do(t, "GET", "/api/endpoints/gpu", adminHeader(s), nil)
	require.Contains(t, string(r.Body), `"workersMax":5`)

	// The overview, on a phone in dark mode, for the README.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.URL+"/#/"), chromedp.WaitVisible(chromedp.CSS(`[data-endpoint="gpu"]`))))
	screenshot(t, ctx, "dashboard-overview")
	media := func(scheme string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
				Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
			return err
		})
	}
	phone := chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
			Width: 390, Height: 844, DeviceScaleFactor: 2, Mobile: true})
		return err
	})
	desktop := chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.ClearDeviceMetricsOverride, cdp.Empty{})
		return err
	})
	require.NoError(t, chromedp.Do(ctx, media("dark"), phone, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`[data-endpoint="gpu"]`))))
	screenshot(t, ctx, "dashboard-overview-phone-dark")
	require.NoError(t, chromedp.Do(ctx, desktop, media("light")))

	// CSRF: the signed-in browser's own fetch without the token is refused, and changes nothing.
	victim := submit(t, s, "gpu", `{"input":{}}`)
	code, err := chromedp.Run(ctx, chromedp.Evaluate[int](
		`fetch("/v2/gpu/cancel/`+victim+`", {method: "POST", credentials: "same-origin"}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	require.NoError(t, err)
	require.Equal(t, http.StatusForbidden, code)
	require.Equal(t, "IN_QUEUE", jobStatus(t, s, victim))

	// Sign out; a read-only admin key signs in and sees no action anywhere.
	r = s.do(t, "POST", "/api/keys", adminHeader(s), []byte(`{"name":"viewer","scope":"admin","readOnly":true}`))
	require.Equal(t, 201, r.Code, "%s", r)
	var viewer struct{ Key string }
	require.NoError(t, json.Unmarshal(r.Body, &viewer))
	actions := chromedp.Evaluate[int](`document.querySelectorAll("[data-action]").length`)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`[data-testid="sign-out"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#key`)),
		chromedp.SendKeys(chromedp.CSS(`#key`), viewer.Key),
		chromedp.Click(chromedp.CSS(`#sign-in`)),
		chromedp.WaitVisible(`//span[@data-testid="who" and contains(., "(read-only)")]`),
		chromedp.Navigate(s.URL+"/#/endpoint/gpu"),
		chromedp.WaitVisible(chromedp.CSS(`a[href="#/job/`+victim+`"]`)),
	))
	n, err := chromedp.Run(ctx, actions)
	require.NoError(t, err)
	require.Zero(t, n, "no action buttons on the endpoint page")
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`a[href="#/job/`+victim+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="job-status"] [data-state="IN_QUEUE"]`)),
	))
	n, err = chromedp.Run(ctx, actions)
	require.NoError(t, err)
	require.Zero(t, n, "no action buttons on the job page")
	screenshot(t, ctx, "dashboard-job-read-only")
	// Even with its CSRF token, the read-only session cannot act.
	code, err = chromedp.Run(ctx, chromedp.Evaluate[int](
		`fetch("/ui/session").then(r => r.json()).then(me => fetch("/v2/gpu/cancel/`+victim+`",
			{method: "POST", headers: {"X-Spool-CSRF": me.csrf}})).then(r => r.status)`, chromedp.EvalAwaitPromise))
	require.NoError(t, err)
	require.Equal(t, http.StatusForbidden, code)
	require.Equal(t, "IN_QUEUE", jobStatus(t, s, victim))
}

// TestDashboardSessions checks the session rules over plain HTTP: the cookie's attributes, the
// CSRF token and Origin on writes, sign-out and key revocation ending a session (and its open
// stream), non-admin keys refused, read-only limits, and no s3Config or worker environment in any
// answer or SSE message.
func TestDashboardSessions(t *testing.T) {
	t.Parallel()
	const envCanary = "CANARY-hf-token-51c0"
	s := startServer(t, serverOpts{Config: "endpoints:\n  - name: q\n  - name: gpu\n    worker:\n      command: /bin/true\n      env:\n        HF_TOKEN: " + envCanary + "\n"})
	id := submit(t, s, "q", `{"input":{"n":1},"s3Config":{"accessId":"a","accessSecret":"`+s3Canary+`","bucketName":"b","endpointUrl":"http://127.0.0.1:1"}}`)

	signIn := func(key string) (resp, *http.Cookie, string) {
		r := s.do(t, "POST", "/ui/session", nil, []byte(`{"key":"`+key+`"}`))
		if r.Code != 200 {
			return r, nil, ""
		}
		var me struct{ CSRF string }
		require.NoError(t, json.Unmarshal(r.Body, &me))
		c := r.Header.Values("Set-Cookie")
		require.Len(t, c, 1)
		require.Contains(t, c[0], "HttpOnly")
		require.Contains(t, c[0], "SameSite=Strict")
		require.NotContains(t, c[0], key, "the cookie never holds the key")
		cookie, err := http.ParseSetCookie(c[0])
		require.NoError(t, err)
		return r, cookie, me.CSRF
	}
	withCookie := func(c *http.Cookie, extra ...string) http.Header {
		h := http.Header{"Cookie": {c.Name + "=" + c.Value}}
		for i := 0; i+1 < len(extra); i += 2 {
			h.Set(extra[i], extra[i+1])
		}
		return h
	}
	r, _, _ := signIn("spool_wrong")
	require.Equal(t, http.StatusUnauthorized, r.Code, "%s", r)
	r, _, _ = signIn(s.Keys.Client)
	require.Equal(t, http.StatusForbidden, r.Code, "%s", r)
	require.Contains(t, string(r.Body), "needs an admin key")
	r = s.do(t, "POST", "/ui/session", http.Header{"Origin": {"https://evil.example"}}, []byte(`{"key":"`+s.Keys.Admin+`"}`))
	require.Equal(t, http.StatusForbidden, r.Code, "a sign-in from another site: %s", r)

	r = s.do(t, "POST", "/api/keys", adminHeader(s), []byte(`{"name":"ops","scope":"admin"}`))
	require.Equal(t, 201, r.Code, "%s", r)
	var ops struct{ ID, Key string }
	require.NoError(t, json.Unmarshal(r.Body, &ops))
	r, cookie, csrf := signIn(ops.Key)
	require.Equal(t, 200, r.Code, "%s", r)

	// Reads of /api need only the cookie; nothing shows the s3Config.
	for _, path := range []string{"/api/overview", "/api/jobs/" + id, "/api/jobs?endpoint=q", "/api/jobs/" + id + "/logs",
		"/api/jobs/" + id + "/chunks", "/api/jobs/" + id + "/webhook", "/api/endpoints", "/api/workers"} {
		r = s.do(t, "GET", path, withCookie(cookie), nil)
		require.Equal(t, 200, r.Code, "%s: %s", path, r)
		require.NotContains(t, string(r.Body), s3Canary, path)
	}
	// The client API, even its reads (a /stream read drains), and every write need the token too,
	// and no foreign Origin.
	r = s.do(t, "GET", "/v2/q/stream/"+id, withCookie(cookie), nil)
	require.Equal(t, http.StatusForbidden, r.Code, "%s", r)
	r = s.do(t, "GET", "/v2/q/status/"+id, withCookie(cookie, "X-Spool-CSRF", csrf), nil)
	require.Equal(t, 200, r.Code, "%s", r)
	require.NotContains(t, string(r.Body), s3Canary)
	r = s.do(t, "POST", "/v2/q/cancel/"+id, withCookie(cookie), nil)
	require.Equal(t, http.StatusForbidden, r.Code, "%s", r)
	require.Contains(t, string(r.Body), "CSRF")
	r = s.do(t, "POST", "/v2/q/cancel/"+id, withCookie(cookie, "X-Spool-CSRF", "forged"), nil)
	require.Equal(t, http.StatusForbidden, r.Code, "%s", r)
	r = s.do(t, "POST", "/v2/q/cancel/"+id, withCookie(cookie, "X-Spool-CSRF", csrf, "Origin", "https://evil.example"), nil)
	require.Equal(t, http.StatusForbidden, r.Code, "%s", r)
	require.Equal(t, "IN_QUEUE", jobStatus(t, s, id), "refused writes changed nothing")

	// The live stream carries the overview and the job, never its s3Config.
	events := readEvents(t, s, "/api/events?job="+id, withCookie(cookie), 2, nil)
	require.Contains(t, events, "event: overview")
	require.Contains(t, events, "event: job")
	require.Contains(t, events, `"hasS3Config":true`)
	require.NotContains(t, events, s3Canary)

	r = s.do(t, "POST", "/v2/q/cancel/"+id, withCookie(cookie, "X-Spool-CSRF", csrf, "Origin", s.URL), nil)
	require.Equal(t, 200, r.Code, "%s", r)

	// Signing out ends the session: a copy of the cookie kept elsewhere opens nothing after it.
	r = s.do(t, "DELETE", "/ui/session", withCookie(cookie, "X-Spool-CSRF", csrf), nil)
	require.Equal(t, http.StatusNoContent, r.Code, "%s", r)
	r = s.do(t, "GET", "/api/overview", withCookie(cookie), nil)
	require.Equal(t, http.StatusUnauthorized, r.Code, "%s", r)
	require.Contains(t, string(r.Body), "session has ended")

	// A session is no better than its key: revoked, every session of it ends, open streams too.
	_, cookie, _ = signIn(ops.Key)
	events = readEvents(t, s, "/api/events", withCookie(cookie), 1, func() {
		r := s.do(t, "DELETE", "/api/keys/"+ops.ID, adminHeader(s), nil)
		require.Equal(t, http.StatusNoContent, r.Code, "%s", r)
	})
	require.Contains(t, events, "event: error")
	require.Contains(t, events, "revoked")
	r = s.do(t, "GET", "/api/overview", withCookie(cookie), nil)
	require.Equal(t, http.StatusUnauthorized, r.Code, "%s", r)

	// A made-up cookie opens nothing.
	r = s.do(t, "GET", "/ui/session", withCookie(&http.Cookie{Name: cookie.Name, Value: "made-up-session-id"}), nil)
	require.Equal(t, http.StatusUnauthorized, r.Code, "%s", r)

	// A read-only admin key reads, never sees a worker's environment, and changes nothing.
	r = s.do(t, "POST", "/api/keys", adminHeader(s), []byte(`{"name":"viewer","scope":"admin","readOnly":true}`))
	require.Equal(t, 201, r.Code, "%s", r)
	var viewer struct{ Key string }
	require.NoError(t, json.Unmarshal(r.Body, &viewer))
	ro := http.Header{"Authorization": {"Bearer " + viewer.Key}}
	for _, path := range []string{"/api/endpoints", "/api/endpoints/gpu"} {
		r = s.do(t, "GET", path, ro, nil)
		require.Equal(t, 200, r.Code, "%s", r)
		require.NotContains(t, string(r.Body), envCanary, path)
		require.Contains(t, string(r.Body), `"HF_TOKEN":"(hidden)"`, path)
	}
	r = s.do(t, "GET", "/api/endpoints/gpu", adminHeader(s), nil)
	require.Contains(t, string(r.Body), envCanary, "an admin who may edit the endpoint sees it")
	streamed := submit(t, s, "q", `{"input":{}}`)
	for _, c := range []struct{ method, path string }{
		{"POST", "/v2/q/run"}, {"POST", "/v2/q/cancel/" + streamed}, {"POST", "/v2/q/purge-queue"},
		{"GET", "/v2/q/stream/" + streamed}, {"POST", "/api/keys"}, {"DELETE", "/api/endpoints/q"},
		{"GET", "/v2/q/job-take/w1"}, {"POST", "/v2/q/openai/v1/chat/completions"},
	} {
		r = s.do(t, c.method, c.path, ro, []byte(`{"input":{}}`))
		require.Equal(t, http.StatusForbidden, r.Code, "%s %s: %s", c.method, c.path, r)
	}
	require.Equal(t, "IN_QUEUE", jobStatus(t, s, streamed))
}

// readEvents reads a Server-Sent Events stream: n events, then, after calling then (when not
// nil), the rest of the stream until it ends.
func readEvents(t *testing.T, s *server, path string, h http.Header, n int, then func()) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", s.URL+path, nil)
	require.NoError(t, err)
	req.Header = h
	res, err := s.client.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	var b strings.Builder
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for seen := 0; sc.Scan(); {
		b.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "event: ") {
			seen++
		}
		if seen == n && sc.Text() == "" { // the end of the n-th event
			if then == nil {
				break
			}
			then()
			then, n = nil, -1 // read to the end
		}
	}
	require.NoError(t, ctx.Err(), "the stream did not end; it said:\n%s", b.String())
	return b.String()
}
