package live_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"

	"lifeboat/internal/blob"
	"lifeboat/internal/job"
	"lifeboat/internal/libvirt"
	"lifeboat/internal/libvirt/libvirttest"
	"lifeboat/internal/live"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
	"lifeboat/internal/vmtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	libvirttest.Stop()
	os.Exit(code)
}

// lifeboatCheckpoints lists the domain's checkpoints lifeboat made.
func lifeboatCheckpoints(t *testing.T, ctx context.Context, c *libvirt.Conn, name string) []string {
	t.Helper()
	dom, err := c.Lookup(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	cps, err := c.Checkpoints(ctx, dom)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, cp := range cps {
		if strings.HasPrefix(cp, live.BitmapPrefix) {
			out = append(out, cp)
		}
	}
	return out
}

// A TCG domain writes a sequence number to sector 0 of vda and then vdb
// (two qcow2 disks) in a loop. Backups through libvirt's backup API are
// one instant over both disks; an incremental reads exactly the one
// 64 KiB block the checkpoint's bitmap marks on each disk; only the
// latest point's checkpoint is left in the domain; after the domain is
// killed, the next backup finds the bitmaps broken and compares instead.
func TestLibvirtBackupIncremental(t *testing.T) {
	d := libvirttest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*bootTimeout)
	defer cancel()
	dir := t.TempDir()
	var disks []vmtest.Disk
	for _, n := range []string{"a", "b"} {
		raw := vmtest.NewRawDisk(t, filepath.Join(dir, n+".raw"), 16)
		qcow := filepath.Join(dir, n+".qcow2")
		vmtest.QEMU(t, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw.Path, qcow)
		disks = append(disks, vmtest.Disk{Path: qcow, Format: "qcow2"})
	}
	dom := d.Define(t, libvirttest.DomainConfig{Name: "lbseq", Disks: disks, Workload: "seq2"})
	c := d.Conn(t)
	start := func() {
		t.Helper()
		ld, err := c.Lookup(ctx, dom.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx, ld); err != nil {
			t.Fatal(err)
		}
	}
	start()
	if _, err := libvirttest.WaitConsole(ctx, dom.Console, regexp.MustCompile(`^LB seq \d+$`), 0); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Init(ctx, blob.NewMem(), []byte("pw"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	var warnings []string
	opts := live.LibvirtOptions{Machine: "seq", Domain: dom.Name, URI: d.URI(), Dir: filepath.Join(dir, "scratch"),
		Warn: func(s string) { warnings = append(warnings, s) }}
	backupOnce := func(i int, want string) *recovery.Point {
		t.Helper()
		warnings = nil
		p, err := live.BackupLibvirt(ctx, v, opts)
		if err != nil {
			t.Fatalf("backup %d: %v", i, err)
		}
		out := t.TempDir()
		var seqs [2]int
		for j, name := range []string{"vda", "vdb"} {
			pd, ok := p.Disk(name)
			if !ok || pd.ChangeSource != want {
				t.Fatalf("backup %d: disks %+v: want %s with change source %s (warnings %q)", i, p.Disks, name, want, warnings)
			}
			path := filepath.Join(out, name)
			restoreDisk(t, v, p, name, path)
			seqs[j] = readRecord(t, path)
		}
		if seqs[1] > seqs[0] || seqs[0]-seqs[1] > 1 || seqs[0] < 1 {
			t.Fatalf("backup %d: vda at %d, vdb at %d: not one instant", i, seqs[0], seqs[1])
		}
		if cps := lifeboatCheckpoints(t, ctx, c, dom.Name); len(cps) != 1 || cps[0] != p.Disks[0].Tracking {
			t.Fatalf("backup %d: lifeboat's checkpoints in the domain %q, want only the point's %s (warnings %q)", i, cps, p.Disks[0].Tracking, warnings)
		}
		return p
	}
	backupOnce(1, "full")
	for i := 2; i <= 3; i++ {
		p := backupOnce(i, "tracking")
		for _, pd := range p.Disks {
			// The guest rewrote sector 0 only: one block of the bitmap.
			chunks := pd.Size / int64(pd.ChunkSize)
			if pd.Stats.ReadBytes != int64(pd.ChunkSize) || pd.Stats.TrackedChunks != chunks-1 {
				t.Fatalf("backup %d, disk %s: read %d bytes, %d of %d chunks from tracking: want the one changed %d-byte chunk read",
					i, pd.Name, pd.Stats.ReadBytes, pd.Stats.TrackedChunks, chunks, pd.ChunkSize)
			}
		}
	}

	// A crash: QEMU leaves the persistent bitmaps marked in use.
	d.KillQEMU(t, dom.Name)
	start()
	if _, err := libvirttest.WaitConsole(ctx, dom.Console, regexp.MustCompile(`^LB seq \d+$`), 0); err != nil {
		t.Fatal(err)
	}
	backupOnce(4, "compare")
	if !strings.Contains(strings.Join(warnings, "\n"), "killed or crashed") {
		t.Fatalf("backup after the kill gave no warning about the broken bitmap: %q", warnings)
	}
	backupOnce(5, "tracking")
}

// A domain whose guest counts in a file on ext4 is backed up file-
// consistently through libvirt's guest agent while it writes; the point
// restored with --libvirt-define --start boots as a new domain (new name,
// UUID, MAC and disk images) whose counter continues from the point's.
func TestLibvirtRestoreDefineStart(t *testing.T) {
	d := libvirttest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*bootTimeout)
	defer cancel()
	dir := t.TempDir()
	disk := vmtest.NewExt4Disk(t, filepath.Join(dir, "root.qcow2"), "qcow2", 64)
	dom := d.Define(t, libvirttest.DomainConfig{Name: "lbcount", Disks: []vmtest.Disk{disk}, Workload: "counter", Agent: true})
	c := d.Conn(t)
	ld, err := c.Lookup(ctx, dom.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, ld); err != nil {
		t.Fatal(err)
	}
	counter := regexp.MustCompile(`^LB counter (\d+)$`)
	if _, err := libvirttest.WaitConsole(ctx, dom.Console, counter, 2); err != nil {
		t.Fatal(err)
	}
	vaultDir := filepath.Join(dir, "vault")
	if err := os.Mkdir(vaultDir, 0o700); err != nil {
		t.Fatal(err)
	}
	store, err := blob.NewDir(vaultDir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.Init(ctx, store, []byte("pw"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	before, atInstant := lastCounter(t, dom.Console, counter), -1
	// No Dir: libvirt places the scratch images itself.
	p, err := live.BackupLibvirt(ctx, v, live.LibvirtOptions{Machine: "count", Domain: dom.Name, URI: d.URI(),
		Consistency: recovery.File, Warn: func(s string) { t.Log(s) },
		AfterInstant: func() { atInstant = lastCounter(t, dom.Console, counter) }})
	if err != nil {
		t.Fatal(err)
	}
	if p.Consistency != recovery.File {
		t.Fatalf("point is %s-consistent (notes %q), want file", p.Consistency, p.Notes)
	}
	if libvirt.StoredXML(p.Definition) == "" {
		t.Fatalf("point definition stores no domain XML: %s", p.Definition)
	}
	if _, err := recovery.ParseDefinition(p.Definition); err != nil {
		t.Fatal(err)
	}
	// The original is stopped so the copy's counter can only come from
	// the point.
	if err := c.Destroy(ctx, ld); err != nil {
		t.Fatal(err)
	}
	after := lastCounter(t, dom.Console, counter)

	out := filepath.Join(dir, "restored")
	res, err := job.RunRestore(ctx, v, job.Restore{Machine: "count", Point: "latest", Vault: vaultDir, Dir: out,
		LibvirtDefine: true, Connect: d.URI(), Start: true}, job.Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Remove(t, res.Domain.Name) })
	if res.Domain.Name != dom.Name+"-dr" || !res.Domain.Running {
		t.Fatalf("restored domain %q running %v, want %s-dr running", res.Domain.Name, res.Domain.Running, dom.Name)
	}
	var x, orig libvirtxml.Domain
	if err := x.Unmarshal(res.Domain.XML); err != nil {
		t.Fatal(err)
	}
	if err := orig.Unmarshal(ld.XML); err != nil {
		t.Fatal(err)
	}
	if x.UUID == orig.UUID || x.Devices.Interfaces[0].MAC.Address == orig.Devices.Interfaces[0].MAC.Address {
		t.Fatalf("restored domain kept UUID %s or MAC %s", x.UUID, orig.Devices.Interfaces[0].MAC.Address)
	}
	if src := x.Devices.Disks[0].Source.File.File; !strings.HasPrefix(src, out) {
		t.Fatalf("restored domain's disk is %s, not under %s", src, out)
	}
	// The copy logs to the original's console file too (it is in the
	// stored XML): its lines follow the original's.
	m, err := libvirttest.WaitConsole(ctx, dom.Console, regexp.MustCompile(`^LB readcounter-start|^LB counter (\d+)$`), countLines(t, dom.Console, counter))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(m[1])
	t.Logf("counter printed %d before the backup, %d at the instant, %d when stopped; the restored domain counts on from %d", before, atInstant, after, n)
	// The point holds a value from before to just after the instant (the
	// write that was under way when the guest froze); the copy counts on
	// from it.
	if n <= before || n > atInstant+2 {
		t.Fatalf("restored domain counts %d: not after the point's value (printed before the backup: %d, at the instant: %d)", n, before, atInstant)
	}
}

func counterValues(t *testing.T, console string, re *regexp.Regexp) []int {
	t.Helper()
	data, err := os.ReadFile(console)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, line := range strings.Split(string(data), "\n") {
		if m := re.FindStringSubmatch(strings.TrimRight(line, "\r")); m != nil {
			n, _ := strconv.Atoi(m[1])
			out = append(out, n)
		}
	}
	return out
}

func lastCounter(t *testing.T, console string, re *regexp.Regexp) int {
	v := counterValues(t, console, re)
	if len(v) == 0 {
		return -1
	}
	return v[len(v)-1]
}

func countLines(t *testing.T, console string, re *regexp.Regexp) int {
	return len(counterValues(t, console, re))
}

// The errors a user meets: no daemon, a backup job already running, a
// network disk, and the checks of the backup API's presence.
func TestLibvirtErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*bootTimeout)
	defer cancel()
	v, err := vault.Init(ctx, blob.NewMem(), []byte("pw"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	_, err = live.BackupLibvirt(ctx, v, live.LibvirtOptions{Machine: "m", Domain: "x", URI: "qemu:///system?socket=" + filepath.Join(t.TempDir(), "none")})
	if !errors.Is(err, libvirt.ErrNoDaemon) || !strings.Contains(err.Error(), "running?") {
		t.Fatalf("no daemon: %v", err)
	}

	d := libvirttest.Start(t)
	_, err = live.BackupLibvirt(ctx, v, live.LibvirtOptions{Machine: "m", Domain: "nosuch", URI: d.URI()})
	if !errors.Is(err, libvirt.ErrNoDomain) {
		t.Fatalf("no domain: %v", err)
	}

	dir := t.TempDir()
	disk := vmtest.NewRawDisk(t, filepath.Join(dir, "a.raw"), 16)
	qcow := filepath.Join(dir, "a.qcow2")
	vmtest.QEMU(t, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", disk.Path, qcow)
	cfg := libvirttest.DomainConfig{Name: "lbnet", Disks: []vmtest.Disk{{Path: qcow, Format: "qcow2"}}}
	doc := strings.Replace(libvirttest.DomainXML(t, cfg, filepath.Join(dir, "console")), "</devices>",
		"<disk type='network' device='disk'><driver name='qemu' type='raw'/><source protocol='nbd' name='x'><host name='127.0.0.1' port='10809'/></source><target dev='vdb' bus='virtio'/></disk></devices>", 1)
	c := d.Conn(t)
	if _, err := c.Define(ctx, doc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Remove(t, "lbnet") })
	_, err = live.BackupLibvirt(ctx, v, live.LibvirtOptions{Machine: "m", Domain: "lbnet", URI: d.URI()})
	if !errors.Is(err, libvirt.ErrUnsupported) || !strings.Contains(err.Error(), "network disk") {
		t.Fatalf("network disk: %v", err)
	}

	// A backup job someone else started.
	dom := d.Define(t, libvirttest.DomainConfig{Name: "lbjob", Disks: []vmtest.Disk{{Path: qcow, Format: "qcow2"}}})
	ld, err := c.Lookup(ctx, dom.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, ld); err != nil {
		t.Fatal(err)
	}
	theirs := &libvirtxml.DomainBackup{Pull: &libvirtxml.DomainBackupPull{
		Server: &libvirtxml.DomainBackupPullServer{UNIX: &libvirtxml.DomainBackupPullServerUNIX{Socket: filepath.Join(dir, "theirs.sock")}}}}
	if err := c.BackupBegin(ctx, ld, theirs, nil); err != nil {
		t.Fatal(err)
	}
	_, err = live.BackupLibvirt(ctx, v, live.LibvirtOptions{Machine: "m", Domain: dom.Name, URI: d.URI(), Dir: filepath.Join(dir, "scratch")})
	if !errors.Is(err, libvirt.ErrJobRunning) || !strings.Contains(err.Error(), "domjobabort") {
		t.Fatalf("job running: %v", err)
	}
	if cps := lifeboatCheckpoints(t, ctx, c, dom.Name); len(cps) != 0 {
		t.Fatalf("a refused backup left checkpoints %q", cps)
	}
	if err := c.AbortJob(ctx, ld); err != nil {
		t.Fatal(err)
	}

	// What a killed backup leaves: its job, serving on its socket. The
	// next backup of the machine ends it and goes on.
	scratch := filepath.Join(dir, "scratch")
	os.MkdirAll(scratch, 0o700)
	killed := &libvirtxml.DomainBackup{Pull: &libvirtxml.DomainBackupPull{
		Server: &libvirtxml.DomainBackupPullServer{UNIX: &libvirtxml.DomainBackupPullServerUNIX{Socket: filepath.Join(scratch, "nbd.sock")}}}}
	if err := c.BackupBegin(ctx, ld, killed, nil); err != nil {
		t.Fatal(err)
	}
	var warnings []string
	opts := live.LibvirtOptions{Machine: "m", Domain: dom.Name, URI: d.URI(), Dir: scratch, Warn: func(s string) { warnings = append(warnings, s) }}
	if _, err := live.BackupLibvirt(ctx, v, opts); err != nil || !strings.Contains(strings.Join(warnings, "\n"), "was killed") {
		t.Fatalf("backup after a killed one: %v (warnings %q)", err, warnings)
	}
	first := lifeboatCheckpoints(t, ctx, c, dom.Name)

	// A cancelled backup ends its job and deletes its checkpoint, though
	// its connection was cut.
	cctx, ccancel := context.WithCancel(ctx)
	opts.AfterInstant = ccancel
	if _, err := live.BackupLibvirt(cctx, v, opts); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled backup: %v", err)
	}
	if err := c.CheckNoJob(ctx, ld); err != nil {
		t.Fatalf("after a cancelled backup: %v", err)
	}
	if cps := lifeboatCheckpoints(t, ctx, c, dom.Name); strings.Join(cps, ",") != strings.Join(first, ",") {
		t.Fatalf("checkpoints %q after a cancelled backup, want the last point's %q", cps, first)
	}
	opts.AfterInstant = nil
	p, err := live.BackupLibvirt(ctx, v, opts)
	if err != nil {
		t.Fatal(err)
	}
	if pd, _ := p.Disk("vda"); pd.ChangeSource != "tracking" {
		t.Fatalf("backup after a cancelled one: change source %s (warnings %q)", pd.ChangeSource, warnings)
	}
}
