package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/source"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func toPairs(exts []source.Extent) [][2]int64 {
	var out [][2]int64
	for _, e := range exts {
		out = append(out, [2]int64{e.Offset, e.Length})
	}
	return out
}

func checkRead(t *testing.T, r io.ReaderAt, want []byte, off, n int64) {
	t.Helper()
	got := make([]byte, n)
	for i := range got {
		got[i] = 0xEE // holes must be filled with zeros
	}
	k, err := r.ReadAt(got, off)
	if err != nil || int64(k) != n {
		t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", n, off, k, err)
	}
	if !bytes.Equal(got, want[off:off+n]) {
		i := 0
		for i < len(got) && got[i] == want[off+int64(i)] {
			i++
		}
		t.Fatalf("ReadAt(%d bytes at %d): first difference at offset %d", n, off, off+int64(i))
	}
}

// A sparse raw image served by qemu-nbd over a unix socket: contents,
// holes (qemu sends them as hole chunks), unaligned reads and the
// allocation map against qemu-img map.
func TestClientQemuNBDRawUnix(t *testing.T) {
	dir := shortTempDir(t)
	const size = 16 << 20
	data := [][2]int64{{0, 1 << 20}, {5 << 20, 64 << 10}, {9<<20 + 4096, 8192}, {size - 4096, 4096}}
	img, want := sparseImage(t, dir, size, data, 1)
	sock := filepath.Join(dir, "nbd.sock")
	p := startPeer(t, "qemu-nbd", "--persistent", "--shared=8", "--format=raw", "--export-name=disk",
		"--socket="+sock, img)
	p.waitDial(t, "unix", sock)
	ctx := testCtx(t)

	d, err := OpenDisk(ctx, sockURI(sock, "disk"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := d.Client()
	if d.Size() != size {
		t.Fatalf("Size() = %d, want %d", d.Size(), size)
	}
	if !c.Structured() || !c.HasMetaContext(ContextBaseAllocation) {
		t.Fatalf("structured=%v contexts=%v, want structured replies and base:allocation", c.Structured(), c.MetaContexts())
	}
	if c.ReadOnly() {
		t.Fatalf("export is read-only; qemu-nbd serves it writable")
	}
	checkRead(t, d, want, 0, size)
	checkRead(t, d, want, 3<<20, 1<<20) // a hole
	checkRead(t, d, want, 5<<20-100, 64<<10+200)
	checkRead(t, d, want, 1, 7)
	checkRead(t, d, want, size-4097, 4097)

	// Past the end: io.ReaderAt semantics.
	buf := make([]byte, 8192)
	n, err := d.ReadAt(buf, size-4096)
	if n != 4096 || err != io.EOF || !bytes.Equal(buf[:n], want[size-4096:]) {
		t.Fatalf("ReadAt across the end = %d, %v; want 4096, EOF and the last block", n, err)
	}

	exts, ok, err := d.DataExtents(ctx)
	if err != nil || !ok {
		t.Fatalf("DataExtents: ok=%v err=%v", ok, err)
	}
	wantMap := qemuImgDataExtents(t, "-f", "raw", img)
	if fmt.Sprint(toPairs(exts)) != fmt.Sprint(wantMap) {
		t.Fatalf("DataExtents = %v\nqemu-img map = %v", toPairs(exts), wantMap)
	}
	if fmt.Sprint(wantMap) != fmt.Sprint(data) {
		t.Logf("note: qemu-img map %v differs from the written extents %v", wantMap, data)
	}

	// REQ_ONE returns one extent per context.
	m, err := c.BlockStatusOnce(ctx, 0, size, CmdFlagReqOne)
	if err != nil {
		t.Fatal(err)
	}
	if got := m[ContextBaseAllocation]; len(got) != 1 || got[0].Offset != 0 || got[0].Flags&StateHole != 0 {
		t.Fatalf("REQ_ONE block status = %v, want one data extent at 0", got)
	}
	// A dirty bitmap nobody asked for is a clear error.
	if _, err := d.DirtyExtents(ctx, "b0"); err == nil {
		t.Fatal("DirtyExtents without the bitmap's context succeeded")
	}
}

// A qcow2 image served by qemu-nbd on TCP: reads against qemu-img convert,
// the allocation map against qemu-img map, and every write command,
// verified after qemu-nbd has closed the image.
func TestClientQemuNBDQcow2TCP(t *testing.T) {
	dir := shortTempDir(t)
	img := filepath.Join(dir, "disk.qcow2")
	const size = 8 << 20
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, strconv.Itoa(size))
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0xaa 1M 192k", "-c", "write -P 0x33 4M 64k",
		"-c", "write -z 6M 128k", img)
	port := freePort(t)
	p := startPeer(t, "qemu-nbd", "--persistent", "--shared=8", "--format=qcow2", "--export-name=q",
		"--bind=127.0.0.1", "--port="+strconv.Itoa(port), img)
	p.waitDial(t, "tcp", "127.0.0.1:"+strconv.Itoa(port))
	ctx := testCtx(t)
	uri := fmt.Sprintf("nbd://127.0.0.1:%d/q", port)

	want := make([]byte, size)
	for i := 1 << 20; i < 1<<20+192<<10; i++ {
		want[i] = 0xaa
	}
	for i := 4 << 20; i < 4<<20+64<<10; i++ {
		want[i] = 0x33
	}
	d, err := OpenDisk(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	checkRead(t, d, want, 0, size)
	exts, ok, err := d.DataExtents(ctx)
	if err != nil || !ok {
		t.Fatalf("DataExtents: ok=%v err=%v", ok, err)
	}
	wantMap := qemuImgDataExtents(t, "-U", "-f", "qcow2", img)
	if fmt.Sprint(toPairs(exts)) != fmt.Sprint(wantMap) {
		t.Fatalf("DataExtents = %v\nqemu-img map = %v", toPairs(exts), wantMap)
	}

	// Writes of every kind, many in flight.
	c := d.Client()
	r := newRand(7)
	blob := make([]byte, 3<<20+512)
	r.Read(blob)
	if err := c.Pwrite(ctx, blob, 2<<20, CmdFlagFUA); err != nil {
		t.Fatal(err)
	}
	copy(want[2<<20:], blob)
	if _, err := c.WriteAt(blob[:4096], 7<<20); err != nil {
		t.Fatal(err)
	}
	copy(want[7<<20:], blob[:4096])
	if err := c.WriteZeroes(ctx, 1<<20, 64<<10, 0); err != nil {
		t.Fatal(err)
	}
	clear(want[1<<20 : 1<<20+64<<10])
	if err := c.WriteZeroes(ctx, 1<<20+64<<10, 64<<10, CmdFlagNoHole|CmdFlagFUA); err != nil {
		t.Fatal(err)
	}
	clear(want[1<<20+64<<10 : 1<<20+128<<10])
	// A trimmed range reads back as anything: overwrite it afterwards
	// so the comparison stays exact, but the server saw the trim.
	if err := c.Trim(ctx, 4<<20, 64<<10, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Pwrite(ctx, want[4<<20:4<<20+64<<10], 4<<20, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkRead(t, d, want, 0, size)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	p.stop()
	raw := filepath.Join(dir, "out.raw")
	run(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", img, raw)
	got, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("image written through the client differs from what was written")
	}
}

// Reads while the connection dies fail with an error, never hang.
func TestClientServerGoesAway(t *testing.T) {
	dir := shortTempDir(t)
	img, _ := sparseImage(t, dir, 4<<20, [][2]int64{{0, 4 << 20}}, 2)
	sock := filepath.Join(dir, "nbd.sock")
	p := startPeer(t, "qemu-nbd", "--persistent", "--format=raw", "--socket="+sock, img)
	p.waitDial(t, "unix", sock)
	ctx := testCtx(t)
	c, err := Dial(ctx, sockURI(sock, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p.stop()
	buf := make([]byte, 1<<20)
	_, err = c.ReadAt(buf, 0)
	if err == nil {
		t.Fatal("read from a killed server succeeded")
	}
	if errors.Is(err, syscall.EIO) {
		t.Fatalf("a broken connection reported as a server EIO: %v", err)
	}
	t.Logf("read after the server died: %v", err)
}

// A canceled context ends a read at once, leaves the caller's buffer
// alone, and the connection keeps working.
func TestClientCancel(t *testing.T) {
	dir := shortTempDir(t)
	img, want := sparseImage(t, dir, 64<<20, [][2]int64{{0, 64 << 20}}, 50)
	sock := filepath.Join(dir, "nbd.sock")
	p := startPeer(t, "qemu-nbd", "--persistent", "--format=raw", "--socket="+sock, img)
	p.waitDial(t, "unix", sock)
	c, err := Dial(testCtx(t), sockURI(sock, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Pread(ctx, make([]byte, 1<<20), 0, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("read with a canceled context: %v", err)
	}
	// Cancel while 64 MiB of reads are in flight.
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i)*time.Millisecond)
		buf := make([]byte, 64<<20)
		err := c.Pread(ctx, buf, 0, 0)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("read canceled in flight: %v", err)
		}
	}
	checkRead(t, c, want, 0, 64<<20)
}
