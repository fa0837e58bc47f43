package e2e

// Issue 4: geo-redundant vault copies, through the CLI, against a
// directory, versitygw and MinIO; kill -9 of the real binary during a copy;
// prune at the source beside a copy; and a copy between two network
// namespaces whose link is cut half way.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/miniotest"
	"lifeboat/internal/blob/s3test"
	"lifeboat/internal/chunk"
	"lifeboat/internal/crypto"
	"lifeboat/internal/image"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/policy"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// copyStats is `vault copy --json`.
type copyStats struct {
	Points       []string `json:"points"`
	PointsCopied int      `json:"points_copied"`
	Chunks       int64    `json:"chunks"`
	ChunkBytes   int64    `json:"chunk_bytes"`
	ReadBytes    int64    `json:"read_bytes"`
	WrittenBytes int64    `json:"written_bytes"`
	Packs        int64    `json:"packs"`
	PackBytes    int64    `json:"pack_bytes"`
	AdoptedPacks int      `json:"adopted_packs"`
}

// statusJSON is `vault status --json`.
type statusJSON struct {
	Points   int `json:"points"`
	Machines []struct {
		Machine  string `json:"machine"`
		Points   int    `json:"points"`
		LatestID string `json:"latest_id"`
	} `json:"machines"`
	SizeBytes int64 `json:"size_bytes"`
	Copy      *struct {
		PendingPoints int `json:"pending_points"`
		Pending       []struct {
			ID string `json:"id"`
		} `json:"pending"`
		LagSeconds float64 `json:"lag_seconds"`
		UpToDate   bool    `json:"up_to_date"`
	} `json:"copy"`
}

type backupJSON struct {
	ID    string `json:"id"`
	Disks []struct {
		Stats struct {
			NewChunks int64 `json:"new_chunks"`
		} `json:"stats"`
	} `json:"disks"`
	Stats struct {
		StoredBytes int64 `json:"stored_bytes"`
		Packs       int64 `json:"packs"`
	} `json:"stats"`
}

func decode[T any](t *testing.T, out string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("decoding %q: %v", out, err)
	}
	return v
}

// with returns a copy of r's environment with more variables.
func (r *run) with(kv ...string) *run {
	env := map[string]string{}
	for k, v := range r.env {
		env[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		env[kv[i]] = kv[i+1]
	}
	return &run{t: r.t, env: env}
}

func pointList(t *testing.T, r *run, vaultURL string) []string {
	t.Helper()
	var pts []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(r.ok("--vault", vaultURL, "points", "--json")), &pts); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range pts {
		ids = append(ids, p.ID)
	}
	return ids
}

// TestCopyDirToVersitygwToMinIO: a directory vault is copied to versitygw,
// and that copy to MinIO. Second copies move only the new chunks; each copy
// verifies and restores byte-identical, also with the site before it gone;
// the last copy keeps its own retention.
func TestCopyDirToVersitygwToMinIO(t *testing.T) {
	gw := s3test.Start(t)
	mn := miniotest.Start(t)
	dir := t.TempDir()
	siteA := filepath.Join(dir, "site-a")
	siteB := "s3://" + gw.Config.Bucket + "/vaults/site-b"
	siteC := "s3://" + mn.Config.Bucket + "/vaults/site-c"
	gwEnv := []string{"S3_ENDPOINT", "http://" + gw.Addr(), "AWS_ACCESS_KEY_ID", gw.Config.AccessKey, "AWS_SECRET_ACCESS_KEY", gw.Config.SecretKey}
	mnEnv := []string{"S3_ENDPOINT", "http://" + mn.Addr(), "AWS_ACCESS_KEY_ID", mn.Config.AccessKey, "AWS_SECRET_ACCESS_KEY", mn.Config.SecretKey}
	prefixed := func(prefix string, kv []string) []string {
		var out []string
		for i := 0; i < len(kv); i += 2 {
			k := kv[i]
			if k == "S3_ENDPOINT" && prefix == "" {
				k = "LIFEBOAT_S3_ENDPOINT"
			}
			out = append(out, prefix+k, kv[i+1])
		}
		return out
	}
	a := &run{t: t, env: map[string]string{"LIFEBOAT_PASSWORD": "site-a-passphrase"}}
	// Site B: its own passphrase and server; the source (A) is a directory.
	b := a.with(append(prefixed("", gwEnv), "LIFEBOAT_PASSWORD", "site-b-passphrase", "LIFEBOAT_FROM_PASSWORD", "site-a-passphrase")...)
	// Site C: MinIO; its source is B, on versitygw.
	c := a.with(append(append(prefixed("", mnEnv), prefixed("LIFEBOAT_FROM_", gwEnv)...), "LIFEBOAT_PASSWORD", "site-c-passphrase", "LIFEBOAT_FROM_PASSWORD", "site-b-passphrase")...)

	root, data := filepath.Join(dir, "root.raw"), filepath.Join(dir, "data.raw")
	ext4Image(t, root)
	ext4Image(t, data)
	scribble(t, data, 11)
	a.ok("--vault", siteA, "vault", "init", "--chunk-size", "128K")
	backup := func() backupJSON {
		return decode[backupJSON](t, a.ok("--vault", siteA, "backup", "--json", "--machine", "web1", "--disk", root, "--disk", data))
	}
	p1 := backup()
	scribble(t, root, 12)
	p2 := backup()

	// A copy made with vault init --copy-of only.
	b.ok("--vault", siteB, "vault", "init", "--copy-of", siteA)
	c.ok("--vault", siteC, "vault", "init", "--copy-of", siteB)
	if _, errs, code := b.lifeboat("--vault", siteB, "vault", "init", "--copy-of", siteA); code != 2 || !strings.Contains(errs, "already exists") {
		t.Fatalf("second init --copy-of: exit %d %s", code, errs)
	}

	// vault status reads the copy's own variables (LIFEBOAT_COPY_*) and
	// needs no passphrase for it.
	if _, errs, code := a.lifeboat("--vault", siteA, "vault", "status", "--copy", siteB); code != 2 || !strings.Contains(errs, "AWS_ACCESS_KEY_ID") {
		t.Fatalf("status without the copy's credentials: exit %d %s", code, errs)
	}
	a = a.with(prefixed("LIFEBOAT_COPY_", gwEnv)...)
	st := decode[statusJSON](t, a.ok("--vault", siteA, "vault", "status", "--json", "--copy", siteB, "--machine", "web1"))
	if st.Points != 2 || st.Copy == nil || st.Copy.PendingPoints != 2 || st.Copy.UpToDate || st.Copy.LagSeconds <= 0 {
		t.Fatalf("status before the first copy: %+v", st)
	}

	first := decode[copyStats](t, b.ok("vault", "copy", "--from", siteA, "--to", siteB, "--json"))
	if first.PointsCopied != 2 || !slices.Equal(first.Points, []string{p1.ID, p2.ID}) {
		t.Fatalf("first copy A->B: %+v", first)
	}
	if got := pointList(t, b, siteB); !slices.Equal(got, []string{p1.ID, p2.ID}) {
		t.Fatalf("points at B %v, want the same IDs as at A", got)
	}
	st = decode[statusJSON](t, a.ok("--vault", siteA, "vault", "status", "--json", "--copy", siteB))
	if !st.Copy.UpToDate || st.Copy.LagSeconds != 0 {
		t.Fatalf("status after the copy: %+v", st.Copy)
	}

	// A third point at A: the next copy moves its new chunks and no more.
	scribble(t, root, 13)
	scribble(t, data, 14)
	p3 := backup()
	var newChunks int64
	for _, d := range p3.Disks {
		newChunks += d.Stats.NewChunks
	}
	second := decode[copyStats](t, b.ok("vault", "copy", "--from", siteA, "--to", siteB, "--json"))
	if second.PointsCopied != 1 || second.Points[0] != p3.ID || second.Chunks != newChunks {
		t.Fatalf("second copy A->B: %+v; the backup stored %d new chunks", second, newChunks)
	}
	// The chunks are the new packs' contents, less their headers; what is
	// read besides is the index, one point and its two manifests.
	if second.ChunkBytes > p3.Stats.StoredBytes || p3.Stats.StoredBytes-second.ChunkBytes > 4096*p3.Stats.Packs {
		t.Fatalf("second copy moved %d chunk bytes; the backup stored %d bytes in %d packs", second.ChunkBytes, p3.Stats.StoredBytes, p3.Stats.Packs)
	}
	if second.ReadBytes-second.ChunkBytes > 64<<10 || second.PackBytes-second.ChunkBytes > 4096*second.Packs {
		t.Fatalf("second copy read %d bytes and wrote %d pack bytes for %d chunk bytes", second.ReadBytes, second.PackBytes, second.ChunkBytes)
	}
	if second.ChunkBytes >= first.ChunkBytes {
		t.Fatalf("the incremental copy (%d bytes) is not much smaller than the first (%d)", second.ChunkBytes, first.ChunkBytes)
	}

	// B -> C, twice, from versitygw to MinIO.
	bc := decode[copyStats](t, c.ok("vault", "copy", "--from", siteB, "--to", siteC, "--json"))
	if bc.PointsCopied != 3 || bc.ChunkBytes != first.ChunkBytes+second.ChunkBytes {
		t.Fatalf("copy B->C: %+v (A->B moved %d+%d chunk bytes)", bc, first.ChunkBytes, second.ChunkBytes)
	}
	scribble(t, root, 15)
	p4 := backup()
	ab := decode[copyStats](t, b.ok("vault", "copy", "--from", siteA, "--to", siteB, "--json"))
	bc = decode[copyStats](t, c.ok("vault", "copy", "--from", siteB, "--to", siteC, "--json"))
	if ab.PointsCopied != 1 || bc.PointsCopied != 1 || bc.Points[0] != p4.ID || bc.ChunkBytes != ab.ChunkBytes || bc.Chunks != ab.Chunks {
		t.Fatalf("incremental A->B %+v, B->C %+v: want the same new chunks", ab, bc)
	}
	b.ok("--vault", siteB, "verify", "--read-data")
	c.ok("--vault", siteC, "verify", "--read-data")

	// Site A is gone: restore from B. Then B's server stops: restore from C.
	out := filepath.Join(dir, "from-b")
	if err := os.Rename(siteA, siteA+".lost"); err != nil {
		t.Fatal(err)
	}
	b.ok("--vault", siteB, "restore", "--machine", "web1", p4.ID[:10], "--to", out)
	sameFile(t, root, filepath.Join(out, "root.raw"))
	sameFile(t, data, filepath.Join(out, "data.raw"))
	gw.Stop()
	if got := pointList(t, c, siteC); !slices.Equal(got, []string{p1.ID, p2.ID, p3.ID, p4.ID}) {
		t.Fatalf("points at C with B down: %v", got)
	}
	out = filepath.Join(dir, "from-c")
	c.ok("--vault", siteC, "restore", "--machine", "web1", "latest", "--to", out)
	sameFile(t, root, filepath.Join(out, "root.raw"))
	sameFile(t, data, filepath.Join(out, "data.raw"))
	gw.Restart()

	// C keeps only the latest point: the copy does not bring the others back.
	c.ok("--vault", siteC, "forget", "--keep-last", "1", "--prune")
	again := decode[copyStats](t, c.ok("vault", "copy", "--from", siteB, "--to", siteC, "--json"))
	if again.PointsCopied != 0 || again.Chunks != 0 {
		t.Fatalf("copy after forget at C: %+v", again)
	}
	if got := pointList(t, c, siteC); !slices.Equal(got, []string{p4.ID}) {
		t.Fatalf("points at C after its own retention: %v", got)
	}
	c.ok("--vault", siteC, "verify", "--read-data")
	st = decode[statusJSON](t, b.with(prefixed("LIFEBOAT_COPY_", mnEnv)...).ok("--vault", siteB, "vault", "status", "--json", "--copy", siteC))
	if st.Points != 4 || !st.Copy.UpToDate {
		t.Fatalf("status of B against C: %+v", st)
	}
}

// TestCopyRefusesForeignVault: a vault not made with --copy-of is refused
// with exit code 2 and a message saying how to make one.
func TestCopyRefusesForeignVault(t *testing.T) {
	dir := t.TempDir()
	r := &run{t: t, env: map[string]string{"LIFEBOAT_PASSWORD": "e2e-passphrase"}}
	r.ok("--vault", filepath.Join(dir, "a"), "vault", "init")
	r.ok("--vault", filepath.Join(dir, "b"), "vault", "init")
	_, errs, code := r.lifeboat("vault", "copy", "--from", filepath.Join(dir, "a"), "--to", filepath.Join(dir, "b"))
	if code != 2 || !strings.Contains(errs, "was not initialised with --copy-of") {
		t.Fatalf("copy to a foreign vault: exit %d, %s", code, errs)
	}
	_, errs, code = r.lifeboat("--vault", filepath.Join(dir, "c"), "vault", "init", "--copy-of", filepath.Join(dir, "a"), "--chunk-size", "1M")
	if code != 2 || !strings.Contains(errs, "come from the source") {
		t.Fatalf("init --copy-of --chunk-size: exit %d, %s", code, errs)
	}
	_, errs, code = r.with("LIFEBOAT_FROM_PASSWORD", "wrong").lifeboat("--vault", filepath.Join(dir, "c"), "vault", "init", "--copy-of", filepath.Join(dir, "a"))
	if code != 3 || !strings.Contains(errs, "source") {
		t.Fatalf("init --copy-of with the wrong source passphrase: exit %d, %s", code, errs)
	}
}

// The lifeboat binary, for tests that kill it or run it in a namespace.
var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	// Records of points seen (internal/lastseen) go to a scratch
	// directory, not to /var/lib/lifeboat.
	state, err := os.MkdirTemp("", "lifeboat-e2e-state-")
	if err == nil {
		os.Setenv("LIFEBOAT_STATE_DIR", state)
		// The index cache, not ~/.cache (XDG_CACHE_HOME would move Go's
		// build cache too, and the binary would be compiled from nothing).
		os.Setenv("LIFEBOAT_CACHE_DIR", filepath.Join(state, "cache"))
	}
	code := m.Run()
	os.RemoveAll(state)
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func lifeboatBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "lifeboat-e2e-"); binErr != nil {
			return
		}
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(binDir, "lifeboat")
		build := exec.Command("go", "build", "-o", binPath, "./cmd/lifeboat")
		build.Dir = filepath.Dir(strings.TrimSpace(string(out)))
		if out, err := build.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("building lifeboat: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// proc is a lifeboat subprocess.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{}
	err            error
}

func startBin(t *testing.T, env []string, prefix []string, args ...string) *proc {
	t.Helper()
	p := &proc{done: make(chan struct{})}
	argv := append(append(slices.Clone(prefix), lifeboatBinary(t)), args...)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	return p
}

// wait returns the exit code, failing the test after timeout.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%v did not finish within %v\nstderr:\n%s", p.cmd.Args, timeout, p.stderr.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// randomDisk writes a disk of incompressible data, so that a copy has
// many packs to move.
func randomDisk(t *testing.T, path string, size int, seed int64) []byte {
	t.Helper()
	data := make([]byte, size)
	rand.New(rand.NewSource(seed)).Read(data)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return data
}

var cheapOpts = vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, ChunkSize: 64 << 10, PackSize: 1 << 20}

func openDir(t *testing.T, dir, pw string) *vault.Vault {
	t.Helper()
	s, err := blob.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(t.Context(), s, []byte(pw), cheapOpts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// packChunks counts, from the pack headers, in how many packs each chunk
// is stored.
func packChunks(t *testing.T, v *vault.Vault) map[chunk.ID]int {
	t.Helper()
	packs, err := v.ListPacks(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	out := map[chunk.ID]int{}
	for _, p := range packs {
		entries, err := v.ReadPackHeader(t.Context(), p.ID, p.Size)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			out[e.ID]++
		}
	}
	return out
}

// sourceChunks returns every chunk the source's points use, with its
// sealed size.
func sourceChunks(t *testing.T, v *vault.Vault) map[chunk.ID]int64 {
	t.Helper()
	ctx := t.Context()
	points, err := recovery.List(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := v.LoadIndex(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[chunk.ID]int64{}
	for _, p := range points {
		for _, d := range p.Disks {
			m, err := image.Load(ctx, v, d.Manifest, d.Size, d.ChunkSize)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range m.IDs {
				if !id.IsZero() {
					_, loc, _ := ix.Lookup(id)
					out[id] = int64(loc.Length)
				}
			}
		}
	}
	return out
}

func verifyDir(t *testing.T, v *vault.Vault) {
	t.Helper()
	rep, err := maintenance.Verify(t.Context(), v, maintenance.VerifyOptions{ReadData: true})
	if err != nil || len(rep.Problems) > 0 {
		t.Fatalf("verify --read-data %s: %v %+v", v.Store(), err, rep)
	}
}

// TestCopyKill9: `lifeboat vault copy` killed at random moments (and right
// after its first pack at the copy) leaves a copy that verifies clean; the
// rerun completes, restores byte-identical, and sends only the chunks no
// pack at the copy holds: nothing moves twice.
func TestCopyKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kills the real binary")
	}
	seed := int64(20261124)
	if s := os.Getenv("LIFEBOAT_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("kill delays from seed %d (LIFEBOAT_CRASH_SEED)", seed)
	rng := rand.New(rand.NewSource(seed))
	ctx := t.Context()
	dir := t.TempDir()
	srcDir := filepath.Join(dir, "site-a")
	os.MkdirAll(srcDir, 0o700)
	srcStore, _ := blob.NewDir(srcDir)
	if _, err := vault.Init(ctx, srcStore, []byte("site-a-passphrase"), cheapOpts); err != nil {
		t.Fatal(err)
	}
	env := []string{"LIFEBOAT_PASSWORD=site-b-passphrase", "LIFEBOAT_FROM_PASSWORD=site-a-passphrase"}
	disk := filepath.Join(dir, "vda.raw")
	var states [][]byte
	for i := 0; i < 3; i++ {
		states = append(states, randomDisk(t, disk, 16<<20, int64(i+1)))
		p := startBin(t, []string{"LIFEBOAT_PASSWORD=site-a-passphrase"}, nil, "--vault", srcDir, "-q", "backup", "--machine", "web1", "--disk", "vda="+disk)
		if code := p.wait(t, time.Minute); code != 0 {
			t.Fatalf("backup: exit %d %s", code, p.stderr.String())
		}
	}
	src := openDir(t, srcDir, "site-a-passphrase")
	all := sourceChunks(t, src)
	points, _ := recovery.List(ctx, src)

	newCopy := func(name string) (string, *vault.Vault) {
		d := filepath.Join(dir, name)
		os.MkdirAll(d, 0o700)
		s, _ := blob.NewDir(d)
		v, err := vault.InitCopyOf(ctx, s, []byte("site-b-passphrase"), src, cheapOpts)
		if err != nil {
			t.Fatal(err)
		}
		return d, v
	}
	copyArgs := func(to string) []string {
		return []string{"-q", "--json", "vault", "copy", "--from", srcDir, "--to", to}
	}
	// An uninterrupted copy, to time it.
	full, _ := newCopy("measure")
	start := time.Now()
	p := startBin(t, env, nil, copyArgs(full)...)
	if code := p.wait(t, time.Minute); code != 0 {
		t.Fatalf("copy: exit %d %s", code, p.stderr.String())
	}
	fullTime := time.Since(start)
	fs := decode[copyStats](t, p.stdout.String())
	t.Logf("uninterrupted copy: %v, %d chunks, %d packs", fullTime, fs.Chunks, fs.Packs)

	type plan struct {
		name  string
		delay time.Duration
		first bool // kill right after the first pack lands
	}
	plans := []plan{{name: "after-first-pack", first: true}}
	for i := 0; i < 5; i++ {
		plans = append(plans, plan{name: "random-" + strconv.Itoa(i), delay: 20*time.Millisecond + time.Duration(rng.Int63n(int64(fullTime)))})
	}
	resumed := 0
	for i, pl := range plans {
		toDir, to := newCopy("copy-" + strconv.Itoa(i))
		p := startBin(t, env, nil, copyArgs(toDir)...)
		deadline := time.Now().Add(time.Minute)
		if pl.first {
			for !p.exited() && time.Now().Before(deadline) {
				if m, _ := filepath.Glob(filepath.Join(toDir, "packs", "*", "[0-9a-f]*")); len(m) > 0 {
					break
				}
				time.Sleep(time.Millisecond)
			}
		} else {
			select {
			case <-p.done:
			case <-time.After(pl.delay):
			}
		}
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		killed := p.cmd.ProcessState.ExitCode() == -1

		verifyDir(t, to)
		stored := packChunks(t, to)
		// A point counts as copied once its marker is written after it; a
		// kill between the two leaves a point the next copy sends again
		// (only its marker: its chunks are there).
		committed := map[string]bool{}
		if ms, _ := filepath.Glob(filepath.Join(toDir, "copied", "*")); len(ms) > 0 {
			for _, m := range ms {
				if strings.HasPrefix(filepath.Base(m), ".") {
					continue // a marker's Put killed half way (.tmp-…): not written
				}
				id, _, _ := strings.Cut(filepath.Base(m), "-")
				committed[id] = true
			}
		}
		var want int64
		var wantN int
		for id, n := range all {
			if _, ok := stored[id]; !ok {
				want += n
				wantN++
			}
		}
		t.Logf("%s (%v): killed=%v, %d points committed, %d of %d chunks in packs", pl.name, pl.delay, killed, len(committed), len(stored), len(all))
		if len(stored) > 0 && len(stored) < len(all) {
			resumed++
		}

		r := startBin(t, env, nil, copyArgs(toDir)...)
		if code := r.wait(t, time.Minute); code != 0 {
			t.Fatalf("%s: rerun: exit %d %s", pl.name, code, r.stderr.String())
		}
		st := decode[copyStats](t, r.stdout.String())
		if st.Chunks != int64(wantN) || st.ChunkBytes != want || st.PointsCopied+len(committed) != len(points) {
			t.Fatalf("%s: rerun %+v; want %d chunks (%d bytes) that no pack held, and %d points in all", pl.name, st, wantN, want, len(points))
		}
		for id, n := range packChunks(t, to) {
			if n != 1 {
				t.Fatalf("%s: chunk %s is in %d packs at the copy: sent twice", pl.name, id.Short(), n)
			}
		}
		verifyDir(t, to)
		if i == 0 {
			out := filepath.Join(dir, "restored.raw")
			rp := startBin(t, []string{"LIFEBOAT_PASSWORD=site-b-passphrase"}, nil, "--vault", toDir, "-q", "restore", "--machine", "web1",
				points[1].ID.String()[:8], "--disk", "vda", "--to-file", out)
			if code := rp.wait(t, time.Minute); code != 0 {
				t.Fatalf("restore from the copy: exit %d %s", code, rp.stderr.String())
			}
			if got, _ := os.ReadFile(out); !bytes.Equal(got, states[1]) {
				t.Fatal("point restored from the copy differs")
			}
		}
		os.RemoveAll(toDir)
	}
	if resumed == 0 {
		t.Error("no kill left part of the chunks behind: resuming was not tested")
	}
}

// TestCopyBesidePrune: `lifeboat vault copy` runs while prune deletes and
// repacks at the source; the copy loses nothing.
func TestCopyBesidePrune(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	srcDir := filepath.Join(dir, "site-a")
	os.MkdirAll(srcDir, 0o700)
	srcStore, _ := blob.NewDir(srcDir)
	src, err := vault.Init(ctx, srcStore, []byte("e2e-passphrase"), cheapOpts)
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "vda.raw")
	r := &run{t: t, env: map[string]string{"LIFEBOAT_PASSWORD": "e2e-passphrase"}}
	randomDisk(t, disk, 12<<20, 1)
	for i := 0; i < 4; i++ {
		f, _ := os.OpenFile(disk, os.O_RDWR, 0)
		chunk := make([]byte, 3<<20)
		rand.New(rand.NewSource(int64(i + 10))).Read(chunk)
		f.WriteAt(chunk, int64(i)*(3<<20))
		f.Close()
		r.ok("--vault", srcDir, "-q", "backup", "--machine", "web1", "--disk", "vda="+disk)
	}
	r.ok("--vault", srcDir, "-q", "forget", "--keep-last", "2")
	for round := 0; round < 3; round++ {
		toDir := filepath.Join(dir, "copy-"+strconv.Itoa(round))
		os.MkdirAll(toDir, 0o700)
		toStore, _ := blob.NewDir(toDir)
		to, err := vault.InitCopyOf(ctx, toStore, []byte("e2e-passphrase"), src, cheapOpts)
		if err != nil {
			t.Fatal(err)
		}
		p := startBin(t, []string{"LIFEBOAT_PASSWORD=e2e-passphrase"}, nil, "-q", "vault", "copy", "--from", srcDir, "--to", toDir)
		time.Sleep(time.Duration(round) * 40 * time.Millisecond)
		if _, err := maintenance.Prune(ctx, src, maintenance.PruneOptions{}); err != nil {
			t.Fatalf("round %d: prune beside the copy: %v", round, err)
		}
		if code := p.wait(t, time.Minute); code != 0 {
			t.Fatalf("round %d: copy beside prune: exit %d %s", round, code, p.stderr.String())
		}
		verifyDir(t, to)
		out := filepath.Join(dir, "restored-"+strconv.Itoa(round))
		r.ok("--vault", toDir, "-q", "restore", "--machine", "web1", "latest", "--disk", "vda", "--to-file", out)
		sameFile(t, disk, out)
		if pts := pointList(t, r, toDir); len(pts) != 2 {
			t.Fatalf("round %d: %d points at the copy, want 2", round, len(pts))
		}
		// Forget one more at the source so the next round's prune has work.
		if round < 2 {
			f, _ := os.OpenFile(disk, os.O_RDWR, 0)
			f.WriteAt(bytes.Repeat([]byte{byte(round + 1)}, 2<<20), 0)
			f.Close()
			r.ok("--vault", srcDir, "-q", "backup", "--machine", "web1", "--disk", "vda="+disk)
			if _, err := maintenance.Forget(ctx, src, "web1", policy.Retention{KeepLast: 2}, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	verifyDir(t, src)
}
