//go:build failpoint

package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Enabled reports whether this binary was built with failpoints.
const Enabled = true

// armed is the point SPOOL_FAILPOINT names, as "point" or "point:N" (the Nth hit, 1-based;
// default the first).
var (
	armed string
	after int64 = 1
	hits  atomic.Int64
)

func init() {
	v := os.Getenv("SPOOL_FAILPOINT")
	if v == "" {
		return
	}
	name, n, ok := strings.Cut(v, ":")
	if ok {
		k, err := strconv.ParseInt(n, 10, 64)
		if err != nil || k < 1 {
			fmt.Fprintf(os.Stderr, "failpoint: bad SPOOL_FAILPOINT %q: want point or point:N\n", v)
			os.Exit(2)
		}
		after = k
	}
	known := false
	for _, p := range Points {
		known = known || p == name
	}
	if !known {
		fmt.Fprintf(os.Stderr, "failpoint: unknown point %q (known: %s)\n", name, strings.Join(Points, ", "))
		os.Exit(2)
	}
	armed = name
	fmt.Fprintf(os.Stderr, "failpoint: armed %s at hit %d\n", name, after)
}

// Hit kills the process with SIGKILL at the armed point's Nth hit.
func Hit(name string) {
	if name != armed || hits.Add(1) != after {
		return
	}
	fmt.Fprintf(os.Stderr, "failpoint: %s reached, killing the process\n", name)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}
