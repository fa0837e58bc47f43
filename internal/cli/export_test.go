package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/vmtest"
)

// sockDir is a short directory for unix sockets (their paths are limited
// to 108 bytes, which t.TempDir() can exceed).
func sockDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "lbsock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// waitListening waits until a unix socket accepts a connection, failing if
// p exits first.
func waitListening(t testing.TB, p *proc, sock string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
		if p.exited() {
			t.Fatalf("lifeboat %v exited before listening on %s:\n%s", p.cmd.Args[1:], sock, p.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("lifeboat %v: nothing listens on %s after 60 s", p.cmd.Args[1:], sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopProc sends SIGINT and expects a clean exit.
func stopProc(t testing.TB, p *proc) result {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGINT)
	r := p.wait(t, 30*time.Second)
	if r.code != 0 {
		t.Fatalf("lifeboat %v after SIGINT: %s", p.cmd.Args[1:], r)
	}
	return r
}

func tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	vmtest.RequireBinary(t, name)
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestExportNBD: a point's disk served by lifeboat export reads back equal
// to the image backed up through three real clients (nbdinfo, nbdcopy,
// qemu-img compare), its zero blocks are holes in qemu-img map, writes are
// refused, and SIGINT ends it and removes its socket.
func TestExportNBD(t *testing.T) {
	dir := t.TempDir()
	vdir := filepath.Join(dir, "vault")
	initVault(t, vdir, 1<<20)
	img := filepath.Join(dir, "root.img")
	makeExt4(t, img, 64, smallFiles)
	data := filepath.Join(dir, "data.img")
	makeExt4(t, data, 16, smallFiles[2:])
	mustRun(t, "--vault", vdir, "-q", "backup", "--machine", "web1", "--disk", "root="+img, "--disk", "data="+data)

	sock := filepath.Join(sockDir(t), "web1.sock")
	p := startProc(t, "--vault", vdir, "export", "--machine", "web1", "latest", "--nbd", "unix:"+sock)
	waitListening(t, p, sock)
	uri := "nbd+unix:///root?socket=" + sock

	var info []struct {
		Name     string `json:"export-name"`
		Size     int64  `json:"export-size"`
		ReadOnly bool   `json:"is_read_only"`
	}
	out := tool(t, "nbdinfo", "--json", "--list", "nbd+unix:///?socket="+sock)
	var listed struct {
		Exports *json.RawMessage `json:"exports"`
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil || listed.Exports == nil {
		t.Fatalf("nbdinfo --list: %v\n%s", err, out)
	}
	if err := json.Unmarshal(*listed.Exports, &info); err != nil {
		t.Fatal(err)
	}
	if len(info) != 2 || info[0].Name != "root" || info[0].Size != 64<<20 || !info[0].ReadOnly || info[1].Name != "data" || info[1].Size != 16<<20 {
		t.Fatalf("nbdinfo --list: want read-only exports root (64 MiB) and data (16 MiB), got %+v", info)
	}
	if out := tool(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, uri); !strings.Contains(out, "identical") {
		t.Fatalf("qemu-img compare: %s", out)
	}
	copied := filepath.Join(dir, "data.copy")
	tool(t, "nbdcopy", "nbd+unix:///data?socket="+sock, copied)
	sameContent(t, data, copied)

	var exts []struct {
		Length int64 `json:"length"`
		Zero   bool  `json:"zero"`
		Data   bool  `json:"data"`
	}
	if err := json.Unmarshal([]byte(tool(t, "qemu-img", "map", "--output=json", "-f", "raw", uri)), &exts); err != nil {
		t.Fatal(err)
	}
	var holes int64
	for _, e := range exts {
		if e.Zero && !e.Data {
			holes += e.Length
		}
	}
	if holes < 32<<20 {
		t.Errorf("qemu-img map shows %d bytes of holes in a 64 MiB image holding ~6 MiB: want the zero blocks reported", holes)
	}
	if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x55 0 64k", uri).CombinedOutput(); err == nil && !strings.Contains(string(out), "failed") {
		t.Errorf("a write to a read-only export succeeded:\n%s", out)
	}
	stopProc(t, p)
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the socket is left after SIGINT: %v", err)
	}
}

// TestExportWritable: with --writable a client's writes read back through
// the export, and the vault is untouched: no object added or changed, and
// a restore of the point still equals the original image.
func TestExportWritable(t *testing.T) {
	dir := t.TempDir()
	vdir := filepath.Join(dir, "vault")
	initVault(t, vdir, 1<<20)
	img := filepath.Join(dir, "root.img")
	makeExt4(t, img, 32, smallFiles)
	id := parsePoint(t, mustRun(t, "--vault", vdir, "-q", "--json", "backup", "--machine", "web1", "--disk", "root="+img)).ID
	before := vaultFiles(t, vdir)

	sock := filepath.Join(sockDir(t), "w.sock")
	p := startProc(t, "--vault", vdir, "export", "--machine", "web1", id[:8], "--disk", "root", "--nbd", "unix:"+sock, "--writable", "--overlay-dir", dir)
	waitListening(t, p, sock)
	uri := "nbd+unix:///root?socket=" + sock
	tool(t, "qemu-io", "-f", "raw", "-c", "write -P 0xab 4096 1M", "-c", "write -z 8M 64k", uri)
	tool(t, "qemu-io", "-f", "raw", "-c", "read -P 0xab 4096 1M", "-c", "read -P 0 8M 64k", uri)
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", img, uri).CombinedOutput(); err == nil || !strings.Contains(string(out), "mismatch at offset 4096") {
		t.Fatalf("qemu-img compare of the written export with the original: want a mismatch at 4096, got %v: %s", err, out)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "lifeboat-overlay") {
			t.Errorf("overlay file %s is visible: it should be unlinked at once", e.Name())
		}
	}
	stopProc(t, p)
	if after := vaultFiles(t, vdir); !sameFiles(before, after) {
		t.Errorf("the vault changed under a writable export:\nbefore %v\nafter  %v", before, after)
	}
	out := filepath.Join(dir, "restored.raw")
	mustRun(t, "--vault", vdir, "-q", "restore", "--machine", "web1", id, "--disk", "root", "--to-file", out)
	sameContent(t, img, out)
}

// vaultFiles maps every object of a directory vault except session
// markers (which any reader writes) to its size and modification time.
func vaultFiles(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || strings.Contains(p, string(filepath.Separator)+"sessions"+string(filepath.Separator)) {
			return nil
		}
		out[p] = fmt.Sprint(fi.ModTime(), fi.Size())
		return nil
	})
	return out
}

func sameFiles(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestExportS3AndCopy: a point in an S3 vault (MinIO) is exported and
// reads back equal; so is the same point from a vault copy of it.
func TestExportS3AndCopy(t *testing.T) {
	ctx := context.Background()
	url, cfg := minioVault(t)
	env := s3Env(cfg)
	img := filepath.Join(t.TempDir(), "vda.img")
	makeExt4(t, img, 16, smallFiles)
	if r := inProcEnv(ctx, env, "--vault", url, "-q", "backup", "--machine", "web1", "--disk", "vda="+img); r.code != 0 {
		t.Fatalf("backup: %s", r)
	}
	cp := filepath.Join(t.TempDir(), "copy")
	for _, args := range [][]string{{"--vault", cp, "-q", "vault", "init", "--copy-of", url}, {"-q", "vault", "copy", "--from", url, "--to", cp}} {
		if r := inProcEnv(ctx, env, args...); r.code != 0 {
			t.Fatalf("lifeboat %v: %s", args, r)
		}
	}
	for _, v := range []string{url, cp} {
		sock := filepath.Join(sockDir(t), "s.sock")
		p := startProcEnv(t, env, "--vault", v, "export", "--machine", "web1", "latest", "--nbd", "unix:"+sock)
		waitListening(t, p, sock)
		if out := tool(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, "nbd+unix:///vda?socket="+sock); !strings.Contains(out, "identical") {
			t.Fatalf("export from %s: qemu-img compare: %s", v, out)
		}
		stopProc(t, p)
	}
}

// TestExportBootGuest: a VM boots straight from a writable export of a
// point (qemu-system-x86_64's own NBD client), its guest mounts the disk
// and reads a file's bytes; the vault is unchanged afterwards.
func TestExportBootGuest(t *testing.T) {
	vdir, _, id := vmPoint(t)
	before := vaultFiles(t, vdir)
	sock := filepath.Join(sockDir(t), "boot.sock")
	p := startProc(t, "--vault", vdir, "export", "--machine", "vm1", id, "--nbd", "unix:"+sock, "--writable")
	waitListening(t, p, sock)
	nbdDisk := fmt.Sprintf(`{"driver":"raw","node-name":"disk0","file":{"driver":"nbd","export":"root","server":{"type":"unix","path":%q}}}`, sock)
	vm := vmtest.Start(t, vmtest.Config{GuestAgent: true,
		ExtraArgs: []string{"-blockdev", nbdDisk, "-device", "virtio-blk-pci,drive=disk0,id=vd0"}})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := vm.WaitLine(ctx, regexp.MustCompile(`^LB mounted /mnt$`)); err != nil {
		t.Fatal(err)
	}
	got := guestRead(ctx, t, vm.GuestAgentSocket, "/mnt/srv/data/b.bin", 2<<20)
	if !bytes.Equal(got, fill(2<<20, random, 2)) {
		t.Errorf("the guest read %d bytes of /srv/data/b.bin from the export, not the file's", len(got))
	}
	vm.Kill()
	stopProc(t, p)
	if after := vaultFiles(t, vdir); !sameFiles(before, after) {
		t.Errorf("the vault changed while a guest ran on an export of it")
	}
}
