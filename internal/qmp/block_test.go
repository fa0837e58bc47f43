package qmp_test

import (
	"reflect"
	"strings"
	"testing"

	"lifeboat/internal/qmp"
)

func TestDisksOfStorageDaemon(t *testing.T) {
	d := startDaemon(t, disk{"d0", 16 << 20}, disk{"d1", 8 << 20})
	m := d.dial()
	ctx := testCtx(t)

	devs, err := m.QueryBlock(ctx)
	if err != nil || len(devs) != 0 {
		t.Fatalf("query-block on a storage daemon = %v, %v; want no devices", devs, err)
	}
	nodes, err := m.QueryNamedBlockNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]qmp.BlockNode{}
	for _, n := range nodes {
		byName[n.NodeName] = n
	}
	if n := byName["d0"]; n.Driver != "qcow2" || n.Image.VirtualSize != 16<<20 || n.File != d.image("d0") || n.Image.Format != "qcow2" {
		t.Fatalf("node d0 = %+v", n)
	}
	if n := byName["d1-file"]; n.Driver != "file" {
		t.Fatalf("node d1-file = %+v", n)
	}

	want := []qmp.Disk{
		{Node: "d0", Driver: "qcow2", Filename: d.image("d0"), Size: 16 << 20},
		{Node: "d1", Driver: "qcow2", Filename: d.image("d1"), Size: 8 << 20},
	}
	check := func(when string) {
		t.Helper()
		disks, err := m.Disks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(disks) != len(want) {
			t.Fatalf("%s: Disks = %+v, want %+v", when, disks, want)
		}
		for i := range want {
			g := disks[i]
			g.Bitmaps = nil
			if !reflect.DeepEqual(g, want[i]) {
				t.Fatalf("%s: disk %d = %+v, want %+v", when, i, g, want[i])
			}
		}
	}
	check("plain daemon")

	// Exporting a disk and running a backup job on it (which inserts an
	// implicit copy-before-write filter above it) changes nothing.
	if err := m.NBDServerStart(ctx, qmp.UnixSocket(d.dir+"/nbd.sock")); err != nil {
		t.Fatal(err)
	}
	if err := m.BlockExportAdd(ctx, qmp.ExportOptions{ID: "w0", NodeName: "d0", Name: "w0", Writable: true}); err != nil {
		t.Fatal(err)
	}
	addScratchNode(t, m, d.dir, qmp.FleeceNodePrefix+"t0", 16<<20)
	if err := m.Transaction(ctx, qmp.BlockdevBackup(qmp.BackupOptions{
		JobID: "j", Device: "d0", Target: qmp.FleeceNodePrefix + "t0", Sync: "none",
	})); err != nil {
		t.Fatal(err)
	}
	check("exported, with a backup job")
	if err := m.BlockJobCancel(ctx, "j", false); err != nil {
		t.Fatal(err)
	}
}

func TestBitmapActions(t *testing.T) {
	d := startDaemon(t, disk{"d0", 16 << 20})
	m := d.dial()
	ctx := testCtx(t)
	bitmap := func(name string) (qmp.DirtyBitmap, bool) {
		t.Helper()
		n, err := m.Node(ctx, "d0")
		if err != nil {
			t.Fatal(err)
		}
		return n.Bitmap(name)
	}

	if err := m.Transaction(ctx,
		qmp.BitmapAdd("d0", "a", qmp.BitmapAddOptions{Persistent: true, Granularity: 128 << 10}),
		qmp.BitmapAdd("d0", "b", qmp.BitmapAddOptions{Disabled: true}),
	); err != nil {
		t.Fatal(err)
	}
	a, _ := bitmap("a")
	if !a.Recording || !a.Persistent || a.Granularity != 128<<10 || a.Inconsistent || a.Busy || a.Count != 0 {
		t.Fatalf("bitmap a = %+v", a)
	}
	b, _ := bitmap("b")
	if b.Recording || b.Persistent || b.Granularity != 64<<10 {
		t.Fatalf("bitmap b = %+v", b)
	}

	// Write through an export so bitmap a records it.
	sock := qmp.UnixSocket(d.dir + "/nbd.sock")
	if err := m.NBDServerStart(ctx, sock); err != nil {
		t.Fatal(err)
	}
	if err := m.BlockExportAdd(ctx, qmp.ExportOptions{ID: "w0", NodeName: "d0", Name: "w0", Writable: true}); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, sock.URI("w0"), "write -P 0x11 0 4k", "write -P 0x22 1M 256k")
	if a, _ := bitmap("a"); a.Count != 128<<10+256<<10 {
		t.Fatalf("bitmap a after writes = %+v, want count %d", a, 128<<10+256<<10)
	}
	if b, _ := bitmap("b"); b.Count != 0 {
		t.Fatalf("disabled bitmap b recorded writes: %+v", b)
	}

	// merge a into b, disable a, enable b: one atomic step.
	if err := m.Transaction(ctx, qmp.BitmapMerge("d0", "b", "a"), qmp.BitmapDisable("d0", "a"), qmp.BitmapEnable("d0", "b")); err != nil {
		t.Fatal(err)
	}
	// a's coarser 128K bits cover whole 128K ranges in b too.
	if b, _ := bitmap("b"); !b.Recording || b.Count != 128<<10+256<<10 {
		t.Fatalf("bitmap b after merge = %+v, want recording with count %d", b, 128<<10+256<<10)
	}
	if a, _ := bitmap("a"); a.Recording {
		t.Fatalf("bitmap a still recording: %+v", a)
	}

	// A failing action undoes the whole transaction.
	err := m.Transaction(ctx, qmp.BitmapClear("d0", "b"), qmp.BitmapRemove("d0", "no-such"))
	if !qmp.IsClass(err, "GenericError") || !strings.Contains(err.Error(), "block-dirty-bitmap-remove") {
		t.Fatalf("transaction with a missing bitmap: %v", err)
	}
	if b, _ := bitmap("b"); b.Count == 0 {
		t.Fatal("failed transaction cleared bitmap b")
	}
	if err := m.Transaction(ctx, qmp.BitmapClear("d0", "b")); err != nil {
		t.Fatal(err)
	}
	if b, _ := bitmap("b"); b.Count != 0 {
		t.Fatalf("cleared bitmap b = %+v", b)
	}

	// QEMU 7.2 refuses grouped completion with bitmap actions, so the
	// fleecing transaction cannot use it.
	err = m.GroupedTransaction(ctx, qmp.BitmapAdd("d0", "c", qmp.BitmapAddOptions{}))
	if !qmp.IsClass(err, "GenericError") || !strings.Contains(err.Error(), "completion-mode") {
		t.Fatalf("grouped transaction with a bitmap action: %v", err)
	}
	// Grouped completion works for jobs alone.
	addScratchNode(t, m, d.dir, "t0", 16<<20)
	if err := m.GroupedTransaction(ctx, qmp.BlockdevBackup(qmp.BackupOptions{JobID: "j", Device: "d0", Target: "t0", Sync: "none"})); err != nil {
		t.Fatal(err)
	}
	if err := m.BlockJobCancel(ctx, "j", false); err != nil {
		t.Fatal(err)
	}

	if err := m.Transaction(ctx, qmp.BitmapRemove("d0", "a"), qmp.BitmapRemove("d0", "b")); err != nil {
		t.Fatal(err)
	}
	if n, _ := m.Node(ctx, "d0"); len(n.DirtyBitmaps) != 0 {
		t.Fatalf("bitmaps left: %+v", n.DirtyBitmaps)
	}
}

func TestExportsAndJobs(t *testing.T) {
	need(t, "nbdinfo")
	d := startDaemon(t, disk{"d0", 16 << 20})
	m := d.dial()
	ctx := testCtx(t)
	sock := qmp.UnixSocket(d.dir + "/nbd.sock")

	if err := m.BlockExportAdd(ctx, qmp.ExportOptions{ID: "e", NodeName: "d0", Name: "e"}); err == nil {
		t.Fatal("export without an NBD server succeeded")
	}
	if err := m.NBDServerStart(ctx, sock); err != nil {
		t.Fatal(err)
	}
	if err := m.NBDServerStart(ctx, sock); err == nil {
		t.Fatal("second NBD server start succeeded")
	}
	if err := m.Transaction(ctx, qmp.BitmapAdd("d0", "bm", qmp.BitmapAddOptions{})); err != nil {
		t.Fatal(err)
	}
	// An enabled bitmap cannot go on a read-only export.
	err := m.BlockExportAdd(ctx, qmp.ExportOptions{ID: "e", NodeName: "d0", Name: "e", Bitmaps: []string{"bm"}})
	if !qmp.IsClass(err, "GenericError") || !strings.Contains(err.Error(), "incompatible with readonly export") {
		t.Fatalf("read-only export with an enabled bitmap: %v", err)
	}
	if err := m.Transaction(ctx, qmp.BitmapDisable("d0", "bm")); err != nil {
		t.Fatal(err)
	}
	if err := m.BlockExportAdd(ctx, qmp.ExportOptions{
		ID: "e", NodeName: "d0", Name: "e", Bitmaps: []string{"bm"}, AllocationDepth: true, Description: "test",
	}); err != nil {
		t.Fatal(err)
	}
	info := run(t, "nbdinfo", sock.URI("e"))
	for _, want := range []string{"qemu:dirty-bitmap:bm", "qemu:allocation-depth", "is_read_only: true", "export-size: 16777216"} {
		if !strings.Contains(info, want) {
			t.Errorf("nbdinfo does not show %q:\n%s", want, info)
		}
	}
	exps, err := m.QueryBlockExports(ctx)
	if err != nil || len(exps) != 1 || exps[0].ID != "e" || exps[0].NodeName != "d0" || exps[0].Type != "nbd" {
		t.Fatalf("query-block-exports = %+v, %v", exps, err)
	}
	if err := m.BlockExportDel(ctx, "e", true); err != nil {
		t.Fatal(err)
	}
	if exps, err := m.QueryBlockExports(ctx); err != nil || len(exps) != 0 {
		t.Fatalf("after delete: %+v, %v", exps, err)
	}
	if err := m.BlockExportDel(ctx, "e", false); err == nil {
		t.Fatal("deleting a missing export succeeded")
	}
	if err := m.NBDServerStop(ctx); err != nil {
		t.Fatal(err)
	}

	// Jobs: a backup job with auto-dismiss off stays concluded after cancel.
	addScratchNode(t, m, d.dir, "t0", 16<<20)
	no := false
	if err := m.Transaction(ctx, qmp.BlockdevBackup(qmp.BackupOptions{
		JobID: "j", Device: "d0", Target: "t0", Sync: "none", AutoDismiss: &no,
	})); err != nil {
		t.Fatal(err)
	}
	if err := m.BlockJobCancel(ctx, "j", true); err != nil {
		t.Fatal(err)
	}
	jobs, err := m.QueryJobs(ctx)
	if err != nil || len(jobs) != 1 || jobs[0].ID != "j" || jobs[0].Status != "concluded" {
		t.Fatalf("query-jobs after cancel = %+v, %v", jobs, err)
	}
	if err := m.JobDismiss(ctx, "j"); err != nil {
		t.Fatal(err)
	}
	if jobs, err := m.QueryJobs(ctx); err != nil || len(jobs) != 0 {
		t.Fatalf("query-jobs after dismiss = %+v, %v", jobs, err)
	}
	if err := m.BlockJobCancel(ctx, "j", false); !qmp.IsClass(err, "DeviceNotActive") {
		t.Fatalf("cancelling a missing job: %v", err)
	}
	if err := m.BlockdevDel(ctx, "t0"); err != nil {
		t.Fatal(err)
	}

	// blockdev-create reports the job's own failure.
	err = m.BlockdevCreate(ctx, "c", map[string]any{"driver": "file", "filename": d.dir + "/no/such/dir/x", "size": 0})
	if err == nil || !strings.Contains(err.Error(), "failed") {
		t.Fatalf("blockdev-create in a missing directory: %v", err)
	}
	if jobs, _ := m.QueryJobs(ctx); len(jobs) != 0 {
		t.Fatalf("failed create job not dismissed: %+v", jobs)
	}
}
