package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/api"
	"lifeboat/internal/backup"
	"lifeboat/internal/blob"
	"lifeboat/internal/crypto"
	"lifeboat/internal/job"
	"lifeboat/internal/location"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/replicate"
	"lifeboat/internal/restore"
	"lifeboat/internal/server"
	"lifeboat/internal/source"
	"lifeboat/internal/vault"
	"lifeboat/internal/vaultcopy"
	"lifeboat/internal/vaultserve"
)

// TestExitCodeClassification feeds ExitCode errors made by the real
// thing where it can run here: a missing disk file, a truncated object, a
// refused connection, a server that never answers.
func TestExitCodeClassification(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()

	_, missingDisk := source.OpenFile(filepath.Join(dir, "no-such-disk.img"))

	vaultDir := filepath.Join(dir, "vault")
	os.MkdirAll(filepath.Join(vaultDir, "packs", "ab"), 0o700)
	os.WriteFile(filepath.Join(vaultDir, "packs", "ab", "abcd"), make([]byte, 100), 0o600)
	store, err := blob.NewDir(vaultDir)
	if err != nil {
		t.Fatal(err)
	}
	_, truncated := store.GetRange(ctx, "packs/ab/abcd", 50, 100)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, refused := net.Dial("tcp", addr)

	// A server that accepts and never answers: the transport's header
	// timeout, a net.Error whose Timeout() is true.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	hc := &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 100 * time.Millisecond}}
	_, headerTimeout := hc.Get("http://" + silent.Addr().String() + "/")
	_, settingsErr := api.Connect("ftp://x", "", func(string) string { return "" })
	noEnv := func(string) string { return "" }
	_, noPassphrase := location.Passphrase("", "--password-file", noEnv, nil)
	_, badURL := location.Store(ctx, "ftp://x/y", true, noEnv)
	cheap := vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}}
	newVault := func(name string) (*vault.Vault, error) {
		os.Mkdir(filepath.Join(dir, name), 0o700)
		s, err := blob.NewDir(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return vault.Init(ctx, s, []byte("a passphrase of some length"), cheap)
	}
	v1, err := newVault("v1")
	if err != nil {
		t.Fatal(err)
	}
	v2, err := newVault("v2")
	if err != nil {
		t.Fatal(err)
	}
	_, exists := newVault("v1")
	_, sameVault := vaultcopy.Run(ctx, v1, v1, vaultcopy.Options{})
	_, keysDiffer := vaultcopy.Run(ctx, v1, v2, vaultcopy.Options{})

	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"missing --disk file", fmt.Errorf("backup: %w", missingDisk), ExitError},
		{"bare errno ENOENT", fmt.Errorf("reading x: %w", syscall.ENOENT), ExitError},
		{"truncated pack", fmt.Errorf("restoring: %w", truncated), ExitCorrupt},
		{"connection refused", fmt.Errorf("s3: %w", refused), ExitStorage},
		{"response header timeout", fmt.Errorf("s3: %w", headerTimeout), ExitStorage},
		{"directory vault full", fmt.Errorf("%s: writing packs/x: %w", vaultDir, &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}), ExitStorage},
		{"directory vault read-only", &os.PathError{Op: "open", Path: "x", Err: syscall.EROFS}, ExitStorage},
		{"source disk EIO", fmt.Errorf("reading disk vda: %w: %w", backup.ErrDiskRead, syscall.EIO), ExitDisk},
		{"restore target full", fmt.Errorf("restoring disk vda: %w: %w", restore.ErrDiskWrite, syscall.ENOSPC), ExitDisk},
		{"interrupted", fmt.Errorf("backup: %w", context.Canceled), ExitInterrupted},
		{"bad --server", settingsErr, ExitUsage},
		{"bad server config", fmt.Errorf("listening: %w", server.ErrConfig), ExitUsage},
		{"bad vault serve config", fmt.Errorf("%w: x", vaultserve.ErrConfig), ExitUsage},
		{"shorter soft delete", maintenance.ErrShortenNeedsForce, ExitUsage},
		{"bad failover request", replicate.FailoverRequest{}.Validate(), ExitUsage},
		{"no passphrase", noPassphrase, ExitUsage},
		{"bad vault URL", badURL, ExitUsage},
		{"vault init where one is", exists, ExitUsage},
		{"copy into the source", sameVault, ExitUsage},
		{"copy into a vault of other keys", keysDiffer, ExitUsage},
		{"verify found problems", fmt.Errorf("%w: 2 problem(s)", job.ErrProblemsFound), ExitCorrupt},
	} {
		if tc.err == nil {
			t.Fatalf("%s: the setup made no error", tc.name)
		}
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("%s: ExitCode(%v) = %d, want %d", tc.name, tc.err, got, tc.want)
		}
	}
	if !errors.Is(truncated, blob.ErrPermanent) {
		t.Errorf("a range past the end must stay permanent: %v", truncated)
	}
}
