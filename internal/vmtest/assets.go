// Package vmtest boots real test virtual machines for lifeboat's tests:
// qemu-system-x86_64 under TCG (no KVM needed) with a Debian kernel and a
// busybox initramfs built by scripts/vm-assets.sh. The guest runs a workload
// named in Config.Workload and reports progress as "LB ..." lines on its
// serial console, which the VM type exposes line by line.
//
// Workloads (see scripts/vm-assets.sh for the guest side):
//
//	counter      mount /dev/vda (ext4) at /mnt and count in /mnt/counter,
//	             printing "LB counter N" once N is durable (write, fsync,
//	             rename, sync); continues from the value on disk
//	readcounter  print "LB readcounter N" from /mnt/counter and power off
//	seq2         write the record "LBSEQ %020d\n" to sector 0 of /dev/vda,
//	             then /dev/vdb (each fsynced), printing "LB seq N"
//	readseq2     print "LB readseq A B" (-1 for no record) and power off
//	idle         mount /dev/vda at /mnt if it is ext4 ("LB mounted /mnt")
//	             and wait; with Append "lifeboat.heartbeat=1" also write
//	             /mnt/heartbeat every ~100 ms, printing "LB heartbeat N"
//
// Every workload prints "LB ready" once set up and "LB error ..." when it
// cannot go on. With Config.GuestAgent the real qemu-ga runs in the guest
// unless Append holds "lifeboat.agent=0".
package vmtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Binaries the VMs need on the host.
const (
	qemuBinary = "qemu-system-x86_64"
	mkfsBinary = "mkfs.ext4"
	qemuImg    = "qemu-img"
)

// Required reports whether tests must fail instead of skipping when a VM
// cannot be run: in CI (CI=true) or when LIFEBOAT_REQUIRE_VM=1.
func Required() bool {
	return os.Getenv("CI") == "true" || os.Getenv("LIFEBOAT_REQUIRE_VM") == "1"
}

// RequireBinary skips the test when the named program (QEMU, qemu-io,
// fusermount3, ...) is not on PATH, or fails it when peers are Required.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if Required() {
			t.Fatalf("%s is required here (CI=true or LIFEBOAT_REQUIRE_VM=1) but not found: %v; run scripts/deps.sh", name, err)
		}
		t.Skipf("%s not found (run scripts/deps.sh): skipping", name)
	}
	return p
}

var assets struct {
	once           sync.Once
	kernel, initrd string
	err            error
}

// Assets returns the kernel and initramfs the test VMs boot, building them
// with scripts/vm-assets.sh once per machine (the script caches its output in
// LIFEBOAT_VM_CACHE, else /var/cache/lifeboat-vm when writable, else the
// user's cache directory). The kernel is the uncompressed vmlinux when the
// script could unpack it (QEMU boots it through PVH, seconds faster under
// TCG), else the Debian vmlinuz. It skips the test when qemu-system-x86_64
// is missing, unless VMs are Required.
func Assets(t testing.TB) (kernel, initrd string) {
	t.Helper()
	RequireBinary(t, qemuBinary)
	assets.once.Do(func() {
		assets.kernel, assets.initrd, assets.err = buildAssets()
	})
	if assets.err != nil {
		t.Fatalf("building VM assets: %v", assets.err)
	}
	return assets.kernel, assets.initrd
}

func buildAssets() (kernel, initrd string, err error) {
	root, err := repoRoot()
	if err != nil {
		return "", "", err
	}
	dir, err := cacheDir()
	if err != nil {
		return "", "", err
	}
	script := filepath.Join(root, "scripts", "vm-assets.sh")
	start := time.Now()
	out, err := exec.Command("bash", script, dir).CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("%s %s: %w\n%s", script, dir, err, out)
	}
	if len(out) > 0 {
		// Only a real build says anything; note how long it took.
		fmt.Fprintf(os.Stderr, "vmtest: %s (%.1fs)\n", strings.TrimSpace(string(out)), time.Since(start).Seconds())
	}
	kernel = filepath.Join(dir, "vmlinux")
	if _, err := os.Stat(kernel); err != nil {
		kernel = filepath.Join(dir, "vmlinuz")
	}
	initrd = filepath.Join(dir, "initramfs.gz")
	for _, f := range []string{kernel, initrd} {
		if _, err := os.Stat(f); err != nil {
			return "", "", fmt.Errorf("%s did not produce %s: %w", script, f, err)
		}
	}
	return kernel, initrd, nil
}

// cacheDir picks the asset cache: LIFEBOAT_VM_CACHE, the machine-wide
// /var/cache/lifeboat-vm when it can be written, else the user's cache.
func cacheDir() (string, error) {
	if d := os.Getenv("LIFEBOAT_VM_CACHE"); d != "" {
		return d, nil
	}
	const machine = "/var/cache/lifeboat-vm"
	if err := os.MkdirAll(machine, 0o755); err == nil {
		if f, err := os.CreateTemp(machine, ".probe"); err == nil {
			f.Close()
			os.Remove(f.Name())
			return machine, nil
		}
	}
	user, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no writable cache dir for VM assets (set LIFEBOAT_VM_CACHE): %w", err)
	}
	return filepath.Join(user, "lifeboat-vm"), nil
}

// repoRoot walks up from the working directory (a test's package directory)
// to the directory holding scripts/vm-assets.sh and go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding repo root: %w", err)
	}
	for {
		_, errMod := os.Stat(filepath.Join(dir, "go.mod"))
		_, errScript := os.Stat(filepath.Join(dir, "scripts", "vm-assets.sh"))
		if errMod == nil && errScript == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding repo root: no go.mod with scripts/vm-assets.sh above the working directory")
		}
		dir = parent
	}
}
