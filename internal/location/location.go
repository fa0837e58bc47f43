// Package location turns a vault's URL — a directory path,
// s3://bucket/prefix or lifeboat+https://host:port (a directory vault served
// by `lifeboat vault serve`) — into its store, and a store and a passphrase into
// an open vault: the one place the CLI, the agent and the server do it.
package location

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"lifeboat/internal/blob"
	"lifeboat/internal/vault"
)

// ErrInvalid is wrapped by errors in the URL itself (bad input, not a
// storage failure).
var ErrInvalid = errors.New("invalid vault location")

// IsS3 tells an S3 URL from a directory path.
func IsS3(url string) bool { return strings.HasPrefix(url, "s3://") }

// IsDir tells a directory path from a URL.
func IsDir(url string) bool { return !strings.Contains(url, "://") }

// Schemes of a directory vault served by `lifeboat vault serve`.
const (
	servedHTTP  = "lifeboat+http://"
	servedHTTPS = "lifeboat+https://"
)

// Environment variables with a served vault's token.
const (
	envToken     = "LIFEBOAT_VAULT_TOKEN"
	envTokenFile = "LIFEBOAT_VAULT_TOKEN_FILE"
)

// served opens a vault served by `lifeboat vault serve` at
// lifeboat+http(s)://host:port, with the token from LIFEBOAT_VAULT_TOKEN_FILE
// or LIFEBOAT_VAULT_TOKEN.
func served(ctx context.Context, url string, getenv func(string) string) (blob.Store, error) {
	token := getenv(envToken)
	if f := getenv(envTokenFile); f != "" {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, envTokenFile, err)
		}
		token = strings.TrimSpace(string(data))
	}
	return blob.OpenRemote(ctx, blob.RemoteConfig{URL: strings.TrimPrefix(url, "lifeboat+"), Token: token})
}

// Store opens the store at url; with create, a missing directory is made.
// S3 credentials and settings come from getenv (LIFEBOAT_S3_ENDPOINT,
// AWS_ACCESS_KEY_ID, …).
func Store(ctx context.Context, url string, create bool, getenv func(string) string) (blob.Store, error) {
	if url == "" {
		return nil, fmt.Errorf("%w: no vault given: use --vault or set LIFEBOAT_VAULT", ErrInvalid)
	}
	if IsS3(url) {
		cfg, err := blob.S3ConfigFrom(url, getenv)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		return blob.OpenS3(ctx, cfg)
	}
	if strings.HasPrefix(url, servedHTTP) || strings.HasPrefix(url, servedHTTPS) {
		return served(ctx, url, getenv)
	}
	if strings.Contains(url, "://") {
		return nil, fmt.Errorf("%w: vault %q: unsupported URL scheme (use a directory path, s3://bucket/prefix or lifeboat+https://host:port)", ErrInvalid, url)
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

// Open opens the vault at url with passphrase. A missing vault or one of
// a newer format is reported as such before the passphrase is tried.
func Open(ctx context.Context, url string, getenv func(string) string, passphrase []byte, opts vault.Options) (*vault.Vault, error) {
	store, err := Existing(ctx, url, getenv)
	if err != nil {
		return nil, err
	}
	return vault.Open(ctx, store, passphrase, opts)
}

// OpenSource opens the vault a copy reads from, at url: its store with the
// variables LIFEBOAT_FROM_* read before the plain names (PrefixedEnv), its
// passphrase as SourcePassphrase gives it (ours: the copy's). Errors other
// than bad input begin with "source".
func OpenSource(ctx context.Context, url, passwordFile string, getenv func(string) string, warn func(string),
	ours func() ([]byte, error), opts vault.Options) (*vault.Vault, error) {
	store, err := Existing(ctx, url, PrefixedEnv("LIFEBOAT_FROM_", getenv))
	if err != nil {
		if !errors.Is(err, ErrInvalid) {
			err = fmt.Errorf("source: %w", err)
		}
		return nil, err
	}
	pw, err := SourcePassphrase(passwordFile, getenv, warn, ours)
	if err != nil {
		return nil, err
	}
	v, err := vault.Open(ctx, store, pw, opts)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	return v, nil
}

// Existing opens the store at url and checks that a vault of a format
// this lifeboat reads is there, before any passphrase is asked for.
func Existing(ctx context.Context, url string, getenv func(string) string) (blob.Store, error) {
	store, err := Store(ctx, url, false, getenv)
	if err != nil {
		return nil, err
	}
	if _, err := vault.ReadConfig(ctx, store); err != nil {
		return nil, err
	}
	return store, nil
}
