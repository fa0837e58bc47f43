package container

import (
	"bytes"
	"context"
	"os"
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
	d, err := Open(ctx, overlay)
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
	d, err := Open(context.Background(), img)
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
	_, err := Open(context.Background(), overlay)
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
