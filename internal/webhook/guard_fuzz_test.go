package webhook_test

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/internal/webhook"
)

// inetAtonPart is one part of an inet_aton(3) IPv4 spelling: hexadecimal after 0x (a bare 0x is
// zero), octal after a leading 0, decimal otherwise.
var inetAtonPart = regexp.MustCompile(`^(?:0[xX]([0-9a-fA-F]*)|0([0-7]*)|([1-9][0-9]*))$`)

// atonReference is an independent reading of the inet_aton spellings parseIP documents, for
// hosts netip does not take: 1 to 4 parts, the last filling the bytes that remain.
func atonReference(s string) (netip.Addr, bool) {
	if s == "" || len(s) > 64 {
		return netip.Addr{}, false
	}
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var n uint64
	for i, p := range parts {
		m := inetAtonPart.FindStringSubmatch(p)
		if m == nil {
			return netip.Addr{}, false
		}
		var v uint64
		var err error
		switch {
		case strings.HasPrefix(strings.ToLower(p), "0x"):
			if m[1] != "" {
				v, err = strconv.ParseUint(m[1], 16, 64)
			}
		case m[2] != "" || p == "0":
			if m[2] != "" {
				v, err = strconv.ParseUint(m[2], 8, 64)
			}
		default:
			v, err = strconv.ParseUint(m[3], 10, 64)
		}
		if err != nil {
			return netip.Addr{}, false
		}
		width := 8 // bits of this part
		if i == len(parts)-1 {
			width = 8 * (4 - i)
		}
		if v >= 1<<width {
			return netip.Addr{}, false
		}
		n = n<<width | v
	}
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

// FuzzParseIP: the host parser of webhook dials never panics; it agrees with netip on what netip
// parses and with an independent inet_aton reading on the rest; and the guard judges whatever it
// parses as the plain address, whether IPv4-mapped or not.
func FuzzParseIP(f *testing.F) {
	for _, s := range []string{
		"127.0.0.1", "127.1", "2130706433", "0x7f000001", "0X7F000001", "0177.0.0.1", "017700000001", "0x7f.1",
		"10.0x10.0377.1", "0", "4294967295", "0x", "0x.0x.0x.0x", "::ffff:127.0.0.1", "fe80::1%lo", "[::1]", "",
		"example.com", "4294967296", "256.0.0.1", "1.2.3.4.5", "08", "0xg", "1..2", "1.2.3.256", "1.2.65536",
		"0xfffffffff", "deadbeef", "127.0.0.1.", "-1", "1e3", "+1", "1_0", "0b1", "0o1", "00x1", "0x0x1",
		"0000000000000000000000000000000000000000000000000000000000000000001", "1.0x", "169.254.169.254",
		"0251.0376.0251.0376", "0xa9fea9fe", "::ffff:a9fe:a9fe", "::ffff:0:127.0.0.1", "64:ff9b::7f00:1",
	} {
		f.Add(s)
	}
	g := webhook.NewGuard(nil, false)
	f.Fuzz(func(t *testing.T, host string) {
		ip, ok := webhook.ParseIP(host)
		if want, err := netip.ParseAddr(host); err == nil {
			require.True(t, ok, host)
			require.Equal(t, want, ip, host)
		} else {
			want, wantOK := atonReference(host)
			require.Equal(t, wantOK, ok, "%q parsed as %v", host, ip)
			if ok {
				require.Equal(t, want, ip, host)
			}
		}
		if !ok {
			return
		}
		plain := ip.WithZone("").Unmap()
		require.Equal(t, g.Check(plain) == nil, g.Check(ip) == nil, "%q: %v judged unlike %v", host, ip, plain)
		if plain.Is4() {
			mapped := netip.AddrFrom16(plain.As16())
			require.Equal(t, g.Check(plain) == nil, g.Check(mapped) == nil, "%v judged unlike %v", mapped, plain)
		}
		if plain.IsLoopback() || plain.IsPrivate() || plain.IsLinkLocalUnicast() || plain.IsUnspecified() || plain.IsMulticast() {
			var refused *webhook.RefusedError
			require.ErrorAs(t, g.Check(ip), &refused, "%q is %v", host, ip)
		}
	})
}

// FuzzGuardSpellings spells an IPv4 address in each way inet_aton reads: every spelling parses to
// the address, and the guard (with and without an allowlist) decides the same for all of them.
func FuzzGuardSpellings(f *testing.F) {
	for _, a := range [][4]byte{{127, 0, 0, 1}, {10, 1, 2, 3}, {169, 254, 169, 254}, {100, 64, 0, 1}, {8, 8, 8, 8}, {0, 0, 0, 0}, {255, 255, 255, 255}, {192, 168, 7, 200}} {
		f.Add(a[0], a[1], a[2], a[3])
	}
	guards := []*webhook.Guard{
		webhook.NewGuard(nil, false),
		webhook.NewGuard(nil, true),
		webhook.NewGuard([]netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("::ffff:192.168.7.0/120")}, false),
	}
	f.Fuzz(func(t *testing.T, a, b, c, d byte) {
		addr := netip.AddrFrom4([4]byte{a, b, c, d})
		n := uint32(a)<<24 | uint32(b)<<16 | uint32(c)<<8 | uint32(d)
		spellings := []string{
			addr.String(),
			strconv.FormatUint(uint64(n), 10),
			fmt.Sprintf("0x%x", n), fmt.Sprintf("0X%08X", n), fmt.Sprintf("0%o", n),
			fmt.Sprintf("0%o.0%o.0%o.0%o", a, b, c, d),
			fmt.Sprintf("0x%x.0x%x.0x%x.0x%x", a, b, c, d),
			fmt.Sprintf("%d.%d", a, n&0xffffff),
			fmt.Sprintf("%d.%d.%d", a, b, n&0xffff),
			fmt.Sprintf("0x%x.0%o.%d", a, b, n&0xffff),
			"::ffff:" + addr.String(),
		}
		for _, s := range spellings {
			ip, ok := webhook.ParseIP(s)
			require.True(t, ok, s)
			require.Equal(t, addr, ip.Unmap(), s)
			for i, g := range guards {
				require.Equal(t, g.Check(addr) == nil, g.Check(ip) == nil, "guard %d: %s judged unlike %v", i, s, addr)
			}
		}
		if a == 127 {
			require.Error(t, guards[0].Check(addr), "loopback gets through")
			require.NoError(t, guards[1].Check(addr), "spool dev allows loopback")
		}
	})
}
