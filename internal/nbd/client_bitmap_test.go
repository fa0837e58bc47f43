package nbd

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// qmpConn is the least QMP needed to set up a test: the project's QMP
// client lives elsewhere.
type qmpConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialQMP(t *testing.T, p *peer, path string) *qmpConn {
	t.Helper()
	p.waitDial(t, "unix", path)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	q := &qmpConn{c: c, r: bufio.NewReader(c)}
	if _, err := q.r.ReadString('\n'); err != nil { // the greeting
		t.Fatalf("reading QMP greeting: %v", err)
	}
	q.do(t, "qmp_capabilities", nil)
	return q
}

// do runs a QMP command and fails the test on an error reply.
func (q *qmpConn) do(t *testing.T, cmd string, args map[string]any) {
	t.Helper()
	msg := map[string]any{"execute": cmd}
	if args != nil {
		msg["arguments"] = args
	}
	b, _ := json.Marshal(msg)
	q.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := q.c.Write(append(b, '\n')); err != nil {
		t.Fatalf("QMP %s: %v", cmd, err)
	}
	for {
		line, err := q.r.ReadString('\n')
		if err != nil {
			t.Fatalf("QMP %s: %v", cmd, err)
		}
		var reply map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &reply); err != nil {
			t.Fatalf("QMP %s: %v in %q", cmd, err, line)
		}
		if _, ok := reply["event"]; ok {
			continue
		}
		if e, ok := reply["error"]; ok {
			t.Fatalf("QMP %s: %s", cmd, e)
		}
		return
	}
}

// A qcow2 node in qemu-storage-daemon with a 64 KiB dirty bitmap: writes
// at known offsets, the bitmap frozen, then exported with it. DirtyExtents
// reports exactly the granules written before the freeze.
func TestClientQemuDirtyBitmap(t *testing.T) {
	dir := shortTempDir(t)
	img := filepath.Join(dir, "d.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "8M")
	qmpSock, nbdSock := filepath.Join(dir, "qmp.sock"), filepath.Join(dir, "nbd.sock")
	p := startPeer(t, "qemu-storage-daemon",
		"--blockdev", "driver=file,filename="+img+",node-name=file0",
		"--blockdev", "driver=qcow2,file=file0,node-name=disk0",
		"--chardev", "socket,path="+qmpSock+",server=on,wait=off,id=mon0",
		"--monitor", "chardev=mon0",
		"--nbd-server", "addr.type=unix,addr.path="+nbdSock)
	q := dialQMP(t, p, qmpSock)
	q.do(t, "block-dirty-bitmap-add", map[string]any{"node": "disk0", "name": "b0", "granularity": 65536})
	q.do(t, "block-export-add", map[string]any{"type": "nbd", "id": "w", "node-name": "disk0", "name": "w", "writable": true})

	// Writes through the daemon, so the bitmap sees them.
	run(t, "qemu-io", "-f", "raw",
		"-c", "write -P 0x61 0 4k", // granule 0
		"-c", "write -P 0x62 1M 64k", // exactly one granule
		"-c", "write -P 0x63 3132k 8k", // 3M+60K..3M+68K: two granules
		"-c", "write -P 0x64 3200k 4k", // 3M+128K: the next granule
		"-c", "write -P 0x65 6292456 1k", // 6M+1000: inside one granule
		sockURI(nbdSock, "w"))
	q.do(t, "block-dirty-bitmap-disable", map[string]any{"node": "disk0", "name": "b0"})
	q.do(t, "block-export-add", map[string]any{"type": "nbd", "id": "r", "node-name": "disk0", "name": "r",
		"writable": false, "bitmaps": []string{"b0"}})
	// After the freeze: must not show up.
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x66 7M 64k", sockURI(nbdSock, "w"))

	ctx := testCtx(t)
	d, err := OpenDisk(ctx, sockURI(nbdSock, "r"), WithMetaContexts(DirtyBitmapContext("b0")))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := d.Client().MetaContexts(); fmt.Sprint(got) != "[base:allocation qemu:dirty-bitmap:b0]" {
		t.Fatalf("negotiated contexts %v", got)
	}
	dirty, err := d.DirtyExtents(ctx, "b0")
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]int64{{0, 64 << 10}, {1 << 20, 64 << 10}, {3 << 20, 192 << 10}, {6 << 20, 64 << 10}}
	if fmt.Sprint(toPairs(dirty)) != fmt.Sprint(want) {
		t.Fatalf("DirtyExtents = %v, want %v", toPairs(dirty), want)
	}
	// The dirty data reads back as written.
	for _, c := range []struct {
		off, n int64
		b      byte
	}{{0, 4 << 10, 0x61}, {1 << 20, 64 << 10, 0x62}, {3132 << 10, 8 << 10, 0x63}, {3200 << 10, 4 << 10, 0x64}, {6292456, 1 << 10, 0x65}} {
		buf := make([]byte, c.n)
		if _, err := d.ReadAt(buf, c.off); err != nil {
			t.Fatal(err)
		}
		if strings.Trim(string(buf), string([]byte{c.b})) != "" {
			t.Fatalf("data at %d does not read back as %#x", c.off, c.b)
		}
	}
	// A bitmap that is not exported is a clear error.
	if _, err := d.DirtyExtents(ctx, "nope"); err == nil || !strings.Contains(err.Error(), "qemu:dirty-bitmap:nope") {
		t.Fatalf("DirtyExtents of an unknown bitmap: %v", err)
	}
	d2, err := OpenDisk(ctx, sockURI(nbdSock, "w"), WithMetaContexts(DirtyBitmapContext("b0")))
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if _, err := d2.DirtyExtents(ctx, "b0"); err == nil {
		t.Fatal("DirtyExtents on an export without the bitmap succeeded")
	}
}
