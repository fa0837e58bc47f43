package cli_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/cli"
	"lifeboat/internal/vmtest"
)

// qcow2Chain makes, in dir, base.qcow2 (64 MiB) with 0xab at 1 MiB and
// overlay.qcow2 over it with 0xcd at 8 MiB and 0xef over part of the
// base's data, and returns the overlay: two 256 KiB chunks of data.
func qcow2Chain(t *testing.T, dir string) string {
	t.Helper()
	vmtest.RequireBinary(t, "qemu-nbd")
	base, overlay := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "overlay.qcow2")
	vmtest.NewQcow2(t, base, "64M", "")
	vmtest.Write(t, base, "qcow2", "0xab", "1M", "256k")
	vmtest.NewQcow2(t, overlay, "", "base.qcow2")
	vmtest.Write(t, overlay, "qcow2", "0xcd", "8M", "256k")
	vmtest.Write(t, overlay, "qcow2", "0xef", "1088k", "128k")
	return overlay
}

// sameDisk fails unless the two images hold the same disk (qemu-img compare).
func sameDisk(t *testing.T, a, aFormat, b, bFormat string) {
	t.Helper()
	vmtest.QEMU(t, "qemu-img", "compare", "-q", "-f", aFormat, "-F", bFormat, a, b)
}

func imageFormat(t *testing.T, path string) string {
	t.Helper()
	var info struct {
		Format string `json:"format"`
	}
	decode(t, vmtest.QEMU(t, "qemu-img", "info", "--output=json", path), &info)
	return info.Format
}

// TestCLIQcow2BackupAndRestore backs up a qcow2 overlay with a backing
// file by path: the point holds the disk the guest sees (64 MiB, about the
// written data), not the container's bytes, and records the format; it
// restores as qcow2 (the default the definition records, and by a .qcow2
// name) and as raw, each equal to the source.
func TestCLIQcow2BackupAndRestore(t *testing.T) {
	dir := t.TempDir()
	overlay := qcow2Chain(t, dir)
	vaultDir := filepath.Join(dir, "vault")
	initVault(t, vaultDir, 0)
	// lifeboat's qemu-nbd sockets go in $TMPDIR: none may be left.
	tmp := filepath.Join(dir, "tmp")
	os.Mkdir(tmp, 0o700)
	t.Setenv("TMPDIR", tmp)
	defer func() {
		if left, _ := os.ReadDir(tmp); len(left) > 0 {
			t.Errorf("lifeboat left %d entries in $TMPDIR, such as %s", len(left), left[0].Name())
		}
	}()
	vaultArgs := func(args ...string) []string { return append([]string{"--vault", vaultDir}, args...) }

	r := mustRun(t, vaultArgs("--json", "backup", "--machine", "vm", "--disk", "root="+overlay)...)
	var p struct {
		Disks []struct {
			Size    int64    `json:"size"`
			Format  string   `json:"format"`
			Backing []string `json:"backing"`
			Stats   struct {
				NewBytes int64 `json:"new_bytes"`
			} `json:"stats"`
		} `json:"disks"`
		ID string `json:"id"`
	}
	decode(t, r.stdout, &p)
	d := p.Disks[0]
	if d.Size != 64<<20 || d.Format != "qcow2" || len(d.Backing) != 1 {
		t.Fatalf("point disk: size %d, format %q, backing %q; want the 64 MiB disk of a qcow2 with one backing file", d.Size, d.Format, d.Backing)
	}
	if d.Stats.NewBytes != 2*256<<10 {
		t.Fatalf("the point stored %d new bytes for two 256 KiB chunks of data", d.Stats.NewBytes)
	}

	// Default: qcow2, as the definition recorded.
	out := filepath.Join(dir, "out")
	r = mustRun(t, vaultArgs("--json", "restore", "--machine", "vm", p.ID, "--to", out)...)
	restored := filepath.Join(out, "root.qcow2")
	if f := imageFormat(t, restored); f != "qcow2" {
		t.Fatalf("restored %s is %s", restored, f)
	}
	sameDisk(t, overlay, "qcow2", restored, "qcow2")
	var def struct {
		Disks []struct{ Name, File, Format string } `json:"disks"`
	}
	decode(t, string(fileBytes(t, filepath.Join(out, "vm-dr.json"))), &def)
	if len(def.Disks) != 1 || def.Disks[0].File != restored || def.Disks[0].Format != "qcow2" {
		t.Fatalf("restored definition names %+v, want %s as qcow2", def.Disks, restored)
	}

	// --format raw.
	outRaw := filepath.Join(dir, "out-raw")
	mustRun(t, vaultArgs("restore", "--machine", "vm", p.ID, "--to", outRaw, "--format", "raw")...)
	sameDisk(t, overlay, "qcow2", filepath.Join(outRaw, "root.raw"), "raw")
	decode(t, string(fileBytes(t, filepath.Join(outRaw, "vm-dr.json"))), &def)
	if def.Disks[0].Format != "raw" || !strings.HasSuffix(def.Disks[0].File, "root.raw") {
		t.Fatalf("restored definition names %+v, want root.raw as raw", def.Disks)
	}

	// --to-file NAME.qcow2: a real, sparse qcow2.
	x := filepath.Join(dir, "x.qcow2")
	mustRun(t, vaultArgs("restore", "--machine", "vm", p.ID, "--disk", "root", "--to-file", x)...)
	if f := imageFormat(t, x); f != "qcow2" {
		t.Fatalf("--to-file %s wrote a %s image", x, f)
	}
	sameDisk(t, overlay, "qcow2", x, "qcow2")
	if st, err := os.Stat(x); err != nil || st.Size() > 8<<20 {
		t.Fatalf("restored qcow2 is %v bytes (%v): not sparse", st.Size(), err)
	}

	// What is refused, and writes nothing.
	for _, c := range []struct {
		args  []string
		words []string
	}{
		{[]string{"--disk", "root", "--to-file", filepath.Join(dir, "y.qcow2"), "--format", "raw"}, []string{"named as a qcow2 image"}},
		{[]string{"--disk", "root", "--to-file", filepath.Join(dir, "y.vmdk")}, []string{"raw or qcow2"}},
		{[]string{"--to", filepath.Join(dir, "y"), "--format", "vmdk"}, []string{`format "vmdk"`, "raw or qcow2"}},
		{[]string{"--disk", "root", "--to-file", filepath.Join(dir, "y.raw"), "--format", "qcow2"}, []string{"named as a raw image"}},
	} {
		r := run(t, vaultArgs(append([]string{"restore", "--machine", "vm", p.ID}, c.args...)...)...)
		expect(t, strings.Join(c.args, " "), r, cli.ExitUsage, c.words...)
	}
	for _, name := range []string{"y.qcow2", "y.vmdk", "y", "y.raw"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("a refused restore left %s: %v", name, err)
		}
	}
}

// TestCLIQcow2InPlace reverts a stopped machine's qcow2 overlay in place
// after a few blocks changed: only those blocks are written, through
// qemu-nbd, and the image equals the point again.
func TestCLIQcow2InPlace(t *testing.T) {
	dir := t.TempDir()
	overlay := qcow2Chain(t, dir)
	orig := filepath.Join(dir, "orig.qcow2") // backing base.qcow2, as the overlay
	vmtest.QEMU(t, "cp", overlay, orig)
	vaultDir := filepath.Join(dir, "vault")
	initVault(t, vaultDir, 0)
	id := parsePoint(t, mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "vm", "--disk", "root="+overlay)).ID

	vmtest.Write(t, overlay, "qcow2", "0x11", "20M", "64k")   // new data where the point has zeros
	vmtest.Write(t, overlay, "qcow2", "0x22", "8M", "4k")     // over the overlay's data
	vmtest.Write(t, overlay, "qcow2", "0x33", "1536k", "64k") // over the base's data
	r := mustRun(t, "--vault", vaultDir, "--json", "restore", "--machine", "vm", id, "--in-place")
	var out struct {
		Stats struct {
			WrittenBytes    int64 `json:"written_bytes"`
			UnchangedBlocks int64 `json:"unchanged_blocks"`
		} `json:"stats"`
	}
	decode(t, r.stdout, &out)
	if out.Stats.WrittenBytes != 3*256<<10 || out.Stats.UnchangedBlocks != 256-3 {
		t.Fatalf("in-place revert of 3 changed blocks of 256: wrote %d bytes, %d blocks unchanged",
			out.Stats.WrittenBytes, out.Stats.UnchangedBlocks)
	}
	sameDisk(t, orig, "qcow2", overlay, "qcow2")
	if f := imageFormat(t, overlay); f != "qcow2" {
		t.Fatalf("the reverted image is now %s", f)
	}
	// A second revert finds nothing to write.
	decode(t, mustRun(t, "--vault", vaultDir, "--json", "restore", "--machine", "vm", id, "--in-place").stdout, &out)
	if out.Stats.WrittenBytes != 0 {
		t.Fatalf("reverting an image equal to the point wrote %d bytes", out.Stats.WrittenBytes)
	}
	// --format raw takes the qcow2 file for a raw disk: its size is not
	// the disk's, so nothing is written.
	r = run(t, "--vault", vaultDir, "restore", "--machine", "vm", id, "--in-place", "--format", "raw")
	expect(t, "in place --format raw onto a qcow2", r, cli.ExitNotFound, "size differs")
	sameDisk(t, orig, "qcow2", overlay, "qcow2")
	// A container format must be what the target is.
	raw := filepath.Join(dir, "root.raw")
	mustRun(t, "--vault", vaultDir, "restore", "--machine", "vm", id, "--disk", "root", "--to-file", raw)
	r = run(t, "--vault", vaultDir, "restore", "--machine", "vm", id, "--disk", "root", "--to-file", raw, "--in-place", "--format", "qcow2")
	expect(t, "in place --format qcow2 onto a raw image", r, cli.ExitUsage, "is a raw image, not qcow2")
}

// TestCLIBackupWarnsOfImageInUse backs up a qcow2 image that a running
// QEMU holds open (a writable NBD export of qemu-storage-daemon stands
// for the guest): the backup says the point is not consistent and points
// at --qmp, in its output and in the point's notes.
func TestCLIBackupWarnsOfImageInUse(t *testing.T) {
	vmtest.RequireBinary(t, "qemu-storage-daemon")
	dir := t.TempDir()
	overlay := qcow2Chain(t, dir)
	vaultDir := filepath.Join(dir, "vault")
	initVault(t, vaultDir, 0)
	cmd := exec.Command("qemu-storage-daemon",
		"--blockdev", "driver=file,node-name=f0,filename="+overlay,
		"--blockdev", "driver=qcow2,node-name=d0,file=f0",
		"--nbd-server", "addr.type=unix,addr.path="+filepath.Join(dir, "qsd.sock"),
		"--export", "type=nbd,id=e0,node-name=d0,writable=on")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for !locked(t, overlay) {
		if time.Now().After(deadline) {
			t.Fatal("qemu-storage-daemon never locked the image")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "vm", "--disk", "root="+overlay)
	p := parsePoint(t, r)
	for _, w := range []string{"held open by another process", "--qmp", "crash-consistent"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("backup of an image in use: stderr does not say %q:\n%s", w, r.stderr)
		}
	}
	if len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "--qmp") {
		t.Errorf("the point's notes are %q", p.Notes)
	}
	cmd.Process.Kill()
	cmd.Wait()
	// Once nothing holds it, no warning.
	r = mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "vm", "--disk", "root="+overlay)
	if strings.Contains(r.stderr, "held open") || len(parsePoint(t, r).Notes) != 0 {
		t.Errorf("backup of an image nothing holds warned:\n%s", r.stderr)
	}
}

var (
	counterLine     = regexp.MustCompile(`^LB counter (\d+)$`)
	readcounterLine = regexp.MustCompile(`^LB readcounter (\d+)$`)
)

// bootCounter boots the disk with the readcounter workload and returns
// the counter the guest finds on it.
func bootCounter(t *testing.T, ctx context.Context, disk vmtest.Disk) int {
	t.Helper()
	vm := vmtest.Start(t, vmtest.Config{Disks: []vmtest.Disk{disk}, Workload: "readcounter"})
	m, err := vm.WaitLine(ctx, readcounterLine)
	if err != nil {
		t.Fatalf("booting %s (%s): %v", disk.Path, disk.Format, err)
	}
	n, _ := strconv.Atoi(m[1])
	if err := vm.Wait(ctx); err != nil {
		t.Fatalf("readcounter VM on %s did not power off cleanly: %v", disk.Path, err)
	}
	return n
}

// TestCLIQcow2RestoredMachineBoots runs a TCG guest counting on an ext4
// qcow2 overlay over a base image, backs the stopped machine's disk up by
// path, and boots the disk of the restored -dr definition — as qcow2 (the
// default) and as raw — which holds the counter of the point.
func TestCLIQcow2RestoredMachineBoots(t *testing.T) {
	vmtest.Assets(t)
	vmtest.RequireBinary(t, "qemu-nbd")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := t.TempDir()
	vmtest.NewExt4Disk(t, filepath.Join(dir, "base.qcow2"), "qcow2", 64)
	overlay := filepath.Join(dir, "root.qcow2")
	vmtest.NewQcow2(t, overlay, "", "base.qcow2")
	src := vmtest.Disk{Path: overlay, Format: "qcow2"}
	vm := vmtest.Start(t, vmtest.Config{Disks: []vmtest.Disk{src}, Workload: "counter"})
	for {
		m, err := vm.WaitLine(ctx, counterLine)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := strconv.Atoi(m[1]); n >= 3 {
			break
		}
	}
	vm.Kill()
	vm.Wait(ctx)
	want := bootCounter(t, ctx, src) // the stopped machine's disk holds this

	vaultDir := filepath.Join(dir, "vault")
	initVault(t, vaultDir, 0)
	id := parsePoint(t, mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "vm", "--disk", "root="+overlay)).ID
	for _, format := range []string{"qcow2", "raw"} {
		out := filepath.Join(dir, "out-"+format)
		args := []string{"--vault", vaultDir, "restore", "--machine", "vm", id, "--to", out}
		if format == "raw" {
			args = append(args, "--format", "raw")
		}
		mustRun(t, args...)
		var def struct {
			Name  string                                `json:"name"`
			Disks []struct{ Name, File, Format string } `json:"disks"`
		}
		decode(t, string(fileBytes(t, filepath.Join(out, "vm-dr.json"))), &def)
		if def.Name != "vm-dr" || len(def.Disks) != 1 || def.Disks[0].Format != format || imageFormat(t, def.Disks[0].File) != format {
			t.Fatalf("restored definition %+v: want one %s disk", def, format)
		}
		restored := vmtest.Disk{Path: def.Disks[0].File, Format: def.Disks[0].Format}
		sameDisk(t, overlay, "qcow2", restored.Path, restored.Format)
		if got := bootCounter(t, ctx, restored); got != want {
			t.Fatalf("the %s disk of the restored definition boots with counter %d, the point's disk had %d", format, got, want)
		}
	}
}

// children returns the pids of pid's child processes named comm.
func children(t *testing.T, pid int, comm string) []int {
	t.Helper()
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open || s[open+1:close] != comm {
			continue
		}
		f := strings.Fields(s[close+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			n, _ := strconv.Atoi(strings.Fields(s)[0])
			out = append(out, n)
		}
	}
	return out
}

// alive reports whether pid runs (exists and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z"
}

// TestQemuNBDDiesWithLifeboat kills lifeboat -9 while it reads a qcow2
// image through qemu-nbd (held open by a post-hook that waits): the
// server must not outlive it (its one client is gone, and the parent-death
// signal covers a server not yet connected to).
func TestQemuNBDDiesWithLifeboat(t *testing.T) {
	dir := t.TempDir()
	overlay := qcow2Chain(t, dir)
	vaultDir := filepath.Join(dir, "vault")
	initVault(t, vaultDir, 0)
	marker, hookPid := filepath.Join(dir, "post-hook-runs"), filepath.Join(dir, "hook.pid")
	p := startProc(t, "--vault", vaultDir, "backup", "--machine", "vm", "--disk", "root="+overlay,
		"--consistency", "app", "--pre-hook", "true", "--post-hook", "echo $$ > "+hookPid+"; touch "+marker+"; exec sleep 120")
	defer func() {
		if b, err := os.ReadFile(hookPid); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(n, syscall.SIGKILL)
			}
		}
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("the post-hook never ran:\n%s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	servers := children(t, p.cmd.Process.Pid, "qemu-nbd")
	if len(servers) != 1 {
		t.Fatalf("lifeboat runs %d qemu-nbd while it holds the qcow2 image open, want 1", len(servers))
	}
	p.kill()
	for alive(servers[0]) {
		if time.Now().After(deadline) {
			syscall.Kill(servers[0], syscall.SIGKILL)
			t.Fatalf("qemu-nbd %d outlived lifeboat, killed -9", servers[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
