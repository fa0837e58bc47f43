package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/boot"
	"lifeboat/internal/vmtest"
)

// vmDefinition is the definition of the test machine: one ext4 disk that
// the guest's "idle" workload mounts.
const vmDefinition = `{"schema": "lifeboat.machine/v1", "name": "vm1", "cpus": 1, "memory_mib": 256,
  "disks": [{"name": "root", "bus": "virtio", "format": "raw", "boot_order": 1}],
  "nics": [{"model": "virtio", "mac": "52:54:00:12:34:56"}]}`

// vmPoint backs up a fresh 64 MiB ext4 disk holding smallFiles as machine
// vm1 with vmDefinition into a new vault, and returns the vault, the image
// and the point's ID.
func vmPoint(t *testing.T) (vdir, img, id string) {
	t.Helper()
	dir := t.TempDir()
	vdir = filepath.Join(dir, "vault")
	initVault(t, vdir, 1<<20)
	img = filepath.Join(dir, "root.raw")
	makeExt4(t, img, 64, smallFiles)
	def := filepath.Join(dir, "vm1.json")
	if err := os.WriteFile(def, []byte(vmDefinition), 0o644); err != nil {
		t.Fatal(err)
	}
	id = parsePoint(t, mustRun(t, "--vault", vdir, "-q", "--json", "backup", "--machine", "vm1", "--disk", "root="+img, "--definition", def)).ID
	return vdir, img, id
}

// kernelFlags boot the test guest's kernel with the idle workload, its
// console on the serial port.
func kernelFlags(t *testing.T) []string {
	kernel, initrd := vmtest.Assets(t)
	return []string{"--kernel", kernel, "--initrd", initrd, "--append", "console=ttyS0 panic=-1 mitigations=off quiet lifeboat.workload=idle"}
}

// waitText waits until file holds text.
func waitText(t *testing.T, file, text string, timeout time.Duration, p *proc) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(file)
		if strings.Contains(string(b), text) {
			return
		}
		if p != nil && p.exited() {
			t.Fatalf("lifeboat exited before %s held %q:\n%s\n%s", file, text, p.stderr.String(), b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not hold %q after %v:\n%s", file, text, timeout, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStartRestoredDefinition: a point restored with --to DIR starts with
// lifeboat start from the -dr definition restore wrote; the guest mounts
// its disk and its agent answers; SIGINT stops QEMU.
func TestStartRestoredDefinition(t *testing.T) {
	vdir, _, id := vmPoint(t)
	dir := t.TempDir()
	mustRun(t, "--vault", vdir, "-q", "restore", "--machine", "vm1", id, "--to", dir)
	def := filepath.Join(dir, "vm1-dr.json")
	dry := mustRun(t, "start", "--definition", def, "--accel", "tcg", "--network", "user", "--dry-run")
	for _, w := range []string{"-accel tcg", "-smp 1 -m 256", filepath.Join(dir, "root.raw"), "bootindex=1", "mac=52:54:00:12:34:56"} {
		if !strings.Contains(dry.stdout, w) {
			t.Errorf("start --dry-run does not say %q:\n%s", w, dry.stdout)
		}
	}
	run := sockDir(t)
	console := filepath.Join(t.TempDir(), "console.log")
	p := startProc(t, append([]string{"start", "--definition", def, "--accel", "tcg", "--serial-log", console, "--run-dir", run}, kernelFlags(t)...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	waitListening(t, p, filepath.Join(run, "qmp.sock"))
	done := make(chan struct{})
	go func() { <-p.done; close(done) }()
	if err := boot.WaitGuestAgent(ctx, filepath.Join(run, "qga.sock"), done); err != nil {
		b, _ := os.ReadFile(console)
		t.Fatalf("%v\nconsole:\n%s\nlifeboat: %s", err, b, p.stderr.String())
	}
	waitText(t, console, "LB mounted /mnt", 30*time.Second, p)
	stopProc(t, p)
}
