package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/agent"
	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/clock"
	"lifeboat/internal/crypto"
	"lifeboat/internal/job"
	"lifeboat/internal/location"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/nbd"
	"lifeboat/internal/recovery"
	"lifeboat/internal/schedule"
	"lifeboat/internal/testenv"
	"lifeboat/internal/vault"
	"lifeboat/internal/vmtest"
)

// An hour of fake time with every real piece: the scheduler ticks under
// a fake clock; the API serves over HTTP; a real agent (agent.Agent and
// agent.Jobs, what `lifeboat agent` runs) claims the jobs over that API
// and runs them through internal/job into a directory vault. Three
// machines on a one-minute policy with a 40 s stagger and keep-last 5,
// each a 32 MiB ext4 disk: web1's an image file, db1's served by
// lifeboat's NBD server, vm1's a live qcow2 in qemu-storage-daemon,
// backed up over QMP with its dirty bitmap. Each minute 1% of each disk
// changes (vm1's written through QEMU).
//
// It checks that each machine starts at its own offset in the window
// (exactly, and distinct from the others), that the retention is applied
// in the vault itself (five points each, read through the library, and a
// prune ran), and that every machine is green. Then db1's disk answers
// every read with EIO: its backup fails, is retried with backoff, the
// job-failing and RPO alerts fire and a webhook receives them; its disk
// comes back: the next backup succeeds and both alerts clear, the
// webhook hearing that too. The vault verifies (read-data) at the end.
//
// On SQLite only, for CI's time (12 s on an idle machine, 40 s with -race):
// TestSchedulerHour runs the scheduler on both engines, and
// engines(t, testSchedulerHourRealAgent) runs this on PostgreSQL too.
func TestSchedulerHourRealAgent(t *testing.T) {
	cat, err := catalog.Open(context.Background(), filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	testSchedulerHourRealAgent(t, cat)
}

func testSchedulerHourRealAgent(t *testing.T, cat *catalog.Catalog) {
	for _, tool := range []string{"mkfs.ext4", "debugfs", "qemu-storage-daemon", "qemu-img", "fusermount3"} {
		vmtest.RequireBinary(t, tool)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	t.Setenv("TMPDIR", t.TempDir()) // the live backup's NBD sockets and overlays
	fc := clock.NewFake(t0)

	// The vault, cheap to open.
	const pass = "correct horse battery staple"
	opts := vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, ChunkSize: 64 << 10, PackSize: 1 << 20, Clock: fc}
	vaultDir := filepath.Join(dir, "vault")
	store, err := location.Store(ctx, vaultDir, true, os.Getenv)
	must(err)
	_, err = vault.Init(ctx, store, []byte(pass), opts)
	must(err)

	// The disks: three ext4 images, one behind an NBD server that can be
	// made to fail every read, one in a live qcow2 that qemu-storage-daemon
	// serves (the "guest" writes to it through QEMU, over FUSE).
	web1, web1Blocks := ext4Image(t, dir, "web1")
	db1, db1Blocks := ext4Image(t, dir, "db1")
	db1URL, db1Broken := failingExport(t, db1)
	vm1Raw, vm1Blocks := ext4Image(t, dir, "vm1")
	vm1 := testenv.WritableStorageDaemon(t, vm1Raw, "")

	hook := &webhook{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The agent heartbeats every 20 ms of real time while the fake clock
	// runs far faster: how long it may stay silent is not under test here.
	sched := &Scheduler{Catalog: cat, Log: quiet, Webhooks: []string{hs.URL}, AgentTimeout: 24 * time.Hour}
	defer sched.Close()
	apiSrv := &api.Server{Catalog: cat, Clock: fc, Log: quiet, DefaultAgent: "hv1", Alerted: sched.Alerted}
	idle := &idleWatch{}
	srv := httptest.NewServer(idle.wrap(apiSrv.Handler()))
	defer srv.Close()

	adminSecret, _ := api.NewSecret()
	agentSecret, _ := api.NewSecret()
	_, err = cat.AddToken(ctx, "admin", catalog.RoleAdmin, api.HashToken(adminSecret), t0)
	must(err)
	_, err = cat.AddToken(ctx, "hv1", catalog.RoleAgent, api.HashToken(agentSecret), t0)
	must(err)
	c := &api.Client{URL: srv.URL, Token: adminSecret}

	spec := schedule.Spec{Every: time.Minute, Stagger: 40 * time.Second}
	must(c.Do(ctx, "PUT", "/v1/vaults/local", api.VaultJSON{Vault: catalog.Vault{Name: "local", URL: vaultDir}}, nil))
	must(c.Do(ctx, "PUT", "/v1/tiers/gold", api.TierJSON{RPO: api.Duration(5 * time.Minute)}, nil))
	must(c.Do(ctx, "PUT", "/v1/policies/minutely", api.PolicyJSON{Every: api.Duration(spec.Every), Stagger: api.Duration(spec.Stagger),
		Keep: api.KeepJSON{Last: 5}, Consistency: "crash", Vault: "local"}, nil))
	sources := map[string]job.Source{
		"web1": {Disks: []job.Disk{{Name: "root", Path: web1}}},
		"db1":  {Disks: []job.Disk{{Name: "root", Path: db1URL}}},
		"vm1":  {QMP: vm1.QMP},
	}
	machines := []string{"web1", "db1", "vm1"}
	for _, m := range machines {
		must(c.Do(ctx, "POST", "/v1/machines", api.AddMachineJSON{Name: m, Source: sources[m]}, nil))
		must(c.Do(ctx, "POST", "/v1/machines/"+m+"/protect", api.ProtectJSON{Policy: "minutely", Tier: "gold"}, nil))
	}

	// The agent: the loop and the job runner `lifeboat agent` runs.
	ag := &agent.Agent{Client: &api.Client{URL: srv.URL, Token: agentSecret}, Log: quiet,
		Poll: 5 * time.Millisecond, Heartbeat: 20 * time.Millisecond,
		Runner: &agent.Jobs{Passphrase: func(string) ([]byte, error) { return []byte(pass), nil },
			Getenv: func(string) string { return "" }, Options: opts}}
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan struct{})
	go func() { defer close(agentDone); ag.Run(agentCtx) }()
	defer func() { stopAgent(); <-agentDone }()

	rng := rand.NewChaCha8([32]byte{7})
	change := func() { // 1% of each ext4 image, inside its data file
		changeBlocks(t, rng, web1, web1Blocks)
		changeBlocks(t, rng, db1, db1Blocks)
		changeBlocks(t, rng, vm1.FUSE, vm1Blocks)
	}
	var raised []string
	// step moves the fake clock to at, ticks, and waits until the agent
	// has run every job that can run then (and those they queued).
	step := func(at time.Time) {
		t.Helper()
		if at.Truncate(time.Minute) != fc.Now().Truncate(time.Minute) {
			change()
		}
		fc.Set(at)
		rep, err := sched.Tick(ctx, at)
		must(err)
		raised = append(raised, rep.Raised...)
		if !idle.wait(30 * time.Second) {
			t.Fatalf("at +%s the agent did not run out of jobs within 30 s", at.Sub(t0))
		}
		// What the catalog says: nothing runs, nothing waits that could.
		for _, st := range []string{catalog.Running, catalog.Queued} {
			js, err := cat.Jobs(ctx, catalog.JobFilter{State: st})
			must(err)
			for _, j := range js {
				if !j.NotBefore.After(at) {
					t.Fatalf("at +%s the agent is idle but %s job %s of %s is %s", at.Sub(t0), j.Kind, j.ID, j.Machine, j.State)
				}
			}
		}
	}

	// The healthy hour: each minute is ticked at its start, at each
	// machine's offset and at the end of the window, so that a backup
	// started anywhere but at its offset shows.
	offsets := map[string]time.Duration{}
	var within []time.Duration
	for _, m := range machines {
		offsets[m] = spec.Offset("minutely/" + m)
		within = append(within, offsets[m])
	}
	within = append(within, 0, spec.Stagger)
	slices.Sort(within)
	within = slices.Compact(within)
	for min := t0; min.Before(t0.Add(time.Hour)); min = min.Add(time.Minute) {
		for _, off := range within {
			step(min.Add(off))
		}
	}
	if len(raised) != 0 {
		t.Fatalf("alerts raised in a healthy hour: %v", raised)
	}

	backups := func(m string) []catalog.Job {
		js, err := cat.Jobs(ctx, catalog.JobFilter{Machine: m, Kind: "backup", Limit: 1000})
		must(err)
		slices.Reverse(js)
		return js
	}
	seen := map[time.Duration]string{}
	for _, m := range machines {
		off := offsets[m]
		if off < 0 || off >= spec.Stagger {
			t.Fatalf("%s's offset %s is outside the %s window", m, off, spec.Stagger)
		}
		if other, dup := seen[off]; dup {
			t.Fatalf("%s and %s start at one offset %s: not staggered", m, other, off)
		}
		seen[off] = m
		js := backups(m)
		if len(js) < 59 || len(js) > 60 {
			t.Fatalf("%s backed up %d times in an hour of one-minute slots", m, len(js))
		}
		for _, j := range js {
			if j.State != catalog.Succeeded || j.Attempt != 1 {
				t.Fatalf("%s: backup %s %s after %d attempt(s): %s", m, j.ID, j.State, j.Attempt, j.Error)
			}
			if got := j.Started.Sub(j.Started.Truncate(time.Minute)); got != off {
				t.Fatalf("%s's backup %s started at +%s, %s into its minute; its offset is %s", m, j.ID, j.Started.Sub(t0), got, off)
			}
		}
	}
	t.Logf("offsets in the %s window: %v", spec.Stagger, offsets)

	// Each backup after the first stored what changed in its minute: the
	// image files by comparison with the parent point, the live disk by
	// QEMU's dirty bitmap.
	for _, m := range machines {
		pts, err := cat.Points(ctx, m, 5)
		must(err)
		want := map[string]string{"web1": "compare", "db1": "compare", "vm1": "tracking"}[m]
		for _, p := range pts {
			if p.ChangeSource != want {
				t.Fatalf("%s's point %s found its changes by %q, want %q", m, p.ID, p.ChangeSource, want)
			}
		}
		for _, j := range backups(m)[1:] {
			var res struct {
				NewBytes int64 `json:"new_bytes"`
			}
			must(json.Unmarshal(j.Result, &res))
			if res.NewBytes == 0 || res.NewBytes > 1<<20 {
				t.Fatalf("%s's backup %s stored %d new bytes after 1%% of its 32 MiB changed", m, j.ID, res.NewBytes)
			}
		}
	}

	// Retention, in the vault itself: keep-last 5 of each machine.
	v, err := location.Open(ctx, vaultDir, os.Getenv, []byte(pass), opts)
	must(err)
	countPoints := func() map[string]int {
		pts, bad, err := recovery.Scan(ctx, v)
		must(err)
		if len(bad) > 0 {
			t.Fatalf("unreadable objects in the vault: %+v", bad)
		}
		n := map[string]int{}
		for _, p := range pts {
			n[p.Machine]++
		}
		return n
	}
	kept := countPoints()
	for _, m := range machines {
		if n := kept[m]; n != 5 {
			t.Fatalf("the vault holds %d points of %s; its policy keeps the last 5", n, m)
		}
	}
	forgets, err := cat.Jobs(ctx, catalog.JobFilter{Kind: "forget", State: catalog.Succeeded, Limit: 1000})
	must(err)
	if len(forgets) < 3*59 {
		t.Fatalf("%d forgets succeeded in the hour", len(forgets))
	}
	// The scheduler's prune ran at the start (on an empty vault); the next
	// is a day away. Queued now as it queues it, the agent runs it: the
	// data only the forgotten points held goes, the kept points' stays.
	prunes, err := cat.Jobs(ctx, catalog.JobFilter{Kind: "prune"})
	must(err)
	if len(prunes) != 1 || prunes[0].State != catalog.Succeeded {
		t.Fatalf("prunes in the hour: %+v", prunes)
	}
	pruneSpec, _ := json.Marshal(job.Prune{Vault: vaultDir})
	pruneID, err := cat.Enqueue(ctx, catalog.Job{Kind: "prune", Vault: "local", Spec: pruneSpec, MaxAttempts: 1}, fc.Now())
	must(err)
	step(fc.Now())
	var pruned catalog.Job
	must(c.Do(ctx, "GET", "/v1/jobs/"+pruneID, nil, &pruned))
	var pr maintenance.PruneReport
	must(json.Unmarshal(pruned.Result, &pr))
	if pruned.State != catalog.Succeeded || pr.Points != 15 || pr.DeletedPacks == 0 || pr.Deferred {
		t.Fatalf("the prune after the hour: %s %s, %+v", pruned.State, pruned.Error, pr)
	}
	if kept := countPoints(); kept["web1"] != 5 || kept["db1"] != 5 || kept["vm1"] != 5 {
		t.Fatalf("points after the prune: %v", kept)
	}
	rpo := func() map[string]string {
		var ms []api.MachineJSON
		must(c.Do(ctx, "GET", "/v1/machines", nil, &ms))
		st := map[string]string{}
		for _, m := range ms {
			st[m.Name] = m.RPOState
		}
		return st
	}
	for m, st := range rpo() {
		if st != string(schedule.Green) {
			t.Fatalf("%s is %s after a healthy hour", m, st)
		}
	}

	// db1's disk fails every read: attempts fail and are retried with
	// backoff; the alerts fire and reach the webhook.
	db1Broken.Store(true)
	broke := fc.Now()
	open := func() map[string]bool {
		var as []catalog.Alert
		must(c.Do(ctx, "GET", "/v1/alerts", nil, &as))
		o := map[string]bool{}
		for _, a := range as {
			o[a.Kind+" "+a.Subject] = true
		}
		return o
	}
	for i := 0; i < 60 && !(open()[AlertRPO+" db1"] && open()[AlertJobFailing+" db1"]); i++ {
		step(fc.Now().Add(10 * time.Second))
	}
	if o := open(); len(o) != 2 || !o[AlertRPO+" db1"] || !o[AlertJobFailing+" db1"] {
		t.Fatalf("open alerts %v within 10 minutes of db1's disk failing", o)
	}
	if !waitFor(func() bool { return hook.got("raised", AlertRPO, "db1") && hook.got("raised", AlertJobFailing, "db1") }) {
		t.Fatalf("the webhook did not hear db1's alerts: %+v", hook.events)
	}
	hook.mu.Lock()
	for _, e := range hook.events {
		if e.Kind == AlertJobFailing && !strings.Contains(e.Message, "input/output error") {
			t.Errorf("the webhook's job-failing alert does not say why: %q", e.Message)
		}
	}
	hook.mu.Unlock()
	// The first failed backup: three attempts, the later ones after the
	// backoff of the attempt before, each failing on the disk read.
	var failed catalog.Job
	for _, j := range backups("db1") {
		if !j.Created.Before(broke) {
			failed = j
			break
		}
	}
	if failed.State != catalog.Failed || failed.Attempt != api.BackupAttempts || !strings.Contains(failed.Error, "input/output error") {
		t.Fatalf("db1's first backup on the failed disk: %s after %d attempts: %q", failed.State, failed.Attempt, failed.Error)
	}
	var starts []time.Time
	logs, err := cat.Logs(ctx, failed.ID, 0)
	must(err)
	for _, l := range logs {
		if strings.HasPrefix(l.Message, "backing up db1") {
			starts = append(starts, l.Time)
		}
	}
	if len(starts) != api.BackupAttempts {
		t.Fatalf("db1's failed backup logged %d attempts: %+v", len(starts), logs)
	}
	// The backoff: 30 s, then doubled. The clock moves in 10 s steps: a
	// retry runs at the first one its backoff allows.
	for i, backoff := range []time.Duration{30 * time.Second, time.Minute} {
		if gap := starts[i+1].Sub(starts[i]); gap < backoff || gap >= backoff+10*time.Second {
			t.Fatalf("attempt %d of db1's backup came %s after the one before; its backoff is %s", i+2, gap, backoff)
		}
	}
	if hook.got("raised", AlertRPO, "web1") || hook.got("raised", AlertRPO, "vm1") {
		t.Fatalf("healthy machines alerted: %+v", hook.events)
	}
	if st := rpo(); st["db1"] != string(schedule.Missed) || st["web1"] != string(schedule.Green) || st["vm1"] != string(schedule.Green) {
		t.Fatalf("RPO status with db1's disk failing: %v", st)
	}

	// The disk comes back: the next backup succeeds, both alerts clear.
	db1Broken.Store(false)
	healed := fc.Now()
	for i := 0; i < 60 && (open()[AlertRPO+" db1"] || open()[AlertJobFailing+" db1"]); i++ {
		step(fc.Now().Add(10 * time.Second))
	}
	if o := open(); len(o) != 0 {
		t.Fatalf("alerts still open after db1's disk came back: %v", o)
	}
	if !waitFor(func() bool {
		return hook.got("cleared", AlertRPO, "db1") && hook.got("cleared", AlertJobFailing, "db1")
	}) {
		t.Fatalf("the webhook did not hear db1's alerts clear: %+v", hook.events)
	}
	js := backups("db1")
	if last := js[len(js)-1]; last.State != catalog.Succeeded || last.Started.Before(healed) {
		t.Fatalf("db1's backup after its disk came back: %+v", last)
	}
	for m, st := range rpo() {
		if st != string(schedule.Green) {
			t.Fatalf("%s is %s once db1's disk came back", m, st)
		}
	}
	if n := countPoints(); n["db1"] != 5 || n["web1"] != 5 || n["vm1"] != 5 {
		t.Fatalf("points in the vault at the end: %v", n)
	}
	// A vault opened afresh: prune rewrote the index since v was opened.
	v, err = location.Open(ctx, vaultDir, os.Getenv, []byte(pass), opts)
	must(err)
	vr, err := maintenance.Verify(ctx, v, maintenance.VerifyOptions{ReadData: true})
	must(err)
	if len(vr.Problems) > 0 {
		t.Fatalf("the vault has problems: %+v", vr.Problems)
	}
}

// idleWatch tells when the agent has nothing left to run: its claim of
// jobs came back empty (204) after the last mark. An agent claims again
// only once its previous job is finished and what its finishing queued
// (retention) is in the catalog, so an empty claim that began after the
// tick means every job runnable at this time ran.
type idleWatch struct {
	gen  atomic.Int64 // bumped at each wait
	idle atomic.Int64 // the gen at which the latest empty claim began
}

func (w *idleWatch) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/agent/claim" {
			h.ServeHTTP(rw, r)
			return
		}
		gen := w.gen.Load()
		sw := &statusWriter{ResponseWriter: rw}
		h.ServeHTTP(sw, r)
		if sw.status == http.StatusNoContent {
			for {
				cur := w.idle.Load()
				if cur >= gen || w.idle.CompareAndSwap(cur, gen) {
					break
				}
			}
		}
	})
}

// wait marks now and waits for an empty claim begun after it.
func (w *idleWatch) wait(limit time.Duration) bool {
	gen := w.gen.Add(1)
	for deadline := time.Now().Add(limit); w.idle.Load() < gen; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// ext4Image makes a 32 MiB ext4 image holding one 4 MiB file of random
// data, and returns it with the image blocks (4 KiB) of that file.
func ext4Image(t *testing.T, dir, name string) (string, []int64) {
	t.Helper()
	root := filepath.Join(dir, name+".root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4<<20)
	rand.NewChaCha8([32]byte{byte(len(name)), name[0]}).Read(data)
	if err := os.WriteFile(filepath.Join(root, "data"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, name+".ext4")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", root, img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	out, err := exec.Command("debugfs", "-R", "blocks /data", img).Output()
	if err != nil {
		t.Fatalf("debugfs blocks: %v", err)
	}
	var blocks []int64
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Split(bufio.ScanWords)
	for sc.Scan() {
		b, err := strconv.ParseInt(sc.Text(), 10, 64)
		if err != nil {
			t.Fatalf("debugfs blocks: %q", out)
		}
		blocks = append(blocks, b)
	}
	if len(blocks) != len(data)/4096 {
		t.Fatalf("debugfs found %d blocks of the 4 MiB file", len(blocks))
	}
	return img, blocks
}

// changeBlocks overwrites 1% of the image with new random data: a run
// of 4 KiB blocks of its data file from a random one on (so that the
// file system stays sound), as a guest rewriting part of a file does.
func changeBlocks(t *testing.T, rng *rand.ChaCha8, img string, blocks []int64) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	n := (32 << 20) / 100 / len(buf)
	first := int(rng.Uint64() % uint64(len(blocks)-n))
	for _, b := range blocks[first : first+n] {
		rng.Read(buf)
		if _, err := f.WriteAt(buf, b*4096); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// failingExport serves img read-only over lifeboat's NBD server; while
// the returned switch is on, every read fails with EIO.
func failingExport(t *testing.T, img string) (string, *atomic.Bool) {
	t.Helper()
	d := &failingDisk{}
	url := testenv.ServeImage(t, img, func(fb *nbd.FileBackend) nbd.Backend { d.FileBackend = fb; return d })
	return url, &d.broken
}

// failingDisk is a disk whose reads fail with EIO while broken.
type failingDisk struct {
	*nbd.FileBackend
	broken atomic.Bool
}

func (d *failingDisk) ReadAt(p []byte, off int64) (int, error) {
	if d.broken.Load() {
		return 0, fmt.Errorf("reading %d bytes at %d: %w", len(p), off, syscall.EIO)
	}
	return d.FileBackend.ReadAt(p, off)
}
