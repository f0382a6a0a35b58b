package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCheckDataDirWarnsWhenOthersHaveAccess: a data directory that group or others may enter
// gets one warning naming it, its mode and the fix; an owner-only one gets none.
func TestCheckDataDirWarnsWhenOthersHaveAccess(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{
		{0o700, false},
		{0o500, false},
		{0o750, true},
		{0o755, true},
		{0o701, true},
		{0o777, true},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		require.NoError(t, os.Mkdir(dir, 0o700))
		require.NoError(t, os.Chmod(dir, tc.mode))
		var buf bytes.Buffer
		checkDataDir(dir, slog.New(slog.NewTextHandler(&buf, nil)))
		if !tc.warn {
			require.Empty(t, buf.String(), "mode %04o", tc.mode)
			continue
		}
		out := buf.String()
		require.Contains(t, out, "level=WARN", "mode %04o", tc.mode)
		require.Contains(t, out, "dir="+dir)
		require.Contains(t, out, fmt.Sprintf("mode=%04o", uint32(tc.mode)))
		require.Contains(t, out, `fix="chmod 700 `+dir+`"`)
		require.Equal(t, 1, bytes.Count(buf.Bytes(), []byte("\n")), "one line")
	}
}

// TestCheckDataDirMissing: a directory that cannot be read is reported, not a crash.
func TestCheckDataDirMissing(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	dir := filepath.Join(t.TempDir(), "missing")
	checkDataDir(dir, slog.New(slog.NewTextHandler(&buf, nil)))
	require.Contains(t, buf.String(), "level=WARN")
	require.Contains(t, buf.String(), "dir="+dir)
}
