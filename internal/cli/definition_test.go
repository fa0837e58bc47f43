package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/backup"
	"lifeboat/internal/recovery"
	"lifeboat/internal/source"
	"lifeboat/internal/vmtest"
)

// restoredDefinition reads a restored definition and checks it validates.
func restoredDefinition(t *testing.T, path string) *recovery.Definition {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("restored definition: %v", err)
	}
	d, err := recovery.ParseDefinition(data)
	if err != nil {
		t.Fatalf("%s: %v\n%s", path, err, data)
	}
	return d
}

// vaultWithImages makes a new directory holding an empty vault and a raw
// image of 1 MiB of random bytes for each name.
func vaultWithImages(t *testing.T, names ...string) (dir, vaultDir string) {
	t.Helper()
	dir = t.TempDir()
	vaultDir = filepath.Join(dir, "vault")
	initVault(t, vaultDir, 0)
	for i, name := range names {
		if err := os.WriteFile(filepath.Join(dir, name), fill(1<<20, random, uint64(i)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, vaultDir
}

// A definition naming its disks unlike the backed-up disks: backup warns,
// also that the paired disks' formats differ; restore writes each disk in
// the format its paired definition disk gives (qcow2) and a definition
// whose every disk names its restored image and that format; the restored
// machine's name carries the suffix once; its MACs are kept with a
// warning, or replaced with --new-macs.
func TestRestoredDefinitionFilesNamesMACs(t *testing.T) {
	vmtest.RequireBinary(t, "qemu-nbd")
	dir, vaultDir := vaultWithImages(t, "a.raw", "b.raw")
	def := filepath.Join(dir, "vm1.json")
	os.WriteFile(def, []byte(`{"schema":"lifeboat.machine/v1","name":"vm1","cpus":1,"memory_mib":256,
		"disks":[{"name":"root","bus":"virtio","format":"qcow2","boot_order":1},{"name":"data","bus":"virtio","format":"qcow2"}],
		"nics":[{"model":"virtio","mac":"52:54:00:12:34:56"}]}`), 0o600)
	r := mustRun(t, "--vault", vaultDir, "backup", "--machine", "vm1", "--definition", def,
		"--disk", "vda="+filepath.Join(dir, "a.raw"), "--disk", "vdb="+filepath.Join(dir, "b.raw"))
	if !strings.Contains(r.stderr, "root=vda") || !strings.Contains(r.stderr, "data=vdb") {
		t.Fatalf("backup does not warn that the definition's disks are named differently:\n%s", r)
	}
	if !strings.Contains(r.stderr, "disk vda: the definition says format qcow2, but it is a raw image") {
		t.Fatalf("backup does not warn that the paired definition disk says qcow2 for a raw image:\n%s", r)
	}

	out := filepath.Join(dir, "r1")
	r = mustRun(t, "--vault", vaultDir, "restore", "--machine", "vm1", "latest", "--to", out)
	d := restoredDefinition(t, filepath.Join(out, "vm1-dr.json"))
	want := []recovery.DefinitionDisk{
		{Name: "root", Bus: "virtio", Format: "qcow2", BootOrder: 1, File: filepath.Join(out, "vda.qcow2")},
		{Name: "data", Bus: "virtio", Format: "qcow2", File: filepath.Join(out, "vdb.qcow2")},
	}
	if d.Name != "vm1-dr" || len(d.Disks) != 2 || d.Disks[0] != want[0] || d.Disks[1] != want[1] {
		t.Fatalf("restored definition: %+v\nwant disks %+v", d, want)
	}
	sameDisk(t, filepath.Join(dir, "a.raw"), "raw", filepath.Join(out, "vda.qcow2"), "qcow2")
	if d.NICs[0].MAC != "52:54:00:12:34:56" || !strings.Contains(r.stderr, "--new-macs") || !strings.Contains(r.stderr, "52:54:00:12:34:56") {
		t.Fatalf("MACs kept without a warning: %+v\n%s", d.NICs, r)
	}

	// The restored machine, backed up and restored again: vm1-dr, not vm1-dr-dr.
	mustRun(t, "--vault", vaultDir, "backup", "--machine", "vm1-dr", "--definition", filepath.Join(out, "vm1-dr.json"),
		"--disk", filepath.Join(out, "vda.qcow2"), "--disk", filepath.Join(out, "vdb.qcow2"))
	out2 := filepath.Join(dir, "r2")
	r = mustRun(t, "--vault", vaultDir, "--json", "restore", "--machine", "vm1-dr", "latest", "--to", out2, "--new-macs", "--format", "raw")
	var res struct {
		Definition string               `json:"definition"`
		NewMACs    []recovery.MACChange `json:"new_macs"`
	}
	decode(t, r.stdout, &res)
	if res.Definition != filepath.Join(out2, "vm1-dr.json") {
		t.Fatalf("second restore wrote %q, want %s/vm1-dr.json", res.Definition, out2)
	}
	d = restoredDefinition(t, res.Definition)
	mac := regexp.MustCompile(`^52:54:00(:[0-9a-f]{2}){3}$`)
	if d.Name != "vm1-dr" || !mac.MatchString(d.NICs[0].MAC) || d.NICs[0].MAC == "52:54:00:12:34:56" ||
		len(res.NewMACs) != 1 || res.NewMACs[0].New != d.NICs[0].MAC || res.NewMACs[0].Old != "52:54:00:12:34:56" {
		t.Fatalf("restore --new-macs: %+v, reported %+v", d, res.NewMACs)
	}
	if strings.Contains(r.stderr, "clash") {
		t.Fatalf("warned about kept MACs with --new-macs:\n%s", r.stderr)
	}
	for _, disk := range d.Disks {
		if _, err := os.Stat(disk.File); err != nil || disk.Format != "raw" || filepath.Ext(disk.File) != ".raw" {
			t.Fatalf("disk %+v: %v", disk, err)
		}
	}
	sameContent(t, filepath.Join(dir, "b.raw"), filepath.Join(out2, "data.raw"))
}

// fromQEMU shows a file as older lifeboat versions recorded a live
// disk: a relative QMP socket and a node, no image path.
type fromQEMU struct{ *source.File }

func (fromQEMU) Source() string { return "qemu:run/vm1/qmp.sock#root-fmt" }

// Points written before image paths were recorded stay readable: an
// in-place restore of one says which file to name instead of failing to
// open its source.
func TestInPlaceRestoreOfOlderLivePoint(t *testing.T) {
	dir, vaultDir := vaultWithImages(t, "root.raw")
	img := filepath.Join(dir, "root.raw")
	f, err := source.OpenFile(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v := openVault(t, dirStore(t, vaultDir))
	p, err := backup.Run(context.Background(), v, backup.Options{Machine: "vm1", Disks: []backup.Disk{{Name: "root", Source: fromQEMU{f}}}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Disks[0].Image != "" {
		t.Fatalf("an image path was made up for %s: %q", p.Disks[0].Source, p.Disks[0].Image)
	}
	r := run(t, "--vault", vaultDir, "restore", "--machine", "vm1", "latest", "--in-place")
	expect(t, "in-place restore of an older live point", r, 2, "no image file", "--disk root --to-file")
	writeAt(t, img, 4096, []byte("changed"))
	mustRun(t, "--vault", vaultDir, "restore", "--machine", "vm1", "latest", "--disk", "root", "--to-file", img, "--in-place")
	if strings.Contains(string(readFile(t, img)), "changed") {
		t.Fatal("in-place restore with --to-file did not revert the image")
	}

	// An offline backup by a relative path records the absolute path, as
	// its source and its image.
	rel, err := filepath.Rel(mustGetwd(t), img)
	if err != nil {
		t.Fatal(err)
	}
	mustRun(t, "--vault", vaultDir, "backup", "--machine", "m2", "--disk", "root="+rel)
	var pts []struct {
		Disks []recovery.Disk `json:"disks"`
	}
	decode(t, mustRun(t, "--vault", vaultDir, "--json", "points", "--machine", "m2").stdout, &pts)
	if len(pts) != 1 || pts[0].Disks[0].Source != img || pts[0].Disks[0].Image != img {
		t.Fatalf("backup of %s recorded %+v, want image %s", rel, pts, img)
	}
}

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

// The points table shows how each backup found its changes and its notes.
func TestPointsTableChangesAndNotes(t *testing.T) {
	dir, vaultDir := vaultWithImages(t, "d.raw")
	img := filepath.Join(dir, "d.raw")
	mustRun(t, "--vault", vaultDir, "backup", "--machine", "m", "--disk", "d="+img)
	mustRun(t, "--vault", vaultDir, "backup", "--machine", "m", "--disk", "d="+img, "--consistency", "app", "--pre-hook", "exit 3")
	r := mustRun(t, "--vault", vaultDir, "points")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "CHANGES") || !strings.Contains(lines[0], "NOTES") {
		t.Fatalf("points table:\n%s", r)
	}
	if !strings.Contains(lines[1], "full") || !strings.Contains(lines[2], "compare") || !strings.Contains(lines[2], "asked for app consistency") {
		t.Fatalf("points table does not show change sources and notes:\n%s", r.stdout)
	}
	var pts []pointInfo
	decode(t, mustRun(t, "--vault", vaultDir, "--json", "points").stdout, &pts)
	if len(pts) != 2 || len(pts[1].Notes) != 1 {
		t.Fatalf("points --json: %+v", pts)
	}
	if note := pts[1].Notes[0]; len(note) > 60 && !strings.Contains(r.stderr, "--json") {
		t.Fatalf("a shortened note without saying where the full one is:\n%s", r)
	}
}

// LIFEBOAT_PASSWORD_FILE names a file holding the passphrase, between
// --password-file and LIFEBOAT_PASSWORD.
func TestPasswordFileEnvironment(t *testing.T) {
	dir, vaultDir := vaultWithImages(t)
	good, bad, empty := filepath.Join(dir, "good"), filepath.Join(dir, "bad"), filepath.Join(dir, "empty")
	os.WriteFile(good, []byte(testPassphrase+"\n"), 0o600)
	os.WriteFile(bad, []byte("wrong\n"), 0o600)
	os.WriteFile(empty, nil, 0o600)
	ctx := context.Background()
	points := func(env map[string]string, args ...string) result {
		return inProcEnv(ctx, env, append([]string{"--vault", vaultDir, "points"}, args...)...)
	}
	if r := points(map[string]string{"LIFEBOAT_PASSWORD_FILE": good}); r.code != 0 {
		t.Fatalf("LIFEBOAT_PASSWORD_FILE: %s", r)
	}
	// The file wins over LIFEBOAT_PASSWORD, the flag over both.
	expect(t, "file over password", points(map[string]string{"LIFEBOAT_PASSWORD_FILE": bad, "LIFEBOAT_PASSWORD": testPassphrase}), 3)
	if r := points(map[string]string{"LIFEBOAT_PASSWORD_FILE": bad}, "--password-file", good); r.code != 0 {
		t.Fatalf("--password-file over LIFEBOAT_PASSWORD_FILE: %s", r)
	}
	expect(t, "missing file", points(map[string]string{"LIFEBOAT_PASSWORD_FILE": filepath.Join(dir, "none")}), 2, "LIFEBOAT_PASSWORD_FILE")
	expect(t, "empty file", points(map[string]string{"LIFEBOAT_PASSWORD_FILE": empty}), 2, "LIFEBOAT_PASSWORD_FILE", "empty")
	expect(t, "no passphrase", points(nil), 2, "LIFEBOAT_PASSWORD_FILE")
	if r := inProcEnv(ctx, nil, "--help"); !strings.Contains(r.stdout, "LIFEBOAT_PASSWORD_FILE") {
		t.Fatalf("--help does not name LIFEBOAT_PASSWORD_FILE:\n%s", r)
	}
}

// A VM whose disks come from -drive if=virtio (QEMU names them virtio0,
// virtio1; the second a qcow2 image given by a path relative to QEMU's
// working directory), backed up live with a definition naming them root
// and data: the backup warns how they pair and records each image and the
// format QEMU opened it in; restore --to writes a definition whose disks
// name the restored images in their formats (raw and qcow2); and once the
// machine is stopped, an in-place restore finds the images QEMU had open
// and reverts them to the point, the qcow2 one through qemu-nbd.
func TestQMPPointRestoresInPlaceAndPairsDefinitionDisks(t *testing.T) {
	vmtest.RequireBinary(t, "qemu-nbd")
	dir := t.TempDir()
	imgs := []string{filepath.Join(dir, "vm1-root.img"), filepath.Join(dir, "vm1-data.qcow2")}
	formats := []string{"raw", "qcow2"}
	if err := os.WriteFile(imgs[0], fill(8<<20, random, 10), 0o600); err != nil {
		t.Fatal(err)
	}
	dataRaw := filepath.Join(dir, "data.raw")
	if err := os.WriteFile(dataRaw, fill(8<<20, random, 11), 0o600); err != nil {
		t.Fatal(err)
	}
	vmtest.QEMU(t, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", dataRaw, imgs[1])
	rel, err := filepath.Rel(mustGetwd(t), imgs[1])
	if err != nil {
		t.Fatal(err)
	}
	vm := vmtest.Start(t, vmtest.Config{Workload: "seq2", ExtraArgs: []string{
		"-drive", "if=virtio,format=raw,file=" + imgs[0],
		"-drive", "if=virtio,format=qcow2,file=" + rel,
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	seq := regexp.MustCompile(`^LB seq (\d+)$`)
	if _, err := vm.WaitLine(ctx, seq); err != nil {
		t.Fatalf("guest never wrote: %v", err)
	}

	vaultDir := filepath.Join(dir, "vault")
	initVault(t, vaultDir, 0)
	def := filepath.Join(dir, "vm1.json")
	os.WriteFile(def, []byte(`{"schema":"lifeboat.machine/v1","name":"vm1","cpus":1,"memory_mib":256,
		"disks":[{"name":"root","format":"raw","boot_order":1},{"name":"data","format":"qcow2"}]}`), 0o600)
	r := mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "vm1", "--qmp", vm.QMPSocket, "--definition", def)
	if !strings.Contains(r.stderr, "root=virtio0") || !strings.Contains(r.stderr, "data=virtio1") {
		t.Fatalf("backup does not warn how the definition's disks pair with the machine's:\n%s", r)
	}
	if strings.Contains(r.stderr, "the definition says format") {
		t.Fatalf("backup warns of a format disagreement where the paired disks agree:\n%s", r)
	}
	var pt struct {
		ID    string          `json:"id"`
		Disks []recovery.Disk `json:"disks"`
	}
	decode(t, r.stdout, &pt)
	for i, d := range pt.Disks {
		if d.Image != imgs[i] || d.Format != formats[i] || !strings.HasPrefix(d.Source, "qemu:/") {
			t.Fatalf("disk %d recorded as %+v, want image %s (%s) from an absolute QMP socket", i, d, imgs[i], formats[i])
		}
	}
	out := filepath.Join(dir, "restored")
	mustRun(t, "--vault", vaultDir, "restore", "--machine", "vm1", pt.ID, "--to", out)
	d := restoredDefinition(t, filepath.Join(out, "vm1-dr.json"))
	if len(d.Disks) != 2 ||
		d.Disks[0] != (recovery.DefinitionDisk{Name: "root", Format: "raw", BootOrder: 1, File: filepath.Join(out, "virtio0.raw")}) ||
		d.Disks[1] != (recovery.DefinitionDisk{Name: "data", Format: "qcow2", File: filepath.Join(out, "virtio1.qcow2")}) {
		t.Fatalf("restored definition disks: %+v", d.Disks)
	}
	if f := imageFormat(t, d.Disks[1].File); f != "qcow2" {
		t.Fatalf("restored %s is %s", d.Disks[1].File, f)
	}

	// The guest writes on after the point: wait until its root disk shows it.
	for compareFiles(filepath.Join(out, "virtio0.raw"), imgs[0]) == nil {
		if _, err := vm.WaitLine(ctx, seq); err != nil {
			t.Fatalf("the guest wrote nothing after the point: %v", err)
		}
	}
	// A running machine's images are refused; a stopped one's reverted.
	expect(t, "in-place under the running VM", run(t, "--vault", vaultDir, "restore", "--machine", "vm1", pt.ID, "--in-place"), 1, "locked")
	vm.Kill()
	if err := vm.Wait(ctx); err != nil && ctx.Err() != nil {
		t.Fatal(err)
	}
	vmtest.Write(t, imgs[1], "qcow2", "0x5a", "1M", "64k") // the qcow2 image surely differs
	mustRun(t, "--vault", vaultDir, "restore", "--machine", "vm1", pt.ID, "--in-place")
	sameContent(t, filepath.Join(out, "virtio0.raw"), imgs[0])
	sameDisk(t, filepath.Join(out, "virtio1.qcow2"), "qcow2", imgs[1], "qcow2")
	if f := imageFormat(t, imgs[1]); f != "qcow2" {
		t.Fatalf("the reverted image is now %s", f)
	}
}
