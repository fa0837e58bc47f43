package maintenance

import (
	"context"
	"fmt"
	"slices"

	"lifeboat/internal/chunk"
	"lifeboat/internal/policy"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// ForgetResult lists what forget decided for each point.
type ForgetResult struct {
	Decisions []policy.Decision
	Removed   []string // IDs of deleted points (none on a dry run)
	// Kept are the vault's points that remain, of every machine.
	Kept []*recovery.Point
}

// Forget applies retention to the points of machine (all machines when
// empty) and deletes the points not kept. Data stays until prune.
func Forget(ctx context.Context, v *vault.Vault, machine string, r policy.Retention, dryRun bool) (*ForgetResult, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if r.Empty() {
		return nil, fmt.Errorf("no --keep-* rule given: refusing to forget every point")
	}
	points, err := recovery.List(ctx, v)
	if err != nil {
		return nil, err
	}
	var in []policy.Point
	for _, p := range points {
		if machine == "" || p.Machine == machine {
			in = append(in, policy.Point{ID: p.ID.String(), Machine: p.Machine, Time: p.Time})
		}
	}
	res := &ForgetResult{Decisions: policy.Apply(in, r, v.Clock().Now())}
	removed := map[string]bool{}
	defer func() {
		for _, p := range points {
			if !removed[p.ID.String()] {
				res.Kept = append(res.Kept, p)
			}
		}
	}()
	if !dryRun && slices.ContainsFunc(res.Decisions, func(d policy.Decision) bool { return !d.Keep }) {
		if err := v.CheckDeletes(ctx, "forget"); err != nil {
			return res, err
		}
	}
	for _, d := range res.Decisions {
		if d.Keep || dryRun {
			continue
		}
		id, err := chunk.ParseID(d.Point.ID)
		if err != nil {
			return res, err
		}
		if err := v.Store().Delete(ctx, vault.ObjectName(vault.KindPoint, id)); err != nil {
			return res, fmt.Errorf("forgetting point %s: %w", id.Short(), err)
		}
		res.Removed = append(res.Removed, d.Point.ID)
		removed[d.Point.ID] = true
	}
	return res, nil
}
