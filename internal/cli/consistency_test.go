package cli_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/vmtest"
)

// loopMount attaches a fresh ext4 image to a loop device and mounts it. It
// needs root, loop devices and mkfs.ext4; it skips without them unless CI.
func loopMount(t *testing.T, sizeMiB int) (img, dev, mnt string) {
	t.Helper()
	need := func(why string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("consistency tests need %s", why)
		}
		t.Skipf("needs %s", why)
	}
	if os.Geteuid() != 0 {
		need("root (loop devices, mount, FIFREEZE)")
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "mount", "dumpe2fs"} {
		vmtest.RequireBinary(t, tool)
	}
	dir := t.TempDir()
	img = filepath.Join(dir, "fs.img")
	sh(t, "truncate", "-s", strconv.Itoa(sizeMiB)+"M", img)
	sh(t, "mkfs.ext4", "-q", "-F", img)
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		need("a free loop device: " + strings.TrimSpace(string(out)))
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	mnt = filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	sh(t, "mount", "-t", "ext4", dev, mnt)
	t.Cleanup(func() {
		exec.Command("fsfreeze", "-u", mnt).Run()
		// A probe write that was blocked on the frozen filesystem may
		// still hold a file open for a moment after the thaw: retry
		// while the mount is busy, then detach it lazily.
		for deadline := time.Now().Add(10 * time.Second); exec.Command("umount", mnt).Run() != nil; {
			if time.Now().After(deadline) {
				exec.Command("umount", "-l", mnt).Run()
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	return img, dev, mnt
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// needsRecovery restores disk d0 of point id into a file and reports
// whether the ext4 superblock in it says its journal needs replaying: a
// mounted, busy filesystem read without freezing does; a frozen one does
// not (FIFREEZE flushes the journal and clears the flag).
func needsRecovery(t *testing.T, vaultDir, id string) bool {
	t.Helper()
	out := filepath.Join(t.TempDir(), "restored.img")
	mustRun(t, "--vault", vaultDir, "restore", "--machine", "fs", id, "--disk", "d0", "--to-file", out)
	dump := sh(t, "dumpe2fs", "-h", out)
	for _, line := range strings.Split(dump, "\n") {
		if strings.HasPrefix(line, "Filesystem features:") {
			return strings.Contains(line, "needs_recovery")
		}
	}
	t.Fatalf("no features line in dumpe2fs output:\n%s", dump)
	return false
}

func TestConsistencyFileFreezesMountedFilesystem(t *testing.T) {
	_, dev, mnt := loopMount(t, 64)
	vaultDir := filepath.Join(t.TempDir(), "vault")
	initVault(t, vaultDir, 0)
	// Keep the filesystem busy so the journal has work in it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			os.WriteFile(filepath.Join(mnt, "f"+strconv.Itoa(i%50)), []byte(strings.Repeat("x", 8192)), 0o644)
			time.Sleep(time.Millisecond)
		}
	}()
	time.Sleep(200 * time.Millisecond)

	r := mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "fs", "--disk", "d0="+dev, "--consistency", "file")
	p := parsePoint(t, r)
	if p.Consistency != "file" {
		t.Fatalf("point consistency %q, want file\n%s", p.Consistency, r)
	}
	if needsRecovery(t, vaultDir, p.ID) {
		t.Fatal("file-consistent point of a frozen ext4 still needs journal recovery: the freeze did not happen")
	}
	// The filesystem is writable again.
	if err := os.WriteFile(filepath.Join(mnt, "after"), []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
	// An in-place restore onto the mounted device is refused.
	r = run(t, "--vault", vaultDir, "restore", "--machine", "fs", p.ID, "--disk", "d0", "--in-place")
	expect(t, "in-place restore onto a mounted device", r, 1, "in use")

	// App consistency: hooks run in order around the instant, with the
	// machine in the environment.
	log := filepath.Join(t.TempDir(), "hooks.log")
	r = mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "fs", "--disk", "d0="+dev, "--consistency", "app",
		"--pre-hook", "echo pre $LIFEBOAT_MACHINE $LIFEBOAT_HOOK >> "+log,
		"--post-hook", "echo post $LIFEBOAT_MACHINE $LIFEBOAT_HOOK >> "+log)
	if p := parsePoint(t, r); p.Consistency != "app" {
		t.Fatalf("consistency %q, want app", p.Consistency)
	}
	if got, _ := os.ReadFile(log); string(got) != "pre fs pre\npost fs post\n" {
		t.Fatalf("hook log %q", got)
	}

	// A failing pre-hook: the point is file-consistent, says why, and the
	// post-hook still runs.
	os.Remove(log)
	r = mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "fs", "--disk", "d0="+dev, "--consistency", "app",
		"--pre-hook", "echo db refused >&2; exit 3", "--post-hook", "echo post >> "+log)
	p = parsePoint(t, r)
	if p.Consistency != "file" || !strings.Contains(r.stderr, "db refused") {
		t.Fatalf("failed pre-hook: consistency %q\n%s", p.Consistency, r)
	}
	if got, _ := os.ReadFile(log); string(got) != "post\n" {
		t.Fatalf("post-hook after a failed pre-hook: log %q", got)
	}
}

func TestConsistencyFileRefusals(t *testing.T) {
	img, _, mnt := loopMount(t, 32)
	vaultDir := filepath.Join(t.TempDir(), "vault")
	initVault(t, vaultDir, 0)
	// An image nothing mounts: nothing to freeze.
	lone := filepath.Join(t.TempDir(), "lone.img")
	sh(t, "truncate", "-s", "4M", lone)
	r := run(t, "--vault", vaultDir, "backup", "--machine", "fs", "--disk", lone, "--consistency", "file")
	expect(t, "unmounted image", r, 2, "nothing to freeze")
	// A vault on the filesystem that would be frozen.
	inside := filepath.Join(mnt, "vault")
	initVault(t, inside, 0)
	r = run(t, "--vault", inside, "backup", "--machine", "fs", "--disk", "d0="+img, "--consistency", "file")
	expect(t, "vault on the frozen filesystem", r, 2, "would freeze")
	// Hooks without app.
	r = run(t, "--vault", vaultDir, "backup", "--machine", "fs", "--disk", "d0="+img, "--pre-hook", "true")
	expect(t, "hook without app", r, 2, "--pre-hook: hooks run around an application-consistent instant")
	r = run(t, "--vault", vaultDir, "backup", "--machine", "fs", "--disk", "d0="+img, "--consistency", "app")
	expect(t, "app without a pre-hook", r, 2, "--pre-hook: app consistency needs a pre-hook")
	r = run(t, "--vault", vaultDir, "backup", "--machine", "fs", "--disk", "d0="+img, "--consistency", "file", "--freeze-timeout", "0s")
	expect(t, "zero freeze timeout", r, 2, "must be positive")
}

func TestConsistencyFreezeTimeoutAndWatchdog(t *testing.T) {
	img, _, mnt := loopMount(t, 512)
	// Fill the filesystem with random data so reading it takes a while.
	sh(t, "dd", "if=/dev/urandom", "of="+filepath.Join(mnt, "big"), "bs=1M", "count=400", "status=none")
	sh(t, "sync")
	vaultDir := filepath.Join(t.TempDir(), "vault")
	initVault(t, vaultDir, 0)

	// A freeze timeout far shorter than the read: thawed, no point.
	r := run(t, "--vault", vaultDir, "backup", "--machine", "fs", "--disk", "d0="+img, "--consistency", "file", "--freeze-timeout", "50ms")
	expect(t, "freeze timeout", r, 1, "longer than --freeze-timeout")
	if out := mustRun(t, "--vault", vaultDir, "points").stdout; strings.Contains(out, "fs") {
		t.Fatalf("a point was written after the freeze timed out:\n%s", out)
	}
	writable(t, mnt)

	// kill -9 of lifeboat's whole process group while frozen: the
	// watchdog, in a session of its own, survives, thaws, and exits.
	p := startGroupProc(t, "--vault", vaultDir, "backup", "--machine", "fs", "--disk", "d0="+img, "--consistency", "file", "--freeze-timeout", "10m")
	if !waitFrozen(t, mnt, p) {
		t.Fatalf("the filesystem was never seen frozen during the backup: %s", p.wait(t, time.Minute))
	}
	dog := watchdogOf(t, p.cmd.Process.Pid)
	if !p.killGroup() {
		t.Fatalf("the backup ended before it could be killed: %s", p.wait(t, time.Minute))
	}
	writable(t, mnt)
	waitExited(t, dog, 10*time.Second)
}

// waitFrozen reports whether mnt was seen frozen (a small write and fsync
// blocked for 200 ms) while p ran.
func waitFrozen(t *testing.T, mnt string, p *proc) bool {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for i := 0; !p.exited() && time.Now().Before(deadline); i++ {
		done := make(chan struct{})
		go func() {
			defer close(done)
			f, err := os.Create(filepath.Join(mnt, "probe"+strconv.Itoa(i)))
			if err != nil {
				return
			}
			f.WriteString("probe")
			f.Sync()
			f.Close()
		}()
		select {
		case <-done:
			time.Sleep(10 * time.Millisecond)
		case <-time.After(200 * time.Millisecond):
			return !p.exited()
		}
	}
	return false
}

// writable fails unless a write and fsync on mnt complete promptly.
func writable(t *testing.T, mnt string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		f, err := os.Create(filepath.Join(mnt, "probe"))
		if err == nil {
			_, err = f.WriteString("probe")
			if err == nil {
				err = f.Sync()
			}
			f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		exec.Command("fsfreeze", "-u", mnt).Run()
		t.Fatal("filesystem still frozen 10 s after lifeboat stopped")
	}
}

// A filesystem someone else froze is not lifeboat's to thaw: the backup
// says it could not freeze (crash-consistent, with a note), and the
// filesystem is still frozen when it is done.
func TestConsistencyLeavesForeignFreezeAlone(t *testing.T) {
	img, _, mnt := loopMount(t, 32)
	vaultDir := filepath.Join(t.TempDir(), "vault")
	initVault(t, vaultDir, 0)
	sh(t, "fsfreeze", "-f", mnt)
	defer exec.Command("fsfreeze", "-u", mnt).Run()
	r := mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "fs", "--disk", "d0="+img, "--consistency", "file")
	p := parsePoint(t, r)
	if p.Consistency != "crash" || len(p.Notes) == 0 {
		t.Fatalf("backup of a filesystem frozen by someone else: consistency %q notes %q", p.Consistency, p.Notes)
	}
	// Still frozen: a write blocks.
	done := make(chan error, 1)
	go func() {
		f, err := os.Create(filepath.Join(mnt, "probe"))
		if err == nil {
			f.WriteString("x")
			err = f.Sync()
			f.Close()
		}
		done <- err
	}()
	select {
	case <-done:
		t.Fatal("lifeboat thawed a filesystem it had not frozen")
	case <-time.After(500 * time.Millisecond):
	}
	sh(t, "fsfreeze", "-u", mnt)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Hooks run without lifeboat's secrets in their environment, and a secret
// a failing hook prints anyway (here read from lifeboat's own
// /proc/PID/environ) is redacted before its output goes into the point's
// notes, which are stored in the vault.
func TestHooksGetNoSecrets(t *testing.T) {
	secrets := map[string]string{
		"AWS_SECRET_ACCESS_KEY":    "s3-secret-key-d41d8cd9",
		"AWS_SESSION_TOKEN":        "s3-session-token-8f00b204",
		"LIFEBOAT_S3_SECRET_EXTRA": "extra-secret-e9800998",
		"LIFEBOAT_NEW_PASSWORD":    "new-passphrase-ecf8427e",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	secrets["LIFEBOAT_PASSWORD"] = testPassphrase // startProc sets it
	vaultDir := filepath.Join(t.TempDir(), "vault")
	initVault(t, vaultDir, 0)
	img := filepath.Join(t.TempDir(), "d0.img")
	sh(t, "truncate", "-s", "4M", img)
	seen := filepath.Join(t.TempDir(), "post.env")
	r := mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "m", "--disk", "d0="+img, "--consistency", "app",
		"--pre-hook", `tr '\0' '\n' < /proc/$PPID/environ | grep -E '^(AWS|LIFEBOAT)_'; env | grep -E '^(AWS|LIFEBOAT)_'; exit 1`,
		"--post-hook", "env > "+seen)
	p := parsePoint(t, r)
	notes := strings.Join(p.Notes, "\n")
	if !strings.Contains(notes, "LIFEBOAT_HOOK=pre") || !strings.Contains(notes, "AWS_SECRET_ACCESS_KEY=[redacted]") {
		t.Fatalf("the failing pre-hook's output is not in the notes as expected: %q", notes)
	}
	env := string(readFile(t, seen))
	if !strings.Contains(env, "LIFEBOAT_HOOK=post") || !strings.Contains(env, "LIFEBOAT_MACHINE=m") {
		t.Fatalf("post-hook environment lacks lifeboat's variables:\n%s", env)
	}
	for k, v := range secrets {
		if strings.Contains(notes, v) {
			t.Errorf("%s's value is in the point's notes: %q", k, notes)
		}
		if strings.Contains(r.output(), v) {
			t.Errorf("%s's value is in lifeboat's output", k)
		}
		if strings.Contains(env, k+"=") || strings.Contains(env, v) {
			t.Errorf("the post-hook inherited %s", k)
		}
	}
}

// A crash-consistent backup of a disk whose filesystem is mounted
// read-write here warns and points at --consistency file: the device, and
// the image file behind the loop device. Once mounted read-only, it does not.
func TestCrashBackupOfMountedDiskWarns(t *testing.T) {
	img, dev, mnt := loopMount(t, 32)
	vaultDir := filepath.Join(t.TempDir(), "vault")
	initVault(t, vaultDir, 0)
	for _, disk := range []string{dev, img} {
		r := mustRun(t, "--vault", vaultDir, "backup", "--machine", "fs", "--disk", "d0="+disk)
		if !strings.Contains(r.stderr, disk+" is mounted read-write at "+mnt) || !strings.Contains(r.stderr, "--consistency file") {
			t.Fatalf("crash backup of %s, mounted read-write at %s, gave no warning:\n%s", disk, mnt, r)
		}
	}
	sh(t, "mount", "-o", "remount,ro", mnt)
	if r := mustRun(t, "--vault", vaultDir, "backup", "--machine", "fs", "--disk", "d0="+dev); strings.Contains(r.stderr, "mounted read-write") {
		t.Fatalf("warning for a filesystem mounted read-only:\n%s", r)
	}
}
