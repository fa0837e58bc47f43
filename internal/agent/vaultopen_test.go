package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"lifeboat/internal/agent"
	"lifeboat/internal/catalog"
	"lifeboat/internal/crypto"
	"lifeboat/internal/job"
	"lifeboat/internal/location"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// recorder is a Reporter that keeps what a job reports.
type recorder struct {
	mu       sync.Mutex
	progress []agent.Progress
	logs     []string
}

func (r *recorder) Progress(v any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := v.(agent.Progress); ok {
		r.progress = append(r.progress, p)
	}
}

func (r *recorder) Log(level, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs = append(r.logs, level+": "+msg)
}

// TestJobsKeepVaultOpen: an agent unlocks a vault once and keeps it open
// for the jobs after (a scheduled incremental pays no key derivation);
// a vault that failed to open is tried again by the next job; a backup
// reports its progress (bytes done of the total) while it runs.
func TestJobsKeepVaultOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	url := filepath.Join(dir, "vault")
	pass := []byte("agent vault passphrase")
	opts := vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, ChunkSize: 64 << 10, PackSize: 1 << 20}
	store, err := location.Store(ctx, url, true, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vault.Init(ctx, store, pass, opts); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "d0.raw")
	data := make([]byte, 4<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(disk, data, 0o600); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	asked, fail := 0, true
	jobs := &agent.Jobs{Options: opts, Getenv: func(string) string { return "" },
		Passphrase: func(u string) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			asked++
			if fail {
				fail = false
				return nil, errors.New("no passphrase yet")
			}
			return pass, nil
		}}
	spec, _ := json.Marshal(job.Backup{Machine: "m1", Vault: url, Consistency: "crash", Source: job.Source{Disks: []job.Disk{{Name: "d0", Path: disk}}}})
	run := func(id string) (*recorder, error) {
		rep := &recorder{}
		_, err := jobs.Run(ctx, catalog.Job{ID: id, Kind: "backup", Machine: "m1", Vault: url, Spec: spec}, rep)
		return rep, err
	}
	if _, err := run("j1"); err == nil {
		t.Fatal("a backup ran without its vault's passphrase")
	}
	for i, id := range []string{"j2", "j3", "j4"} {
		if i == 1 {
			data[12345] ^= 0xff // an incremental with a change
			os.WriteFile(disk, data, 0o600)
		}
		rep, err := run(id)
		if err != nil {
			t.Fatalf("job %s: %v (log %q)", id, err, rep.logs)
		}
		if i == 0 {
			if len(rep.progress) == 0 {
				t.Fatal("a full backup reported no progress")
			}
			last := rep.progress[len(rep.progress)-1]
			if last.TotalBytes != int64(len(data)) || last.DoneBytes != last.TotalBytes {
				t.Fatalf("a full backup's progress: %+v, want %d of %d bytes done at the end", rep.progress, len(data), len(data))
			}
		}
	}
	if asked != 2 {
		t.Fatalf("the passphrase was asked %d times for four jobs (the first failing), want 2: the vault was not kept open", asked)
	}
	v, err := location.Open(ctx, url, os.Getenv, pass, opts)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := recovery.List(ctx, v)
	if err != nil || len(pts) != 3 {
		t.Fatalf("points: %d, %v; want 3", len(pts), err)
	}
}

func TestProgressText(t *testing.T) {
	for _, c := range []struct {
		p    agent.Progress
		want string
	}{
		{agent.Progress{}, "-"},
		{agent.Progress{DoneBytes: 1 << 20, TotalBytes: 4 << 20}, "25%"},
		{agent.Progress{DoneBytes: 3 << 20, TotalBytes: 4 << 20, Rate: 1 << 20, ETASeconds: 1.4}, "75% 1.00 MiB/s ETA 1s"},
	} {
		if got := c.p.Text(); got != c.want {
			t.Errorf("%+v.Text() = %q, want %q", c.p, got, c.want)
		}
	}
}
