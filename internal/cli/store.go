package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"lifeboat/internal/blob"
	"lifeboat/internal/vault"
)

// openStore opens a vault URL: a directory path or s3://bucket/prefix.
func openStore(ctx context.Context, url string, create bool, getenv func(string) string) (blob.Store, error) {
	if url == "" {
		return nil, usageError{errors.New("no vault given: use --vault or set LIFEBOAT_VAULT")}
	}
	if strings.HasPrefix(url, "s3://") {
		cfg, err := blob.S3ConfigFrom(url, getenv)
		if err != nil {
			return nil, usageError{err}
		}
		return blob.OpenS3(ctx, cfg)
	}
	if strings.Contains(url, "://") {
		return nil, usageError{fmt.Errorf("vault %q: unsupported URL scheme (use a directory path or s3://bucket/prefix)", url)}
	}
	if create {
		if err := os.MkdirAll(url, 0o700); err != nil {
			return nil, fmt.Errorf("creating vault directory: %w", err)
		}
	}
	d, err := blob.NewDir(url)
	if blob.IsNotExist(err) {
		return nil, fmt.Errorf("vault directory %s does not exist: %w", url, vault.ErrNoVault)
	}
	return d, err
}
