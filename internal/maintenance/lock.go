package maintenance

import (
	"context"
	"fmt"
	"time"

	"lifeboat/internal/chunk"
	"lifeboat/internal/image"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// ExtendLocks extends the object lock of everything the points need (a
// vault with a lock only, vault.ExtendLocks): the vault's config and key
// slots, each point, its manifests, the packs holding its chunks and the
// index objects naming those packs. Forget runs it for the points it
// keeps, which is how their objects stay locked as long as they are kept.
// It returns how many objects it extended.
func ExtendLocks(ctx context.Context, v *vault.Vault, points []*recovery.Point) (int, error) {
	if v.Lock() == nil {
		return 0, nil
	}
	names, err := v.VaultObjects(ctx)
	if err != nil {
		return 0, err
	}
	chunks := map[chunk.ID]bool{}
	seen := map[chunk.ID]bool{}
	for _, p := range points {
		names = append(names, vault.ObjectName(vault.KindPoint, p.ID))
		for _, d := range p.Disks {
			if seen[d.Manifest] {
				continue
			}
			seen[d.Manifest] = true
			names = append(names, vault.ObjectName(vault.KindManifest, d.Manifest))
			m, err := image.Load(ctx, v, d.Manifest, d.Size, d.ChunkSize)
			if err != nil {
				return 0, fmt.Errorf("extending the locks of point %s: %w", p.ID.Short(), err)
			}
			for _, id := range m.IDs {
				if !id.IsZero() {
					chunks[id] = true
				}
			}
		}
	}
	ids, _, err := v.ScanIDs(ctx, vault.KindIndex)
	if err != nil {
		return 0, err
	}
	packs := map[chunk.ID]bool{}
	for _, id := range ids {
		f, err := v.LoadIndexFile(ctx, id)
		if err != nil {
			continue // unreadable or gone: what it names is found through another, or rebuilt from the packs
		}
		needed := false
		for _, p := range f.Packs {
			for _, e := range p.Entries {
				if chunks[e.ID] {
					needed = true
					if !packs[p.ID] {
						packs[p.ID] = true
						names = append(names, chunk.PackName(p.ID))
					}
					break
				}
			}
		}
		if needed {
			names = append(names, vault.ObjectName(vault.KindIndex, id))
		}
	}
	n, err := v.ExtendLocks(ctx, names)
	if err != nil {
		return n, fmt.Errorf("extending object locks: %w", err)
	}
	return n, nil
}

// lockedPlan keeps locked objects out of what prune deletes: a locked
// index object stays, and so do the packs it names (an index naming a
// deleted pack would let a backup reference chunks that are gone); a
// locked pack or manifest stays. It notes in rep how many objects stay
// and the earliest date one of them may go.
type lockedPlan struct {
	v   *vault.Vault
	now time.Time
	rep *PruneReport
}

// locked reports whether the object is under a retention now, counting it.
func (l *lockedPlan) locked(ctx context.Context, name string) (bool, error) {
	until, err := l.v.LockedUntil(ctx, name)
	if err != nil {
		return false, fmt.Errorf("reading the lock of %s: %w", name, err)
	}
	if !until.After(l.now) {
		return false, nil
	}
	l.rep.LockedObjects++
	if l.rep.LockedUntil.IsZero() || until.Before(l.rep.LockedUntil) {
		l.rep.LockedUntil = until.UTC()
	}
	return true, nil
}

// indexes returns the index objects among ids that may be deleted and the
// packs the locked ones name.
func (l *lockedPlan) indexes(ctx context.Context, ids []chunk.ID) (free []chunk.ID, held map[chunk.ID]bool, err error) {
	held = map[chunk.ID]bool{}
	for _, id := range ids {
		locked, err := l.locked(ctx, vault.ObjectName(vault.KindIndex, id))
		if err != nil {
			return nil, nil, err
		}
		if !locked {
			free = append(free, id)
			continue
		}
		f, err := l.v.LoadIndexFile(ctx, id)
		if err != nil {
			return nil, nil, fmt.Errorf("prune needs every index object readable (run verify): %w", err)
		}
		for _, p := range f.Packs {
			held[p.ID] = true
		}
	}
	return free, held, nil
}

// objects returns the names among ids (of kind, or packs if kind is "")
// that may be deleted: not held, not locked.
func (l *lockedPlan) objects(ctx context.Context, kind string, ids []chunk.ID, held map[chunk.ID]bool) ([]chunk.ID, error) {
	var free []chunk.ID
	for _, id := range ids {
		name := chunk.PackName(id)
		if kind != "" {
			name = vault.ObjectName(kind, id)
		}
		if held[id] {
			continue
		}
		locked, err := l.locked(ctx, name)
		if err != nil {
			return nil, err
		}
		if !locked {
			free = append(free, id)
		}
	}
	return free, nil
}

// aroundLocks, in a vault with a lock, plans prune around what is locked:
// an index object that would be replaced but is locked stays, and so does
// every pack it names (an index naming a deleted pack would let a backup
// reference chunks that are gone); a pack or manifest that would go but is
// locked stays. It updates class and dirty in place, counts what stays in
// rep, and returns the manifests that may go.
func aroundLocks(ctx context.Context, v *vault.Vault, rep *PruneReport, packs []packInfo, class []int, indexIDs []chunk.ID, dirty []bool,
	objPacks [][]uint32, manifests []chunk.ID) ([]chunk.ID, error) {
	l := &lockedPlan{v: v, now: v.Clock().Now(), rep: rep}
	for i, id := range indexIDs {
		if !dirty[i] {
			continue
		}
		free, _, err := l.indexes(ctx, []chunk.ID{id})
		if err != nil {
			return nil, err
		}
		if len(free) == 0 { // locked: it stays, and its packs with it
			dirty[i] = false
			for _, n := range objPacks[i] {
				class[n] = packKeep
			}
		}
	}
	for n, p := range packs {
		if class[n] == packKeep {
			continue
		}
		free, err := l.objects(ctx, "", []chunk.ID{p.id}, nil)
		if err != nil {
			return nil, err
		}
		if len(free) == 0 {
			class[n] = packKeep
		}
	}
	return l.objects(ctx, vault.KindManifest, manifests, nil)
}

// planAroundLocks is aroundLocks for a plan an earlier prune wrote and
// this one carries out: objects locked since (or by a lifeboat that did
// not check) are left, and reported.
func planAroundLocks(ctx context.Context, v *vault.Vault, plan *vault.Plan, rep *PruneReport) (*vault.Plan, error) {
	l := &lockedPlan{v: v, now: v.Clock().Now(), rep: rep}
	out := *plan
	var held map[chunk.ID]bool
	var err error
	if out.Indexes, held, err = l.indexes(ctx, plan.Indexes); err != nil {
		return nil, err
	}
	if out.Packs, err = l.objects(ctx, "", plan.Packs, held); err != nil {
		return nil, err
	}
	if out.Manifests, err = l.objects(ctx, vault.KindManifest, plan.Manifests, nil); err != nil {
		return nil, err
	}
	return &out, nil
}
