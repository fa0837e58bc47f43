package cli_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/vmtest"
)

// partitionedDisk writes a 48 MiB image with an MBR whose partition 1 (at
// 1 MiB, 32 MiB long) holds an ext4 file system with smallFiles.
func partitionedDisk(t *testing.T, path string) {
	t.Helper()
	part := path + ".part1"
	makeExt4(t, part, 32, smallFiles)
	fsBytes, err := os.ReadFile(part)
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 48<<20)
	e := img[446:]
	e[4] = 0x83
	binary.LittleEndian.PutUint32(e[8:], 2048)
	binary.LittleEndian.PutUint32(e[12:], 32<<20/512)
	img[510], img[511] = 0x55, 0xaa
	copy(img[1<<20:], fsBytes)
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(part)
}

// leftovers lists loop devices backed by files under dir and mounts under
// it.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	if b, err := exec.Command("losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE").Output(); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, dir) {
				out = append(out, l)
			}
		}
	}
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, dir) {
			out = append(out, l)
		}
	}
	return out
}

func waitPath(t *testing.T, p *proc, path string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if p.exited() {
			t.Fatalf("lifeboat mount exited before %s appeared:\n%s", path, p.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within 60 s:\n%s", path, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMount: a point's partitioned disk is a read-only file equal to the
// image, and its ext4 partition is mounted with the files' bytes; SIGINT
// leaves no loop device, mount or directory; a mount killed with SIGKILL
// is undone by lifeboat umount; with every pack damaged a read fails with
// EIO and a warning naming a pack, never wrong bytes.
func TestMount(t *testing.T) {
	if os.Geteuid() != 0 {
		if vmtest.Required() {
			t.Fatal("lifeboat mount needs root (loop devices)")
		}
		t.Skip("lifeboat mount needs root (loop devices)")
	}
	vmtest.RequireBinary(t, "losetup")
	dir := t.TempDir()
	vdir := filepath.Join(dir, "vault")
	initVault(t, vdir, 1<<20)
	img := filepath.Join(dir, "root.img")
	partitionedDisk(t, img)
	mustRun(t, "--vault", vdir, "-q", "backup", "--machine", "web1", "--disk", "root="+img)
	mnt := filepath.Join(dir, "mnt")

	p := startProc(t, "--vault", vdir, "mount", "--machine", "web1", "latest", mnt)
	file := filepath.Join(mnt, "root", "part1", "srv", "data", "a.bin")
	waitPath(t, p, file)
	if got, err := os.ReadFile(file); err != nil || !bytes.Equal(got, fill(3<<20, random, 1)) {
		t.Errorf("a.bin in the mounted point: %v, or wrong bytes", err)
	}
	sameContent(t, img, filepath.Join(mnt, "disks", "root"))
	if err := os.WriteFile(filepath.Join(mnt, "root", "part1", "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("creating a file in the mounted point: %v, want EROFS", err)
	}
	stopProc(t, p)
	if l := leftovers(t, mnt); len(l) > 0 {
		t.Errorf("after SIGINT, left behind: %v", l)
	}
	if ents, _ := os.ReadDir(mnt); len(ents) != 0 {
		t.Errorf("after SIGINT, %s holds %v", mnt, ents)
	}

	p = startProc(t, "--vault", vdir, "mount", "--machine", "web1", "latest", mnt)
	waitPath(t, p, file)
	if !p.kill() {
		t.Fatal("the mount did not die of SIGKILL")
	}
	if len(leftovers(t, mnt)) == 0 {
		t.Fatal("a killed mount left nothing to clean: the test does not test umount")
	}
	mustRun(t, "umount", mnt)
	if l := leftovers(t, mnt); len(l) > 0 {
		t.Errorf("after lifeboat umount of a killed mount, left behind: %v", l)
	}

	packs, _ := filepath.Glob(filepath.Join(vdir, "packs", "*", "*"))
	for _, pk := range packs {
		b, err := os.ReadFile(pk)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(b); i += 61 { // every blob, however small
			b[i] ^= 0x40
		}
		if err := os.WriteFile(pk, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p = startProc(t, "--vault", vdir, "mount", "--machine", "web1", "latest", mnt)
	disk := filepath.Join(mnt, "disks", "root")
	waitPath(t, p, disk)
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	_, err = f.ReadAt(buf, 1<<20)
	f.Close()
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("reading a damaged block of the disk file: %v, want EIO", err)
	}
	r := stopProc(t, p)
	if !strings.Contains(r.stderr, "packs/") {
		t.Errorf("no warning names the damaged pack:\n%s", r.stderr)
	}
}
