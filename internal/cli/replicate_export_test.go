package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/nbd"
	"lifeboat/internal/vmtest"
)

type exportedFailover struct {
	Name   string `json:"name"`
	PID    int    `json:"pid"`
	QMP    string `json:"qmp"`
	Export string `json:"export_nbd"`
	Test   bool   `json:"test"`
	Disks  []struct {
		Name string `json:"name"`
		File string `json:"file"`
		NBD  string `json:"nbd"`
	} `json:"disks"`
}

// failoverExport runs failover --json with args and decodes the failover.
func (s *replSite) failoverExport(args ...string) exportedFailover {
	s.t.Helper()
	r := s.run(append([]string{"--json", "failover", "--machine", "qsd"}, args...)...)
	var fo exportedFailover
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &fo) != nil || len(fo.Disks) != 1 || fo.Disks[0].NBD == "" {
		s.t.Fatalf("failover %v: %s", args, r)
	}
	s.t.Cleanup(func() { syscall.Kill(fo.PID, syscall.SIGKILL) })
	return fo
}

// cleanupTest removes machine's test failover and waits until its process
// (pid) has stopped.
func (s *replSite) cleanupTest(machine string, pid int) {
	s.t.Helper()
	if r := s.run("failover", "--machine", machine, "--test-cleanup"); r.code != 0 {
		s.t.Fatalf("failover --test-cleanup: %s", r)
	}
	waitFor(s.t, 10*time.Second, "the test failover's process to stop", func() bool {
		return syscall.Kill(pid, 0) != nil || isZombie(pid)
	})
}

// nbdRead reads a whole disk through an NBD URI with qemu-img.
func nbdRead(t *testing.T, uri string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "disk.raw")
	vmtest.QEMU(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri, out)
	return readFile(t, out)
}

// A failover with --export-nbd starts no machine: the site serves the
// point's disks over NBD, writable. A test failover is served over a unix
// socket while replication goes on: read through the export it is the
// source at the point, a write through it reaches neither the replica nor
// its history, and --test-cleanup stops the server and removes its socket.
// A real failover is served over TCP, written through the project's NBD
// client, committed (the disk made standalone inside the NBD server) and
// holds the source plus the write.
func TestReplicateFailoverExportNBD(t *testing.T) {
	vmtest.RequireBinary(t, "qemu-storage-daemon")
	_, sock, fuse := storageDaemon(t)
	s := newReplSite(t)
	runner := startProcEnv(t, s.env, "replicate", "run", "--machine", "qsd", "--qmp", sock, "--target", "dr", "--every", "200ms")
	writeAt(t, fuse, 1<<20, bytes.Repeat([]byte("export"), 40000))
	s.cutAfter("qsd", time.Now(), 30*time.Second)
	want := readFile(t, fuse)

	// A test failover served on a unix socket.
	path := filepath.Join(t.TempDir(), "nbd", "test.sock")
	fo := s.failoverExport("--test", "--export-nbd", "unix:"+path)
	if fo.Name != "qsd-dr-test" || !fo.Test || fo.Export != "unix:"+path || !strings.Contains(fo.Disks[0].NBD, path) {
		t.Fatalf("test failover: %+v", fo)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the export's socket: %v %v, want mode 0600", fi, err)
	}
	if !bytes.Equal(nbdRead(t, fo.Disks[0].NBD), want) {
		t.Fatal("the disk read through the test failover's export differs from the source")
	}
	// The other hypervisor writes: the overlay takes it.
	vmtest.QEMU(t, "qemu-io", "-f", "raw", "-c", "write -P 0xab 0 64k", fo.Disks[0].NBD)
	got := nbdRead(t, fo.Disks[0].NBD)
	if !bytes.Equal(got[:64<<10], bytes.Repeat([]byte{0xab}, 64<<10)) || !bytes.Equal(got[64<<10:], want[64<<10:]) {
		t.Fatal("a write through the export does not read back")
	}
	// The status the runner reports names the export.
	waitFor(t, 10*time.Second, "status to show the export", func() bool {
		r := s.run("replicate", "status", "--machine", "qsd", "--json")
		return r.code == 0 && strings.Contains(r.stdout, fo.Disks[0].NBD)
	})
	// Replication goes on during the test.
	writeAt(t, fuse, 3<<20, bytes.Repeat([]byte("during"), 1000))
	s.cutAfter("qsd", time.Now(), 30*time.Second)
	s.cleanupTest("qsd", fo.PID)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the test export's socket is left: %v", err)
	}
	// The write went to the test's overlay only: the replica's latest
	// point (materialised from its base, checkpoints and journal) is the
	// source.
	s.checkReplica("qsd", "latest", readFile(t, fuse), "after a write through the test export the replica differs from the source")

	// Bad input is refused before anything is made.
	for _, bad := range [][]string{
		{"--export-nbd", "nowhere"},
		{"--export-nbd", "unix:relative.sock"},
		{"--export-nbd", "127.0.0.1:0"},
		{"--export-nbd", "unix:" + path, "--disks-only", "--to", t.TempDir()},
	} {
		if r := s.run(append([]string{"failover", "--machine", "qsd"}, bad...)...); r.code != 2 {
			t.Errorf("failover %v: %s, want exit 2", bad, r)
		}
	}
	if r := s.run("failover", "--group", "g", "--site", "dr", "--export-nbd", "unix:"+path); r.code != 2 {
		t.Errorf("group failover with --export-nbd: %s, want exit 2", r)
	}

	// A real failover, served over TCP.
	writeAt(t, fuse, 5<<20, bytes.Repeat([]byte("last"), 5000))
	s.cutAfter("qsd", time.Now(), 30*time.Second)
	want = readFile(t, fuse)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	fo = s.failoverExport("--export-nbd", addr)
	if fo.Name != "qsd-dr" || fo.Test || fo.Disks[0].NBD != "nbd://"+addr+"/d0" {
		t.Fatalf("failover: %+v", fo)
	}
	waitFor(t, 30*time.Second, "the runner to report failed-over", func() bool { return s.status("qsd").State == "failed-over" })
	runner.kill()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := nbd.Dial(ctx, fo.Disks[0].NBD)
	if err != nil {
		t.Fatal(err)
	}
	if c.Size() != int64(len(want)) {
		t.Fatalf("the export's size is %d, want %d", c.Size(), len(want))
	}
	got = make([]byte, len(want))
	if err := c.Pread(ctx, got, 0, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the disk read through the failover's export differs from the source (%v)", err)
	}
	mark := bytes.Repeat([]byte("booted"), 1000)
	if err := c.Pwrite(ctx, mark, 2<<20, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Commit streams the replica's data into the overlay inside the
	// server while the client stays connected.
	if r := s.run("failover", "commit", "--machine", "qsd"); r.code != 0 {
		t.Fatalf("failover commit: %s", r)
	}
	copy(want[2<<20:], mark)
	if err := c.Pread(ctx, got, 0, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after commit the export does not read the source plus the write (%v)", err)
	}
	c.Close()
	info := vmtest.QEMU(t, "qemu-img", "info", "-U", "--output=json", fo.Disks[0].File)
	if strings.Contains(info, "backing-filename") {
		t.Fatalf("after commit the disk still has a backing file:\n%s", info)
	}
}

// A TCG VM counting on ext4 is replicated and killed -9; its failover is
// served over NBD and another qemu-system-x86_64 boots from the export (its
// own NBD client): the guest reads at least the counter it had synced
// before the last acknowledged cut, its ext4 recovery and mount write to
// the export, and the replica's point still reads as before the boot.
func TestReplicateVMFailoverExportBoots(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), vmBootDeadline)
	defer cancel()
	s, vm := counterVM(t, ctx, false)
	var n int
	for n < 3 {
		m, err := vm.WaitLine(ctx, vmCounter)
		if err != nil {
			t.Fatal(err)
		}
		n, _ = strconv.Atoi(m[1])
	}
	s.cutAfter("vm1", time.Now(), time.Minute)
	killed := time.Now()
	if err := vm.Kill(); err != nil {
		t.Fatal(err)
	}
	vm.Wait(ctx)
	last := lastCounter(vm)
	// The runner ships its journal to the end once QEMU is gone, then
	// falls back (and ships nothing more): the replica stands still, so
	// the point failed over to stays a point.
	waitFor(t, time.Minute, "the runner to notice QEMU is gone", func() bool {
		r := s.run("replicate", "status", "--machine", "vm1", "--json")
		var st struct {
			LastFallbackAt *time.Time `json:"last_fallback_at"`
		}
		return json.Unmarshal([]byte(r.stdout), &st) == nil && st.LastFallbackAt != nil && st.LastFallbackAt.After(killed)
	})

	sock := filepath.Join(t.TempDir(), "vm1.sock")
	r := s.run("--json", "failover", "--machine", "vm1", "--export-nbd", "unix:"+sock)
	var fo exportedFailover
	var pt struct {
		Point struct {
			ID uint64 `json:"id"`
		} `json:"point"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &fo) != nil || json.Unmarshal([]byte(r.stdout), &pt) != nil || len(fo.Disks) != 1 {
		t.Fatalf("failover --export-nbd: %s", r)
	}
	t.Cleanup(func() { syscall.Kill(fo.PID, syscall.SIGKILL) })
	point := strconv.FormatUint(pt.Point.ID, 10)
	before := t.TempDir()
	if r := s.run("failover", "--machine", "vm1", "--point", point, "--disks-only", "--to", before); r.code != 0 {
		t.Fatalf("failover --disks-only: %s", r)
	}

	nbdDisk := fmt.Sprintf(`{"driver":"raw","node-name":"disk0","file":{"driver":"nbd","export":"vd0","server":{"type":"unix","path":%q}}}`, sock)
	rd := vmtest.Start(t, vmtest.Config{Workload: "readcounter",
		ExtraArgs: []string{"-blockdev", nbdDisk, "-device", "virtio-blk-pci,drive=disk0,id=vd0"}})
	m, err := rd.WaitLine(ctx, vmReadcounter)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := strconv.Atoi(m[1])
	t.Logf("the VM booted from the export reads counter %d (synced before the cut: %d, last reported: %d)", got, n, last)
	if got < n || got > last+1 {
		t.Fatalf("the VM booted from the export reads counter %d; want %d..%d", got, n, last+1)
	}
	if err := rd.Wait(ctx); err != nil {
		t.Fatalf("the VM booted from the export did not power off cleanly: %v", err)
	}
	want := readFile(t, filepath.Join(before, "vd0.raw"))
	if bytes.Equal(nbdRead(t, fo.Disks[0].NBD), want) {
		t.Fatal("the guest's mount wrote nothing to the export")
	}
	after := t.TempDir()
	if r := s.run("failover", "--machine", "vm1", "--point", point, "--disks-only", "--to", after); r.code != 0 {
		t.Fatalf("failover --disks-only: %s", r)
	}
	if !bytes.Equal(readFile(t, filepath.Join(after, "vd0.raw")), want) {
		t.Fatal("the replica's point changed while a VM ran on its export")
	}
}
