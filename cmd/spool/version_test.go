package main

import (
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/internal/version"
)

// TestVersion: spool version and spool --version print the same line, from the build information.
func TestVersion(t *testing.T) {
	t.Parallel()
	want := version.Get().String() + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		cmd := newRootCmd(envMap(nil))
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(io.Discard)
		cmd.SetArgs(args)
		require.NoError(t, cmd.Execute(), "%v", args)
		require.Equal(t, want, out.String(), "%v", args)
		require.Contains(t, out.String(), "spool ")
	}
}
