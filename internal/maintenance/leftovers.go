package maintenance

import (
	"context"
	"fmt"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/vault"
)

// leftovers lists the partial uploads of the vault's store (none on a
// store whose Puts are atomic, as S3's).
func leftovers(ctx context.Context, v *vault.Vault) ([]blob.Leftover, error) {
	ls, ok := v.Store().(blob.Leftovers)
	if !ok {
		return nil, nil
	}
	var out []blob.Leftover
	err := ls.ListLeftovers(ctx, func(l blob.Leftover) error { out = append(out, l); return nil })
	return out, err
}

// removeLeftovers deletes the partial uploads older than a session can
// live: no running Put can still be writing them. It returns how many it
// removed and their bytes.
func removeLeftovers(ctx context.Context, v *vault.Vault) (n int, bytes int64, err error) {
	found, err := leftovers(ctx, v)
	if err != nil {
		return 0, 0, err
	}
	now := v.Clock().Now()
	for _, l := range found {
		if now.Sub(l.ModTime) <= vault.SessionExpiry {
			continue
		}
		if err := v.Store().(blob.Leftovers).DeleteLeftover(ctx, l.Name); err != nil {
			return n, bytes, err
		}
		n++
		bytes += l.Size
	}
	return n, bytes, nil
}

// leftoverWarnings names every partial upload for verify.
func leftoverWarnings(ctx context.Context, v *vault.Vault) ([]string, error) {
	found, err := leftovers(ctx, v)
	if err != nil {
		return nil, err
	}
	var out []string
	now := v.Clock().Now()
	for _, l := range found {
		out = append(out, fmt.Sprintf("partial upload %s (%d bytes, written %s ago) left by a write that was killed: prune removes it once it is older than %s",
			l.Name, l.Size, now.Sub(l.ModTime).Round(time.Second), vault.SessionExpiry))
	}
	return out, nil
}
