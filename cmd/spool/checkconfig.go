package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/secret"
)

// checkSurroundings checks what --check-config can check without starting anything, beyond the
// file itself: the worker commands and folders exist, and the secret key can be read. Each
// problem is one error, naming the setting.
func checkSurroundings(cfg *config) error {
	var errs []error
	for i, ep := range cfg.Endpoints {
		if ep.Worker == nil {
			continue
		}
		if err := checkWorkerSpec(ep.Worker); err != nil {
			errs = append(errs, fmt.Errorf("endpoints[%d] (%q): worker: %w", i, ep.Name, err))
		}
	}
	switch {
	case cfg.SecretKey != "":
		// Parsed by validate.
	case cfg.Secrets.KeyFile != "":
		if _, err := secret.ReadKeyFile(cfg.Secrets.KeyFile); err != nil {
			errs = append(errs, fmt.Errorf("secrets.keyFile: %w", err))
		}
	case !isPostgres(cfg.Store):
		path := filepath.Join(cfg.Data, secretKeyFile)
		if _, err := os.Stat(path); err == nil { // else the first start creates it
			if _, err := secret.ReadKeyFile(path); err != nil {
				errs = append(errs, fmt.Errorf("the secret key in the data directory: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// checkWorkerSpec checks that a worker spec's folder exists and its command can be run, the way
// the process provider will look for it: a command with a slash is a path (relative to dir), one
// without is looked up in PATH.
func checkWorkerSpec(w *spool.WorkerSpec) error {
	if w.Image != "" {
		return checkImageSpec(w)
	}
	if w.Dir != "" {
		st, err := os.Stat(w.Dir)
		switch {
		case err != nil:
			return fmt.Errorf("dir %q: %w", w.Dir, pathError(err))
		case !st.IsDir():
			return fmt.Errorf("dir %q is not a directory", w.Dir)
		}
	}
	if !strings.Contains(w.Command, "/") {
		if _, err := exec.LookPath(w.Command); err != nil {
			return fmt.Errorf("command %q is not found in PATH", w.Command)
		}
		return nil
	}
	path := w.Command
	if !filepath.IsAbs(path) {
		path = filepath.Join(w.Dir, path)
	}
	st, err := os.Stat(path)
	switch {
	case err != nil:
		return fmt.Errorf("command %q: %w", path, pathError(err))
	case st.IsDir():
		return fmt.Errorf("command %q is a directory", path)
	case st.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("command %q is not executable (chmod +x it)", path)
	}
	return nil
}

// checkImageSpec checks what a container worker needs of the host: its mounts' sources and the
// registry password file. The image itself is the daemon's business, at the worker's start.
func checkImageSpec(w *spool.WorkerSpec) error {
	for i, m := range w.Mounts {
		if _, err := os.Stat(m.Source); err != nil {
			return fmt.Errorf("mounts[%d] source %q: %w", i, m.Source, pathError(err))
		}
	}
	if a := w.RegistryAuth; a != nil {
		f, err := os.Open(a.PasswordFile)
		if err != nil {
			return fmt.Errorf("registryAuth.passwordFile %q: %w", a.PasswordFile, pathError(err))
		}
		_ = f.Close()
	}
	return nil
}

// pathError says what went wrong with a path without repeating it.
func pathError(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errors.New("does not exist")
	case errors.Is(err, fs.ErrPermission):
		return errors.New("permission denied")
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
