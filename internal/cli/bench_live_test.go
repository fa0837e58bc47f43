package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"lifeboat/internal/agent"
	"lifeboat/internal/catalog"
	"lifeboat/internal/job"
	"lifeboat/internal/vault"
)

// quietReporter drops a job's progress and log lines.
type quietReporter struct{}

func (quietReporter) Progress(any)       {}
func (quietReporter) Log(string, string) {}

// BenchmarkScheduledLiveIncremental is issue 11's agent benchmark: a
// scheduled live incremental of a 4 GiB qcow2 disk (1 GiB of data) served
// by a qemu-storage-daemon, 1% of the disk (41 MiB in 64 KiB writes at
// random places) changed between two backups, run by an agent's job
// runner that already holds the vault open — timed from the job's start
// to its point committed (QMP, dirty bitmap, fleecing, read, store,
// commit). restic's incremental of the same change (restic backup of the
// qcow2 image file, which is what restic can see) runs after each one.
//
//	go test -run XXX -bench ScheduledLiveIncremental -benchtime 5x ./internal/cli
func BenchmarkScheduledLiveIncremental(b *testing.B) {
	restic, err := exec.LookPath("restic")
	if err != nil {
		b.Skip("restic not installed")
	}
	ctx := context.Background()
	work := b.TempDir()
	raw := filepath.Join(work, "disk.raw")
	const size, data = 4 << 30, 1 << 30
	f, err := os.Create(raw)
	if err != nil {
		b.Fatal(err)
	}
	f.Truncate(size)
	for off := int64(0); off < data; off += 64 << 20 {
		f.WriteAt(fill(64<<20, random, uint64(off)), off)
	}
	f.Close()
	dir, qmpSock, fuse := storageDaemonWith(b, raw)
	os.Remove(raw)
	qcow := filepath.Join(dir, "d0.qcow2")

	vaultDir := filepath.Join(work, "vault")
	initVault(b, vaultDir, 0)
	jobs := &agent.Jobs{Passphrase: func(string) ([]byte, error) { return []byte(testPassphrase), nil },
		Getenv: func(string) string { return "" }, Executable: lifeboatBin, Options: vault.Options{KDF: cheapKDF}}
	spec, _ := json.Marshal(job.Backup{Machine: "vm1", Source: job.Source{QMP: qmpSock}, Vault: vaultDir, Consistency: "crash",
		FleeceDir: filepath.Join(work, "fleece")})
	os.MkdirAll(filepath.Join(work, "fleece"), 0o700)
	backup := func() (time.Duration, catalog.Point) {
		b.Helper()
		start := time.Now()
		out, err := jobs.Run(ctx, catalog.Job{ID: "bench", Kind: "backup", Spec: spec}, quietReporter{})
		took := time.Since(start)
		if err != nil || len(out.Points) != 1 {
			b.Fatalf("backup job: %v", err)
		}
		return took, out.Points[0]
	}
	full, _ := backup() // opens the vault (keys unlocked) and makes the bitmap
	backup()            // the first incremental settles the bitmap

	repo := filepath.Join(work, "restic")
	resticRun := func(args ...string) time.Duration {
		b.Helper()
		cmd := exec.Command(restic, append([]string{"-r", repo, "--no-cache"}, args...)...)
		cmd.Env = append(os.Environ(), "RESTIC_PASSWORD=bench")
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("restic %v: %v\n%s", args, err, out)
		}
		return time.Since(start)
	}
	resticRun("init")
	resticFull := resticRun("backup", qcow)

	rng := rand.New(rand.NewPCG(1, 2))
	b.Logf("full backup: lifeboat %v, restic %v", full.Round(time.Millisecond), resticFull.Round(time.Millisecond))
	// 1% of the disk in writes of 64 KiB (each dirties a whole 256 KiB
	// chunk: up to 4x the data to read and store) and of 256 KiB (chunk
	// aligned: a guest writing contiguous runs); and nothing changed (the
	// fixed cost of a live incremental: QMP, bitmap, fleecing, commit).
	for _, write := range []int{64 << 10, 256 << 10, 0} {
		name := fmt.Sprintf("writes=%dK", write>>10)
		if write == 0 {
			name = "unchanged"
		}
		b.Run(name, func(b *testing.B) {
			change := func() {
				b.Helper()
				if write == 0 {
					return
				}
				w, err := os.OpenFile(fuse, os.O_WRONLY, 0)
				if err != nil {
					b.Fatal(err)
				}
				for n := 0; n < (size/100)/write; n++ {
					w.WriteAt(fill(write, random, rng.Uint64()), int64(rng.IntN(size/write))*int64(write))
				}
				if err := w.Sync(); err != nil {
					b.Fatal(err)
				}
				w.Close()
			}
			var lb, rs []time.Duration
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				change()
				b.StartTimer()
				took, p := backup()
				b.StopTimer()
				if p.ChangeSource != "tracking" {
					b.Fatalf("the incremental did not use the dirty bitmap: change source %q", p.ChangeSource)
				}
				lb = append(lb, took)
				rs = append(rs, resticRun("backup", qcow))
				b.StartTimer()
			}
			b.StopTimer()
			med := func(ds []time.Duration) time.Duration {
				s := slices.Clone(ds)
				slices.Sort(s)
				return s[len(s)/2]
			}
			b.ReportMetric(med(lb).Seconds(), "lb-incr-s")
			b.ReportMetric(med(rs).Seconds(), "restic-incr-s")
			b.ReportMetric(med(rs).Seconds()/med(lb).Seconds(), "ratio")
			b.Logf("incrementals: lifeboat %v, restic %v", lb, rs)
		})
	}
}
