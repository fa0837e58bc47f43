package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/recovery"
	"lifeboat/internal/vmtest"
)

// A VM whose disks come from -drive if=virtio (QEMU names them virtio0,
// virtio1; one given by a path relative to QEMU's working directory),
// backed up live with a definition naming them root and data: the backup
// warns how they pair; restore --to writes a definition whose disks name
// the restored images, raw; and once the machine is stopped, an in-place
// restore finds the images QEMU had open and reverts them to the point.
func TestQMPPointRestoresInPlaceAndPairsDefinitionDisks(t *testing.T) {
	dir := t.TempDir()
	imgs := []string{filepath.Join(dir, "vm1-root.img"), filepath.Join(dir, "vm1-data.img")}
	for i, img := range imgs {
		if err := os.WriteFile(img, fill(8<<20, random, uint64(10+i)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, imgs[1])
	if err != nil {
		t.Fatal(err)
	}
	vm := vmtest.Start(t, vmtest.Config{Workload: "seq2", ExtraArgs: []string{
		"-drive", "if=virtio,format=raw,file=" + imgs[0],
		"-drive", "if=virtio,format=raw,file=" + rel,
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
		"disks":[{"name":"root","format":"qcow2","boot_order":1},{"name":"data","format":"qcow2"}]}`), 0o600)
	r := mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "vm1", "--qmp", vm.QMPSocket, "--definition", def)
	if !strings.Contains(r.stderr, "root=virtio0") || !strings.Contains(r.stderr, "data=virtio1") {
		t.Fatalf("backup does not warn how the definition's disks pair with the machine's:\n%s", r)
	}
	var pt struct {
		ID    string          `json:"id"`
		Disks []recovery.Disk `json:"disks"`
	}
	decode(t, r.stdout, &pt)
	for i, d := range pt.Disks {
		if d.Image != imgs[i] || d.ImageFormat != "raw" || !strings.HasPrefix(d.Source, "qemu:/") {
			t.Fatalf("disk %d recorded as %+v, want image %s (raw) from an absolute QMP socket", i, d, imgs[i])
		}
	}
	out := filepath.Join(dir, "restored")
	mustRun(t, "--vault", vaultDir, "restore", "--machine", "vm1", pt.ID, "--to", out)
	d := restoredDefinition(t, filepath.Join(out, "vm1-dr.json"))
	if len(d.Disks) != 2 ||
		d.Disks[0] != (recovery.DefinitionDisk{Name: "root", Format: "raw", BootOrder: 1, File: filepath.Join(out, "virtio0.raw")}) ||
		d.Disks[1] != (recovery.DefinitionDisk{Name: "data", Format: "raw", File: filepath.Join(out, "virtio1.raw")}) {
		t.Fatalf("restored definition disks: %+v", d.Disks)
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
	mustRun(t, "--vault", vaultDir, "restore", "--machine", "vm1", pt.ID, "--in-place")
	sameContent(t, filepath.Join(out, "virtio0.raw"), imgs[0])
	sameContent(t, filepath.Join(out, "virtio1.raw"), imgs[1])
}
