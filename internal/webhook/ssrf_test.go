package webhook_test

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/webhook"
)

// canary counts the connections a loopback listener accepts: a webhook that reaches it got past
// the guard.
type canary struct {
	ln      net.Listener
	accepts atomic.Int64
	done    chan struct{}
}

func newCanary(t *testing.T, addr string) *canary {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	c := &canary{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.accepts.Add(1)
			_ = conn.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-c.done })
	return c
}

func (c *canary) port() string {
	_, p, _ := net.SplitHostPort(c.ln.Addr().String())
	return p
}

// TestSSRFMatrix: with no allowlist, every target that is (or resolves to, or spells, or maps to)
// a loopback, private, link-local, metadata, CGNAT, unspecified or special-purpose address is
// refused at dial time, with the reason recorded as a failed attempt; so is every URL that is not
// plain http(s) without user information. A canary listener on loopback sees no connection, and
// nothing but the rebinding name's public answer ever passes the guard (and that one is stopped
// by the test's own last check, so no traffic leaves the machine).
func TestSSRFMatrix(t *testing.T) {
	t.Parallel()
	v4 := newCanary(t, "127.0.0.1:0")
	P := v4.port()
	v6 := newCanary(t, "[::1]:0")
	Q := v6.port()

	const public = "93.184.215.14"
	resolver := &fakeResolver{calls: map[string]int{}, answers: map[string][][]netip.Addr{
		"localhost.test": {addrs("127.0.0.1")},
		"loop6.test":     {addrs("::1")},
		"mapped.test":    {addrs("::ffff:127.0.0.1")},
		"multi.test":     {addrs("10.1.2.3", "127.0.0.1")},
		"metadata.test":  {addrs("169.254.169.254")},
		"rebind.test":    {addrs(public), addrs("127.0.0.1")},
	}}
	f := newFixture(t, func(o *fixtureOpts) {
		o.resolver = resolver
		o.webhook = func(c *webhook.Config) { c.AllowCIDRs = nil }
	})
	f.putEndpoint("ssrf", func(ep *spool.Endpoint) { ep.WebhookAttempts = 1; ep.WebhookTimeoutMs = 2000 })
	f.putEndpoint("rebind", func(ep *spool.Endpoint) { ep.WebhookAttempts = 2; ep.WebhookTimeoutMs = 2000 })

	loopback, private, linkLocal, metadata := "a loopback address", "a private address", "a link-local address", "a cloud metadata address"
	cgnat, unspecified, special := "a shared (CGNAT) address", "the unspecified address", "a special-purpose address"
	targets := []struct{ url, reason string }{
		{"http://127.0.0.1:" + P + "/", loopback},
		{"http://127.1:" + P + "/", loopback},
		{"http://2130706433:" + P + "/", loopback},
		{"http://0x7f000001:" + P + "/", loopback},
		{"http://0x7f.0.0.1:" + P + "/", loopback},
		{"http://0x7f.1:" + P + "/", loopback},
		{"http://0177.0.0.1:" + P + "/", loopback},
		{"http://017700000001:" + P + "/", loopback},
		{"http://127.000.000.001:" + P + "/", loopback},
		{"https://127.0.0.1:" + P + "/", loopback},
		{"http://[::1]:" + Q + "/", loopback},
		{"http://[0:0:0:0:0:0:0:1]:" + Q + "/", loopback},
		{"http://[::ffff:127.0.0.1]:" + P + "/", loopback},
		{"http://[::ffff:7f00:1]:" + P + "/", loopback},
		{"http://[0:0:0:0:0:ffff:127.0.0.1]:" + P + "/", loopback},
		{"http://[::127.0.0.1]:" + P + "/", special},
		{"http://[64:ff9b::7f00:1]:" + P + "/", special},
		{"http://0.0.0.0:" + P + "/", unspecified},
		{"http://0:" + P + "/", unspecified},
		{"http://[::]:" + Q + "/", unspecified},
		{"http://10.0.0.1:" + P + "/", private},
		{"http://172.16.5.4:" + P + "/", private},
		{"http://192.168.0.1:" + P + "/", private},
		{"http://[fc00::1]:" + P + "/", private},
		{"http://[::ffff:10.0.0.1]:" + P + "/", private},
		{"http://169.254.169.254:" + P + "/latest/meta-data/", metadata},
		{"http://[::ffff:169.254.169.254]:" + P + "/", metadata},
		{"http://[fd00:ec2::254]:" + P + "/", metadata},
		{"http://169.254.1.1:" + P + "/", linkLocal},
		{"http://[fe80::1]:" + P + "/", linkLocal},
		{"http://[fe80::1%25lo]:" + P + "/", linkLocal},
		{"http://100.64.0.1:" + P + "/", cgnat},
		{"http://100.127.255.254:" + P + "/", cgnat},
		{"http://[::ffff:100.64.0.1]:" + P + "/", cgnat},
		{"http://localhost.test:" + P + "/", loopback},
		{"http://loop6.test:" + Q + "/", loopback},
		{"http://mapped.test:" + P + "/", loopback},
		{"http://multi.test:" + P + "/", private},
		{"http://multi.test:" + P + "/", loopback},
		{"http://metadata.test:" + P + "/", metadata},
		// Refused before any dial: the URL check applies at delivery too.
		{"http://user:pass@127.0.0.1:" + P + "/", "user information"},
		{"http://user@localhost.test:" + P + "/", "user information"},
		{"ftp://127.0.0.1:" + P + "/", "http or https"},
		{"gopher://127.0.0.1:" + P + "/_GET", "http or https"},
		{"file:///etc/passwd", "http or https"},
		{"javascript:alert(1)", "http or https"},
		{"http:///nohost", "with a host"},
	}
	jobs := make([]string, len(targets))
	for i, tc := range targets {
		jobs[i] = f.enqueue("ssrf", tc.url)
	}
	rebind := f.enqueue("rebind", "http://rebind.test:"+P+"/")

	all := append([]string{rebind}, jobs...)
	for range 10 {
		f.waitIdle()
		done := true
		for _, id := range all {
			done = done && f.delivery(id).State != spool.DeliveryPending
		}
		if done {
			break
		}
		f.clock.Advance(10 * time.Second)
	}
	for i, tc := range targets {
		d := f.delivery(jobs[i])
		require.Equal(t, spool.DeliveryFailed, d.State, tc.url)
		require.Len(t, d.History, 1, tc.url)
		a := d.History[0]
		require.Zero(t, a.StatusCode, tc.url)
		require.Contains(t, a.Error, "refused", tc.url)
		require.Contains(t, a.Error, tc.reason, tc.url)
		t.Logf("%s -> %s", tc.url, a.Error)
	}

	// Rebinding: the first answer (public) passed the guard (and was stopped by the test, which
	// sends nothing off this machine); the second (loopback) was refused at dial time.
	d := f.delivery(rebind)
	require.Equal(t, spool.DeliveryFailed, d.State)
	require.Len(t, d.History, 2)
	require.Contains(t, d.History[0].Error, "refusing to send traffic off this machine")
	require.Contains(t, d.History[1].Error, "refused to connect to 127.0.0.1: a loopback address")

	require.Zero(t, v4.accepts.Load(), "the loopback canary was never reached")
	require.Zero(t, v6.accepts.Load(), "the IPv6 loopback canary was never reached")
	require.Equal(t, addrs(public), f.guard.seen(), "nothing else ever passed the guard")
	outcomes := f.obs.outcomes("ssrf")
	require.Len(t, outcomes, len(targets))
	for _, o := range outcomes {
		require.Equal(t, "refused", o)
	}
}

// TestSSRFAllowlist: the positive control. A receiver on an allowed CIDR (127.0.0.2/32) is
// delivered to; its redirect to the loopback canary is a failed attempt that never reaches the
// canary; 127.0.0.1, outside the allowlist, stays refused.
func TestSSRFAllowlist(t *testing.T) {
	t.Parallel()
	cn := newCanary(t, "127.0.0.1:0")
	f := newFixture(t, func(o *fixtureOpts) {
		o.webhook = func(c *webhook.Config) { c.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")} }
	})
	ok := newReceiver(t, f.bell, "127.0.0.2:0", status(200))
	redirect := newReceiver(t, f.bell, "127.0.0.2:0", func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://127.0.0.1:"+cn.port()+"/", http.StatusFound)
	})
	f.putEndpoint("one", func(ep *spool.Endpoint) { ep.WebhookAttempts = 1 })

	delivered := f.enqueue("one", ok.URL+"/hook")
	redirected := f.enqueue("one", redirect.URL)
	refused := f.enqueue("one", "http://127.0.0.1:"+cn.port()+"/")
	for _, id := range []string{delivered, redirected, refused} {
		f.waitFinished(id, 10*time.Second)
	}
	require.Equal(t, spool.DeliveryDelivered, f.delivery(delivered).State)
	require.Equal(t, 1, ok.count())
	r := f.delivery(redirected)
	require.Equal(t, spool.DeliveryFailed, r.State)
	require.Equal(t, 302, r.History[0].StatusCode)
	s := f.delivery(refused)
	require.Equal(t, spool.DeliveryFailed, s.State)
	require.Contains(t, s.History[0].Error, "refused to connect to 127.0.0.1")
	require.Zero(t, cn.accepts.Load())
}

// TestGuardCheck is the guard's decision table on its own.
func TestGuardCheck(t *testing.T) {
	t.Parallel()
	g := webhook.NewGuard([]netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("::ffff:192.168.7.0/120")}, false)
	for addr, ok := range map[string]bool{
		"93.184.215.14": true, "2606:4700::1111": true, "8.8.8.8": true,
		"10.1.2.3": true, "::ffff:10.1.2.3": true, "192.168.7.9": true, // allowed, in either form
		"10.2.0.1": false, "127.0.0.1": false, "::1": false, "0.0.0.0": false, "::": false,
		"169.254.169.254": false, "fd00:ec2::254": false, "100.64.0.1": false, "fe80::1": false,
		"224.0.0.1": false, "255.255.255.255": false, "192.0.2.1": false, "2001:db8::1": false,
		"::ffff:127.0.0.1": false, "64:ff9b::7f00:1": false, "2002:7f00:1::": false,
	} {
		err := g.Check(netip.MustParseAddr(addr))
		require.Equal(t, ok, err == nil, "%s: %v", addr, err)
	}
	dev := webhook.NewGuard(nil, true)
	require.NoError(t, dev.Check(netip.MustParseAddr("127.0.0.1")))
	require.NoError(t, dev.Check(netip.MustParseAddr("::1")))
	require.Error(t, dev.Check(netip.MustParseAddr("10.0.0.1")), "spool dev allows loopback only")
}

// TestParseIP: the numeric host spellings inet_aton accepts are parsed as the address they spell.
func TestParseIP(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]string{
		"127.0.0.1": "127.0.0.1", "127.1": "127.0.0.1", "2130706433": "127.0.0.1", "0x7f000001": "127.0.0.1",
		"0X7F000001": "127.0.0.1", "0177.0.0.1": "127.0.0.1", "017700000001": "127.0.0.1", "0x7f.1": "127.0.0.1",
		"127.0.1": "127.0.0.1", "10.0x10.0377.1": "10.16.255.1", "0": "0.0.0.0", "4294967295": "255.255.255.255",
		"0x": "0.0.0.0", "::ffff:127.0.0.1": "::ffff:127.0.0.1", "fe80::1%lo": "fe80::1%lo",
	} {
		ip, ok := webhook.ParseIP(host)
		require.True(t, ok, host)
		require.Equal(t, want, ip.String(), host)
	}
	for _, host := range []string{
		"", "example.com", "4294967296", "256.0.0.1", "1.2.3.4.5", "08", "0xg", "1..2", "1.2.3.256", "1.2.65536",
		"0xfffffffff", "deadbeef", "127.0.0.1.", "-1", "1e3", strings.Repeat("1", 70),
	} {
		_, ok := webhook.ParseIP(host)
		require.False(t, ok, host)
	}
}

// TestParseCIDRs reads the allowlist of config and SPOOL_WEBHOOK_ALLOW_CIDRS.
func TestParseCIDRs(t *testing.T) {
	t.Parallel()
	got, err := webhook.ParseCIDRs(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8  172.16.0.1/12")
	require.NoError(t, err)
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	require.Equal(t, []string{"10.0.0.0/8", "192.168.1.7/32", "fd00::/8", "172.16.0.0/12"}, s)
	for _, bad := range []string{"10.0.0.0/33", "nope", "10.0.0/8", "1.2.3.4/",
		"0.0.0.0/0", "::/0", "::ffff:0:0/96", "64.0.0.0/2"} { // the last four would switch the guard off
		_, err := webhook.ParseCIDRs(bad)
		require.Error(t, err, bad)
		require.Contains(t, err.Error(), strconv.Quote(bad))
	}
	none, err := webhook.ParseCIDRs("")
	require.NoError(t, err)
	require.Empty(t, none)
}
