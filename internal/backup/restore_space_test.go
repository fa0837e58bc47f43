package backup_test

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"lifeboat/internal/blob"
	"lifeboat/internal/restore"
)

// allocated returns the bytes a file has on disk.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestRestoredImageSparse: a restored image is allocated exactly where the
// disk had data (preallocation reserves those blocks and no others), and
// its zero chunks are holes that SEEK_DATA skips.
func TestRestoredImageSparse(t *testing.T) {
	dir := t.TempDir()
	v := newVault(t, blob.NewMem())
	disk := filepath.Join(dir, "d.raw")
	data := makeDisk(t, disk, 32<<20, 11)
	p := backupFiles(t, v, "m", map[string]string{"d": disk})
	rdir := t.TempDir()
	out := restoreTo(t, v, p, rdir)
	if !bytes.Equal(out["d"], data) {
		t.Fatal("restore differs")
	}
	const cs = 64 << 10
	var nonzero int64
	for off := 0; off < len(data); off += cs {
		if !bytes.Equal(data[off:off+cs], make([]byte, cs)) {
			nonzero += cs
		}
	}
	got := allocated(t, filepath.Join(rdir, "d.raw"))
	t.Logf("%d bytes of data chunks, %d allocated", nonzero, got)
	if got < nonzero || got > nonzero+1<<20 {
		t.Errorf("restored image has %d bytes allocated, the disk %d bytes of non-zero chunks", got, nonzero)
	}
	f, err := os.Open(filepath.Join(rdir, "d.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off := int64(0); off < int64(len(data)); off += cs {
		zero := bytes.Equal(data[off:off+cs], make([]byte, cs))
		next, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		isHole := err != nil || next >= off+cs
		if zero != isHole {
			t.Fatalf("chunk at %d: zero %v, hole in the restored image %v", off, zero, isHole)
		}
	}
}

// TestRestoreNoSpace: restoring onto a file system without room for the
// disk's data fails before writing it, with an error that says so, and
// removes the new image.
func TestRestoreNoSpace(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the full file system test needs root in CI")
		}
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	v := newVault(t, blob.NewMem())
	disk := filepath.Join(dir, "d.raw")
	data := make([]byte, 8<<20)
	rand.New(rand.NewSource(5)).Read(data)
	if err := os.WriteFile(disk, data, 0o600); err != nil {
		t.Fatal(err)
	}
	p := backupFiles(t, v, "m", map[string]string{"d": disk})
	mnt := filepath.Join(dir, "small")
	os.Mkdir(mnt, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	target := filepath.Join(mnt, "d.raw")
	st, err := restore.Run(context.Background(), v, p, []restore.Target{{Disk: p.Disks[0], Path: target}}, restore.Options{})
	if err == nil {
		t.Fatalf("restore of 8 MiB into a 2 MiB file system succeeded: %+v", st)
	}
	if !strings.Contains(err.Error(), "not enough space") || !strings.Contains(err.Error(), target) {
		t.Errorf("error does not say the target's file system is full: %v", err)
	}
	if _, serr := os.Stat(target); !os.IsNotExist(serr) {
		t.Errorf("the failed restore left %s behind (%v)", target, serr)
	}
	t.Logf("error: %v", err)
}
