package job

import (
	"errors"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/bytesize"
	"lifeboat/internal/policy"
	"lifeboat/internal/vault"
)

// VaultInit is a new vault's settings as vault init is given them: chunk
// size ("256K"), compression, soft-delete window ("14d"; "0" for none)
// and S3 Object Lock (a period such as "30d", and its mode: compliance,
// the default, or governance; a mode alone is refused).
type VaultInit struct {
	ChunkSize, Compression, SoftDelete string
	Lock, LockMode                     string
}

// Options is o with the settings, checked in that order; a bad one is an
// InvalidError whose reason names it.
func (s VaultInit) Options(o vault.Options) (vault.Options, error) {
	if s.ChunkSize != "" {
		n, err := bytesize.Parse(s.ChunkSize)
		if err == nil {
			err = vault.ValidChunkSize(n)
		}
		if err != nil {
			return o, invalid("chunk_size", "%v", err)
		}
		o.ChunkSize = n
	}
	o.Compression = s.Compression
	var err error
	if o.SoftDelete, err = SoftDeleteWindow(s.SoftDelete); err != nil {
		return o, err
	}
	o.Lock, err = s.lock()
	return o, err
}

// lock is the object lock asked for, nil for none.
func (s VaultInit) lock() (*vault.Lock, error) {
	if s.Lock == "" {
		if s.LockMode != "" {
			return nil, invalid("lock", "--lock-mode needs --lock")
		}
		return nil, nil
	}
	d, err := policy.ParseDuration(s.Lock)
	if err != nil || d < time.Second {
		return nil, invalid("lock", "--lock %q: want a period of at least 1s, such as 30d or 12h", s.Lock)
	}
	mode := s.LockMode
	if mode == "" {
		mode = blob.LockCompliance
	}
	if mode != blob.LockCompliance && mode != blob.LockGovernance {
		return nil, invalid("lock", "--lock-mode %q: want compliance or governance", mode)
	}
	return &vault.Lock{Mode: mode, Seconds: int64(d.Seconds())}, nil
}

// SoftDeleteWindow parses a soft-delete window as vault init and vault set
// take it: 14d, 36h, 2w, 0.
func SoftDeleteWindow(s string) (time.Duration, error) {
	d, err := policy.ParseWindow(s)
	switch {
	case errors.Is(err, policy.ErrFraction):
		return 0, invalid("soft_delete", "--soft-delete %s: %v", s, err)
	case err != nil:
		return 0, invalid("soft_delete", "--soft-delete: %v", err)
	}
	return d, nil
}
