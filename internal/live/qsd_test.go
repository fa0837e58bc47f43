package live_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/crypto"
	"lifeboat/internal/live"
	"lifeboat/internal/recovery"
	"lifeboat/internal/restore"
	"lifeboat/internal/vault"
	"lifeboat/internal/vmtest"
)

// 64 KiB chunks: the granularity of QEMU's dirty bitmaps, so a tracked
// incremental reads exactly the dirty set.
var cheap = vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, ChunkSize: 64 << 10}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		vmtest.RequireBinary(t, tool)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		if vmtest.Required() {
			t.Fatal("/dev/fuse is missing")
		}
		t.Skip("/dev/fuse is missing")
	}
}

// daemon is a qemu-storage-daemon serving qcow2 disks, each also exported
// writable over FUSE so that qemu-io can write to it while it runs.
type daemon struct {
	t     *testing.T
	dir   string
	disks []string
	qmp   string
	cmd   *exec.Cmd
	// model is what each disk should hold, kept by write.
	model map[string][]byte
}

const diskSize = 16 << 20

func startDaemon(t *testing.T, dir string, disks ...string) *daemon {
	d := &daemon{t: t, dir: dir, disks: disks, qmp: filepath.Join(dir, "qmp.sock"), model: map[string][]byte{}}
	for _, name := range disks {
		img := filepath.Join(dir, name+".qcow2")
		if _, err := os.Stat(img); os.IsNotExist(err) {
			if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, fmt.Sprint(diskSize)).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img create: %v\n%s", err, out)
			}
		}
		d.model[name] = make([]byte, diskSize)
	}
	d.start()
	return d
}

func (d *daemon) start() {
	t := d.t
	os.Remove(d.qmp)
	args := []string{"--chardev", "socket,id=m,path=" + d.qmp + ",server=on,wait=off", "--monitor", "chardev=m"}
	for _, name := range d.disks {
		fuse := filepath.Join(d.dir, name+".fuse")
		os.WriteFile(fuse, nil, 0o600)
		args = append(args,
			"--blockdev", "driver=file,node-name="+name+"-file,filename="+filepath.Join(d.dir, name+".qcow2"),
			"--blockdev", "driver=qcow2,node-name="+name+",file="+name+"-file",
			"--export", "type=fuse,id=fuse-"+name+",node-name="+name+",mountpoint="+fuse+",writable=on")
	}
	d.cmd = exec.Command("qemu-storage-daemon", args...)
	var stderr bytes.Buffer
	d.cmd.Stderr = &stderr
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := d.cmd
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		for _, name := range d.disks {
			exec.Command("fusermount3", "-u", filepath.Join(d.dir, name+".fuse")).Run()
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(d.qmp); err == nil {
			if out, err := exec.Command("qemu-io", "-f", "raw", "-r", "-c", "read 0 512", d.fuse(d.disks[0])).CombinedOutput(); err == nil {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("qemu-storage-daemon not ready: %v\n%s\n%s", err, out, stderr.String())
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-storage-daemon did not start:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *daemon) fuse(name string) string { return filepath.Join(d.dir, name+".fuse") }

// write writes pattern byte p at off (length n) with qemu-io, and into the model.
func (d *daemon) write(disk string, off, n int64, p byte) {
	d.t.Helper()
	out, err := exec.Command("qemu-io", "-f", "raw", "-c", fmt.Sprintf("write -P 0x%02x %d %d", p, off, n), "-c", "flush", d.fuse(disk)).CombinedOutput()
	if err != nil {
		d.t.Fatalf("qemu-io write: %v\n%s", err, out)
	}
	for i := off; i < off+n; i++ {
		d.model[disk][i] = p
	}
}

func (d *daemon) snapshotModel() map[string][]byte {
	m := map[string][]byte{}
	for k, v := range d.model {
		m[k] = bytes.Clone(v)
	}
	return m
}

func (d *daemon) kill9() {
	d.cmd.Process.Kill()
	d.cmd.Wait()
	for _, name := range d.disks {
		exec.Command("fusermount3", "-u", d.fuse(name)).Run()
	}
}

func restoreAll(t *testing.T, v *vault.Vault, p *recovery.Point) map[string][]byte {
	t.Helper()
	dir := t.TempDir()
	var targets []restore.Target
	for _, d := range p.Disks {
		targets = append(targets, restore.Target{Disk: d, Path: filepath.Join(dir, d.Name)})
	}
	if _, err := restore.Run(context.Background(), v, p, targets, restore.Options{}); err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, d := range p.Disks {
		b, err := os.ReadFile(filepath.Join(dir, d.Name))
		if err != nil {
			t.Fatal(err)
		}
		out[d.Name] = b
	}
	return out
}

func checkRestore(t *testing.T, v *vault.Vault, p *recovery.Point, want map[string][]byte) {
	t.Helper()
	got := restoreAll(t, v, p)
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Fatalf("point %s has no disk %s", p.ID.Short(), name)
		}
		if !bytes.Equal(g, w) {
			for i := range w {
				if g[i] != w[i] {
					t.Fatalf("point %s disk %s differs from the frozen view first at offset %d (got %#x want %#x)", p.ID.Short(), name, i, g[i], w[i])
				}
			}
		}
	}
}

func diskOf(t *testing.T, p *recovery.Point, name string) *recovery.Disk {
	t.Helper()
	d, ok := p.Disk(name)
	if !ok {
		t.Fatalf("point has no disk %s", name)
	}
	return d
}

func TestLiveStorageDaemonIncrementals(t *testing.T) {
	need(t, "qemu-storage-daemon", "qemu-img", "qemu-io", "fusermount3")
	ctx := context.Background()
	dir := t.TempDir()
	d := startDaemon(t, dir, "disk0", "disk1")
	v, err := vault.Init(ctx, blob.NewMem(), []byte("pw"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	var warnings []string
	opts := live.Options{Machine: "qsd", QMP: d.qmp, Warn: func(s string) { warnings = append(warnings, s) }}

	d.write("disk0", 0, 1<<20, 0x11)
	d.write("disk1", 5<<20, 300<<10, 0x22)
	frozen1 := d.snapshotModel()
	p1, err := live.Backup(ctx, v, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"disk0", "disk1"} {
		pd := diskOf(t, p1, name)
		if pd.ChangeSource != "full" || pd.Tracking == "" {
			t.Fatalf("first point disk %s: change source %q tracking %q", name, pd.ChangeSource, pd.Tracking)
		}
	}
	checkRestore(t, v, p1, frozen1)

	// Writes at known offsets, not aligned: the dirty set is their 64 KiB
	// rounding. disk0: 4 KiB at 2 MiB+100 (one block), 10 bytes across the
	// 64 KiB boundary at 7 MiB (two blocks). disk1: 130 KiB at 1 MiB (three blocks).
	d.write("disk0", 2<<20+100, 4096, 0x33)
	d.write("disk0", 7<<20-5, 10, 0x44)
	d.write("disk1", 1<<20, 130<<10, 0x55)
	frozen2 := d.snapshotModel()
	// Writes after the instant must not be in point 2, and must be in point 3.
	opts.AfterInstant = func() {
		d.write("disk0", 2<<20, 64<<10, 0x66)
		d.write("disk1", 9<<20, 4096, 0x77)
	}
	p2, err := live.Backup(ctx, v, opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.AfterInstant = nil
	for name, blocks := range map[string]int64{"disk0": 3, "disk1": 3} {
		pd := diskOf(t, p2, name)
		if pd.ChangeSource != "tracking" || pd.Stats.ReadBytes != blocks<<16 {
			t.Fatalf("incremental disk %s: source %q read %d bytes, want tracking and exactly %d dirty 64 KiB blocks (%+v)",
				name, pd.ChangeSource, pd.Stats.ReadBytes, blocks, pd.Stats)
		}
	}
	checkRestore(t, v, p2, frozen2)

	frozen3 := d.snapshotModel() // now includes the post-instant writes
	p3, err := live.Backup(ctx, v, opts)
	if err != nil {
		t.Fatal(err)
	}
	for name, blocks := range map[string]int64{"disk0": 1, "disk1": 1} {
		pd := diskOf(t, p3, name)
		if pd.ChangeSource != "tracking" || pd.Stats.ReadBytes != blocks<<16 {
			t.Fatalf("third point disk %s: source %q read %d bytes, want %d block(s)", name, pd.ChangeSource, pd.Stats.ReadBytes, blocks)
		}
	}
	checkRestore(t, v, p3, frozen3)
	if len(warnings) != 0 {
		t.Fatalf("warnings: %q", warnings)
	}

	// The machine is left as it was: one lifeboat bitmap per disk (the
	// latest point's), no fleecing nodes, jobs or exports of ours.
	assertClean(t, d.qmp, map[string]string{"disk0": diskOf(t, p3, "disk0").Tracking, "disk1": diskOf(t, p3, "disk1").Tracking})

	// kill -9 QEMU between two backups: the bitmap comes back inconsistent
	// (or not at all); the next backup notices, reads everything, and is
	// still correct.
	d.kill9()
	d.start()
	d.write("disk1", 12<<20, 64<<10, 0x88)
	frozen4 := d.snapshotModel()
	warnings = nil
	p4, err := live.Backup(ctx, v, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"disk0", "disk1"} {
		if pd := diskOf(t, p4, name); pd.ChangeSource != "compare" {
			t.Fatalf("after kill -9: disk %s change source %q, want compare", name, pd.ChangeSource)
		}
	}
	if len(warnings) != 2 || !strings.Contains(strings.Join(warnings, "\n"), "bitmap") {
		t.Fatalf("after kill -9, warnings %q: want one per disk naming the bitmap", warnings)
	}
	checkRestore(t, v, p4, frozen4)
	// And tracking resumes on the next one.
	d.write("disk0", 3<<20, 100, 0x99)
	frozen5 := d.snapshotModel()
	p5, err := live.Backup(ctx, v, opts)
	if err != nil {
		t.Fatal(err)
	}
	if pd := diskOf(t, p5, "disk0"); pd.ChangeSource != "tracking" || pd.Stats.ReadBytes != 64<<10 {
		t.Fatalf("after recovery: %+v", pd)
	}
	checkRestore(t, v, p5, frozen5)
}

// A backup cancelled after the instant leaves the machine as it was, and
// the previous bitmap still holds every change since the last good point:
// the next backup reads them all, and only them.
// daemonAndVault starts a storage daemon with one disk, disk0, and makes
// an empty vault in memory.
func daemonAndVault(t *testing.T) (*daemon, *vault.Vault) {
	t.Helper()
	need(t, "qemu-storage-daemon", "qemu-img", "qemu-io", "fusermount3")
	d := startDaemon(t, t.TempDir(), "disk0")
	v, err := vault.Init(context.Background(), blob.NewMem(), []byte("pw"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	return d, v
}

func TestLiveCancelAfterInstantRollsBack(t *testing.T) {
	d, v := daemonAndVault(t)
	opts := live.Options{Machine: "qsd", QMP: d.qmp}
	d.write("disk0", 0, 256<<10, 0x10)
	p1, err := live.Backup(context.Background(), v, opts)
	if err != nil {
		t.Fatal(err)
	}
	d.write("disk0", 4<<20, 64<<10, 0x20) // before the cancelled instant
	ctx, cancel := context.WithCancel(context.Background())
	o := opts
	o.AfterInstant = func() {
		d.write("disk0", 8<<20, 64<<10, 0x30) // after it
		cancel()
	}
	if _, err := live.Backup(ctx, v, o); err == nil {
		t.Fatal("cancelled backup succeeded")
	}
	assertClean(t, d.qmp, map[string]string{"disk0": diskOf(t, p1, "disk0").Tracking})
	want := d.snapshotModel()
	p3, err := live.Backup(context.Background(), v, opts)
	if err != nil {
		t.Fatal(err)
	}
	if pd := diskOf(t, p3, "disk0"); pd.ChangeSource != "tracking" || pd.Stats.ReadBytes != 2*64<<10 {
		t.Fatalf("after a cancelled backup: %+v; want tracking over both writes (2 blocks)", pd)
	}
	checkRestore(t, v, p3, want)
}
