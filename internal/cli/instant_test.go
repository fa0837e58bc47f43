package cli_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/boot"
	"lifeboat/internal/guestagent"
	"lifeboat/internal/job"
)

// twoDiskDefinition: an ext4 root the guest mounts, a data disk it never
// touches (so its copy can be compared byte for byte).
const twoDiskDefinition = `{"schema": "lifeboat.machine/v1", "name": "vm2", "cpus": 1, "memory_mib": 256,
  "disks": [{"name": "root", "bus": "virtio", "format": "raw", "boot_order": 1}, {"name": "data", "bus": "virtio", "format": "raw"}]}`

// twoDiskPoint backs up machine vm2 (twoDiskDefinition) into a new vault:
// its data disk holds dataMiB MiB of random bytes, then holes up to
// sizeMiB MiB (if larger).
func twoDiskPoint(t *testing.T, dataMiB, sizeMiB int) (vdir, root, data, id string) {
	t.Helper()
	dir := t.TempDir()
	vdir = filepath.Join(dir, "vault")
	initVault(t, vdir, 4<<20)
	root = filepath.Join(dir, "root.raw")
	makeExt4(t, root, 32, smallFiles)
	data = filepath.Join(dir, "data.raw")
	if err := os.WriteFile(data, fill(dataMiB<<20, random, 77), 0o644); err != nil {
		t.Fatal(err)
	}
	if sizeMiB > dataMiB {
		if err := os.Truncate(data, int64(sizeMiB)<<20); err != nil {
			t.Fatal(err)
		}
	}
	def := filepath.Join(dir, "vm2.json")
	if err := os.WriteFile(def, []byte(twoDiskDefinition), 0o644); err != nil {
		t.Fatal(err)
	}
	id = parsePoint(t, mustRun(t, "--vault", vdir, "-q", "--json", "backup", "--machine", "vm2", "--disk", "root="+root, "--disk", "data="+data, "--definition", def)).ID
	return vdir, root, data, id
}

// guestRead reads n bytes of a guest file through the guest agent, after
// dropping the guest's page cache so that they come from its disk.
func guestRead(ctx context.Context, t *testing.T, sock, path string, n int) []byte {
	t.Helper()
	c, err := guestagent.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var h int
	if err := c.Call(ctx, "guest-file-open", map[string]any{"path": "/proc/sys/vm/drop_caches", "mode": "w"}, &h); err != nil {
		t.Fatal(err)
	}
	c.Call(ctx, "guest-file-write", map[string]any{"handle": h, "buf-b64": base64.StdEncoding.EncodeToString([]byte("3\n"))}, nil)
	c.Call(ctx, "guest-file-close", map[string]any{"handle": h}, nil)
	if err := c.Call(ctx, "guest-file-open", map[string]any{"path": path, "mode": "r"}, &h); err != nil {
		t.Fatalf("opening %s in the guest: %v", path, err)
	}
	defer c.Call(ctx, "guest-file-close", map[string]any{"handle": h}, nil)
	var out []byte
	for len(out) < n {
		var r struct {
			Count int    `json:"count"`
			Buf   string `json:"buf-b64"`
			EOF   bool   `json:"eof"`
		}
		if err := c.Call(ctx, "guest-file-read", map[string]any{"handle": h, "count": min(n-len(out), 1<<20)}, &r); err != nil {
			t.Fatalf("reading %s in the guest: %v", path, err)
		}
		b, _ := base64.StdEncoding.DecodeString(r.Buf)
		out = append(out, b...)
		if r.EOF || r.Count == 0 {
			break
		}
	}
	return out
}

// TestInstantRestore: restore --instant --start starts the machine from
// the vault; the guest agent answers while the background copy still runs;
// when lifeboat exits the images are standalone (no backing: the export is
// gone), the guest still reads its files from its disk, and the data disk
// equals the original byte for byte.
func TestInstantRestore(t *testing.T) {
	vdir, _, data, id := twoDiskPoint(t, 8, 8)
	dir := t.TempDir()
	console := filepath.Join(dir, "console.log")
	p := startProc(t, append([]string{"--vault", vdir, "--json", "restore", "--machine", "vm2", id[:10], "--instant", "--start", "--to", filepath.Join(dir, "dr"),
		"--accel", "tcg", "--serial-log", console, "--stream-speed", "2M"}, kernelFlags(t)...)...)
	state := job.InstantState(filepath.Join(dir, "dr"))
	qga := filepath.Join(state, "qga.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	t.Cleanup(func() { killQEMU(t, state) })
	// Not a probe of the QMP socket: QEMU serves one client at a time.
	if err := boot.WaitGuestAgent(ctx, qga, p.done); err != nil {
		b, _ := os.ReadFile(console)
		t.Fatalf("guest agent: %v\nconsole:\n%s\nlifeboat: %s", err, b, p.stderr.String())
	}
	if p.exited() {
		t.Errorf("the copy finished before the guest answered: the machine was not started at once")
	}
	r := p.wait(t, 90*time.Second)
	if r.code != 0 {
		t.Fatalf("restore --instant: %s", r)
	}
	var res struct {
		Images     map[string]string `json:"images"`
		PID        int               `json:"pid"`
		Definition string            `json:"definition"`
		StartedMS  int64             `json:"started_ms"`
		CopiedMS   int64             `json:"copied_ms"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.PID == 0 || len(res.Images) != 2 {
		t.Fatalf("restore --instant --json: %v\n%s", err, r.stdout)
	}
	t.Logf("machine running after %d ms, copy done after %d ms", res.StartedMS, res.CopiedMS)
	for name, img := range res.Images {
		if info := tool(t, "qemu-img", "info", "-U", img); strings.Contains(info, "backing file") {
			t.Errorf("disk %s: %s still has a backing file after the copy:\n%s", name, img, info)
		}
	}
	if _, err := os.Stat(filepath.Join(state, "export.sock")); !os.IsNotExist(err) {
		t.Errorf("the export's socket is still there after the copy: %v", err)
	}
	got := guestRead(ctx, t, qga, "/mnt/srv/data/a.bin", 1<<20)
	if want := fill(3<<20, random, 1)[:1<<20]; !bytes.Equal(got, want) {
		t.Errorf("the guest reads %d wrong bytes of /srv/data/a.bin once the export is gone", len(got))
	}
	// QEMU caches the images' metadata: compare once it has quit.
	stopPID(t, res.PID)
	if out := tool(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", data, res.Images["data"]); !strings.Contains(out, "identical") {
		t.Errorf("the copied data disk differs from the original: %s", out)
	}
}

// stopPID sends SIGTERM to a process that is not the test's child and
// waits for it to be gone.
func stopPID(t *testing.T, pid int) {
	t.Helper()
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d did not exit after SIGTERM", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killQEMU kills the machine an instant restore left running (its QMP
// socket's peer), as a test's cleanup.
func killQEMU(t *testing.T, state string) {
	b, err := os.ReadFile(filepath.Join(state, "qemu.pid"))
	if err == nil {
		var pid int
		if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	os.RemoveAll(state)
}

// TestInstantRestoreKilled: the guest answers before 10% of its disks
// are copied; lifeboat killed during the background copy leaves the guest
// running; the same command run again (here without the speed bound)
// serves the export again, finishes the copy, and the data disk equals the
// original.
func TestInstantRestoreKilled(t *testing.T) {
	// 32 MiB root (what the guest boots from and reads) + 480 MiB data disk
	// (8 MiB of data, the rest holes, which the copy counts and copies too).
	vdir, _, data, id := twoDiskPoint(t, 8, 480)
	// 512 KiB/s: the guest has 100 s to answer before 10% are copied.
	const total, speed = (32 + 480) << 20, 512 << 10
	dir := t.TempDir()
	args := append([]string{"--vault", vdir, "--json", "restore", "--machine", "vm2", id, "--instant", "--start", "--to", filepath.Join(dir, "dr"),
		"--accel", "tcg"}, kernelFlags(t)...)
	state := job.InstantState(filepath.Join(dir, "dr"))
	t.Cleanup(func() { killQEMU(t, state) })
	p := startProc(t, append(args, "--stream-speed", "512K")...)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	// Not a probe of the QMP socket: QEMU serves one client at a time.
	qga := filepath.Join(state, "qga.sock")
	if err := boot.WaitGuestAgent(ctx, qga, p.done); err != nil {
		t.Fatalf("guest agent: %v\nlifeboat: %s", err, p.stderr.String())
	}
	// How far the copy was when the guest first answered, as the copying
	// lifeboat recorded it (twice a second: allow a second's copy more).
	var copied job.InstantStatus
	if b, err := os.ReadFile(filepath.Join(state, "status.json")); err == nil {
		if err := json.Unmarshal(b, &copied); err != nil || copied.TotalBytes != total {
			t.Fatalf("status.json when the guest answered: %v %+v", err, copied)
		}
	} else if !os.IsNotExist(err) {
		t.Fatal(err)
	}
	t.Logf("%v: the guest answers with %d of %d bytes copied (%.1f%%); killing lifeboat", time.Now().Format("15:04:05.000"),
		copied.DoneBytes, int64(total), 100*float64(copied.DoneBytes)/total)
	if copied.DoneBytes+speed >= total/10 {
		t.Errorf("the guest answered only after %d of %d bytes were copied: not before 10%% of the disks", copied.DoneBytes, int64(total))
	}
	if !p.kill() {
		t.Fatalf("lifeboat ended before it was killed (the copy was too fast to interrupt):\n%s", p.stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(state, "qemu.pid"))
	var pid int
	if _, serr := fmt.Sscan(string(b), &pid); err != nil || serr != nil || syscall.Kill(pid, 0) != nil {
		t.Fatalf("the machine did not survive lifeboat's death: %v %v", err, serr)
	}
	st := mustRun(t, "restore", "--instant", "--status", "--to", filepath.Join(dir, "dr"))
	if !strings.Contains(st.stdout, "INTERRUPTED") || !strings.Contains(st.stdout, "copied") || !strings.Contains(st.stdout, "running") {
		t.Errorf("restore --instant --status after the kill:\n%s", st.stdout)
	}
	t.Logf("%v: running it again", time.Now().Format("15:04:05.000"))
	r := run(t, args...)
	t.Logf("%v: the rerun finished the copy", time.Now().Format("15:04:05.000"))
	if r.code != 0 || !strings.Contains(r.stdout, `"resumed": true`) {
		t.Fatalf("the rerun after the kill: %s", r)
	}
	if err := boot.WaitGuestAgent(ctx, qga, nil); err != nil {
		t.Fatalf("the guest does not answer after the rerun: %v", err)
	}
	got := guestRead(ctx, t, qga, "/mnt/srv/data/b.bin", 2<<20)
	if !bytes.Equal(got, fill(2<<20, random, 2)) {
		t.Errorf("the guest reads wrong bytes of /srv/data/b.bin after the rerun")
	}
	if st := mustRun(t, "restore", "--instant", "--status", "--to", filepath.Join(dir, "dr")); !strings.Contains(st.stdout, "done") {
		t.Errorf("restore --instant --status after the copy:\n%s", st.stdout)
	}
	stopPID(t, pid)
	img := filepath.Join(dir, "dr", "data.qcow2")
	if info := tool(t, "qemu-img", "info", img); strings.Contains(info, "backing file") {
		t.Errorf("%s still has a backing file after the rerun:\n%s", img, info)
	}
	if out := tool(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", data, img); !strings.Contains(out, "identical") {
		t.Errorf("the data disk differs from the original after the rerun: %s", out)
	}
}
