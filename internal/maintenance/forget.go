package maintenance

import (
	"context"
	"fmt"
	"slices"
	"time"

	"lifeboat/internal/chunk"
	"lifeboat/internal/policy"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// ForgetResult lists what forget decided for each point.
type ForgetResult struct {
	Decisions []policy.Decision
	Removed   []string // IDs of forgotten points (none on a dry run)
	// SoftDelete is the window in force: a forgotten point can be
	// undeleted until it has passed (0: the points were deleted).
	SoftDelete time.Duration
	// Locked are points retention drops that are still under their
	// object lock (vault init --lock): they stay, and a later forget
	// removes (or soft-deletes) them once it has passed (forget no longer
	// extends it).
	Locked []LockedPoint
	// LocksExtended counts the objects of kept points whose lock was
	// extended.
	LocksExtended int
	// Kept are the vault's points that remain, of every machine.
	Kept []*recovery.Point
}

// Forget applies retention to the points of machine (all machines when
// empty) and forgets the points not kept: soft-deletes them when the vault
// has a soft-delete window in force (undelete brings them back until it has
// passed), deletes them otherwise. Data stays until prune.
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
	sd, err := SoftDeleteState(ctx, v)
	if err != nil {
		return nil, err
	}
	res := &ForgetResult{Decisions: policy.Apply(in, r, v.Clock().Now()), SoftDelete: sd.Window}
	removed := map[string]bool{}
	defer func() {
		for _, p := range points {
			if !removed[p.ID.String()] {
				res.Kept = append(res.Kept, p)
			}
		}
	}()
	if !dryRun && slices.ContainsFunc(res.Decisions, func(d policy.Decision) bool { return !d.Keep }) {
		if err := sd.checkWindowKnown("forget changed nothing"); err != nil {
			return res, err
		}
		if err := v.CheckDeletes(ctx, "forget"); err != nil {
			return res, err
		}
	}
	if !dryRun && v.Lock() != nil {
		drop := map[string]bool{}
		for _, d := range res.Decisions {
			drop[d.Point.ID] = !d.Keep
		}
		var kept []*recovery.Point
		for _, p := range points {
			if !drop[p.ID.String()] {
				kept = append(kept, p)
			}
		}
		if res.LocksExtended, err = ExtendLocks(ctx, v, kept); err != nil {
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
		until, err := v.LockedUntil(ctx, vault.ObjectName(vault.KindPoint, id))
		if err != nil {
			return res, fmt.Errorf("forgetting point %s: %w", id.Short(), err)
		}
		if until.After(v.Clock().Now()) {
			res.Locked = append(res.Locked, LockedPoint{ID: d.Point.ID, Until: until.UTC()})
			continue
		}
		if sd.Window > 0 {
			_, err = v.SaveTombstone(ctx, id)
		} else {
			err = v.Store().Delete(ctx, vault.ObjectName(vault.KindPoint, id))
		}
		if err != nil {
			return res, fmt.Errorf("forgetting point %s: %w", id.Short(), err)
		}
		res.Removed = append(res.Removed, d.Point.ID)
		removed[d.Point.ID] = true
	}
	return res, nil
}

// LockedPoint is a point forget would remove that is locked until Until.
type LockedPoint struct {
	ID    string    `json:"id"`
	Until time.Time `json:"until"`
}
