package cli_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/miniotest"
	"lifeboat/internal/cli"
)

// waitUnlocked waits until the object's retention has passed.
func waitUnlocked(t *testing.T, l blob.Locker, name string) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := l.RetentionOf(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Until.After(time.Now()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is still locked until %s", name, r.Until)
		}
		time.Sleep(min(time.Until(r.Until)+50*time.Millisecond, time.Second))
	}
}

// TestObjectLockS3: a vault made with --lock on a MinIO bucket with Object
// Lock stores every object a point needs under a compliance retention.
// Nobody, not even the bucket's root credentials, can delete a locked
// point; forget leaves a point retention drops while it is locked, saying
// until when, and removes it once the lock has passed; prune plans around
// the objects still locked (it never tries to delete one: MinIO would
// refuse) and reports them; every kept point stays restorable.
func TestObjectLockS3(t *testing.T) {
	srv := miniotest.Start(t)
	ctx := context.Background()
	plain := "s3://" + srv.Config.Bucket + "/v"
	r := inProcEnv(ctx, s3Env(srv.Config), "--vault", plain, "vault", "init", "--lock", "30d")
	expect(t, "init --lock on a bucket without Object Lock", r, cli.ExitStorage, "Object Lock")

	cfg := srv.NewLockBucket(t)
	env := s3Env(cfg)
	url := "s3://" + cfg.Bucket + "/v"
	// Soft delete off: this test follows forget and prune on the lock alone.
	if r := inProcEnv(ctx, env, "--vault", url, "vault", "init", "--soft-delete", "0", "--lock", "4s", "--lock-mode", "compliance"); r.code != 0 || !strings.Contains(r.stdout, "locked (compliance mode)") {
		t.Fatalf("init --lock: %s", r)
	}
	store, err := blob.OpenS3(ctx, blob.S3Config{Endpoint: cfg.Endpoint, Bucket: cfg.Bucket, Prefix: "v", AccessKey: cfg.AccessKey,
		SecretKey: cfg.SecretKey, Region: cfg.Region, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	locker := store.(blob.Locker)

	img := filepath.Join(t.TempDir(), "vda.img")
	makeExt4(t, img, 16, smallFiles)
	var ids []string
	var images []string
	firstLocks := map[string]time.Time{}
	for i := range 2 {
		if i == 1 {
			// Half the period on, the first point's packs are due for
			// extension: the second backup, which shares their chunks,
			// extends them.
			for _, name := range storeNames(t, store) {
				if strings.HasPrefix(name, "packs/") {
					r, err := locker.RetentionOf(ctx, name)
					if err != nil {
						t.Fatal(err)
					}
					firstLocks[name] = r.Until
					for time.Until(r.Until) >= 2*time.Second {
						time.Sleep(100 * time.Millisecond)
					}
				}
			}
		}
		r := inProcEnv(ctx, env, "--vault", url, "-q", "--json", "backup", "--machine", "web1", "--disk", "vda="+img)
		if r.code != 0 {
			t.Fatalf("backup %d: %s", i, r)
		}
		ids = append(ids, parsePoint(t, r).ID)
		keep := filepath.Join(t.TempDir(), "vda.img")
		sparseCopy(t, img, keep)
		images = append(images, keep)
		rewriteFile(t, img, smallFiles[0], uint64(20+i))
	}
	for name, before := range firstLocks {
		if r, err := locker.RetentionOf(ctx, name); err != nil || !r.Until.After(before) {
			t.Errorf("pack %s of the first point, shared by the second: lock until %s (%v), want extended past %s", name, r.Until, err, before)
		}
	}
	// A copy made with a lock of its own locks what it receives.
	dst := "s3://" + cfg.Bucket + "/copy"
	if r := inProcEnv(ctx, env, "--vault", dst, "-q", "vault", "init", "--copy-of", url, "--lock", "4s"); r.code != 0 {
		t.Fatalf("init --copy-of --lock: %s", r)
	}
	if r := inProcEnv(ctx, env, "-q", "vault", "copy", "--from", url, "--to", dst); r.code != 0 {
		t.Fatalf("copy to a locked copy: %s", r)
	}
	copyStore, err := blob.OpenS3(ctx, blob.S3Config{Endpoint: cfg.Endpoint, Bucket: cfg.Bucket, Prefix: "copy", AccessKey: cfg.AccessKey,
		SecretKey: cfg.SecretKey, Region: cfg.Region, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range storeNames(t, copyStore) {
		if strings.HasPrefix(name, "sessions/") || strings.HasPrefix(name, "copied/") {
			continue
		}
		if r, err := copyStore.(blob.Locker).RetentionOf(ctx, name); err != nil || r.Until.IsZero() {
			t.Errorf("copy's %s: retention %+v, %v; want a lock", name, r, err)
		}
	}
	for _, name := range storeNames(t, store) {
		if strings.HasPrefix(name, "sessions/") || strings.HasPrefix(name, "condemned/") {
			continue
		}
		if r, err := locker.RetentionOf(ctx, name); err != nil || r.Mode != blob.LockCompliance || r.Until.IsZero() {
			t.Errorf("%s: retention %+v, %v; want a compliance lock", name, r, err)
		}
	}
	first := "points/" + ids[0]
	if err := locker.DeleteVersions(ctx, first); !errors.Is(err, blob.ErrLocked) {
		t.Fatalf("deleting a locked point with the root credentials = %v, want it refused as locked", err)
	}

	// Retention drops the first point: still locked, it stays.
	r = inProcEnv(ctx, env, "--vault", url, "--json", "forget", "--keep-last", "1")
	var fr struct {
		Removed int `json:"removed"`
		Locked  []struct {
			ID    string    `json:"id"`
			Until time.Time `json:"until"`
		} `json:"locked"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &fr) != nil || fr.Removed != 0 || len(fr.Locked) != 1 || fr.Locked[0].ID != ids[0] {
		t.Fatalf("forget while the dropped point is locked: want it left and named, got %+v from %s", fr, r)
	}
	if _, err := store.Stat(ctx, first); err != nil {
		t.Fatalf("the locked point is gone: %v", err)
	}

	// Once its lock has passed, forget removes it; prune deletes what is
	// free and leaves what the kept point's locks still hold.
	waitUnlocked(t, locker, first)
	r = inProcEnv(ctx, env, "--vault", url, "--json", "forget", "--keep-last", "1")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &fr) != nil || fr.Removed != 1 || len(fr.Locked) != 0 {
		t.Fatalf("forget after the lock passed: %+v from %s", fr, r)
	}
	r = inProcEnv(ctx, env, "--vault", url, "--json", "prune")
	var pr struct {
		LockedObjects    int       `json:"locked_objects"`
		LockedUntil      time.Time `json:"locked_until"`
		DeletedManifests int       `json:"deleted_manifests"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pr) != nil {
		t.Fatalf("prune: %s", r)
	}
	t.Logf("prune: %s", r.stdout)
	if pr.LockedObjects == 0 || pr.LockedUntil.IsZero() || pr.DeletedManifests != 1 {
		t.Errorf("prune: want the free manifest deleted and locked objects reported, got %+v", pr)
	}
	if r := inProcEnv(ctx, env, "--vault", url, "-q", "verify", "--read-data"); r.code != 0 {
		t.Fatalf("verify after prune: %s", r)
	}
	out := filepath.Join(t.TempDir(), "vda.raw")
	if r := inProcEnv(ctx, env, "--vault", url, "restore", "--machine", "web1", ids[1], "--disk", "vda", "--to-file", out); r.code != 0 {
		t.Fatalf("restore: %s", r)
	}
	sameContent(t, images[1], out)
}
