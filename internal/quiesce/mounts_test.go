package quiesce

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The kernel here neither scans loop partitions nor has device-mapper,
// so the walk over partitions and holders is checked on a sysfs tree laid
// out as the kernel lays it out: /sys/dev/block/M:m is the device's
// directory, partitions are subdirectories with a "partition" file, and
// holders/ names the devices built on it, found in /sys/class/block.
func TestWithStackedFollowsPartitionsAndHolders(t *testing.T) {
	sys := t.TempDir()
	dev := func(dir, majmin string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "dev"), []byte(majmin+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// sdb (8:16) with partitions sdb1 (8:17) and sdb2 (8:18); sdb2 is held
	// by dm-0 (253:0, an LVM volume), itself held by dm-1 (253:1, dm-crypt).
	sdb := filepath.Join(sys, "devices/pci/sdb")
	dev(sdb, "8:16")
	dev(filepath.Join(sdb, "sdb1"), "8:17")
	dev(filepath.Join(sdb, "sdb2"), "8:18")
	for _, p := range []string{"sdb1", "sdb2"} {
		os.WriteFile(filepath.Join(sdb, p, "partition"), []byte("1\n"), 0o644)
	}
	os.MkdirAll(filepath.Join(sdb, "sdb2", "holders", "dm-0"), 0o755)
	dm0 := filepath.Join(sys, "devices/virtual/dm-0")
	dev(dm0, "253:0")
	os.MkdirAll(filepath.Join(dm0, "holders", "dm-1"), 0o755)
	dm1 := filepath.Join(sys, "devices/virtual/dm-1")
	dev(dm1, "253:1")
	link := func(target, name string) {
		t.Helper()
		os.MkdirAll(filepath.Dir(name), 0o755)
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
	}
	link(sdb, filepath.Join(sys, "dev/block/8:16"))
	link(filepath.Join(sdb, "sdb1"), filepath.Join(sys, "dev/block/8:17"))
	link(filepath.Join(sdb, "sdb2"), filepath.Join(sys, "dev/block/8:18"))
	link(dm0, filepath.Join(sys, "dev/block/253:0"))
	link(dm1, filepath.Join(sys, "dev/block/253:1"))
	link(dm0, filepath.Join(sys, "class/block/dm-0"))
	link(dm1, filepath.Join(sys, "class/block/dm-1"))

	got := withStacked(sys, []string{"8:16"})
	slices.Sort(got)
	want := []string{"253:0", "253:1", "8:16", "8:17", "8:18"}
	if !slices.Equal(got, want) {
		t.Fatalf("withStacked = %v, want %v", got, want)
	}
	// A device with nothing on it is itself only.
	if got := withStacked(sys, []string{"7:0"}); !slices.Equal(got, []string{"7:0"}) {
		t.Fatalf("lone device: %v", got)
	}
}

func TestParseMountinfoLine(t *testing.T) {
	m, ok := parseMountinfoLine(`36 35 98:0 /mnt1 /mnt/with\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue`)
	if !ok || m.Point != "/mnt/with space" || m.Device != "98:0" || m.FSType != "ext3" || m.ReadOnly {
		t.Fatalf("got %+v %v", m, ok)
	}
	// Read-only as a mount (a read-only bind mount), or as a filesystem.
	for _, line := range []string{
		`36 35 98:0 / /mnt ro,noatime - ext4 /dev/loop0 rw`,
		`36 35 98:0 / /mnt rw,noatime shared:1 - ext4 /dev/loop0 ro,errors=continue`,
	} {
		if m, ok := parseMountinfoLine(line); !ok || !m.ReadOnly {
			t.Fatalf("%s: got %+v %v, want read-only", line, m, ok)
		}
	}
	if _, ok := parseMountinfoLine("garbage"); ok {
		t.Fatal("garbage parsed")
	}
}
