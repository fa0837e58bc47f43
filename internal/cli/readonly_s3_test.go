package cli_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/miniotest"
	"lifeboat/internal/cli"
	"lifeboat/internal/vault"
)

// TestReadOnlyS3Credentials: with read-only credentials (MinIO temporary
// credentials from AssumeRole with a policy allowing only reads) a restore
// works, warning that it runs without its session marker; a backup is
// refused as storage refusing (7).
func TestReadOnlyS3Credentials(t *testing.T) {
	ctx := context.Background()
	url, cfg := minioVault(t)
	img := filepath.Join(t.TempDir(), "vda.img")
	makeExt4(t, img, 16, smallFiles)
	r := inProcEnv(ctx, s3Env(cfg), "--vault", url, "-q", "--json", "backup", "--machine", "web1", "--disk", "vda="+img)
	if r.code != 0 {
		t.Fatalf("backup: %s", r)
	}
	id := parsePoint(t, r).ID

	ro := miniotest.WithPolicy(t, cfg, []string{"s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"})
	roStore, err := blob.NewS3(ctx, ro)
	if err != nil {
		t.Fatalf("opening the bucket with the read-only credentials: %v", err)
	}
	if err := roStore.Put(ctx, "sessions/probe", []byte("x")); !blob.IsRefused(err) {
		t.Fatalf("a Put with the read-only credentials = %v, want it refused", err)
	}
	env := s3Env(ro)
	env["AWS_SESSION_TOKEN"] = ro.SessionToken

	out := filepath.Join(t.TempDir(), "vda.raw")
	r = inProcEnv(ctx, env, "--vault", url, "restore", "--machine", "web1", id, "--disk", "vda", "--to-file", out)
	if r.code != 0 || !strings.Contains(r.stderr, "session marker") || !strings.Contains(r.stderr, "prune") {
		t.Fatalf("restore with read-only credentials: want success with a warning, got %s", r)
	}
	sameContent(t, img, out)

	r = inProcEnv(ctx, env, "--vault", url, "-q", "backup", "--machine", "web1", "--disk", "vda="+img)
	expect(t, "backup with read-only credentials", r, cli.ExitStorage, "refused")
}

// minioVault starts MinIO and makes a vault under the prefix "vault" of its
// bucket (1 MiB packs); it returns the vault's URL and the S3 settings.
func minioVault(t *testing.T) (string, blob.S3Config) {
	t.Helper()
	cfg := miniotest.Start(t).Config
	cfg.Prefix = "vault"
	store, err := blob.NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vault.Init(context.Background(), store, []byte(testPassphrase), vault.Options{KDF: cheapKDF, PackSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	return "s3://" + cfg.Bucket + "/vault", cfg
}
