package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"code.dny.dev/ssrf"
)

// The SSRF guard. A webhook URL is chosen by whoever submits a job, so without a guard it would
// be a way to make the server reach its own network: loopback admin ports, the cloud metadata
// service, private services. The decision is taken at dial time, in net.Dialer.Control, on the IP
// the socket is about to connect to: DNS rebinding (a name that resolves to a public address when
// checked and a private one when used) and odd spellings of an address (2130706433, 0x7f000001,
// [::ffff:127.0.0.1]) meet the same check as a plain 127.0.0.1.

// RefusedError is a connection the guard refused.
type RefusedError struct {
	Addr   netip.Addr
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("refused to connect to %s: %s (allow it with webhooks.allowCIDRs)", e.Addr, e.Reason)
}

// Guard decides which addresses webhooks may connect to: public unicast addresses, and any address
// in the operator's allowed CIDRs. It refuses loopback, private (RFC 1918, fc00::/7), link-local
// (169.254.0.0/16 with the metadata address, fe80::/10), shared (CGNAT, 100.64.0.0/10), unspecified,
// multicast, documentation and every other special-purpose range (code.dny.dev/ssrf's lists: IPv6
// outside 2000::/3 is refused whole, fd00:ec2::254 included). IPv4-mapped IPv6 addresses are judged
// as the IPv4 address they carry.
type Guard struct {
	allow []netip.Prefix
	ssrf  *ssrf.Guardian
}

// NewGuard returns a guard that also lets through the allowed prefixes (and, with allowLoopback,
// 127.0.0.0/8 and ::1, for `spool dev`).
func NewGuard(allow []netip.Prefix, allowLoopback bool) *Guard {
	g := &Guard{ssrf: ssrf.New(ssrf.WithAnyPort())}
	for _, p := range allow {
		g.allow = append(g.allow, unmapPrefix(p.Masked()))
	}
	if allowLoopback {
		g.allow = append(g.allow, netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
	}
	return g
}

// unmapPrefix turns ::ffff:a.b.c.d/n (n >= 96) into a.b.c.d/(n-96), so that allowing either form
// allows the address, which is always checked unmapped.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

// Check returns nil if a webhook may connect to ip, and a *RefusedError otherwise.
func (g *Guard) Check(ip netip.Addr) error {
	ip = ip.WithZone("").Unmap()
	for _, p := range g.allow {
		if p.Contains(ip) {
			return nil
		}
	}
	if err := g.ssrf.SafeAddr(ip); err != nil {
		return &RefusedError{Addr: ip, Reason: describe(ip)}
	}
	return nil
}

var (
	metadataV4 = netip.MustParseAddr("169.254.169.254")
	metadataV6 = netip.MustParseAddr("fd00:ec2::254")
	cgnat      = netip.MustParsePrefix("100.64.0.0/10")
)

// describe names the kind of a refused address for the attempt's error.
func describe(ip netip.Addr) string {
	switch {
	case ip == metadataV4 || ip == metadataV6:
		return "a cloud metadata address"
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsUnspecified():
		return "the unspecified address"
	case ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast():
		return "a link-local address"
	case ip.IsPrivate():
		return "a private address"
	case cgnat.Contains(ip):
		return "a shared (CGNAT) address"
	case ip.IsMulticast() || ip.IsInterfaceLocalMulticast():
		return "a multicast address"
	}
	return "a special-purpose address"
}

// control is the net.Dialer.Control of webhook connections: the last word, on the address the
// socket connects to.
func (g *Guard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &RefusedError{Reason: "unparsable address " + strconv.Quote(address)}
	}
	return g.Check(ap.Addr())
}

// Resolver looks host names up. *net.Resolver implements it; tests plug in their own.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// dialer connects webhook requests: it resolves the host itself (numeric spellings the system
// resolver would accept, like 2130706433, are parsed as the address they spell), then dials each
// address in turn through the guard.
type dialer struct {
	resolver Resolver
	net      net.Dialer
}

func newDialer(g *Guard, r Resolver, extra func(netip.AddrPort) error) *dialer {
	d := &dialer{resolver: r}
	d.net.Control = func(network, address string, c syscall.RawConn) error {
		if err := g.control(network, address, c); err != nil {
			return err
		}
		if extra != nil {
			ap, _ := netip.ParseAddrPort(address)
			return extra(ap)
		}
		return nil
	}
	return d
}

func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("bad port %q", portStr)
	}
	var ips []netip.Addr
	if ip, ok := parseIP(host); ok {
		ips = []netip.Addr{ip}
	} else {
		ips, err = d.resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("resolve %s: no addresses", host)
		}
	}
	var errs []error
	for _, ip := range ips {
		target := netip.AddrPortFrom(ip.Unmap(), uint16(port))
		c, err := d.net.DialContext(ctx, "tcp", target.String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// parseIP parses a host that is an IP address: any form netip accepts (IPv6 with a zone
// included), and the IPv4 forms of inet_aton(3), which getaddrinfo and so many resolvers and
// proxies accept: 1 to 4 parts, each decimal, octal (leading 0) or hexadecimal (0x), the last part
// filling the remaining bytes ("127.1", "2130706433", "0x7f000001", "0177.0.0.1").
func parseIP(host string) (netip.Addr, bool) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip, true
	}
	return parseInetAton(host)
}

func parseInetAton(s string) (netip.Addr, bool) {
	if s == "" || len(s) > 64 {
		return netip.Addr{}, false
	}
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		base := 10
		switch {
		case strings.HasPrefix(p, "0x") || strings.HasPrefix(p, "0X"):
			base, p = 16, p[2:]
			if p == "" {
				p = "0" // inet_aton accepts a bare 0x
			}
		case len(p) > 1 && p[0] == '0':
			base, p = 8, p[1:]
		}
		if p == "" {
			return netip.Addr{}, false
		}
		v, err := strconv.ParseUint(p, base, 32)
		if err != nil {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	var n uint64
	last := len(vals) - 1
	for i, v := range vals[:last] {
		if v > 0xff {
			return netip.Addr{}, false
		}
		n |= v << (8 * (3 - i))
	}
	if vals[last] >= 1<<(8*(4-last)) {
		return netip.Addr{}, false
	}
	n |= vals[last]
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}
