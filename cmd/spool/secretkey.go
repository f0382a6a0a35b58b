package main

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/spool-run/spool/internal/secret"
)

// secretKeyFile is the key file's name in the data directory when secrets.keyFile is not set.
const secretKeyFile = "secret.key"

// openSealer returns the sealer of job s3Configs and endpoint webhook secrets, under the key from SPOOL_SECRET_KEY, else from
// secrets.keyFile, else from <data>/secret.key, which is created (mode 0600) on the first start.
// A key file that group or others may read is refused. The key is never logged.
func openSealer(cfg *config, log *slog.Logger) (*secret.Sealer, error) {
	var (
		key []byte
		err error
	)
	switch {
	case cfg.SecretKey != "":
		key, err = secret.ParseKey(cfg.SecretKey)
		if err != nil {
			return nil, fmt.Errorf("SPOOL_SECRET_KEY: %w", err)
		}
	case cfg.Secrets.KeyFile != "":
		if key, err = secret.ReadKeyFile(cfg.Secrets.KeyFile); err != nil {
			return nil, fmt.Errorf("secrets.keyFile: %w", err)
		}
	case isPostgres(cfg.Store):
		// Every replica must open what any other sealed; a key made up by each replica in its
		// own data directory would fail their jobs as undecryptable.
		return nil, errors.New("a PostgreSQL store is shared by replicas, which must seal s3Configs and webhook secrets with one key: " +
			"set SPOOL_SECRET_KEY or secrets.keyFile to the same key on every replica (make one with: head -c 32 /dev/urandom | base64)")
	default:
		path := filepath.Join(cfg.Data, secretKeyFile)
		var created bool
		if key, created, err = secret.LoadOrCreateKeyFile(path); err != nil {
			return nil, err
		}
		if created {
			log.Info("created the key that encrypts s3Configs and webhook secrets at rest; back it up with the data directory", "file", path)
		}
	}
	return secret.New(key)
}
