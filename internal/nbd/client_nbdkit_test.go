package nbd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startNbdkit runs nbdkit on a unix socket with the given plugin and
// filter arguments.
func startNbdkit(t *testing.T, args ...string) string {
	t.Helper()
	sock := filepath.Join(shortTempDir(t), "k.sock")
	p := startPeer(t, "nbdkit", append([]string{"--foreground", "--exit-with-parent", "--unix", sock}, args...)...)
	p.waitDial(t, "unix", sock)
	return sock
}

// nbdkit's memory plugin: every command, and block status matching what
// nbdinfo --map says about the same server.
func TestClientNbdkitMemory(t *testing.T) {
	sock := startNbdkit(t, "memory", "16M")
	ctx := testCtx(t)
	uri := sockURI(sock, "")
	d, err := OpenDisk(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := d.Client()
	want := make([]byte, 16<<20)
	blob := want[1<<20 : 1<<20+5<<20]
	newRand(20).Read(blob)
	if err := c.Pwrite(ctx, blob, 1<<20, CmdFlagFUA); err != nil {
		t.Fatal(err)
	}
	newRand(21).Read(want[10<<20 : 10<<20+12345])
	if _, err := c.WriteAt(want[10<<20:10<<20+12345], 10<<20); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteZeroes(ctx, 2<<20, 1<<20, 0); err != nil {
		t.Fatal(err)
	}
	clear(want[2<<20 : 3<<20])
	if err := c.Trim(ctx, 4<<20, 1<<20, 0); err != nil {
		t.Fatal(err)
	}
	clear(want[4<<20 : 5<<20]) // the memory plugin reads trimmed data as zeros
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkRead(t, d, want, 0, 16<<20)
	checkRead(t, d, want, 10<<20+7, 5000)

	exts, err := c.BlockStatus(ctx, ContextBaseAllocation, 0, c.Size())
	if err != nil {
		t.Fatal(err)
	}
	var m []struct {
		Offset, Length int64
		Type           uint32
	}
	out := run(t, "nbdinfo", "--map", "--json", uri)
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("nbdinfo --map: %v\n%s", err, out)
	}
	var fromInfo []Extent
	for _, x := range m {
		fromInfo = append(fromInfo, Extent{Offset: x.Offset, Length: x.Length, Flags: x.Type})
	}
	if fmt.Sprint(exts) != fmt.Sprint(fromInfo) {
		t.Fatalf("BlockStatus = %v\nnbdinfo --map = %v", exts, fromInfo)
	}
	data, ok, err := d.DataExtents(ctx)
	if err != nil || !ok || len(data) == 0 {
		t.Fatalf("DataExtents = %v, %v, %v", data, ok, err)
	}
	for _, e := range data {
		if e.Offset < 1<<20 && e.Offset+e.Length > 0 && e.Offset+e.Length <= 1<<20 {
			t.Fatalf("data extent %v in a range never written", e)
		}
	}
}

// nbdkit's error filter: error replies arrive as *Error with the errno,
// structured and simple, and the connection stays usable; ESHUTDOWN stops
// new requests.
func TestClientNbdkitErrors(t *testing.T) {
	dir := shortTempDir(t)
	injectRead, injectWrite := filepath.Join(dir, "inject-read"), filepath.Join(dir, "inject-write")
	sock := startNbdkit(t, "--filter=error", "memory", "4M",
		"error-pread=EIO", "error-pread-rate=100%", "error-pread-file="+injectRead,
		"error-pwrite=ENOSPC", "error-pwrite-rate=100%", "error-pwrite-file="+injectWrite,
		"error-trim=ESHUTDOWN", "error-trim-rate=100%")
	ctx := testCtx(t)
	for _, mode := range []struct {
		name string
		opts []Option
	}{{"structured", nil}, {"simple", []Option{WithSimpleReplies()}}} {
		t.Run(mode.name, func(t *testing.T) {
			c, err := Dial(ctx, sockURI(sock, ""), mode.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			buf := bytes.Repeat([]byte{7}, 64<<10)
			if _, err := c.WriteAt(buf, 0); err != nil {
				t.Fatal(err)
			}
			touch(t, injectRead)
			_, err = c.ReadAt(make([]byte, 64<<10), 0)
			var ne *Error
			if !errors.As(err, &ne) || ne.Errno != syscall.EIO || !errors.Is(err, syscall.EIO) || ne.Op != "read" {
				t.Fatalf("read with injected EIO: %v", err)
			}
			os.Remove(injectRead)
			got := make([]byte, 64<<10)
			if _, err := c.ReadAt(got, 0); err != nil || !bytes.Equal(got, buf) {
				t.Fatalf("read after the error: %v", err)
			}
			touch(t, injectWrite)
			if _, err := c.WriteAt(buf, 1<<20); !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("write with injected ENOSPC: %v", err)
			}
			os.Remove(injectWrite)
			if err := c.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.Trim(ctx, 0, 4096, 0); !errors.Is(err, syscall.ESHUTDOWN) {
				t.Fatalf("trim with injected ESHUTDOWN: %v", err)
			}
			if err := c.Flush(ctx); !errors.Is(err, syscall.ESHUTDOWN) {
				t.Fatalf("request after ESHUTDOWN: %v, want it refused", err)
			}
		})
	}
}

// nbdkit's blocksize-policy filter rejects any request outside the block
// size constraints, so the client must split and align everything.
func TestClientNbdkitBlockSizes(t *testing.T) {
	sock := startNbdkit(t, "--filter=blocksize-policy", "memory", "8M",
		"blocksize-minimum=4096", "blocksize-preferred=65536", "blocksize-maximum=262144",
		"blocksize-error-policy=error")
	ctx := testCtx(t)
	d, err := OpenDisk(ctx, sockURI(sock, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := d.Client()
	if i := c.Info(); i.MinBlock != 4096 || i.PreferredBlock != 65536 || i.MaxBlock != 262144 {
		t.Fatalf("block sizes %+v", i)
	}
	want := make([]byte, 8<<20)
	newRand(22).Read(want[:3<<20])
	if err := c.Pwrite(ctx, want[:3<<20], 0, 0); err != nil {
		t.Fatal(err)
	}
	checkRead(t, d, want, 0, 8<<20)
	checkRead(t, d, want, 4095, 1<<20+2)
	if err := c.WriteZeroes(ctx, 0, 8<<20, 0); err != nil {
		t.Fatal(err)
	}
	clear(want)
	checkRead(t, d, want, 0, 8<<20)
	if _, _, err := d.DataExtents(ctx); err != nil {
		t.Fatal(err)
	}
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TLS is not implemented: a server that requires it is refused with an
// error that says so, not a hang or a protocol error.
func TestClientRefusesTLSOnlyServer(t *testing.T) {
	psk := filepath.Join(t.TempDir(), "keys.psk")
	if err := os.WriteFile(psk, []byte("lifeboat:"+fmt.Sprintf("%064x", 7)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := startNbdkit(t, "--tls=require", "--tls-psk="+psk, "memory", "1M")
	_, err := Dial(testCtx(t), sockURI(sock, ""))
	var oe *OptionError
	if !errors.As(err, &oe) || oe.Reply != repErrTLSReqd {
		t.Fatalf("dialing a TLS-only server: %v, want a refusal with NBD_REP_ERR_TLS_REQD", err)
	}
}

// nbdkit's delay filter holds every read for far longer than the test:
// a read fails once the stall timeout passes with no reply, and a read
// whose context ends returns at once, while the server still holds it.
func TestClientStalledExport(t *testing.T) {
	sock := startNbdkit(t, "--filter=delay", "memory", "1M", "delay-read=1000")
	ctx := testCtx(t)

	c, err := Dial(ctx, sockURI(sock, ""), WithStallTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.ReadAt(make([]byte, 4096), 0)
	if err == nil || !strings.Contains(err.Error(), "stall timeout") {
		t.Errorf("read of a stalled export = %v, want the stall timeout named", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the stalled read failed after %v, want about the 500ms stall timeout", d)
	}

	d, err := OpenDisk(ctx, sockURI(sock, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(200*time.Millisecond, cancel)
	start = time.Now()
	if _, err := d.ReadAtContext(rctx, make([]byte, 4096), 0); !errors.Is(err, context.Canceled) {
		t.Errorf("read with its context cancelled = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the cancelled read returned after %v", d)
	}
}
