// Package version says which Spool this is, from the build information the Go toolchain embeds in
// every binary: the module version (a tag when built with `go install …@vX`, "(devel)" from a
// checkout), the commit, its time, and whether the tree had changes.
package version

import (
	"runtime/debug"
	"strings"
)

// Info describes the running binary.
type Info struct {
	Version  string // the module version, or "(devel)"
	Revision string // the VCS commit, "" when unknown
	Time     string // the commit's time (RFC 3339), "" when unknown
	Modified bool   // built from a tree with uncommitted changes
	Go       string // the Go version that built it
}

// Get reads the binary's build information.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: "(unknown)"}
	}
	return fromBuildInfo(bi)
}

func fromBuildInfo(bi *debug.BuildInfo) Info {
	i := Info{Version: bi.Main.Version, Go: bi.GoVersion}
	if i.Version == "" {
		i.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Revision = s.Value
		case "vcs.time":
			i.Time = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	return i
}

// String is the one line `spool version` prints, e.g.
// "spool v0.3.0 (commit 1a2b3c4d5e6f, 2026-12-03T09:00:00Z) go1.26.8".
func (i Info) String() string {
	var b strings.Builder
	b.WriteString("spool " + i.Version)
	if i.Revision != "" {
		rev := i.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		b.WriteString(" (commit " + rev)
		if i.Time != "" {
			b.WriteString(", " + i.Time)
		}
		if i.Modified {
			b.WriteString(", with uncommitted changes")
		}
		b.WriteString(")")
	}
	if i.Go != "" {
		b.WriteString(" " + i.Go)
	}
	return b.String()
}
