package qmp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"lifeboat/internal/qmp"
)

// machineState is what a fleecing session must leave as it found it.
type machineState struct {
	Nodes   []string // name driver
	Bitmaps []string // node/name recording persistent
	Jobs    []string
	Exports []string
}

func stateOf(t *testing.T, m *qmp.Monitor) machineState {
	t.Helper()
	ctx := testCtx(t)
	var s machineState
	nodes, err := m.QueryNamedBlockNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		s.Nodes = append(s.Nodes, n.NodeName+" "+n.Driver)
		for _, b := range n.DirtyBitmaps {
			s.Bitmaps = append(s.Bitmaps, fmt.Sprintf("%s/%s recording=%v persistent=%v", n.NodeName, b.Name, b.Recording, b.Persistent))
		}
	}
	jobs, err := m.QueryJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		s.Jobs = append(s.Jobs, j.ID)
	}
	exps, err := m.QueryBlockExports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range exps {
		s.Exports = append(s.Exports, e.ID+" "+e.NodeName)
	}
	sort.Strings(s.Nodes)
	sort.Strings(s.Bitmaps)
	sort.Strings(s.Exports)
	return s
}

// fleeceRig is a daemon with two disks, each exported writable over NBD so
// the test can write "guest" data while the daemon holds the image locks.
type fleeceRig struct {
	d    *daemon
	m    *qmp.Monitor
	nbd  qmp.SocketAddress
	tmp  string // overlay directory
	size map[string]int64
}

func newFleeceRig(t *testing.T) *fleeceRig {
	need(t, "qemu-io", "qemu-img", "nbdinfo")
	d := startDaemon(t, disk{"d0", 16 << 20}, disk{"d1", 8 << 20})
	r := &fleeceRig{d: d, m: d.dial(), nbd: qmp.UnixSocket(d.dir + "/nbd.sock"), tmp: filepath.Join(d.dir, "fleece"),
		size: map[string]int64{"d0": 16 << 20, "d1": 8 << 20}}
	if err := os.Mkdir(r.tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if err := r.m.NBDServerStart(ctx, r.nbd); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"d0", "d1"} {
		if err := r.m.BlockExportAdd(ctx, qmp.ExportOptions{ID: "w-" + n, NodeName: n, Name: "w-" + n, Writable: true}); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// write writes a 64 KiB pattern at off on disk node, as the guest would.
func (r *fleeceRig) write(t *testing.T, node string, off int64, pattern byte) {
	t.Helper()
	qemuIO(t, r.nbd.URI("w-"+node), fmt.Sprintf("write -P 0x%02x %d 64k", pattern, off))
}

// image is the expected content of a disk: 64 KiB patterns at offsets.
func image(size int64, writes map[int64]byte) []byte {
	b := make([]byte, size)
	for off, p := range writes {
		copy(b[off:off+64<<10], bytes.Repeat([]byte{p}, 64<<10))
	}
	return b
}

func sameImage(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	for off := 0; off < len(want); off += 64 << 10 {
		if !bytes.Equal(got[off:off+64<<10], want[off:off+64<<10]) {
			t.Fatalf("%s: 64K block at %d holds 0x%02x..., want 0x%02x...", what, off, got[off], want[off])
		}
	}
}

func (r *fleeceRig) bitmap(t *testing.T, node, name string) (qmp.DirtyBitmap, bool) {
	t.Helper()
	n, err := r.m.Node(testCtx(t), node)
	if err != nil {
		t.Fatal(err)
	}
	return n.Bitmap(name)
}

// TestFleeceRecipe proves the recipe end to end: a full point, then an
// incremental one whose exported bitmap is exactly the changes between the
// two instants, the export showing each instant's data while the guest
// writes on, and the machine left as it was after each session.
func TestFleeceRecipe(t *testing.T) {
	r := newFleeceRig(t)
	ctx := testCtx(t)
	const K = 64 << 10
	before := stateOf(t, r.m)

	// Point 1: full (no previous bitmap).
	r.write(t, "d0", 0, 0xa1)
	r.write(t, "d1", 1<<20, 0xa2)
	s1, err := qmp.Fleece(ctx, r.m, []qmp.FleeceDisk{
		{Node: "d0", Export: "p1-d0", NewBitmap: "lifeboat-1", Granularity: K},
		{Node: "d1", Export: "p1-d1", NewBitmap: "lifeboat-1", Granularity: K},
	}, qmp.FleeceOptions{Dir: r.tmp, Server: r.nbd})
	if err != nil {
		t.Fatal(err)
	}
	if d := s1.Disks[0]; d.Size != 16<<20 || !d.Persistent || d.URI != r.nbd.URI("p1-d0") ||
		!strings.HasPrefix(d.Overlay, qmp.FleeceNodePrefix) || filepath.Dir(d.OverlayFile) != r.tmp {
		t.Fatalf("fleeced disk = %+v", d)
	}
	if disks, err := r.m.Disks(ctx); err != nil || len(disks) != 2 || disks[0].Node != "d0" || disks[1].Node != "d1" {
		t.Fatalf("Disks during fleecing = %+v, %v", disks, err)
	}
	// The guest writes on after the instant.
	r.write(t, "d0", 0, 0xb1)     // overwrite
	r.write(t, "d0", 2<<20, 0xb2) // new
	r.write(t, "d1", 1<<20, 0xb3)
	sameImage(t, "point 1 d0", readExport(t, s1.Disks[0].URI), image(16<<20, map[int64]byte{0: 0xa1}))
	sameImage(t, "point 1 d1", readExport(t, s1.Disks[1].URI), image(8<<20, map[int64]byte{1 << 20: 0xa2}))
	// The live disk has the new data.
	sameImage(t, "live d0", readExport(t, r.nbd.URI("w-d0")), image(16<<20, map[int64]byte{0: 0xb1, 2 << 20: 0xb2}))
	if err := s1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(ctx); err != nil {
		t.Fatalf("Close after Commit: %v", err)
	}
	after := stateOf(t, r.m)
	want := before
	want.Bitmaps = []string{"d0/lifeboat-1 recording=true persistent=true", "d1/lifeboat-1 recording=true persistent=true"}
	if !reflect.DeepEqual(after, want) {
		t.Fatalf("after point 1:\n got %+v\nwant %+v", after, want)
	}
	if b, _ := r.bitmap(t, "d0", "lifeboat-1"); b.Count != 2*K || b.Granularity != K {
		t.Fatalf("lifeboat-1 on d0 = %+v, want the 2 blocks written after the instant", b)
	}
	if ents, _ := os.ReadDir(r.tmp); len(ents) != 0 {
		t.Fatalf("overlay files left: %v", ents)
	}

	// Point 2: incremental from lifeboat-1.
	r.write(t, "d0", 4<<20, 0xc1)
	s2, err := qmp.Fleece(ctx, r.m, []qmp.FleeceDisk{
		{Node: "d0", Export: "p2-d0", NewBitmap: "lifeboat-2", PrevBitmap: "lifeboat-1", Granularity: K},
		{Node: "d1", Export: "p2-d1", NewBitmap: "lifeboat-2", PrevBitmap: "lifeboat-1", Granularity: K},
	}, qmp.FleeceOptions{Dir: r.tmp, Server: r.nbd})
	if err != nil {
		t.Fatal(err)
	}
	r.write(t, "d0", 4<<20, 0xd1)
	r.write(t, "d0", 6<<20, 0xd2)
	r.write(t, "d1", 3<<20, 0xd3)
	sameImage(t, "point 2 d0", readExport(t, s2.Disks[0].URI),
		image(16<<20, map[int64]byte{0: 0xb1, 2 << 20: 0xb2, 4 << 20: 0xc1}))
	sameImage(t, "point 2 d1", readExport(t, s2.Disks[1].URI), image(8<<20, map[int64]byte{1 << 20: 0xb3}))
	// The frozen bitmap holds exactly the writes between the two instants.
	if got, want := dirtyExtents(t, s2.Disks[0].URI, "lifeboat-1"), [][2]int64{{0, K}, {2 << 20, K}, {4 << 20, K}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("dirty extents of lifeboat-1 on d0 = %v, want %v", got, want)
	}
	if got, want := dirtyExtents(t, s2.Disks[1].URI, "lifeboat-1"), [][2]int64{{1 << 20, K}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("dirty extents of lifeboat-1 on d1 = %v, want %v", got, want)
	}
	if b, _ := r.bitmap(t, "d0", "lifeboat-1"); b.Recording || !b.Busy {
		t.Fatalf("lifeboat-1 during point 2 = %+v, want frozen and busy (exported)", b)
	}
	if err := s2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	want.Bitmaps = []string{"d0/lifeboat-2 recording=true persistent=true", "d1/lifeboat-2 recording=true persistent=true"}
	if after := stateOf(t, r.m); !reflect.DeepEqual(after, want) {
		t.Fatalf("after point 2:\n got %+v\nwant %+v", after, want)
	}

	// Point 3 fails (Close without Commit): lifeboat-2 must again cover
	// everything since point 2, including writes during the failed session.
	s3, err := qmp.Fleece(ctx, r.m, []qmp.FleeceDisk{
		{Node: "d0", NewBitmap: "lifeboat-3", PrevBitmap: "lifeboat-2", Granularity: K},
	}, qmp.FleeceOptions{Dir: r.tmp, Server: r.nbd})
	if err != nil {
		t.Fatal(err)
	}
	if s3.Disks[0].Export != "d0" {
		t.Fatalf("default export name = %q, want the node name", s3.Disks[0].Export)
	}
	r.write(t, "d0", 8<<20, 0xe1)
	cancelled, cancel := context.WithCancel(ctx)
	cancel() // teardown must not depend on the caller's context
	if err := s3.Close(cancelled); err != nil {
		t.Fatal(err)
	}
	if after := stateOf(t, r.m); !reflect.DeepEqual(after, want) {
		t.Fatalf("after failed point 3:\n got %+v\nwant %+v", after, want)
	}
	if b, _ := r.bitmap(t, "d0", "lifeboat-2"); b.Count != 3*K {
		t.Fatalf("lifeboat-2 after rollback = %+v, want 3 blocks (4M, 6M before; 8M during the failed session)", b)
	}
	if err := s3.Commit(ctx); err == nil {
		t.Fatal("Commit after Close succeeded")
	}
}

// Fleece starts and stops its own NBD server when asked, and a failure
// half-way leaves nothing behind.
func TestFleeceOwnServerAndFailures(t *testing.T) {
	need(t, "nbdinfo")
	d := startDaemon(t, disk{"d0", 16 << 20})
	m := d.dial()
	ctx := testCtx(t)
	tmp := d.dir
	srv := qmp.UnixSocket(d.dir + "/own.sock")
	before := stateOf(t, m)

	s, err := qmp.Fleece(ctx, m, []qmp.FleeceDisk{{Node: "d0", NewBitmap: "n"}},
		qmp.FleeceOptions{Dir: tmp, Server: srv, StartServer: true})
	if err != nil {
		t.Fatal(err)
	}
	if info := run(t, "nbdinfo", s.Disks[0].URI); !strings.Contains(info, "export-size: 16777216") || !strings.Contains(info, "is_read_only: true") {
		t.Fatalf("nbdinfo of the fleecing export:\n%s", info)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.NBDServerStop(ctx); err == nil {
		t.Fatal("NBD server still running after Close")
	}
	if after := stateOf(t, m); !reflect.DeepEqual(after, before) {
		t.Fatalf("after Close:\n got %+v\nwant %+v", after, before)
	}

	// Failures before anything changed.
	cases := []struct {
		name  string
		disks []qmp.FleeceDisk
		want  error
		text  string
	}{
		{"missing previous bitmap", []qmp.FleeceDisk{{Node: "d0", NewBitmap: "n", PrevBitmap: "gone"}}, qmp.ErrBitmapMissing, "gone"},
		{"missing node", []qmp.FleeceDisk{{Node: "nope", NewBitmap: "n"}}, nil, "nope"},
	}
	for _, c := range cases {
		_, err := qmp.Fleece(ctx, m, c.disks, qmp.FleeceOptions{Dir: tmp, Server: srv, StartServer: true})
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: err = %v", c.name, err)
		}
	}
	// A failure half-way (export name taken, after the transaction ran) is
	// undone: the new bitmap is removed, the overlays are gone.
	if err := m.NBDServerStart(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if err := m.BlockExportAdd(ctx, qmp.ExportOptions{ID: "taken", NodeName: "d0", Name: "taken"}); err != nil {
		t.Fatal(err)
	}
	mid := stateOf(t, m)
	_, err = qmp.Fleece(ctx, m, []qmp.FleeceDisk{{Node: "d0", NewBitmap: "n", Export: "taken"}},
		qmp.FleeceOptions{Dir: tmp, Server: srv})
	if err == nil || !strings.Contains(err.Error(), "taken") {
		t.Fatalf("fleecing onto a taken export name: %v", err)
	}
	if after := stateOf(t, m); !reflect.DeepEqual(after, mid) {
		t.Fatalf("after a failed Fleece:\n got %+v\nwant %+v", after, mid)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, qmp.FleeceNodePrefix+"*")); len(left) != 0 {
		t.Fatalf("overlay files left after a failed Fleece: %v", left)
	}
	// A cancelled context fails before doing anything.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := qmp.Fleece(cancelled, m, []qmp.FleeceDisk{{Node: "d0", NewBitmap: "n"}},
		qmp.FleeceOptions{Dir: tmp, Server: srv}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Fleece with a cancelled context: %v", err)
	}
	if after := stateOf(t, m); !reflect.DeepEqual(after, mid) {
		t.Fatalf("after a cancelled Fleece:\n got %+v\nwant %+v", after, mid)
	}
}

// When the fleecing job dies (here: cancelled behind the session's back, as
// a full overlay disk would end it), Commit refuses the point.
func TestFleeceCommitDetectsBrokenJob(t *testing.T) {
	d := startDaemon(t, disk{"d0", 16 << 20})
	m := d.dial()
	ctx := testCtx(t)
	srv := qmp.UnixSocket(d.dir + "/nbd.sock")
	if err := m.Transaction(ctx, qmp.BitmapAdd("d0", "prev", qmp.BitmapAddOptions{Persistent: true})); err != nil {
		t.Fatal(err)
	}
	before := stateOf(t, m)
	s, err := qmp.Fleece(ctx, m, []qmp.FleeceDisk{{Node: "d0", NewBitmap: "next", PrevBitmap: "prev"}},
		qmp.FleeceOptions{Dir: d.dir, Server: srv, StartServer: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.BlockJobCancel(ctx, s.Disks[0].JobID, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx); !errors.Is(err, qmp.ErrFleeceBroken) {
		t.Fatalf("Commit after the job died: %v, want ErrFleeceBroken", err)
	}
	// Rolled back: prev still there and recording, next gone.
	if after := stateOf(t, m); !reflect.DeepEqual(after, before) {
		t.Fatalf("after a broken session:\n got %+v\nwant %+v", after, before)
	}
}

// The process running a session dies (its connection drops without
// teardown): QEMU keeps the export, job and overlay until the next agent
// removes them with RemoveStaleFleecing.
func TestRemoveStaleFleecing(t *testing.T) {
	d := startDaemon(t, disk{"d0", 16 << 20}, disk{"d1", 8 << 20})
	m := d.dial()
	ctx := testCtx(t)
	srv := qmp.UnixSocket(d.dir + "/nbd.sock")
	if err := m.NBDServerStart(ctx, srv); err != nil {
		t.Fatal(err)
	}
	before := stateOf(t, m)
	tmp := filepath.Join(d.dir, "fleece")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := qmp.Fleece(ctx, m, []qmp.FleeceDisk{{Node: "d0", NewBitmap: "n"}, {Node: "d1", NewBitmap: "n"}},
		qmp.FleeceOptions{Dir: tmp, Server: srv})
	if err != nil {
		t.Fatal(err)
	}
	m.Close() // the agent "dies": no Commit, no Close

	m = d.dial()
	if st := stateOf(t, m); len(st.Jobs) != 2 || len(st.Exports) != 2 {
		t.Fatalf("QEMU after the agent died: %+v, want the session's jobs and exports still there", st)
	}
	if err := qmp.RemoveStaleFleecing(ctx, m, tmp); err != nil {
		t.Fatal(err)
	}
	want := before
	want.Bitmaps = []string{"d0/n recording=true persistent=true", "d1/n recording=true persistent=true"}
	if after := stateOf(t, m); !reflect.DeepEqual(after, want) {
		t.Fatalf("after RemoveStaleFleecing:\n got %+v\nwant %+v", after, want)
	}
	if _, err := os.Stat(s.Disks[0].OverlayFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("overlay file %s: %v, want removed", s.Disks[0].OverlayFile, err)
	}
	if err := qmp.RemoveStaleFleecing(ctx, m, tmp); err != nil {
		t.Fatalf("second run: %v", err)
	}
}
