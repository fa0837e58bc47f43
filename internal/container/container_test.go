package container

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"lifeboat/internal/source"
	"lifeboat/internal/vmtest"
)

// chain makes base.qcow2 (8 MiB) with 0xab at 1 MiB and overlay.qcow2 over
// it with 0xcd at 4 MiB, and returns the overlay.
func chain(t *testing.T) (overlay string) {
	vmtest.RequireBinary(t, "qemu-nbd")
	dir := t.TempDir()
	overlay = filepath.Join(dir, "overlay.qcow2")
	vmtest.NewQcow2(t, filepath.Join(dir, "base.qcow2"), "8M", "")
	vmtest.Write(t, filepath.Join(dir, "base.qcow2"), "qcow2", "0xab", "1M", "64k")
	vmtest.NewQcow2(t, overlay, "", "base.qcow2")
	vmtest.Write(t, overlay, "qcow2", "0xcd", "4M", "128k")
	return overlay
}

func TestOpenReadsTheGuestViewOfABackingChain(t *testing.T) {
	overlay := chain(t)
	ctx := context.Background()
	d, err := Open(ctx, overlay, "")
	if err != nil {
		t.Fatal(err)
	}
	if d.Info.Format != "qcow2" || d.Size() != 8<<20 || len(d.Info.Backing) != 1 || d.Source() != overlay {
		t.Fatalf("opened %+v, size %d, source %s", d.Info, d.Size(), d.Source())
	}
	exts, ok, err := d.DataExtents(ctx)
	if err != nil || !ok {
		t.Fatalf("DataExtents: %v %v", ok, err)
	}
	var data int64
	for _, e := range exts {
		data += e.Length
	}
	if data < 192<<10 || data > 1<<20 {
		t.Fatalf("data extents %v cover %d bytes; 192 KiB were written", exts, data)
	}
	got := make([]byte, d.Size())
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 8<<20)
	copy(want[1<<20:], bytes.Repeat([]byte{0xab}, 64<<10))
	copy(want[4<<20:], bytes.Repeat([]byte{0xcd}, 128<<10))
	if !bytes.Equal(got, want) {
		t.Fatal("the guest view read through qemu-nbd differs from what was written")
	}
	dir := d.exp.dir
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the export's directory %s is still there: %v", dir, err)
	}
	if d.exp.cmd.ProcessState == nil {
		t.Fatal("qemu-nbd still runs after Close")
	}
}

func TestOpenRawStaysDirect(t *testing.T) {
	img := filepath.Join(t.TempDir(), "d.raw")
	if err := os.WriteFile(img, bytes.Repeat([]byte("lifeboat"), 1024), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := Open(context.Background(), img, "")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, ok := d.Disk.(*source.File); !ok || d.Info.Format != Raw || d.exp != nil {
		t.Fatalf("a raw image was opened as %T (%+v)", d.Disk, d.Info)
	}
}

func TestCancelStopsTheServer(t *testing.T) {
	overlay := chain(t)
	ctx, cancel := context.WithCancel(context.Background())
	e, err := Serve(ctx, overlay, ServeOptions{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c, err := e.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cancel()
	<-e.exited // the server ends with the context, client or not
}

func TestServeReportsWhyQEMUFailed(t *testing.T) {
	overlay := chain(t)
	os.Remove(filepath.Join(filepath.Dir(overlay), "base.qcow2"))
	_, err := Open(context.Background(), overlay, "")
	if err == nil || !strings.Contains(err.Error(), "base.qcow2") {
		t.Fatalf("opening an overlay whose base is gone: %v", err)
	}
}

func TestFormatOfName(t *testing.T) {
	for name, want := range map[string]string{"a.qcow2": "qcow2", "A.QCOW2": "qcow2", "b.raw": "raw", "c.img": "raw",
		"d.vmdk": "vmdk", "/dev/sdb": "", "e.bin": ""} {
		if got := FormatOfName(name); got != want {
			t.Errorf("FormatOfName(%q) = %q, want %q", name, got, want)
		}
	}
}

// A guest owns the bytes of its raw disk and could write an image header
// into it that makes the host read a file of its choosing (a backing
// file, a vmdk extent). Such a header is never followed unless something
// besides the header says the image is one.
func TestGuestWrittenHeaderIsNotFollowed(t *testing.T) {
	vmtest.RequireBinary(t, "qemu-nbd")
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, bytes.Repeat([]byte("host secret "), 1<<16), 0o600); err != nil {
		t.Fatal(err)
	}
	// The guest's "raw" disk, holding a qcow2 header over the host file.
	evil := filepath.Join(dir, "evil.qcow2")
	vmtest.QEMU(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", evil)
	ctx := context.Background()
	for _, name := range []string{"guest.img", "guest"} {
		disk := filepath.Join(dir, name)
		vmtest.QEMU(t, "cp", evil, disk)
		if d, err := Open(ctx, disk, ""); !errors.Is(err, ErrUnconfirmed) || !strings.Contains(err.Error(), secret) {
			if d != nil {
				d.Close()
			}
			t.Fatalf("opening %s, a raw disk with a qcow2 header over %s: %v", name, secret, err)
		}
		// Said to be raw, by the definition: its bytes, with a note.
		d, err := Open(ctx, disk, Raw)
		if err != nil {
			t.Fatal(err)
		}
		if d.Info.Format != Raw || d.Size() != fileSize(t, disk) || len(d.Notes) != 1 || !strings.Contains(d.Notes[0], "read as raw") {
			t.Fatalf("%s opened as %+v, size %d, notes %q", name, d.Info, d.Size(), d.Notes)
		}
		d.Close()
	}
	// Named .raw: raw.
	named := filepath.Join(dir, "guest.raw")
	vmtest.QEMU(t, "cp", evil, named)
	d, err := Open(ctx, named, "")
	if err != nil || d.Info.Format != Raw {
		t.Fatalf("opening %s: %v %+v", named, err, d)
	}
	d.Close()
	// A vmdk descriptor naming the host file as its extent.
	desc := filepath.Join(dir, "guest2.img")
	text := "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 1536 FLAT \"" + secret + "\" 0\n\nddb.virtualHWVersion = \"4\"\n"
	if err := os.WriteFile(desc, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if d, err := Open(ctx, desc, ""); !errors.Is(err, ErrUnconfirmed) {
		if d != nil {
			d.Close()
		}
		t.Fatalf("opening a vmdk descriptor over the host file: %v", err)
	}
	// Confirmed by its name, an overlay reads its backing file.
	d, err = Open(ctx, evil, "")
	if err != nil || d.Info.Format != QCOW2 || len(d.Info.Backing) != 1 {
		t.Fatalf("opening %s: %v %+v", evil, err, d)
	}
	d.Close()
}

func fileSize(t *testing.T, path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// A block device is read as raw unless the definition says otherwise,
// whatever header it starts with.
func TestBlockDeviceIsRawUnlessStated(t *testing.T) {
	vmtest.RequireBinary(t, "losetup")
	vmtest.RequireBinary(t, "qemu-nbd")
	img := filepath.Join(t.TempDir(), "d.qcow2")
	vmtest.NewQcow2(t, img, "8M", "")
	vmtest.Write(t, img, "qcow2", "0xab", "0", "64k")
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		if vmtest.Required() {
			t.Fatalf("losetup: %v: %s", err, out)
		}
		t.Skipf("no loop device here (%v: %s)", err, out)
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()
	ctx := context.Background()
	d, err := Open(ctx, dev, "")
	if err != nil {
		t.Fatal(err)
	}
	if d.Info.Format != Raw || len(d.Notes) != 1 || !strings.Contains(d.Notes[0], "block device") {
		t.Fatalf("a block device with a qcow2 header opened as %+v, notes %q", d.Info, d.Notes)
	}
	d.Close()
	d, err = Open(ctx, dev, QCOW2)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Info.Format != QCOW2 || d.Size() != 8<<20 {
		t.Fatalf("a block device said to hold qcow2 opened as %+v, size %d", d.Info, d.Size())
	}
	b := make([]byte, 4)
	if _, err := d.ReadAt(b, 0); err != nil || !bytes.Equal(b, []byte{0xab, 0xab, 0xab, 0xab}) {
		t.Fatalf("reading the qcow2 on the block device: %v %x", err, b)
	}
}
