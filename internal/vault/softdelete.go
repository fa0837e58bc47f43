package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
)

// Kinds of the soft-delete objects (docs/format.md, "Soft delete").
const (
	KindSettings = "settings"
	KindDeleted  = "deleted"
)

// Setting is one settings object, settings/<id>: a change of the vault's
// soft-delete window, sealed and bound to the vault. Settings are only
// added; which one rules when is policy.SoftDeleteWindow.
type Setting struct {
	Version int       `json:"version"`
	Time    time.Time `json:"time"`
	Host    string    `json:"host"`
	// SoftDelete is the window in seconds; 0 turns soft delete off.
	SoftDelete int64 `json:"soft_delete_seconds"`

	ID chunk.ID `json:"-"`
	// Stored is when the store wrote the object (blob.Info.Stored).
	Stored time.Time `json:"-"`
	// notBefore is when the setting before it counts from (Settings).
	notBefore time.Time
}

// Window is the setting's soft-delete window.
func (s Setting) Window() time.Duration { return time.Duration(s.SoftDelete) * time.Second }

// At is when the setting counts from: the later of its sealed time and the
// store's time, so that a setting written with a backdated clock (by
// whoever holds the passphrase) counts from when it was really stored —
// and no earlier than the setting sealed before it (Settings).
func (s Setting) At() time.Time { return later(later(s.Time, s.Stored), s.notBefore) }

// Tombstone marks a point soft-deleted: deleted/<hex point id>, sealed and
// bound to the vault and the point. The point's own object stays until
// prune purges it after the window.
type Tombstone struct {
	Version int       `json:"version"`
	Point   string    `json:"point"`
	Deleted time.Time `json:"deleted"`
	Host    string    `json:"host"`

	// Stored is when the store wrote the object (blob.Info.Stored).
	Stored time.Time `json:"-"`
}

// At is when the point counts as deleted: the later of the sealed time
// and the store's (see Setting.At).
func (t Tombstone) At() time.Time { return later(t.Deleted, t.Stored) }

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// SaveSetting stores a new soft-delete window, dated now.
func (v *Vault) SaveSetting(ctx context.Context, window time.Duration) (*Setting, error) {
	if window < 0 || window%time.Second != 0 {
		return nil, fmt.Errorf("soft-delete window %v: must be whole seconds, not negative", window)
	}
	s := &Setting{Version: 1, Time: v.clock.Now().UTC(), Host: v.host, SoftDelete: int64(window / time.Second)}
	data, _ := json.Marshal(s)
	id, err := v.SaveObject(ctx, KindSettings, data)
	if err != nil {
		return nil, fmt.Errorf("saving the soft-delete setting: %w", err)
	}
	s.ID = id
	return s, nil
}

// Settings loads every settings object, oldest first. One that is not a
// readable setting of this vault (planted, damaged, another vault's) is
// skipped with a warning naming it.
func (v *Vault) Settings(ctx context.Context) ([]Setting, error) {
	s, _, err := v.SettingsChecked(ctx)
	return s, err
}

// SettingsChecked is Settings, and the names of the objects under
// settings/ it skipped. What a skipped one said is unknown — it may have
// been the newest, longest window — so whatever deletes by the window
// (forget, prune's purge) must not go on while there is one.
func (v *Vault) SettingsChecked(ctx context.Context) ([]Setting, []string, error) {
	var out []Setting
	var mu sync.Mutex
	skipped, err := v.loadEach(ctx, KindSettings, "", func(ctx context.Context, id chunk.ID, i blob.Info) error {
		data, err := v.LoadObject(ctx, KindSettings, id)
		if err != nil {
			return err
		}
		var s Setting
		if err := json.Unmarshal(data, &s); err != nil {
			return fmt.Errorf("%w: %w", chunk.ErrCorrupt, err)
		}
		if s.Version != 1 || s.SoftDelete < 0 {
			return fmt.Errorf("version %d, window %d s: %w", s.Version, s.SoftDelete, chunk.ErrCorrupt)
		}
		s.ID, s.Stored = id, i.Stored
		mu.Lock()
		out = append(out, s)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("loading the vault's settings: %w", err)
	}
	// In the order they were sealed (the time in them is authenticated):
	// an old setting stored again — replayed by whoever can write
	// objects, which moves its store date — keeps its place in the
	// history instead of becoming the newest. Each counts from no earlier
	// than the one before it, so the history stays in order; a setting
	// sealed with a clock set back is placed early, and changes nothing
	// the settings after it say.
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].Stored.Before(out[j].Stored)
	})
	for i := 1; i < len(out); i++ {
		out[i].notBefore = out[i-1].At()
	}
	return out, skipped, nil
}

// tombstoneAAD binds a tombstone to the vault (in version 2) and its point.
func (v *Vault) tombstoneAAD(point chunk.ID) string {
	id := ""
	if v.cfg.Bound() {
		id = v.cfg.ID
	}
	return chunk.BindAAD("lifeboat deleted", id) + " " + point.String()
}

// SaveTombstone marks point soft-deleted now. Overwriting a tombstone
// (forgetting a point twice) is avoided by callers; it would only restart
// the point's window.
func (v *Vault) SaveTombstone(ctx context.Context, point chunk.ID) (*Tombstone, error) {
	t := &Tombstone{Version: 1, Point: point.String(), Deleted: v.clock.Now().UTC(), Host: v.host}
	data, _ := json.Marshal(t)
	name := ObjectName(KindDeleted, point)
	if err := v.store.Put(ctx, name, v.codec.SealObject(data, v.tombstoneAAD(point))); err != nil {
		return nil, fmt.Errorf("writing %s: %w", name, err)
	}
	return t, nil
}

// DeleteTombstone unmarks point: it is a live point again.
func (v *Vault) DeleteTombstone(ctx context.Context, point chunk.ID) error {
	name := ObjectName(KindDeleted, point)
	if err := v.store.Delete(ctx, name); err != nil {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	return nil
}

// Tombstones loads every tombstone, by point. One that is not a readable
// tombstone of this vault for the point it names is skipped with a warning
// naming it, and its point counts as live: the safe direction, as prune
// then keeps the point's data.
func (v *Vault) Tombstones(ctx context.Context) (map[chunk.ID]Tombstone, error) {
	out := map[chunk.ID]Tombstone{}
	var mu sync.Mutex
	_, err := v.loadEach(ctx, KindDeleted, " (its point counts as not deleted)", func(ctx context.Context, point chunk.ID, i blob.Info) error {
		t, err := v.loadTombstone(ctx, ObjectName(KindDeleted, point), point)
		if err != nil {
			return err
		}
		t.Stored = i.Stored
		mu.Lock()
		out[point] = *t
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("loading soft-deleted points: %w", err)
	}
	return out, nil
}

func (v *Vault) loadTombstone(ctx context.Context, name string, point chunk.ID) (*Tombstone, error) {
	sealed, err := v.store.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	plain, err := v.codec.OpenObjectMax(sealed, v.tombstoneAAD(point), 1<<16)
	if err != nil {
		return nil, err
	}
	t := &Tombstone{}
	if err := json.Unmarshal(plain, t); err != nil {
		return nil, fmt.Errorf("%w: %w", chunk.ErrCorrupt, err)
	}
	if t.Version != 1 || t.Point != point.String() {
		return nil, fmt.Errorf("version %d for point %q: %w", t.Version, t.Point, chunk.ErrCorrupt)
	}
	return t, nil
}

// loadEach calls load, 8 at a time, for every object under kind/ named
// by an ID. An object gone meanwhile is passed over; one whose name is not
// an ID, or that load finds unreadable, is skipped with a warning naming
// it (and note) and returned; an error of the storage stops it.
func (v *Vault) loadEach(ctx context.Context, kind, note string, load func(ctx context.Context, id chunk.ID, i blob.Info) error) ([]string, error) {
	var infos []blob.Info
	var skipped []string
	var mu sync.Mutex
	skip := func(name, why string) {
		v.Warn(fmt.Sprintf("skipping %q%s: %s", name, note, why))
		mu.Lock()
		skipped = append(skipped, name)
		mu.Unlock()
	}
	err := v.store.List(ctx, kind+"/", func(i blob.Info) error {
		if id, err := chunk.ParseID(strings.TrimPrefix(i.Name, kind+"/")); err != nil || ObjectName(kind, id) != i.Name {
			skip(i.Name, "not an ID")
		} else {
			infos = append(infos, i)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = Parallel(ctx, 8, infos, func(ctx context.Context, i blob.Info) error {
		id, _ := chunk.ParseID(strings.TrimPrefix(i.Name, kind+"/"))
		switch err := load(ctx, id, i); {
		case err == nil, blob.IsNotExist(err):
		case unreadable(err):
			skip(i.Name, err.Error())
		default:
			return err
		}
		return nil
	})
	sort.Strings(skipped)
	return skipped, err
}

// unreadable reports whether err is about an object's content rather than
// the storage.
func unreadable(err error) bool {
	return errors.Is(err, chunk.ErrCorrupt) || errors.Is(err, blob.ErrTooLarge) || errors.Is(err, ErrNewerFormat)
}

// LivePointIDs lists the IDs under points/ that are not soft-deleted.
// Names that are not IDs are an error, as in ListIDs.
func (v *Vault) LivePointIDs(ctx context.Context) ([]chunk.ID, error) {
	ids, err := v.ListIDs(ctx, KindPoint)
	if err != nil {
		return nil, err
	}
	tombs, err := v.Tombstones(ctx)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(ids, func(id chunk.ID) bool { _, ok := tombs[id]; return ok }), nil
}
