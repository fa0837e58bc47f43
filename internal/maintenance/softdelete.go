package maintenance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/policy"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// ErrShortenNeedsForce refuses a shorter soft-delete window asked for
// without force.
var ErrShortenNeedsForce = errors.New("shortening the soft-delete window needs --force")

// SoftDelete is a vault's soft-delete state (docs/format.md, "Soft delete").
type SoftDelete struct {
	// Window is the window in force now; 0 means forget deletes at once.
	Window time.Duration
	// Set is the newest setting's window, which rules once any longer
	// window it replaced has run out (at Effective).
	Set       time.Duration
	Effective time.Time
	// Settings are the vault's settings objects, oldest first; none in a
	// vault made before soft delete, or with it off from the start.
	Settings []vault.Setting
	// Unreadable names the objects under settings/ that could not be
	// read (damaged, planted, another vault's): the window they set is
	// unknown, so forget and prune's purge refuse while there are any.
	Unreadable []string
	// Lost says the vault has tombstones but no setting at all: tombstones
	// are written only under a window, so its settings were deleted at
	// the storage.
	Lost bool
}

// ErrUnknownWindow refuses to delete by the soft-delete window while a
// settings object cannot be read.
var ErrUnknownWindow = errors.New("the soft-delete window is unknown")

// checkWindowKnown fails closed when a setting could not be read: a
// damaged setting (or one replaced by whoever can overwrite objects)
// would otherwise shorten the window, or turn soft delete off, unseen.
func (st *SoftDelete) checkWindowKnown(what string) error {
	if st.Lost {
		return fmt.Errorf("%s: %w: the vault has soft-deleted points (deleted/) but no soft-delete setting, so settings/ was deleted "+
			"at the storage: set the window again ('lifeboat vault set --soft-delete DURATION'): %w", what, ErrUnknownWindow, chunk.ErrCorrupt)
	}
	if len(st.Unreadable) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w: %s cannot be read (see the warnings): move it out of settings/ once 'lifeboat vault set' shows "+
		"the window you want (a damaged setting sets nothing): %w", what, ErrUnknownWindow, strings.Join(st.Unreadable, ", "), chunk.ErrCorrupt)
}

func windowChanges(settings []vault.Setting) []policy.WindowChange {
	out := make([]policy.WindowChange, len(settings))
	for i, s := range settings {
		out[i] = policy.WindowChange{At: s.At(), Window: s.Window()}
	}
	return out
}

// SoftDeleteState reads the vault's soft-delete settings.
func SoftDeleteState(ctx context.Context, v *vault.Vault) (*SoftDelete, error) {
	settings, unreadable, err := v.SettingsChecked(ctx)
	if err != nil {
		return nil, err
	}
	now := v.Clock().Now()
	ch := windowChanges(settings)
	st := &SoftDelete{Window: policy.SoftDeleteWindow(ch, now), Settings: settings, Unreadable: unreadable}
	if len(settings) == 0 && len(unreadable) == 0 {
		errFound := errors.New("found")
		err := v.Store().List(ctx, vault.KindDeleted+"/", func(blob.Info) error { return errFound })
		if err != nil && !errors.Is(err, errFound) {
			return nil, fmt.Errorf("looking for soft-deleted points: %w", err)
		}
		st.Lost = err != nil
	}
	if len(settings) > 0 {
		last := settings[len(settings)-1]
		st.Set, st.Effective = last.Window(), last.At()
		// A shortening is in force once the longer windows it replaced
		// have run out: the window changes only at a setting's time plus
		// some setting's window.
		at := []time.Time{st.Effective}
		for _, c := range ch {
			for _, w := range ch {
				if t := c.At.Add(w.Window); !t.Before(st.Effective) {
					at = append(at, t)
				}
			}
		}
		slices.SortFunc(at, time.Time.Compare)
		for _, t := range at {
			if policy.SoftDeleteWindow(ch, t) == st.Set {
				st.Effective = t
				break
			}
		}
	}
	return st, nil
}

// SetSoftDelete records a new soft-delete window. A window shorter than
// the one in force is refused without force; it then takes effect only
// once the window in force has passed (policy.SoftDeleteWindow). Setting
// the window the vault already has writes nothing.
func SetSoftDelete(ctx context.Context, v *vault.Vault, window time.Duration, force bool) (*SoftDelete, error) {
	if window < 0 {
		return nil, fmt.Errorf("soft-delete window %v is negative", window)
	}
	window = window.Round(time.Second)
	st, err := SoftDeleteState(ctx, v)
	if err != nil {
		return nil, err
	}
	if window < st.Window && !force {
		return nil, fmt.Errorf("%w: the window in force is %s, asked %s (a shorter window takes effect only once %s have passed)",
			ErrShortenNeedsForce, policy.FormatDuration(st.Window), policy.FormatDuration(window), policy.FormatDuration(st.Window))
	}
	if len(st.Settings) > 0 && window == st.Set || len(st.Settings) == 0 && window == 0 {
		return st, nil
	}
	if _, err := v.SaveSetting(ctx, window); err != nil {
		return nil, err
	}
	return SoftDeleteState(ctx, v)
}

// DeletedPoint is a soft-deleted point.
type DeletedPoint struct {
	Point *recovery.Point
	// Deleted is when it was forgotten; PurgeAt when prune may purge it.
	Deleted time.Time
	PurgeAt time.Time
	Host    string
}

// Deleted lists the soft-deleted points of machine (every machine when
// empty), oldest point first. A tombstone whose point is gone (purged, or
// deleted at the storage) is left out.
func Deleted(ctx context.Context, v *vault.Vault, machine string) ([]DeletedPoint, error) {
	settings, err := v.Settings(ctx)
	if err != nil {
		return nil, err
	}
	tombs, err := v.Tombstones(ctx)
	if err != nil {
		return nil, err
	}
	now, ch := v.Clock().Now(), windowChanges(settings)
	ids := make([]chunk.ID, 0, len(tombs))
	for id := range tombs {
		ids = append(ids, id)
	}
	var mu sync.Mutex
	var out []DeletedPoint
	err = vault.Parallel(ctx, 8, ids, func(ctx context.Context, id chunk.ID) error {
		p, err := recovery.Load(ctx, v, id)
		switch {
		case blob.IsNotExist(err):
			return nil // purged; its tombstone goes next
		case errors.Is(err, chunk.ErrCorrupt), errors.Is(err, blob.ErrTooLarge), errors.Is(err, vault.ErrNewerFormat):
			v.Warn(fmt.Sprintf("soft-deleted point %s: %v", id.Short(), err))
			return nil
		case err != nil:
			return err
		case machine != "" && p.Machine != machine:
			return nil
		}
		t := tombs[id]
		mu.Lock()
		out = append(out, DeletedPoint{Point: p, Deleted: t.At(), PurgeAt: policy.PurgeAt(ch, t.At(), now), Host: t.Host})
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("loading soft-deleted points: %w", err)
	}
	points, byID := make([]*recovery.Point, len(out)), map[chunk.ID]DeletedPoint{}
	for i, d := range out {
		points[i], byID[d.Point.ID] = d.Point, d
	}
	recovery.Sort(points)
	for i, p := range points {
		out[i] = byID[p.ID]
	}
	return out, nil
}

// Undelete brings back the soft-deleted point ref (an ID prefix) of
// machine: it is listed, restored and copied again like any other.
func Undelete(ctx context.Context, v *vault.Vault, machine, ref string) (*recovery.Point, error) {
	deleted, err := Deleted(ctx, v, machine)
	if err != nil {
		return nil, err
	}
	points := make([]*recovery.Point, len(deleted))
	for i, d := range deleted {
		points[i] = d.Point
	}
	if ref == "latest" {
		return nil, fmt.Errorf("undelete needs a point ID, not %q: see 'lifeboat points --deleted'", ref)
	}
	p, err := recovery.Find(points, machine, ref)
	if err != nil {
		return nil, fmt.Errorf("%w (among soft-deleted points: see 'lifeboat points --deleted')", err)
	}
	if err := v.DeleteTombstone(ctx, p.ID); err != nil {
		return nil, err
	}
	// A prune purging it at this instant (its window over) wins.
	if _, err := v.Store().Stat(ctx, vault.ObjectName(vault.KindPoint, p.ID)); err != nil {
		return nil, fmt.Errorf("point %s was purged while being undeleted: %w", p.ID.Short(), err)
	}
	return p, nil
}

// purgeDeleted deletes the soft-deleted points whose window has passed,
// each point before its tombstone (a crash between leaves a tombstone of
// nothing, purged again next time). It returns them, and how many
// soft-deleted points it kept; a dry run deletes nothing.
func purgeDeleted(ctx context.Context, v *vault.Vault, dryRun bool) (purged map[chunk.ID]bool, kept int, err error) {
	tombs, err := v.Tombstones(ctx)
	if err != nil || len(tombs) == 0 {
		return nil, 0, err
	}
	st, err := SoftDeleteState(ctx, v)
	if err != nil {
		return nil, 0, err
	}
	if err := st.checkWindowKnown("prune will not purge soft-deleted points"); err != nil {
		return nil, 0, err
	}
	now, ch := v.Clock().Now(), windowChanges(st.Settings)
	purged = map[chunk.ID]bool{}
	for id, t := range tombs {
		if now.Before(policy.PurgeAt(ch, t.At(), now)) {
			kept++
			continue
		}
		purged[id] = true
		if dryRun {
			continue
		}
		if err := v.Store().Delete(ctx, vault.ObjectName(vault.KindPoint, id)); err != nil {
			return purged, kept, fmt.Errorf("purging soft-deleted point %s: %w", id.Short(), err)
		}
		if err := v.DeleteTombstone(ctx, id); err != nil {
			return purged, kept, err
		}
	}
	return purged, kept, nil
}
