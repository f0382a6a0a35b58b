package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
)

// checkDataDir warns when group or others may enter or list the data directory. The files Spool
// creates in it are owner-only already, but a directory opened to others lets them see what is
// there and read whatever another tool (a backup, a copy by hand) leaves in it with a looser mode.
// Spool creates the directory 0700; an existing one is the operator's to fix, so this warns
// rather than changing it or refusing to start.
func checkDataDir(dir string, log *slog.Logger) {
	if runtime.GOOS == "windows" { // no Unix permission bits: ACLs decide
		return
	}
	st, err := os.Stat(dir)
	if err != nil {
		log.Warn("cannot check the data directory's permissions", "dir", dir, "err", err)
		return
	}
	perm := st.Mode().Perm()
	if perm&0o077 == 0 {
		return
	}
	log.Warn("the data directory is accessible to other users; it holds every job's data: restrict it to the server's user",
		"dir", dir, "mode", fmt.Sprintf("%04o", perm), "fix", "chmod 700 "+dir)
}
