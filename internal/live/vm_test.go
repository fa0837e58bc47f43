package live_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/live"
	"lifeboat/internal/recovery"
	"lifeboat/internal/restore"
	"lifeboat/internal/vault"
	"lifeboat/internal/vmtest"
)

const bootTimeout = 120 * time.Second

var (
	readyLine       = regexp.MustCompile(`^LB ready$`)
	counterLine     = regexp.MustCompile(`^LB counter (\d+)$`)
	readcounterLine = regexp.MustCompile(`^LB readcounter (\d+)$`)
	seqLine         = regexp.MustCompile(`^LB seq (\d+)$`)
)

// lastInt returns the number in the last line of lines[from:] matching re,
// or -1.
func lastInt(lines []string, from int, re *regexp.Regexp) int {
	for i := len(lines) - 1; i >= from; i-- {
		if m := re.FindStringSubmatch(lines[i]); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	return -1
}

// firstIntAfter waits for the first line after index from matching re.
func firstIntAfter(t *testing.T, ctx context.Context, vm *vmtest.VM, from int, re *regexp.Regexp) int {
	t.Helper()
	for {
		lines := vm.Lines()
		for i := from; i < len(lines); i++ {
			if m := re.FindStringSubmatch(lines[i]); m != nil {
				n, _ := strconv.Atoi(m[1])
				return n
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no line matching %s after line %d", re, from)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func restoreDisk(t *testing.T, v *vault.Vault, p *recovery.Point, disk, path string) {
	t.Helper()
	d, ok := p.Disk(disk)
	if !ok {
		t.Fatalf("point %s has no disk %s", p.ID.Short(), disk)
	}
	if _, err := restore.Run(context.Background(), v, p, []restore.Target{{Disk: *d, Path: path}}, restore.Options{}); err != nil {
		t.Fatal(err)
	}
}

// bootReadCounter boots the restored disk and returns the counter in it.
func bootReadCounter(t *testing.T, ctx context.Context, path string) int {
	t.Helper()
	vm := vmtest.Start(t, vmtest.Config{Disks: []vmtest.Disk{{Path: path, Format: "raw"}}, Workload: "readcounter"})
	m, err := vm.WaitLine(ctx, readcounterLine)
	if err != nil {
		t.Fatalf("booting the restored disk: %v", err)
	}
	n, _ := strconv.Atoi(m[1])
	vm.Wait(ctx)
	return n
}

// A VM writes a counter to ext4 and syncs. Live backups while it runs,
// frozen by the real guest agent, restore to disks that boot and hold a
// counter between the values printed just before and just after the
// instant. QEMU is then killed -9; the next backup finds the bitmap broken,
// reads everything, and is still right.
func TestLiveVMCounter(t *testing.T) {
	vmtest.Assets(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*bootTimeout)
	defer cancel()
	dir := t.TempDir()
	disk := vmtest.NewExt4Disk(t, filepath.Join(dir, "root.qcow2"), "qcow2", 64)
	disk.ID = "vda"
	v, err := vault.Init(ctx, blob.NewMem(), []byte("pw"), cheap)
	if err != nil {
		t.Fatal(err)
	}

	backupRunning := func(vm *vmtest.VM, want string) (*recovery.Point, int, int, []string) {
		t.Helper()
		waitInt := func() { firstIntAfter(t, ctx, vm, len(vm.Lines()), counterLine) }
		waitInt() // the workload is running
		var before, after, mark int
		var warnings []string
		opts := live.Options{Machine: "vm1", QMP: vm.QMPSocket, GuestAgent: vm.GuestAgentSocket,
			Consistency: recovery.File, FreezeTimeout: 30 * time.Second,
			Warn: func(s string) { warnings = append(warnings, s) }}
		opts.AfterInstant = func() { mark = len(vm.Lines()) }
		before = lastInt(vm.Lines(), 0, counterLine)
		p, err := live.Backup(ctx, v, opts)
		if err != nil {
			t.Fatalf("live backup: %v\nVM log:\n%s", err, vm.Log())
		}
		after = firstIntAfter(t, ctx, vm, mark, counterLine)
		if p.Consistency != recovery.File {
			t.Fatalf("point consistency %q (notes %q), want file", p.Consistency, p.Notes)
		}
		if d, _ := p.Disk("vda"); d == nil || d.ChangeSource != want {
			t.Fatalf("point disks %+v: want disk vda with change source %s", p.Disks, want)
		}
		return p, before, after, warnings
	}

	vm := vmtest.Start(t, vmtest.Config{Disks: []vmtest.Disk{disk}, Workload: "counter", GuestAgent: true})
	if _, err := vm.WaitLine(ctx, readyLine); err != nil {
		t.Fatal(err)
	}
	p1, b1, a1, _ := backupRunning(vm, "full")
	p2, b2, a2, _ := backupRunning(vm, "tracking")
	if d, _ := p2.Disk("vda"); d.Stats.ReadBytes >= d.Size/4 {
		t.Fatalf("tracked incremental read %d of %d bytes", d.Stats.ReadBytes, d.Size)
	}
	for i, c := range []struct {
		p             *recovery.Point
		before, after int
	}{{p1, b1, a1}, {p2, b2, a2}} {
		img := filepath.Join(dir, fmt.Sprintf("restored%d.raw", i))
		restoreDisk(t, v, c.p, "vda", img)
		n := bootReadCounter(t, ctx, img)
		t.Logf("point %d: counter %d, printed %d before and %d after the instant", i+1, n, c.before, c.after)
		if n < c.before || n > c.after {
			t.Fatalf("point %d: restored counter %d not within [%d, %d]", i+1, n, c.before, c.after)
		}
	}

	// kill -9 QEMU between two backups, and start it again on the same disk.
	if err := vm.Kill(); err != nil {
		t.Fatal(err)
	}
	vm.Wait(ctx)
	vm = vmtest.Start(t, vmtest.Config{Disks: []vmtest.Disk{disk}, Workload: "counter", GuestAgent: true})
	if _, err := vm.WaitLine(ctx, readyLine); err != nil {
		t.Fatal(err)
	}
	p3, b3, a3, warnings := backupRunning(vm, "compare")
	if !strings.Contains(strings.Join(warnings, "\n"), "bitmap") {
		t.Fatalf("backup after kill -9 gave no warning about the bitmap: %q", warnings)
	}
	img := filepath.Join(dir, "restored3.raw")
	restoreDisk(t, v, p3, "vda", img)
	if n := bootReadCounter(t, ctx, img); n < b3 || n > a3 {
		t.Fatalf("after kill -9: restored counter %d not within [%d, %d]", n, b3, a3)
	}
}

// A workload writes a sequence number to disk 1 and then to disk 2. The
// instant is one transaction over both disks, so no point ever shows disk
// 2 ahead of disk 1.
func TestLiveVMMultiDiskOrder(t *testing.T) {
	vmtest.Assets(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*bootTimeout)
	defer cancel()
	dir := t.TempDir()
	d1 := vmtest.NewRawDisk(t, filepath.Join(dir, "a.raw"), 16)
	d2 := vmtest.NewRawDisk(t, filepath.Join(dir, "b.raw"), 16)
	d1.ID, d2.ID = "vda", "vdb"
	vm := vmtest.Start(t, vmtest.Config{Disks: []vmtest.Disk{d1, d2}, Workload: "seq2"})
	if _, err := vm.WaitLine(ctx, readyLine); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Init(ctx, blob.NewMem(), []byte("pw"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[[2]int]bool{}
	for i := 0; i < 6; i++ {
		firstIntAfter(t, ctx, vm, len(vm.Lines()), seqLine)
		p, err := live.Backup(ctx, v, live.Options{Machine: "seq", QMP: vm.QMPSocket})
		if err != nil {
			t.Fatalf("backup %d: %v", i, err)
		}
		out := t.TempDir()
		var seqs [2]int
		for j, name := range []string{"vda", "vdb"} {
			path := filepath.Join(out, name)
			restoreDisk(t, v, p, name, path)
			seqs[j] = readRecord(t, path)
		}
		seen[seqs] = true
		if seqs[1] > seqs[0] || seqs[0]-seqs[1] > 1 || seqs[0] < 1 {
			t.Fatalf("point %d: disk 1 at %d, disk 2 at %d: not one instant", i, seqs[0], seqs[1])
		}
		t.Logf("point %d: vda %d vdb %d", i, seqs[0], seqs[1])
	}
}

// readRecord reads the workload's "LBSEQ %020d" record at offset 0.
func readRecord(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 26)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "LBSEQ ") {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimLeft(string(b[6:]), "0"))
	if err != nil {
		return 0
	}
	return n
}
