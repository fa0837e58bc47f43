package cli_test

// Shared fixtures for the failure and crash tests: the lifeboat binary
// (built once in TestMain), in-process and subprocess runners, ext4 images
// with real content, and comparisons.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/cli"
	"lifeboat/internal/clock"
	"lifeboat/internal/crypto"
	"lifeboat/internal/libvirt/libvirttest"
	"lifeboat/internal/vault"
)

// lifeboatBin is the binary built by TestMain for subprocess tests.
var lifeboatBin string

const testPassphrase = "correct horse battery staple"

// cheapKDF keeps key slots fast in tests; slots record their own cost, so
// a vault created with it is also cheap to open from the real binary.
var cheapKDF = crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "lifeboat-cli-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		// Records of points seen (internal/lastseen) go here, not to
		// /var/lib/lifeboat: the binary inherits it, inProcEnv passes it on.
		os.Setenv("LIFEBOAT_STATE_DIR", filepath.Join(dir, "state"))
		// Go's build cache stays where it was: without GOCACHE, the build
		// below would follow XDG_CACHE_HOME into an empty cache and
		// compile everything (SQLite, libzstd) afresh on every run.
		out, err := exec.Command("go", "env", "GOMOD", "GOCACHE").Output()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) == 2 && os.Getenv("GOCACHE") == "" {
			os.Setenv("GOCACHE", strings.TrimSpace(lines[1]))
		}
		// The index cache too, not ~/.cache: one for the whole run, so
		// that vault copies sharing an ID (linkCopy) share it, as two
		// hosts' runs on one vault would.
		os.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
		gomod := strings.TrimSpace(lines[0])
		if err != nil || gomod == "" || gomod == os.DevNull {
			fmt.Fprintf(os.Stderr, "finding the module root with go env GOMOD: %v (%q)\n", err, gomod)
			return 1
		}
		bin := filepath.Join(dir, "lifeboat")
		build := exec.Command("go", "build", "-o", bin, "./cmd/lifeboat")
		build.Dir = filepath.Dir(gomod)
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building lifeboat: %v\n%s", err, out)
			return 1
		}
		lifeboatBin = bin
		defer libvirttest.Stop() // if a test started a private libvirtd
		return m.Run()
	}())
}

// result is what one lifeboat run produced.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// output is stdout and stderr together, for "is the object named" checks.
func (r result) output() string { return r.stdout + r.stderr }

// inProc runs lifeboat in-process with the cheap KDF and the test passphrase.
func inProc(t testing.TB, args ...string) result {
	t.Helper()
	return inProcPass(t, testPassphrase, args...)
}

func inProcPass(t testing.TB, pass string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return inProcEnv(ctx, map[string]string{"LIFEBOAT_PASSWORD": pass}, args...)
}

// inProcEnv runs lifeboat in-process with the cheap KDF and env as its
// whole environment.
func inProcEnv(ctx context.Context, env map[string]string, args ...string) result {
	return inProcClock(ctx, env, nil, args...)
}

// inProcClock is inProcEnv with clk as lifeboat's clock (nil: the real one).
func inProcClock(ctx context.Context, env map[string]string, clk clock.Clock, args ...string) result {
	var stdout, stderr bytes.Buffer
	code := cli.Main(ctx, args, cli.Env{Stdout: &stdout, Stderr: &stderr, Clock: clk,
		Getenv: func(k string) string {
			if v, ok := env[k]; ok || (k != "LIFEBOAT_STATE_DIR" && k != "XDG_CACHE_HOME") {
				return v
			}
			return os.Getenv(k)
		},
		KDF: &vault.Options{KDF: cheapKDF}})
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// proc is a lifeboat subprocess.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{}
	err            error
}

// syncBuffer is a bytes.Buffer a running process writes to while the test
// reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startProc starts the lifeboat binary with the test passphrase.
func startProc(t testing.TB, args ...string) *proc {
	t.Helper()
	return startProcWith(t, nil, &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}, args...)
}

// startProcEnv starts the lifeboat binary with the test passphrase and env
// added to the test's environment.
func startProcEnv(t testing.TB, env map[string]string, args ...string) *proc {
	t.Helper()
	return startProcWith(t, env, &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}, args...)
}

// startGroupProc starts the binary as startProc does, as the leader of a
// process group of its own, the way a shell or a service manager starts
// it: killGroup kills it with everything in its group.
func startGroupProc(t testing.TB, args ...string) *proc {
	t.Helper()
	p := startProcWith(t, nil, &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}, args...)
	t.Cleanup(func() { syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) })
	return p
}

func startProcWith(t testing.TB, env map[string]string, attr *syscall.SysProcAttr, args ...string) *proc {
	t.Helper()
	return startCommand(t, env, attr, exec.Command(lifeboatBin, args...))
}

// startProcIn starts the lifeboat binary as startProc does, in the
// network namespace ns (ip netns exec runs it in its own place: the
// proc is lifeboat itself).
func startProcIn(t testing.TB, ns string, args ...string) *proc {
	t.Helper()
	return startCommand(t, nil, &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
		exec.Command("ip", append([]string{"netns", "exec", ns, lifeboatBin}, args...)...))
}

// startCommand starts cmd (lifeboat, possibly through a wrapper) with the
// test passphrase and env added to the test's environment.
func startCommand(t testing.TB, env map[string]string, attr *syscall.SysProcAttr, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{done: make(chan struct{}), cmd: cmd}
	args := cmd.Args[1:]
	p.cmd.Env = append(os.Environ(), "LIFEBOAT_PASSWORD="+testPassphrase)
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = attr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting lifeboat %v: %v", args, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL unless the process has ended, waits, and reports
// whether the signal was what ended it.
func (p *proc) kill() bool {
	if !p.exited() {
		p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return ws.Signal() == syscall.SIGKILL
		}
	}
	return false
}

// killGroup sends SIGKILL to the process group p leads (startGroupProc),
// as `kill -9 -- -PGID` does, waits for p, and reports whether the signal
// was what ended it.
func (p *proc) killGroup() bool {
	if !p.exited() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	return p.kill()
}

// wait waits for the process, killing it after timeout.
func (p *proc) wait(t testing.TB, timeout time.Duration) result {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("lifeboat %v did not finish within %v\nstderr:\n%s", p.cmd.Args[1:], timeout, p.stderr.String())
	}
	code := 0
	if p.err != nil {
		var ee *exec.ExitError
		if !errors.As(p.err, &ee) {
			t.Fatalf("lifeboat %v: %v", p.cmd.Args[1:], p.err)
		}
		code = ee.ExitCode()
	}
	return result{code: code, stdout: p.stdout.String(), stderr: p.stderr.String()}
}

// run runs the lifeboat binary to completion.
func run(t testing.TB, args ...string) result {
	t.Helper()
	return startProc(t, args...).wait(t, 3*time.Minute)
}

// mustRun runs the binary and fails the test unless it exits 0.
func mustRun(t testing.TB, args ...string) result {
	t.Helper()
	r := run(t, args...)
	if r.code != 0 {
		t.Fatalf("lifeboat %v: %s", args, r)
	}
	return r
}

// initVault creates a vault at dir with the cheap KDF and the given pack
// size (0: the default), through the API so that small tests get many packs.
func initVault(t testing.TB, dir string, packSize int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	store, err := blob.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vault.Init(context.Background(), store, []byte(testPassphrase),
		vault.Options{KDF: cheapKDF, PackSize: packSize}); err != nil {
		t.Fatal(err)
	}
}

// openVault opens the vault on store with the test passphrase.
func openVault(t testing.TB, store blob.Store) *vault.Vault {
	t.Helper()
	v, err := vault.Open(context.Background(), store, []byte(testPassphrase), vault.Options{KDF: cheapKDF})
	if err != nil {
		t.Fatalf("opening vault: %v", err)
	}
	return v
}

func dirStore(t testing.TB, dir string) *blob.Dir {
	t.Helper()
	s, err := blob.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pointInfo is one entry of `points --json` or the output of `backup --json`.
type pointInfo struct {
	ID          string   `json:"id"`
	Machine     string   `json:"machine"`
	Consistency string   `json:"consistency"`
	Notes       []string `json:"notes"`
	Disks       []struct {
		Name   string `json:"name"`
		Source string `json:"source"`
		Size   int64  `json:"size"`
		Stats  struct {
			NewBytes int64 `json:"new_bytes"`
		} `json:"stats"`
	} `json:"disks"`
	Stats struct {
		StoredBytes int64 `json:"stored_bytes"`
		Packs       int64 `json:"packs"`
	} `json:"stats"`
}

func (p pointInfo) newBytes() int64 {
	var n int64
	for _, d := range p.Disks {
		n += d.Stats.NewBytes
	}
	return n
}

func parsePoint(t testing.TB, r result) pointInfo {
	t.Helper()
	var p pointInfo
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil || p.ID == "" {
		t.Fatalf("backup --json output: %v\n%s", err, r)
	}
	return p
}

// listPoints lists the points of the vault at dir by reading the vault's
// points/ directory: it needs no passphrase and works on a damaged vault.
func listPoints(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "points"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".tmp-") {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// packFiles returns the stored packs of the vault at dir with their sizes.
func packFiles(t testing.TB, dir string) map[string]int64 {
	t.Helper()
	packs := map[string]int64{}
	err := filepath.WalkDir(filepath.Join(dir, "packs"), func(p string, e os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if e.IsDir() || strings.HasPrefix(e.Name(), ".tmp-") {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		packs[e.Name()] = info.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return packs
}

// objectFiles lists the non-temporary objects under dir/sub.
func objectFiles(t testing.TB, dir, sub string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(filepath.Join(dir, sub), func(p string, e os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if !e.IsDir() && !strings.HasPrefix(e.Name(), ".tmp-") {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// linkCopy copies a vault directory with hard links. Vault objects are
// never modified in place (the directory store writes a new file and
// renames it), so the copy evolves independently of the original.
func linkCopy(t testing.TB, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-al", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -al %s %s: %v\n%s", src, dst, err, out)
	}
}

// sparseCopy copies a disk image keeping its holes.
func sparseCopy(t testing.TB, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "--sparse=always", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp %s %s: %v\n%s", src, dst, err, out)
	}
}

// sameContent fails the test unless the two files have identical bytes,
// naming the first differing offset.
func sameContent(t testing.TB, want, got string) {
	t.Helper()
	if err := compareFiles(want, got); err != nil {
		t.Errorf("%v", err)
	}
}

func compareFiles(want, got string) error {
	sa, err := os.Stat(want)
	if err != nil {
		return err
	}
	sb, err := os.Stat(got)
	if err != nil {
		return err
	}
	if sa.Size() != sb.Size() {
		return fmt.Errorf("%s is %d bytes, want %d (as %s)", got, sb.Size(), sa.Size(), want)
	}
	// cmp, not Go: comparing hundreds of MiB under the race detector is slow.
	out, err := exec.Command("cmp", want, got).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s differs from %s: %v: %s", got, want, err, bytes.TrimSpace(out))
	}
	return nil
}

// fileBytes returns the content of a file.
func fileBytes(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// --- ext4 images with real content ---

// content kinds of generated files.
const (
	random = iota // incompressible
	text          // log-like lines, compressible about 3:1
)

// fileSpec is one file to put in a generated image.
type fileSpec struct {
	path string // absolute in the image, e.g. /var/log/syslog
	size int
	kind int
	seed uint64
}

// fill returns size bytes of the given kind, determined by seed.
func fill(size, kind int, seed uint64) []byte {
	if kind == random {
		var key [32]byte
		binary.LittleEndian.PutUint64(key[:], seed)
		buf := make([]byte, size)
		rand.NewChaCha8(key).Read(buf)
		return buf
	}
	rng := rand.New(rand.NewPCG(seed, 0x6c696665626f6174))
	words := []string{"kernel:", "eth0", "link", "up", "down", "systemd[1]:", "Started", "Stopped", "session",
		"user", "root", "sshd[", "]:", "Accepted", "publickey", "for", "from", "port", "ssh2", "nginx:", "GET",
		"POST", "/api/v1/items", "200", "404", "500", "ms", "backup", "disk", "vda", "sync", "write", "read",
		"error", "warning", "info", "debug", "cron[", "CMD", "(run-parts", "/etc/cron.hourly)"}
	out := make([]byte, 0, size+256)
	var ts int64 = 1763900000 + int64(seed%100000)
	for len(out) < size {
		ts += int64(rng.IntN(5))
		out = strconv.AppendInt(out, ts, 10)
		out = append(out, " web1 "...)
		for n := 3 + rng.IntN(9); n > 0; n-- {
			out = append(out, words[rng.IntN(len(words))]...)
			if rng.IntN(4) == 0 {
				out = strconv.AppendInt(out, int64(rng.IntN(100000)), 10)
			}
			out = append(out, ' ')
		}
		out = append(out, '\n')
	}
	return out[:size]
}

// makeExt4 creates img, a sizeMiB ext4 image with 4 KiB blocks holding files.
func makeExt4(t testing.TB, img string, sizeMiB int, files []fileSpec) {
	t.Helper()
	root := t.TempDir()
	for _, f := range files {
		p := filepath.Join(root, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, fill(f.size, f.kind, f.seed), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, int64(sizeMiB)<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", root, img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	os.RemoveAll(root)
}

// fileBlocks returns the 4 KiB blocks of an image file, in file order.
func fileBlocks(t testing.TB, img, path string) []int64 {
	t.Helper()
	cmd := exec.Command("debugfs", "-R", "blocks "+path, img)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("debugfs blocks %s: %v\n%s", path, err, stderr.String())
	}
	var blocks []int64
	for _, f := range strings.Fields(string(out)) {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatalf("debugfs blocks %s: unexpected output %q", path, out)
		}
		blocks = append(blocks, n)
	}
	if len(blocks) == 0 {
		t.Fatalf("debugfs blocks %s: no blocks\n%s", path, stderr.String())
	}
	return blocks
}

// rewriteFile overwrites the content of a file inside img in place, as a
// guest rewriting it would: same blocks, new bytes of the same kind. The
// file system stays consistent.
func rewriteFile(t testing.TB, img string, f fileSpec, seed uint64) {
	t.Helper()
	rewritePart(t, img, f, 0, 1, seed)
}

// rewritePart rewrites the part of a file from fraction from to fraction to
// of its blocks, like rewriteFile.
func rewritePart(t testing.TB, img string, f fileSpec, from, to float64, seed uint64) {
	t.Helper()
	blocks := fileBlocks(t, img, f.path)
	blocks = blocks[int(from*float64(len(blocks))):int(to*float64(len(blocks)))]
	data := fill(len(blocks)*4096, f.kind, seed)
	fd, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	// The slack after the end of the file is rewritten too: harmless.
	for i := 0; i < len(blocks); {
		j := i + 1
		for j < len(blocks) && blocks[j] == blocks[j-1]+1 {
			j++
		}
		if _, err := fd.WriteAt(data[i*4096:j*4096], blocks[i]*4096); err != nil {
			t.Fatal(err)
		}
		i = j
	}
	if err := fd.Close(); err != nil {
		t.Fatal(err)
	}
}

// fsck checks an image is a consistent ext4 file system.
func fsck(t testing.TB, img string) {
	t.Helper()
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck %s: %v\n%s", img, err, out)
	}
}

// restoreTo restores the only disk (vda) of point id of machine with the
// binary into a new file under dir and returns its path.
func restoreTo(t testing.TB, vaultDir, machine, id, dir string) string {
	t.Helper()
	out := filepath.Join(dir, fmt.Sprintf("restore-%s-%d.raw", id[:12], time.Now().UnixNano()))
	mustRun(t, "--vault", vaultDir, "-q", "restore", "--machine", machine, id, "--disk", "vda", "--to-file", out)
	return out
}

// checkRestores restores every point in want (point ID -> image copy) and
// compares, deleting the restored files.
func checkRestores(t testing.TB, vaultDir, machine string, want map[string]string, scratch string) {
	t.Helper()
	for id, img := range want {
		got := restoreTo(t, vaultDir, machine, id, scratch)
		sameContent(t, img, got)
		os.Remove(got)
	}
}
