package vmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// NewRawDisk creates a zero-filled (sparse) raw image of sizeMB MiB at path.
func NewRawDisk(t testing.TB, path string, sizeMB int) Disk {
	t.Helper()
	if err := makeRaw(path, sizeMB); err != nil {
		t.Fatal(err)
	}
	return Disk{Path: path, Format: "raw"}
}

// NewExt4Disk creates an image of sizeMB MiB at path holding an empty ext4
// filesystem made by the host's mkfs.ext4, in format "raw" or "qcow2". The
// inode tables and journal are initialised up front so the guest's kernel
// does no lazy initialisation writes behind the workload's back.
func NewExt4Disk(t testing.TB, path, format string, sizeMB int) Disk {
	t.Helper()
	RequireBinary(t, mkfsBinary)
	raw := path
	if format == "qcow2" {
		RequireBinary(t, qemuImg)
		raw = path + ".raw"
		defer os.Remove(raw)
	} else if format != "raw" {
		t.Fatalf("NewExt4Disk %s: format %q is neither raw nor qcow2", path, format)
	}
	if err := makeRaw(raw, sizeMB); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfsBinary, "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", raw).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v\n%s", raw, err, out)
	}
	if format == "qcow2" {
		if out, err := exec.Command(qemuImg, "convert", "-q", "-f", "raw", "-O", "qcow2", raw, path).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img convert %s to qcow2: %v\n%s", raw, err, out)
		}
	}
	return Disk{Path: path, Format: format}
}

func makeRaw(path string, sizeMB int) error {
	if sizeMB <= 0 {
		return fmt.Errorf("disk %s: size %d MiB is not positive", path, sizeMB)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("creating disk %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("creating disk %s: %w", path, err)
	}
	if err := f.Truncate(int64(sizeMB) << 20); err != nil {
		f.Close()
		return fmt.Errorf("sizing disk %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing disk %s: %w", path, err)
	}
	return nil
}
