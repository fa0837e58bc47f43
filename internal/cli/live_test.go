package cli_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"lifeboat/internal/guestagent"
	"lifeboat/internal/live"
	"lifeboat/internal/qmp"
	"lifeboat/internal/quiesce"
	"lifeboat/internal/testenv"
	"lifeboat/internal/vmtest"
)

// storageDaemon starts qemu-storage-daemon with one qcow2 disk "d0" of
// 8 MiB, exported writable over FUSE (for writes) and its QMP socket.
func storageDaemon(t *testing.T) (dir, qmpSock, fuse string) {
	t.Helper()
	return storageDaemonWith(t, "")
}

// storageDaemonWith starts the daemon on a copy of the raw image src (8 MiB
// of zeros when src is "").
func storageDaemonWith(t testing.TB, src string) (dir, qmpSock, fuse string) {
	t.Helper()
	for _, tool := range []string{"qemu-storage-daemon", "qemu-img", "fusermount3"} {
		vmtest.RequireBinary(t, tool)
	}
	d := testenv.WritableStorageDaemon(t, src, "8M")
	return d.Dir, d.QMP, d.FUSE
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

type liveDisk struct {
	Name         string `json:"name"`
	ChangeSource string `json:"change_source"`
	Tracking     string `json:"tracking"`
	Stats        struct {
		ReadBytes int64 `json:"read_bytes"`
	} `json:"stats"`
}

func TestCLIBackupQMP(t *testing.T) {
	_, sock, fuse := storageDaemon(t)
	vaultDir := filepath.Join(t.TempDir(), "vault")
	initVault(t, vaultDir, 0)
	writeAt(t, fuse, 1<<20, bytes.Repeat([]byte("first "), 10000))

	// app consistency without a guest agent: the hooks run, the freeze
	// cannot, and the point says crash and why.
	log := filepath.Join(t.TempDir(), "hooks")
	fleece := filepath.Join(t.TempDir(), "fleece")
	// The pre-hook runs when everything but the instant is ready: the
	// overlay exists already, so the guest is quiesced for the transaction only.
	r := mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "qsd", "--qmp", sock, "--consistency", "app",
		"--fleece-dir", fleece,
		"--pre-hook", "echo pre >> "+log+"; ls "+fleece+" | grep -c qcow2 > "+log+".overlays", "--post-hook", "echo post >> "+log)
	if got, _ := os.ReadFile(log + ".overlays"); strings.TrimSpace(string(got)) != "1" {
		t.Fatalf("overlays present when the pre-hook ran: %q, want 1", got)
	}
	p := parsePoint(t, r)
	if p.Consistency != "crash" || len(p.Notes) == 0 || !strings.Contains(r.stderr, "guest agent") {
		t.Fatalf("app without an agent: consistency %q notes %q\n%s", p.Consistency, p.Notes, r)
	}
	if got, _ := os.ReadFile(log); string(got) != "pre\npost\n" {
		t.Fatalf("hooks ran as %q", got)
	}
	if r := mustRun(t, "--vault", vaultDir, "points"); !strings.Contains(r.stdout, "asked for app consistency") || !strings.Contains(r.stderr, "--json") {
		t.Fatalf("points does not flag the point with notes:\n%s", r)
	}
	want := readFile(t, fuse)

	writeAt(t, fuse, 3<<20+7, []byte("second"))
	r = mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "qsd", "--qmp", sock, "--disk", "d0")
	var pt struct {
		ID    string     `json:"id"`
		Disks []liveDisk `json:"disks"`
	}
	decode(t, r.stdout, &pt)
	if len(pt.Disks) != 1 || pt.Disks[0].Name != "d0" || pt.Disks[0].ChangeSource != "tracking" || pt.Disks[0].Stats.ReadBytes != 64<<10 { // a tracked disk's 64 KiB chunk
		t.Fatalf("incremental over QMP: %+v", pt.Disks)
	}
	want2 := readFile(t, fuse)
	restoreCompare(t, vaultDir, "qsd", p.ID, "d0", want)
	restoreCompare(t, vaultDir, "qsd", pt.ID, "d0", want2)

	// Bad input.
	expect(t, "unknown disk", run(t, "--vault", vaultDir, "backup", "--machine", "qsd", "--qmp", sock, "--disk", "vdz"), 1, "no disk \"vdz\"")
	expect(t, "no such socket", run(t, "--vault", vaultDir, "backup", "--machine", "qsd", "--qmp", filepath.Join(t.TempDir(), "none.sock")), 1, "connecting to QEMU")
	expect(t, "bitmap with qmp", run(t, "--vault", vaultDir, "backup", "--machine", "qsd", "--qmp", sock, "--bitmap", "b"), 2, "--bitmap")
}

// An NBD server's own dirty bitmap (--bitmap) drives the incremental.
func TestCLIBackupNBDBitmap(t *testing.T) {
	dir, sock, fuse := storageDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mon, err := qmp.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	nbdSock := filepath.Join(dir, "nbd.sock")
	// The FUSE export and a writable NBD export cannot share the node:
	// writes go through NBD here.
	if err := mon.BlockExportDel(ctx, "fuse0", false); err != nil {
		t.Fatal(err)
	}
	if err := mon.Transaction(ctx, qmp.BitmapAdd("d0", "b0", qmp.BitmapAddOptions{})); err != nil {
		t.Fatal(err)
	}
	if err := mon.NBDServerStart(ctx, qmp.UnixSocket(nbdSock)); err != nil {
		t.Fatal(err)
	}
	if err := mon.BlockExportAdd(ctx, qmp.ExportOptions{ID: "e0", NodeName: "d0", Name: "d0", Writable: true, Bitmaps: []string{"b0"}}); err != nil {
		t.Fatal(err)
	}
	uri := fmt.Sprintf("nbd+unix:///d0?socket=%s", nbdSock)
	qemuIO := func(cmd string) {
		t.Helper()
		if out, err := exec.Command("qemu-io", "-f", "raw", "-c", cmd, uri).CombinedOutput(); err != nil {
			t.Fatalf("qemu-io %s: %v\n%s", cmd, err, out)
		}
	}
	vaultDir := filepath.Join(t.TempDir(), "vault")
	initVault(t, vaultDir, 0)
	qemuIO("write -P 7 0 1M")
	r := mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "nbd", "--disk", "d0="+uri, "--bitmap", "b0")
	var p1 struct {
		ID    string     `json:"id"`
		Disks []liveDisk `json:"disks"`
	}
	decode(t, r.stdout, &p1)
	if p1.Disks[0].Tracking != "nbd:b0" || p1.Disks[0].ChangeSource != "full" {
		t.Fatalf("first NBD point: %+v", p1.Disks)
	}
	// Whoever runs the server resets the bitmap after each point (an
	// exported bitmap is busy: unexport, clear, export again).
	if err := mon.BlockExportDel(ctx, "e0", false); err != nil {
		t.Fatal(err)
	}
	if err := mon.Transaction(ctx, qmp.BitmapClear("d0", "b0")); err != nil {
		t.Fatal(err)
	}
	if err := mon.BlockExportAdd(ctx, qmp.ExportOptions{ID: "e0", NodeName: "d0", Name: "d0", Writable: true, Bitmaps: []string{"b0"}}); err != nil {
		t.Fatal(err)
	}
	qemuIO("write -P 9 5242883 7")
	want := make([]byte, 8<<20)
	for i := 0; i < 1<<20; i++ {
		want[i] = 7
	}
	for i := 5<<20 + 3; i < 5<<20+10; i++ {
		want[i] = 9
	}
	r = mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "nbd", "--disk", "d0="+uri, "--bitmap", "b0")
	var p2 struct {
		ID    string     `json:"id"`
		Disks []liveDisk `json:"disks"`
	}
	decode(t, r.stdout, &p2)
	if p2.Disks[0].ChangeSource != "tracking" || p2.Disks[0].Stats.ReadBytes != 64<<10 { // a tracked disk's 64 KiB chunk
		t.Fatalf("NBD incremental with a bitmap: %+v", p2.Disks)
	}
	restoreCompare(t, vaultDir, "nbd", p2.ID, "d0", want)
	expect(t, "--bitmap on a file", run(t, "--vault", vaultDir, "backup", "--machine", "nbd", "--disk", fuse, "--bitmap", "b0"), 2, "not one")
	// A bitmap the server does not have.
	r = run(t, "--vault", vaultDir, "backup", "--machine", "nbd", "--disk", "d0="+uri, "--bitmap", "nope")
	expect(t, "unknown bitmap", r, 1, "nope")
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func restoreCompare(t *testing.T, vaultDir, machine, id, disk string, want []byte) {
	t.Helper()
	out := filepath.Join(t.TempDir(), disk+".raw")
	mustRun(t, "--vault", vaultDir, "restore", "--machine", machine, id, "--disk", disk, "--to-file", out)
	if got := readFile(t, out); !bytes.Equal(got, want) {
		t.Fatalf("restored %s of point %s differs from the disk at the instant", disk, id)
	}
}

func decode(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
}

// kill -9 of lifeboat in the middle of a live backup leaves QEMU fleecing
// (a job copying old data aside, an overlay, an export) and the previous
// bitmap disabled. The next backup clears all of it, does not trust the
// bitmap, reads and compares, and leaves the machine clean.
func TestCLIBackupQMPKilledMidway(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src.raw")
	data := make([]byte, 384<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(data); i += 8 {
		binary.LittleEndian.PutUint64(data[i:], rng.Uint64())
	}
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	data = nil
	dir, sock, fuse := storageDaemonWith(t, src)
	vaultDir := filepath.Join(t.TempDir(), "vault")
	initVault(t, vaultDir, 0)
	mustRun(t, "--vault", vaultDir, "-q", "backup", "--machine", "qsd", "--qmp", sock)
	writeAt(t, fuse, 100<<20, []byte("between the points"))

	fleece := filepath.Join(dir, "fleece")
	os.Mkdir(fleece, 0o700)
	p := startProc(t, "--vault", vaultDir, "backup", "--machine", "qsd", "--qmp", sock, "--fleece-dir", fleece, "--audit", "1")
	// --audit 1 makes the backup re-read every unchanged block: long enough
	// to be killed while QEMU is fleecing. The session marker appears when
	// the backup starts reading, after the instant: kill it then.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ents, _ := os.ReadDir(fleece); len(ents) > 0 {
			if ms, _ := filepath.Glob(filepath.Join(vaultDir, "sessions", "*")); len(ms) > 0 {
				break
			}
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("the backup never started reading while fleecing: %s", p.wait(t, time.Second))
		}
		time.Sleep(2 * time.Millisecond)
	}
	if !p.kill() {
		t.Fatalf("the backup finished before it could be killed: %s", p.wait(t, time.Second))
	}
	writeAt(t, fuse, 200<<20, []byte("after the kill"))
	want := readFile(t, fuse)

	r := mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "qsd", "--qmp", sock, "--fleece-dir", fleece)
	var pt struct {
		ID    string     `json:"id"`
		Disks []liveDisk `json:"disks"`
	}
	decode(t, r.stdout, &pt)
	if pt.Disks[0].ChangeSource != "compare" || !strings.Contains(r.stderr, "killed") || strings.Contains(r.stderr, "restarted") {
		t.Fatalf("after a killed backup: %+v\n%s", pt.Disks, r)
	}
	restoreCompare(t, vaultDir, "qsd", pt.ID, "d0", want)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mon, err := qmp.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	nodes, err := mon.QueryNamedBlockNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if strings.HasPrefix(n.NodeName, qmp.FleeceNodePrefix) {
			t.Fatalf("fleecing node %s still in QEMU", n.NodeName)
		}
		if n.NodeName == "d0" && len(n.DirtyBitmaps) != 1 {
			t.Fatalf("disk d0 has bitmaps %+v, want only the new point's", n.DirtyBitmaps)
		}
	}
	if jobs, err := mon.QueryBlockJobs(ctx); err != nil || len(jobs) != 0 {
		t.Fatalf("block jobs left: %+v %v", jobs, err)
	}
	if ents, _ := os.ReadDir(fleece); len(ents) != 0 {
		t.Fatalf("overlay files left in %s: %v", fleece, ents)
	}
}

// The guest agent never thaws by itself. If lifeboat dies while the
// guest is frozen, its watchdog process (started before the freeze, fed
// by a pipe that closes when lifeboat exits) thaws the guest.
func TestGuestThawWatchdog(t *testing.T) {
	vmtest.Assets(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	disk := vmtest.NewExt4Disk(t, filepath.Join(t.TempDir(), "root.raw"), "raw", 32)
	vm := vmtest.Start(t, vmtest.Config{Disks: []vmtest.Disk{disk}, Workload: "idle", GuestAgent: true})
	if _, err := vm.WaitLine(ctx, regexp.MustCompile(`^LB ready$`)); err != nil {
		t.Fatal(err)
	}
	startDog := func() *quiesce.Watchdog {
		dog, err := quiesce.StartWatchdog(lifeboatBin, "__thaw-watchdog", "--timeout", "10m", "--guest-agent", vm.GuestAgentSocket)
		if err != nil {
			t.Fatal(err)
		}
		return dog
	}
	// A watchdog that was not armed leaves a freeze alone: it is someone
	// else's.
	dog := startDog()
	ga, err := guestagent.Dial(ctx, vm.GuestAgentSocket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ga.FreezeFilesystems(ctx); err != nil {
		t.Fatal(err)
	}
	ga.Close()
	if err := dog.Stop(); err != nil {
		t.Fatal(err)
	}
	if ga, err = guestagent.Dial(ctx, vm.GuestAgentSocket); err != nil {
		t.Fatal(err)
	}
	if st, err := ga.FreezeStatus(ctx); err != nil || st != guestagent.Frozen {
		t.Fatalf("freeze status %v %v after an unarmed watchdog, want frozen", st, err)
	}
	ga.Close()
	// Nor does a backup that finds the guest frozen by someone else, or its
	// watchdog: the point is crash-consistent and says why.
	vaultDir := filepath.Join(t.TempDir(), "vault")
	initVault(t, vaultDir, 0)
	r := mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "vm", "--qmp", vm.QMPSocket, "--fleece-dir", t.TempDir(),
		"--guest-agent", vm.GuestAgentSocket, "--consistency", "file")
	if p := parsePoint(t, r); p.Consistency != "crash" || !strings.Contains(strings.Join(p.Notes, "\n"), "already frozen") {
		t.Fatalf("backup of a guest frozen by someone else: %s", r)
	}
	if ga, err = guestagent.Dial(ctx, vm.GuestAgentSocket); err != nil {
		t.Fatal(err)
	}
	if st, err := ga.FreezeStatus(ctx); err != nil || st != guestagent.Frozen {
		t.Fatalf("freeze status %v %v after a backup found the guest frozen, want frozen", st, err)
	}
	ga.Close()
	// Armed: "lifeboat dies", its agent connection drops, and so does the
	// pipe; the watchdog thaws.
	dog = startDog()
	dog.Arm(live.GuestWatchdogItem)
	if err := dog.Stop(); err != nil {
		t.Fatal(err)
	}
	ga, err = guestagent.Dial(ctx, vm.GuestAgentSocket)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := ga.FreezeStatus(ctx); err != nil || st != guestagent.Thawed {
		t.Fatalf("after the watchdog: freeze status %v %v, want thawed", st, err)
	}
	ga.Close()

	// A whole file-consistent live backup through the binary: frozen by
	// the agent, watchdog and all, and the guest is thawed after it.
	r = mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "vm", "--qmp", vm.QMPSocket,
		"--guest-agent", vm.GuestAgentSocket, "--consistency", "file")
	if p := parsePoint(t, r); p.Consistency != "file" || len(p.Notes) != 0 {
		t.Fatalf("live file-consistent backup: %s", r)
	}
	ga, err = guestagent.Dial(ctx, vm.GuestAgentSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer ga.Close()
	if st, err := ga.FreezeStatus(ctx); err != nil || st != guestagent.Thawed {
		t.Fatalf("after a live backup: freeze status %v %v, want thawed", st, err)
	}
}

// An in-place restore never writes under a running VM: QEMU's image locks
// and a mounted block device's exclusivity make it refuse.
func TestInPlaceRestoreRefusesDiskInUse(t *testing.T) {
	vmtest.RequireBinary(t, "qemu-storage-daemon")
	vmtest.RequireBinary(t, "fusermount3")
	dir := t.TempDir()
	img := filepath.Join(dir, "d0.raw")
	if err := os.WriteFile(img, bytes.Repeat([]byte("lifeboat"), 1<<17), 0o600); err != nil {
		t.Fatal(err)
	}
	vaultDir := filepath.Join(t.TempDir(), "vault")
	initVault(t, vaultDir, 0)
	id := parsePoint(t, mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "m", "--disk", "d0="+img)).ID
	writeAt(t, img, 4096, []byte("changed after the point"))

	// QEMU locks an image once something uses it (a guest's device, an
	// export): a writable FUSE export stands for the running guest.
	fuse := filepath.Join(dir, "d0.fuse")
	os.WriteFile(fuse, nil, 0o600)
	defer exec.Command("fusermount3", "-u", fuse).Run()
	cmd := exec.Command("qemu-storage-daemon",
		"--blockdev", "driver=file,node-name=f0,filename="+img,
		"--blockdev", "driver=raw,node-name=d0,file=f0",
		"--export", "type=fuse,id=e0,node-name=d0,mountpoint="+fuse+",writable=on")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// Wait until QEMU holds its locks on the image.
	for i := 0; ; i++ {
		if locked(t, img) {
			break
		}
		if i > 200 {
			t.Fatal("qemu-storage-daemon never locked the image")
		}
		time.Sleep(25 * time.Millisecond)
	}
	r := run(t, "--vault", vaultDir, "restore", "--machine", "m", id, "--disk", "d0", "--to-file", img, "--in-place")
	expect(t, "in-place restore under a running QEMU", r, 1, "locked by another process")
	if !bytes.Contains(readFile(t, img), []byte("changed after the point")) {
		t.Fatal("the refused restore wrote to the image")
	}
	cmd.Process.Kill()
	cmd.Wait()
	exec.Command("fusermount3", "-u", fuse).Run()
	mustRun(t, "--vault", vaultDir, "restore", "--machine", "m", id, "--disk", "d0", "--to-file", img, "--in-place")
	if bytes.Contains(readFile(t, img), []byte("changed after the point")) {
		t.Fatal("in-place restore after QEMU stopped did not revert the image")
	}
}

// locked reports whether another process holds a lock on any byte of path.
func locked(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		t.Fatal(err)
	}
	return lk.Type != unix.F_UNLCK
}

// A --guest-agent socket that is a QMP monitor (another QEMU's, or the
// machine's own --qmp socket) is recognised at once, not after the whole
// freeze timeout; the point is crash-consistent and says why, and
// --require-consistency turns that into exit 10 with the point written.
// --guest-agent without file or app consistency warns that it is ignored.
func TestGuestAgentSocketIsQMP(t *testing.T) {
	_, sock, _ := storageDaemon(t)
	_, other, _ := storageDaemon(t)
	vaultDir := filepath.Join(t.TempDir(), "vault")
	initVault(t, vaultDir, 0)
	fleece := t.TempDir() // not the default, shared by every backup of a machine "qsd"
	for _, agent := range []string{other, sock} {
		start := time.Now()
		r := mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "qsd", "--qmp", sock, "--fleece-dir", fleece, "--guest-agent", agent,
			"--consistency", "file", "--freeze-timeout", "2m")
		if took := time.Since(start); took > time.Minute {
			t.Fatalf("backup with QMP socket %s as its guest agent took %v", agent, took)
		}
		p := parsePoint(t, r)
		if p.Consistency != "crash" || !strings.Contains(strings.Join(p.Notes, "\n"), "this is a QMP socket, not a guest agent socket") {
			t.Fatalf("guest agent socket %s is a QMP socket: consistency %q notes %q", agent, p.Consistency, p.Notes)
		}
	}
	before := len(listPoints(t, vaultDir))
	r := run(t, "--vault", vaultDir, "backup", "--machine", "qsd", "--qmp", sock, "--fleece-dir", fleece, "--guest-agent", other,
		"--consistency", "file", "--require-consistency")
	expect(t, "--require-consistency not met", r, 10, "is written, but it is crash-consistent, not file-consistent")
	if after := len(listPoints(t, vaultDir)); after != before+1 {
		t.Fatalf("%d points before and %d after a backup that fell short of --require-consistency, want one more", before, after)
	}
	r = mustRun(t, "--vault", vaultDir, "backup", "--machine", "qsd", "--qmp", sock, "--fleece-dir", fleece, "--guest-agent", other, "--require-consistency")
	if !strings.Contains(r.stderr, "guest agent is not used with crash consistency") {
		t.Fatalf("--guest-agent with crash consistency gave no warning:\n%s", r)
	}
}
