package nbd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/source"
)

// testServer serves exports on a unix socket for one test.
type testServer struct {
	*Server
	sock   string
	served chan error
}

func startServer(t testing.TB, exports ...Export) *testServer {
	t.Helper()
	s, err := NewServer(exports...)
	if err != nil {
		t.Fatal(err)
	}
	s.Logf = t.Logf
	sock := filepath.Join(shortTempDir(t), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, sock: sock, served: make(chan error, 1)}
	go func() { ts.served <- s.Serve(context.Background(), l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-ts.served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ts
}

func (ts *testServer) uri(export string) string { return sockURI(ts.sock, export) }

func fileExport(t testing.TB, name, path string, readOnly bool) Export {
	t.Helper()
	b, err := OpenFileBackend(path, readOnly)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return Export{Name: name, Backend: b, ReadOnly: readOnly}
}

func emptyImage(t testing.TB, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func fileDataExtents(t testing.TB, path string) [][2]int64 {
	t.Helper()
	d, err := source.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	exts, ok, err := d.DataExtents(context.Background())
	if err != nil || !ok {
		t.Fatalf("DataExtents of %s: ok=%v err=%v", path, ok, err)
	}
	return toPairs(exts)
}

func sameFile(t testing.TB, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ", a, b)
	}
}

var testExtents = [][2]int64{{0, 256 << 10}, {2 << 20, 1 << 20}, {5<<20 + 64<<10, 4096}, {8<<20 - 64<<10, 64 << 10}}

// nbdinfo lists the exports and maps base:allocation as the file's holes.
func TestServerNbdinfo(t *testing.T) {
	dir := shortTempDir(t)
	img, _ := sparseImage(t, dir, 8<<20, testExtents, 3)
	e := fileExport(t, "disk", img, false)
	e.Description = "a test disk"
	ro := fileExport(t, "ro", img, true)
	ts := startServer(t, e, ro)

	var list struct {
		Exports []struct {
			Name        string `json:"export-name"`
			Description string `json:"description"`
			Size        int64  `json:"export-size"`
			ReadOnly    bool   `json:"is_read_only"`
			MinBlock    int64  `json:"block_size_minimum"`
			MaxBlock    int64  `json:"block_size_maximum"`
			Contexts    []string
		} `json:"exports"`
	}
	out := run(t, "nbdinfo", "--list", "--json", ts.uri(""))
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("nbdinfo --list --json: %v\n%s", err, out)
	}
	if len(list.Exports) != 2 || list.Exports[0].Name != "disk" || list.Exports[1].Name != "ro" {
		t.Fatalf("nbdinfo --list: %s", out)
	}
	if x := list.Exports[0]; x.Description != "a test disk" || x.Size != 8<<20 || x.ReadOnly || x.MaxBlock != DefaultMaxPayload {
		t.Fatalf("nbdinfo --list: export disk is %+v", x)
	}
	if !list.Exports[1].ReadOnly {
		t.Fatal("nbdinfo: export ro is not read-only")
	}
	if !strings.Contains(out, ContextBaseAllocation) {
		t.Fatalf("nbdinfo --list does not show base:allocation: %s", out)
	}

	var m []struct {
		Offset, Length int64
		Type           uint32
	}
	out = run(t, "nbdinfo", "--map", "--json", ts.uri("disk"))
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("nbdinfo --map --json: %v\n%s", err, out)
	}
	var data [][2]int64
	for _, x := range m {
		if x.Type&(uint32(StateHole|StateZero)) == 0 {
			data = append(data, [2]int64{x.Offset, x.Length})
		}
	}
	if want := fileDataExtents(t, img); fmt.Sprint(data) != fmt.Sprint(want) {
		t.Fatalf("nbdinfo --map data %v, file has data at %v", data, want)
	}
}

// nbdcopy both ways, compared byte for byte.
func TestServerNbdcopy(t *testing.T) {
	dir := shortTempDir(t)
	img, _ := sparseImage(t, dir, 8<<20, testExtents, 4)
	target := emptyImage(t, dir, "target.raw", 8<<20)
	ts := startServer(t, fileExport(t, "src", img, true), fileExport(t, "dst", target, false))

	out := filepath.Join(dir, "out.raw")
	run(t, "nbdcopy", ts.uri("src"), out)
	sameFile(t, img, out)
	run(t, "nbdcopy", "--flush", img, ts.uri("dst"))
	sameFile(t, img, target)
	// nbdcopy skips holes by zeroing, so the copy stays sparse.
	if got, want := fileDataExtents(t, target), fileDataExtents(t, img); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Logf("target data extents %v, source %v", got, want)
	}
}

// qemu-img convert and compare through nbd+unix URIs.
func TestServerQemuImg(t *testing.T) {
	dir := shortTempDir(t)
	img, _ := sparseImage(t, dir, 8<<20, testExtents, 5)
	target := emptyImage(t, dir, "target.raw", 8<<20)
	ts := startServer(t, fileExport(t, "src", img, true), fileExport(t, "dst", target, false))

	q := filepath.Join(dir, "out.qcow2")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", ts.uri("src"), q)
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", ts.uri("src"), q)
	run(t, "qemu-img", "convert", "-n", "-f", "qcow2", "-O", "raw", q, ts.uri("dst"))
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, ts.uri("dst"))
	sameFile(t, img, target)
}

// qemu-io writes, zeroes, discards and reads with pattern checks.
func TestServerQemuIO(t *testing.T) {
	dir := shortTempDir(t)
	img, want := sparseImage(t, dir, 4<<20, [][2]int64{{0, 4 << 20}}, 6)
	ts := startServer(t, fileExport(t, "d", img, false))
	out := run(t, "qemu-io", "-f", "raw",
		"-c", "write -P 0x5a 0 64k",
		"-c", "read -P 0x5a 0 64k",
		"-c", "write -f -P 0x11 1M 4k",
		"-c", "write -z 128k 64k",
		"-c", "read -P 0 128k 64k",
		"-c", "discard 256k 64k",
		"-c", "write -z -u 512k 128k",
		"-c", "read -P 0 512k 128k",
		"-c", "aio_write -P 0x77 2M 64k",
		"-c", "aio_write -P 0x78 3M 64k",
		"-c", "aio_flush",
		"-c", "read -P 0x77 2M 64k",
		"-c", "read -P 0x78 3M 64k",
		"-c", "flush",
		ts.uri("d"))
	if strings.Contains(out, "failed") || strings.Contains(out, "error") {
		t.Fatalf("qemu-io reported a failure:\n%s", out)
	}
	fill := func(off, n int, b byte) {
		for i := off; i < off+n; i++ {
			want[i] = b
		}
	}
	fill(0, 64<<10, 0x5a)
	// A trimmed range may read back as anything; the file backend punches
	// a hole, so zeros.
	fill(1<<20, 4<<10, 0x11)
	fill(128<<10, 64<<10, 0)
	fill(256<<10, 64<<10, 0)
	fill(512<<10, 128<<10, 0)
	fill(2<<20, 64<<10, 0x77)
	fill(3<<20, 64<<10, 0x78)
	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("file after qemu-io differs from what qemu-io wrote\n%s", out)
	}
	// The discard and the zeroes that may unmap (-u) left holes; plain
	// -z is sent with NO_HOLE and stays allocated.
	exts := fileDataExtents(t, img)
	for _, hole := range [][2]int64{{256 << 10, 64 << 10}, {512 << 10, 128 << 10}} {
		for _, e := range exts {
			if e[0] < hole[0]+hole[1] && hole[0] < e[0]+e[1] {
				t.Errorf("range %v still allocated after zeroing/discard: data %v", hole, exts)
			}
		}
	}
}

// Our client against our server: many concurrent random reads over one
// connection, concurrent writes, block status, in structured and simple
// reply modes.
func TestServerOwnClientStress(t *testing.T) {
	dir := shortTempDir(t)
	const size = 16 << 20
	img, want := sparseImage(t, dir, size, [][2]int64{{0, 3 << 20}, {6 << 20, 2 << 20}, {12<<20 + 4096, 1 << 20}}, 8)
	ts := startServer(t, fileExport(t, "d", img, false))
	eachReplyMode(t, ts.uri("d"), func(t *testing.T, ctx context.Context, c *Client, opts ...Option) {
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		// Writers to the last MiB, which the readers leave alone.
		region := int64(size - 1<<20)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := checkRandomReads(c, want, region, 100, 8, 60); err != nil {
				errs <- err
			}
		}()
		wrote := make([]byte, 1<<20)
		newRand(9).Read(wrote)
		for k := 0; k < 4; k++ {
			wg.Add(1)
			go func(k int) {
				defer wg.Done()
				part := int64(len(wrote) / 4)
				if err := c.Pwrite(ctx, wrote[int64(k)*part:int64(k+1)*part], region+int64(k)*part, CmdFlagFUA); err != nil {
					errs <- err
				}
			}(k)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		got := make([]byte, len(wrote))
		if _, err := c.ReadAt(got, region); err != nil || !bytes.Equal(got, wrote) {
			t.Fatalf("reading back concurrent writes: err=%v equal=%v", err, bytes.Equal(got, wrote))
		}
		copy(want[region:], wrote) // the next mode reads the same file
		if c.Structured() {
			d := NewDisk(c, ts.uri("d"))
			exts, ok, err := d.DataExtents(ctx)
			if err != nil || !ok {
				t.Fatalf("DataExtents: ok=%v err=%v", ok, err)
			}
			if w := fileDataExtents(t, img); fmt.Sprint(toPairs(exts)) != fmt.Sprint(w) {
				t.Fatalf("DataExtents %v, file has %v", toPairs(exts), w)
			}
		}
	})
}

// eachReplyMode runs fn as a subtest in each reply mode, structured
// (with base:allocation) and simple, with a client of uri dialled with
// that mode's options.
func eachReplyMode(t *testing.T, uri string, fn func(t *testing.T, ctx context.Context, c *Client, opts ...Option)) {
	for name, opts := range map[string][]Option{"structured": {WithMetaContexts(ContextBaseAllocation)}, "simple": {WithSimpleReplies()}} {
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t)
			c, err := Dial(ctx, uri, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fn(t, ctx, c, opts...)
		})
	}
}

// checkRandomReads reads, from g goroutines at once, n ranges each of up
// to 1 MiB at random offsets below limit, and compares them with want.
func checkRandomReads(c *Client, want []byte, limit, seed int64, g, n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, g)
	for k := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := newRand(seed + int64(k))
			for range n {
				n := r.IntN(1<<20) + 1
				off := r.Int64N(limit - int64(n))
				buf := make([]byte, n)
				if _, err := c.ReadAt(buf, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf, want[off:off+int64(n)]) {
					errs <- fmt.Errorf("read of %d at %d differs", n, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// Block size constraints: big reads are split, unaligned reads widened,
// unaligned writes refused before they are sent.
func TestServerBlockSizes(t *testing.T) {
	dir := shortTempDir(t)
	img, want := sparseImage(t, dir, 4<<20, [][2]int64{{0, 4 << 20}}, 10)
	e := fileExport(t, "d", img, false)
	e.MinBlockSize, e.PreferredBlockSize, e.MaxBlockSize = 512, 4096, 64<<10
	ts := startServer(t, e)
	ctx := testCtx(t)
	c, err := Dial(ctx, ts.uri("d"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if i := c.Info(); i.MinBlock != 512 || i.MaxBlock != 64<<10 {
		t.Fatalf("block sizes %+v", i)
	}
	checkRead(t, c, want, 0, 4<<20)
	checkRead(t, c, want, 1000, 300<<10+7)
	if err := c.Pwrite(ctx, make([]byte, 100), 512, 0); err == nil {
		t.Fatal("unaligned write accepted")
	}
	if err := c.Pwrite(ctx, want[:512<<10], 1<<20, 0); err != nil {
		t.Fatal(err)
	}
	copy(want[1<<20:], want[:512<<10])
	checkRead(t, c, want, 0, 4<<20)
}

// The server's error replies reach the client as typed errors.
func TestServerErrorReplies(t *testing.T) {
	dir := shortTempDir(t)
	img, _ := sparseImage(t, dir, 1<<20, [][2]int64{{0, 1 << 20}}, 11)
	ts := startServer(t, fileExport(t, "ro", img, true))
	ctx := testCtx(t)
	for _, opts := range [][]Option{nil, {WithSimpleReplies()}} {
		c, err := Dial(ctx, ts.uri("ro"), opts...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteAt(make([]byte, 512), 0); !errors.Is(err, syscall.EROFS) {
			t.Fatalf("write to a read-only export: %v", err)
		}
		// Pretend the export is writable to see what the server says.
		c.info.Flags &^= FlagReadOnly
		_, err = c.WriteAt(make([]byte, 512), 0)
		var ne *Error
		if !errors.As(err, &ne) || ne.Errno != syscall.EPERM {
			t.Fatalf("write to a read-only export: %v, want an EPERM reply", err)
		}
		if c.Structured() && !strings.Contains(ne.Message, "read-only") {
			t.Fatalf("error reply without the server's message: %v", err)
		}
		// The connection is still usable after an error reply.
		if _, err := c.ReadAt(make([]byte, 4096), 0); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	// Unknown exports are refused in the handshake.
	_, err := Dial(ctx, ts.uri("nope"))
	var oe *OptionError
	if !errors.As(err, &oe) || oe.Reply != repErrUnknown {
		t.Fatalf("dialing an unknown export: %v", err)
	}
}

// gatedBackend holds reads until released, to catch them in flight.
type gatedBackend struct {
	*FileBackend
	arrived chan struct{}
	release chan struct{}
}

func (g *gatedBackend) ReadAt(p []byte, off int64) (int, error) {
	g.arrived <- struct{}{}
	<-g.release
	return g.FileBackend.ReadAt(p, off)
}

// Shutdown (here by canceling Serve's context) lets requests in flight
// finish and their replies go out, then refuses new connections.
func TestServerShutdown(t *testing.T) {
	dir := shortTempDir(t)
	img, want := sparseImage(t, dir, 8<<20, [][2]int64{{0, 8 << 20}}, 12)
	fb, err := OpenFileBackend(img, true)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	const n = 8
	g := &gatedBackend{FileBackend: fb, arrived: make(chan struct{}, n), release: make(chan struct{})}
	s, err := NewServer(Export{Name: "d", Backend: g, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { served <- s.Serve(ctx, l) }()
	c, err := Dial(testCtx(t), sockURI(sock, "d"), WithSimpleReplies())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	results := make([]error, n)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			buf := make([]byte, 512<<10)
			off := int64(i) * 512 << 10
			_, results[i] = c.ReadAt(buf, off)
			if results[i] == nil && !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
				results[i] = fmt.Errorf("read at %d differs", off)
			}
		}(i)
	}
	for i := 0; i < n; i++ {
		<-g.arrived
	}
	cancel() // all n reads are in the backend now
	time.Sleep(50 * time.Millisecond)
	if _, err := Dial(testCtx(t), sockURI(sock, "d")); err == nil {
		t.Fatal("dialing a server that is shutting down succeeded")
	}
	close(g.release)
	wg.Wait()
	for _, err := range results {
		if err != nil {
			t.Fatalf("read in flight during shutdown: %v", err)
		}
	}
	select {
	case err := <-served:
		if !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after shutdown")
	}
	// The drained connection is closed: the next request fails.
	if _, err := c.ReadAt(make([]byte, 512), 0); err == nil {
		t.Fatal("read after shutdown succeeded")
	}
}
