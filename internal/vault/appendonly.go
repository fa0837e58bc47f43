package vault

import (
	"context"
	"errors"
	"fmt"

	"lifeboat/internal/blob"
)

// ErrAppendOnly means the store refuses deletes: the vault is reached with
// append-only credentials (an S3 policy without s3:DeleteObject, a
// `lifeboat vault serve --append-only` endpoint), which may back up, copy
// into the vault and restore, but not forget or prune (docs/security.md,
// "Append-only credentials").
var ErrAppendOnly = errors.New("the storage refuses deletes (append-only credentials)")

// DeletesRefused reports whether the store has refused a delete since the
// vault was opened: from then on the write path only creates objects.
func (v *Vault) DeletesRefused() bool { return v.noDelete.Load() }

// Tidy deletes objects the write path no longer needs (a superseded
// session marker, a finished session's markers). They are harmless when
// left, so a store that refuses (blob.IsRefused: append-only credentials,
// a read-only mount) is remembered and not asked again, and the objects
// wait for prune. Other errors are returned.
func (v *Vault) Tidy(ctx context.Context, names ...string) error {
	for _, name := range names {
		if v.noDelete.Load() {
			return nil
		}
		err := v.store.Delete(ctx, name)
		if err == nil || blob.IsNotExist(err) {
			continue
		}
		if blob.IsRefused(err) && ctx.Err() == nil {
			v.noDelete.Store(true)
			return nil
		}
		return err
	}
	return nil
}

// TidySessions deletes the markers of the sessions among dead that are
// certainly finished (SessionInfo.Finished), as far as the store lets it:
// a failure only leaves markers for a later writer or prune.
func (v *Vault) TidySessions(ctx context.Context, dead []SessionInfo) {
	now := v.clock.Now()
	for _, d := range dead {
		if !d.Finished(now) {
			continue
		}
		if err := v.Tidy(ctx, d.Names...); err != nil || v.noDelete.Load() {
			return
		}
	}
}

// CheckDeletes finds out, before an operation that deletes (forget, prune)
// changes anything, whether the store lets it: it deletes an object that
// does not exist, which S3 authorises like any delete and a directory
// store answers without changing anything (in a vault with a lock, where
// a delete removes every version, it lists the name's versions, which
// append-only credentials may not). A refusal is returned as
// ErrAppendOnly, naming what is needed.
func (v *Vault) CheckDeletes(ctx context.Context, what string) error {
	err := v.store.Delete(ctx, "sessions/delete-probe-"+randomName())
	if err == nil || blob.IsNotExist(err) {
		v.noDelete.Store(false) // a refusal seen earlier is over
		return nil
	}
	if blob.IsRefused(err) && ctx.Err() == nil {
		v.noDelete.Store(true)
		return fmt.Errorf("%s: %s deletes objects, so it needs the vault's maintenance credentials, which may delete "+
			"(on S3: s3:DeleteObject); the ones in use may only create (backups, copies and restores work with them), nothing was changed: %w: %w",
			v.store, what, ErrAppendOnly, err)
	}
	return fmt.Errorf("%s: checking that the storage allows %s to delete: %w", v.store, what, err)
}
