package blob_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/miniotest"
)

// TestS3ObjectLock on MinIO: a bucket without Object Lock is refused by
// CheckLock; in one with it, an object stored locked reports its
// retention, cannot be deleted (DeleteVersions fails with ErrLocked and the
// object is still there, even to the bucket's root credentials), and its
// retention can be extended; an unlocked object is removed with every
// version, where a plain Delete would only have hidden it.
func TestS3ObjectLock(t *testing.T) {
	srv := miniotest.Start(t)
	ctx := context.Background()
	plain, err := blob.OpenS3(ctx, srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.(blob.Locker).CheckLock(ctx); !errors.Is(err, blob.ErrNoLock) {
		t.Fatalf("CheckLock on a bucket without Object Lock = %v, want ErrNoLock", err)
	}
	store, err := blob.OpenS3(ctx, srv.NewLockBucket(t))
	if err != nil {
		t.Fatal(err)
	}
	l := store.(blob.Locker)
	if err := l.CheckLock(ctx); err != nil {
		t.Fatalf("CheckLock on a bucket with Object Lock: %v", err)
	}
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	if err := l.PutRetained(ctx, "points/locked", []byte("keep me"), blob.Retention{Mode: blob.LockCompliance, Until: until}); err != nil {
		t.Fatal(err)
	}
	r, err := l.RetentionOf(ctx, "points/locked")
	if err != nil || r.Mode != blob.LockCompliance || !r.Until.Equal(until) {
		t.Fatalf("RetentionOf = %+v, %v; want compliance until %s", r, err, until)
	}
	if err := l.DeleteVersions(ctx, "points/locked"); !errors.Is(err, blob.ErrLocked) {
		t.Fatalf("deleting a locked object = %v, want ErrLocked", err)
	}
	if data, err := store.Get(ctx, "points/locked"); err != nil || string(data) != "keep me" {
		t.Fatalf("the locked object after a delete: %q, %v", data, err)
	}
	later := until.Add(time.Hour)
	if err := l.Retain(ctx, "points/locked", blob.Retention{Mode: blob.LockCompliance, Until: later}); err != nil {
		t.Fatalf("extending the retention: %v", err)
	}
	if r, err := l.RetentionOf(ctx, "points/locked"); err != nil || !r.Until.Equal(later) {
		t.Fatalf("after extending: %+v, %v", r, err)
	}
	if err := l.Retain(ctx, "points/locked", blob.Retention{Mode: blob.LockCompliance, Until: until}); err == nil {
		t.Error("shortening a compliance retention succeeded")
	}

	if err := store.Put(ctx, "packs/free", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if r, err := l.RetentionOf(ctx, "packs/free"); err != nil || !r.Until.IsZero() {
		t.Fatalf("RetentionOf an unlocked object = %+v, %v", r, err)
	}
	if err := store.Put(ctx, "packs/free", []byte("y")); err != nil { // a second version
		t.Fatal(err)
	}
	if err := l.DeleteVersions(ctx, "packs/free"); err != nil {
		t.Fatalf("deleting an unlocked object: %v", err)
	}
	if _, err := store.Stat(ctx, "packs/free"); !blob.IsNotExist(err) {
		t.Fatalf("after DeleteVersions: %v", err)
	}
	if err := l.DeleteVersions(ctx, "packs/never"); err != nil {
		t.Fatalf("DeleteVersions of a missing object: %v", err)
	}
}
