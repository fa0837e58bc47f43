package vaultcopy_test

import (
	"testing"

	"lifeboat/internal/maintenance"
	"lifeboat/internal/policy"
	"lifeboat/internal/vaultcopy"
)

// TestCopySkipsSoftDeleted: a point soft-deleted at the source is neither
// pending nor copied; undeleted, it is copied by the next run.
func TestCopySkipsSoftDeleted(t *testing.T) {
	ctx := ctxT(t)
	a, b := newPair(t)
	if _, err := a.v.SaveSetting(ctx, policy.DefaultSoftDelete); err != nil {
		t.Fatal(err)
	}
	d := newDisk(t, 1<<20, 1)
	old := backupDisk(t, a.v, "web1", d)
	d.scribble(t, 4, 2)
	backupDisk(t, a.v, "web1", d)
	res, err := maintenance.Forget(ctx, a.v, "web1", policy.Retention{KeepLast: 1}, false)
	if err != nil || len(res.Removed) != 1 || res.SoftDelete != policy.DefaultSoftDelete {
		t.Fatalf("forget: %+v, %v", res, err)
	}
	pending, _, err := vaultcopy.Pending(ctx, a.v, b.store, "")
	if err != nil || len(pending) != 1 || pending[0].ID == old.ID {
		t.Fatalf("pending: %v, %v (want only the kept point)", pending, err)
	}
	st, err := vaultcopy.Run(ctx, a.v, b.v, vaultcopy.Options{})
	if err != nil || st.PointsCopied != 1 || pointIDs(t, b.v)[old.ID] {
		t.Fatalf("copy: %+v, %v (want the soft-deleted point left out)", st, err)
	}
	if _, err := maintenance.Undelete(ctx, a.v, "web1", old.ID.String()); err != nil {
		t.Fatal(err)
	}
	st, err = vaultcopy.Run(ctx, a.v, b.v, vaultcopy.Options{})
	if err != nil || st.PointsCopied != 1 || st.Points[0] != old.ID.String() {
		t.Fatalf("copy after undelete: %+v, %v", st, err)
	}
	restoreEquals(t, b.v, old.ID, newDisk(t, 1<<20, 1).data)
}
