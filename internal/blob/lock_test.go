package blob_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/miniotest"
	"lifeboat/internal/blob/s3test"
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

	// Governance mode holds the same against credentials that do not
	// claim the bypass (lifeboat never does).
	if err := l.PutRetained(ctx, "keys/gov", []byte("slot"), blob.Retention{Mode: blob.LockGovernance, Until: until}); err != nil {
		t.Fatal(err)
	}
	if r, err := l.RetentionOf(ctx, "keys/gov"); err != nil || r.Mode != blob.LockGovernance {
		t.Fatalf("RetentionOf a governance lock = %+v, %v", r, err)
	}
	if err := l.DeleteVersions(ctx, "keys/gov"); !errors.Is(err, blob.ErrLocked) {
		t.Fatalf("deleting a governance-locked object = %v, want ErrLocked", err)
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

// TestS3CreateOnly on MinIO and versitygw: a create-only store
// (LIFEBOAT_S3_CREATE_ONLY=1) stores a new name, accepts the same bytes
// again, and refuses other bytes for good (no retry), leaving the object
// as it was; a directory store's Create does the same.
func TestS3CreateOnly(t *testing.T) {
	ctx := context.Background()
	stores := map[string]func(t *testing.T) (blob.Store, func(string, []byte) error){
		"minio": func(t *testing.T) (blob.Store, func(string, []byte) error) {
			return createOnlyS3(t, miniotest.Start(t).Config)
		},
		"versitygw": func(t *testing.T) (blob.Store, func(string, []byte) error) {
			return createOnlyS3(t, s3test.Start(t).Config)
		},
		"dir": func(t *testing.T) (blob.Store, func(string, []byte) error) {
			d, err := blob.NewDir(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return d, func(name string, data []byte) error { return d.Create(ctx, name, data) }
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			store, create := open(t)
			if err := create("index/a", []byte("first")); err != nil {
				t.Fatal(err)
			}
			if err := create("index/a", []byte("first")); err != nil && name != "dir" {
				t.Fatalf("the same bytes again: %v", err)
			}
			err := create("index/a", []byte("other"))
			if !errors.Is(err, blob.ErrExists) || !blob.IsPermanent(err) {
				t.Fatalf("other bytes under an existing name = %v, want ErrExists", err)
			}
			if data, err := store.Get(ctx, "index/a"); err != nil || string(data) != "first" {
				t.Fatalf("after the refused overwrite: %q, %v", data, err)
			}
		})
	}
}

func createOnlyS3(t *testing.T, cfg blob.S3Config) (blob.Store, func(string, []byte) error) {
	cfg.CreateOnly = true
	s, err := blob.OpenS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, func(name string, data []byte) error { return s.Put(context.Background(), name, data) }
}
