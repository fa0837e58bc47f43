package vault

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
)

// Lock is a vault's object lock (vault init --lock, docs/format.md "Object
// lock"): on an S3 bucket with Object Lock, every object a point needs is
// stored under a retention of Period in Mode, extended while points that
// need it are kept.
type Lock struct {
	Mode    string `json:"mode"`
	Seconds int64  `json:"period_seconds"`
}

// Period is the retention each object gets, from when it is stored or
// extended.
func (l *Lock) Period() time.Duration { return time.Duration(l.Seconds) * time.Second }

func (l *Lock) validate() error {
	if l.Mode != blob.LockCompliance && l.Mode != blob.LockGovernance {
		return fmt.Errorf("lock mode %q: want %s or %s", l.Mode, blob.LockCompliance, blob.LockGovernance)
	}
	if l.Seconds < 1 || l.Seconds > 100*365*86400 {
		return fmt.Errorf("lock period of %d seconds: want 1 second to 100 years", l.Seconds)
	}
	return nil
}

func sameLock(a, b *Lock) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// lockedKind reports whether objects under name are locked: what a point
// needs (its object, manifests, packs, index objects), what opens the
// vault (config, key slots) and its settings (the soft-delete window,
// which only ever gains objects). Markers, tombstones (undelete removes
// them) and prune plans are working state, created and deleted as before.
func lockedKind(name string) bool {
	if name == "config" {
		return true
	}
	kind, _, _ := strings.Cut(name, "/")
	switch kind {
	case "keys", "packs", "settings", KindIndex, KindManifest, KindPoint:
		return true
	}
	return false
}

// lockedStore is the store of a vault with a Lock: it stores the objects
// lockedKind names under a retention from now, and deletes every version
// of an object (a delete by name in a versioned bucket only hides it).
type lockedStore struct {
	blob.Store
	locker blob.Locker
	lock   Lock
	now    func() time.Time
}

func (s *lockedStore) retention() blob.Retention {
	return blob.Retention{Mode: s.lock.Mode, Until: s.now().Add(s.lock.Period()).UTC().Truncate(time.Second)}
}

func (s *lockedStore) Put(ctx context.Context, name string, data []byte) error {
	if !lockedKind(name) {
		return s.Store.Put(ctx, name, data)
	}
	return s.locker.PutRetained(ctx, name, data, s.retention())
}

func (s *lockedStore) Delete(ctx context.Context, name string) error {
	return s.locker.DeleteVersions(ctx, name)
}

// withLock returns the store of a vault with cfg's lock, nil without one.
func withLock(store blob.Store, cfg Config, now func() time.Time) (*lockedStore, error) {
	if cfg.Lock == nil {
		return nil, nil
	}
	l, ok := store.(blob.Locker)
	if !ok {
		return nil, fmt.Errorf("%s: the vault locks its objects (vault init --lock) and this store cannot: %w", store, blob.ErrNoLock)
	}
	return &lockedStore{Store: store, locker: l, lock: *cfg.Lock, now: now}, nil
}

// ExtendChunkLocks, in a vault with a lock, extends the lock of the
// manifests named and of the pack ix locates each chunk in (ExtendLocks):
// what a new point shares with older ones, whose locks may end sooner
// than its own objects'. Backup and the target of a copy run it before
// writing the point.
func (v *Vault) ExtendChunkLocks(ctx context.Context, ix ChunkIndex, manifests []chunk.ID, chunks ...[]chunk.ID) error {
	if v.locked == nil {
		return nil
	}
	seen := map[chunk.ID]bool{}
	var names []string
	for _, id := range manifests {
		names = append(names, ObjectName(KindManifest, id))
	}
	for _, ids := range chunks {
		for _, id := range ids {
			if id.IsZero() {
				continue
			}
			if pack, _, ok := ix.Lookup(id); ok && !seen[pack] {
				seen[pack] = true
				names = append(names, chunk.PackName(pack))
			}
		}
	}
	if _, err := v.ExtendLocks(ctx, names); err != nil {
		return fmt.Errorf("locking what the point needs: %w", err)
	}
	return nil
}

// Lock is the vault's object lock, nil if it has none.
func (v *Vault) Lock() *Lock { return v.cfg.Lock }

// LockedUntil returns when the object's retention ends: the zero time if
// it has none or the vault no lock.
func (v *Vault) LockedUntil(ctx context.Context, name string) (time.Time, error) {
	ls := v.locked
	if ls == nil {
		return time.Time{}, nil
	}
	r, err := ls.locker.RetentionOf(ctx, name)
	return r.Until, err
}

// ExtendLocks makes the retention of each named object last at least half
// a lock period from now, setting it to a full period from now where it
// ends sooner: run for the objects of the points that are kept, it keeps
// them locked as long as they are, at one request per object per half
// period. Objects that are gone are skipped. It returns how many it
// extended. On a vault without a lock it does nothing.
func (v *Vault) ExtendLocks(ctx context.Context, names []string) (int, error) {
	ls := v.locked
	if ls == nil {
		return 0, nil
	}
	now := v.clock.Now()
	want := ls.retention()
	var n atomic.Int64
	err := Parallel(ctx, 8, names, func(ctx context.Context, name string) error {
		r, err := ls.locker.RetentionOf(ctx, name)
		if blob.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if r.Until.After(now.Add(ls.lock.Period() / 2)) {
			return nil
		}
		if err := ls.locker.Retain(ctx, name, want); err != nil {
			if blob.IsNotExist(err) {
				return nil
			}
			return fmt.Errorf("extending the lock of %s: %w", name, err)
		}
		n.Add(1)
		return nil
	})
	return int(n.Load()), err
}

// VaultObjects names the objects that open the vault: config and the key
// slots. They are locked and extended like a point's.
func (v *Vault) VaultObjects(ctx context.Context) ([]string, error) {
	names := []string{"config"}
	err := v.store.List(ctx, "keys/", func(i blob.Info) error { names = append(names, i.Name); return nil })
	if err != nil {
		return nil, fmt.Errorf("listing key slots: %w", err)
	}
	return names, nil
}

// IsLocked reports whether err is a delete refused for an object's lock.
func IsLocked(err error) bool { return errors.Is(err, blob.ErrLocked) }
