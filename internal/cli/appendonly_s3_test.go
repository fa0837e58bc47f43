package cli_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/miniotest"
	"lifeboat/internal/cli"
)

// twoBackups makes an image and backs it up twice into url with env,
// changing a file between; it returns the image, a copy of it as the
// first point holds it, and the points' IDs.
func twoBackups(t *testing.T, env map[string]string, url string) (img, first string, ids []string) {
	t.Helper()
	img = filepath.Join(t.TempDir(), "vda.img")
	makeExt4(t, img, 16, smallFiles)
	first = filepath.Join(t.TempDir(), "first.img")
	sparseCopy(t, img, first)
	for i := range 2 {
		r := inProcEnv(context.Background(), env, "--vault", url, "-q", "--json", "backup", "--machine", "web1", "--disk", "vda="+img)
		if r.code != 0 {
			t.Fatalf("backup %d into %s: %s", i, url, r)
		}
		ids = append(ids, parsePoint(t, r).ID)
		rewriteFile(t, img, smallFiles[0], uint64(10+i))
	}
	return img, first, ids
}

// TestAppendOnlyS3Credentials: with append-only credentials (MinIO
// temporary credentials from AssumeRole with a policy allowing List, Get
// and Put but no Delete) and create-only puts, backups, a copy into a vault and restores work
// and delete nothing — every object stored before is still there after;
// forget and prune are refused before they change anything, with an error
// that names the credentials they need. The maintenance (root)
// credentials then prune, removing the session markers the append-only
// runs left.
func TestAppendOnlyS3Credentials(t *testing.T) {
	srv := miniotest.Start(t)
	root := srv.Config
	ctx := context.Background()
	src, dst := "s3://"+root.Bucket+"/src", "s3://"+root.Bucket+"/dst"
	if r := inProcEnv(ctx, s3Env(root), "--vault", src, "-q", "vault", "init"); r.code != 0 {
		t.Fatalf("init: %s", r)
	}
	if r := inProcEnv(ctx, s3Env(root), "--vault", dst, "-q", "vault", "init", "--copy-of", src); r.code != 0 {
		t.Fatalf("init --copy-of: %s", r)
	}
	ao := miniotest.AppendOnly(t, root)
	aoStore, err := blob.NewS3(ctx, ao)
	if err != nil {
		t.Fatal(err)
	}
	if err := aoStore.Delete(ctx, "src/config"); !blob.IsRefused(err) {
		t.Fatalf("a Delete with the append-only credentials = %v, want it refused", err)
	}
	env := s3Env(ao)
	env["AWS_SESSION_TOKEN"] = ao.SessionToken
	env["LIFEBOAT_S3_CREATE_ONLY"] = "1" // and never replace an object

	before := storeNames(t, aoStore)
	img, first, ids := twoBackups(t, env, src)
	out := filepath.Join(t.TempDir(), "vda.raw")
	r := inProcEnv(ctx, env, "--vault", src, "restore", "--machine", "web1", ids[0], "--disk", "vda", "--to-file", out)
	if r.code != 0 || strings.Contains(r.stderr, "session marker") {
		t.Fatalf("restore with append-only credentials: want success without a warning, got %s", r)
	}
	sameContent(t, first, out)
	r = inProcEnv(ctx, env, "-q", "vault", "copy", "--from", src, "--to", dst)
	if r.code != 0 {
		t.Fatalf("copy with append-only credentials: %s", r)
	}
	after := storeNames(t, aoStore)
	for _, name := range before {
		if _, ok := slices.BinarySearch(after, name); !ok {
			t.Errorf("%s was deleted by a run with append-only credentials", name)
		}
	}
	markers := 0
	for _, name := range after {
		if strings.Contains(name, "/sessions/") {
			markers++
		}
	}
	if markers == 0 {
		t.Fatal("append-only runs left no session markers: did they delete them?")
	}
	r = inProcEnv(ctx, env, "--vault", dst, "points")
	if r.code != 0 || !strings.Contains(r.stdout, ids[0][:8]) || !strings.Contains(r.stdout, ids[1][:8]) {
		t.Errorf("points at the copy: want both points, got %s", r)
	}

	// Forget and prune change nothing and say what they need.
	r = inProcEnv(ctx, env, "--vault", src, "forget", "--keep-last", "1")
	expect(t, "forget with append-only credentials", r, cli.ExitStorage, "maintenance credentials", "s3:DeleteObject", "nothing was changed")
	r = inProcEnv(ctx, env, "--vault", src, "prune")
	expect(t, "prune with append-only credentials", r, cli.ExitStorage, "maintenance credentials", "s3:DeleteObject")
	if got := storeNames(t, aoStore); !slices.Equal(got, after) {
		t.Errorf("refused forget and prune changed the bucket:\nbefore %q\nafter  %q", after, got)
	}

	// A later backup with append-only credentials sees the finished
	// sessions as such: nothing to adopt.
	r = inProcEnv(ctx, env, "--vault", src, "--json", "backup", "--machine", "web1", "--disk", "vda="+img)
	if r.code != 0 || strings.Contains(r.stderr, "adopt") {
		t.Fatalf("third backup: %s", r)
	}

	// The maintenance credentials forget and prune, and remove the
	// markers of finished sessions.
	for _, args := range [][]string{{"forget", "--keep-last", "1"}, {"prune"}, {"verify", "--read-data"}} {
		if r := inProcEnv(ctx, s3Env(root), append([]string{"--vault", src, "-q"}, args...)...); r.code != 0 {
			t.Fatalf("%s with the maintenance credentials: %s", args[0], r)
		}
	}
	for _, name := range storeNames(t, aoStore) {
		if strings.HasPrefix(name, "src/sessions/") {
			t.Errorf("prune left session marker %s", name)
		}
	}
}
