package vaultcopy

import (
	"context"
	"fmt"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// Pending returns the points of the source (of machine, if not empty) that
// the copy in store has not recorded as copied, oldest first: what the
// next Run would copy; and warnings naming the copy's markers that do not
// authenticate. It reads only the config and object names at the copy,
// and checks the markers with the source's keys, which the copy shares: it
// needs no passphrase for the copy.
func Pending(ctx context.Context, from *vault.Vault, to blob.Store, machine string) ([]*recovery.Point, []string, error) {
	ids, err := from.LivePointIDs(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("source %s: %w", from.Store(), err)
	}
	cfg, err := vault.ReadConfig(ctx, to)
	if err != nil {
		return nil, nil, fmt.Errorf("copy: %w", err)
	}
	marked, bad, err := from.CopyMarkers(ctx, to, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("copy %w", err)
	}
	var want []chunk.ID
	for _, id := range ids {
		if _, ok := marked[id]; !ok {
			want = append(want, id)
		}
	}
	out := make([]*recovery.Point, len(want))
	idx := make([]int, len(want))
	for i := range idx {
		idx[i] = i
	}
	err = vault.Parallel(ctx, 8, idx, func(ctx context.Context, i int) error {
		p, err := recovery.Load(ctx, from, want[i])
		if blob.IsNotExist(err) {
			return nil
		}
		out[i] = p
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("source %s: loading points: %w", from.Store(), err)
	}
	points := out[:0]
	for _, p := range out {
		if p != nil && (machine == "" || p.Machine == machine) {
			points = append(points, p)
		}
	}
	recovery.Sort(points)
	return points, bad, nil
}

// Lag is the copy's recovery point objective as it stands: the age of the
// oldest pending point at now, or 0 when there is none.
func Lag(pending []*recovery.Point, now time.Time) time.Duration {
	if len(pending) == 0 {
		return 0
	}
	return max(now.Sub(pending[0].Time), 0)
}
