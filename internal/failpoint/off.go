//go:build !failpoint

package failpoint

// Enabled reports whether this binary was built with failpoints.
const Enabled = false

// Hit does nothing without the failpoint build tag.
func Hit(string) {}
