package live_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/crypto"
	"lifeboat/internal/libvirt/libvirttest"
	"lifeboat/internal/live"
	"lifeboat/internal/qmp"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
	"lifeboat/internal/vmtest"
)

// BenchmarkIncremental1Pct: an incremental backup of 1% of a 4 GiB qcow2
// disk (1 GiB of random data, 656 scattered 64 KiB writes) through
// libvirt's backup API, through --qmp, and by restic over the raw image.
// The writes are made with qemu-io while the machine is stopped cleanly
// (the persistent bitmaps record them), so both paths see the same change.
//
//	go test -run XXX -bench Incremental1Pct -benchtime 1x ./internal/live
func BenchmarkIncremental1Pct(b *testing.B) {
	d := libvirttest.Start(b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir := b.TempDir()
	raw := filepath.Join(dir, "base.raw")
	sh(b, "truncate", "-s", "4G", raw)
	sh(b, "dd", "if=/dev/urandom", "of="+raw, "bs=1M", "count=1024", "conv=notrunc", "status=none")
	lvImg, qmpImg := filepath.Join(dir, "lv.qcow2"), filepath.Join(dir, "qmp.qcow2")
	for _, img := range []string{lvImg, qmpImg} {
		sh(b, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, img)
	}
	change := func(img, rawOut string) {
		args := []string{"-f", "qcow2"}
		for i := range 656 { // 41 MiB: 1% of 4 GiB
			args = append(args, "-c", fmt.Sprintf("write -P %d %d 64k", i%250+1, int64(i)*(1<<30)/656/65536*65536))
		}
		sh(b, "qemu-io", append(args, img)...)
		if rawOut != "" {
			sh(b, "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", img, rawOut)
		}
	}
	newVault := func(name string) *vault.Vault {
		vd := filepath.Join(dir, name)
		os.Mkdir(vd, 0o700)
		st, err := blob.NewDir(vd)
		if err != nil {
			b.Fatal(err)
		}
		v, err := vault.Init(ctx, st, []byte("pw"), vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
		if err != nil {
			b.Fatal(err)
		}
		return v
	}
	check := func(p *recovery.Point, what string) {
		pd, _ := p.Disk("vda")
		if pd == nil || pd.ChangeSource != "tracking" {
			b.Fatalf("%s: incremental not from tracking: %+v", what, p.Disks)
		}
		b.Logf("%s: read %d MiB, %d chunks from tracking", what, pd.Stats.ReadBytes>>20, pd.Stats.TrackedChunks)
	}

	// libvirt.
	v := newVault("lv-vault")
	dom := d.Define(b, libvirttest.DomainConfig{Name: "lbbench", Disks: []vmtest.Disk{{Path: lvImg, Format: "qcow2"}}})
	c := d.Conn(b)
	ready := regexp.MustCompile(`^LB ready$`)
	boot := func(skip int) {
		ld, err := c.Lookup(ctx, dom.Name)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(ctx, ld); err != nil {
			b.Fatal(err)
		}
		if _, err := libvirttest.WaitConsole(ctx, dom.Console, ready, skip); err != nil {
			b.Fatal(err)
		}
	}
	boot(0)
	opts := live.LibvirtOptions{Machine: "bench", Domain: dom.Name, URI: d.URI(), Dir: filepath.Join(dir, "scratch")}
	if _, err := live.BackupLibvirt(ctx, v, opts); err != nil {
		b.Fatal(err)
	}
	ld, _ := c.Lookup(ctx, dom.Name)
	if err := c.Destroy(ctx, ld); err != nil { // SIGTERM: QEMU writes the bitmaps back
		b.Fatal(err)
	}
	change(lvImg, "")
	boot(1)
	start := time.Now()
	p, err := live.BackupLibvirt(ctx, v, opts)
	lvTime := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	check(p, "libvirt")
	if err := c.Destroy(ctx, ld); err != nil {
		b.Fatal(err)
	}

	// QMP.
	v = newVault("qmp-vault")
	disk := vmtest.Disk{Path: qmpImg, Format: "qcow2", ID: "vda"}
	vm := vmtest.Start(b, vmtest.Config{Disks: []vmtest.Disk{disk}})
	if _, err := vm.WaitLine(ctx, ready); err != nil {
		b.Fatal(err)
	}
	qopts := live.Options{Machine: "bench", QMP: vm.QMPSocket, Dir: filepath.Join(dir, "fleece")}
	if _, err := live.Backup(ctx, v, qopts); err != nil {
		b.Fatal(err)
	}
	mon, err := qmp.Dial(ctx, vm.QMPSocket)
	if err != nil {
		b.Fatal(err)
	}
	if err := mon.Execute(ctx, "quit", nil, nil); err != nil && !errors.Is(err, qmp.ErrDisconnected) {
		b.Fatal(err)
	}
	mon.Close()
	vm.Wait(ctx)
	sh(b, "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", qmpImg, filepath.Join(dir, "before.raw"))
	change(qmpImg, filepath.Join(dir, "after.raw"))
	vm = vmtest.Start(b, vmtest.Config{Disks: []vmtest.Disk{disk}})
	if _, err := vm.WaitLine(ctx, ready); err != nil {
		b.Fatal(err)
	}
	qopts.QMP = vm.QMPSocket
	start = time.Now()
	p, err = live.Backup(ctx, v, qopts)
	qmpTime := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	check(p, "qmp")
	vm.Kill()

	// restic over the raw image, before and after.
	var resticTime time.Duration
	if _, err := exec.LookPath("restic"); err == nil {
		repo := filepath.Join(dir, "restic")
		env := append(os.Environ(), "RESTIC_PASSWORD=pw", "RESTIC_REPOSITORY="+repo)
		run := func(args ...string) {
			cmd := exec.Command("restic", args...)
			cmd.Env = env
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("restic %v: %v\n%s", args, err, out)
			}
		}
		run("init")
		os.Rename(filepath.Join(dir, "before.raw"), filepath.Join(dir, "disk.raw"))
		run("backup", "--quiet", filepath.Join(dir, "disk.raw"))
		os.Rename(filepath.Join(dir, "after.raw"), filepath.Join(dir, "disk.raw"))
		start = time.Now()
		run("backup", "--quiet", filepath.Join(dir, "disk.raw"))
		resticTime = time.Since(start)
	}
	b.ReportMetric(lvTime.Seconds(), "libvirt-s")
	b.ReportMetric(qmpTime.Seconds(), "qmp-s")
	b.ReportMetric(resticTime.Seconds(), "restic-s")
	b.ReportMetric(lvTime.Seconds()/qmpTime.Seconds(), "libvirt/qmp")
}

func sh(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}
