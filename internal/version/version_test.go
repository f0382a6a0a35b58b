package version

import (
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFromBuildInfo(t *testing.T) {
	t.Parallel()
	i := fromBuildInfo(&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.3.0"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "1a2b3c4d5e6f7a8b9c0d"}, {Key: "vcs.time", Value: "2026-12-03T09:00:00Z"}, {Key: "vcs.modified", Value: "true"},
	}})
	require.Equal(t, Info{Version: "v0.3.0", Revision: "1a2b3c4d5e6f7a8b9c0d", Time: "2026-12-03T09:00:00Z", Modified: true, Go: "go1.26.8"}, i)
	require.Equal(t, "spool v0.3.0 (commit 1a2b3c4d5e6f, 2026-12-03T09:00:00Z, with uncommitted changes) go1.26.8", i.String())

	bare := fromBuildInfo(&debug.BuildInfo{GoVersion: "go1.26.8"})
	require.Equal(t, "spool (devel) go1.26.8", bare.String())
}

func TestGetReadsThisBinary(t *testing.T) {
	t.Parallel()
	i := Get()
	require.NotEmpty(t, i.Version)
	require.NotEmpty(t, i.Go, "a test binary carries its Go version")
}
