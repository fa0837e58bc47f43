package job_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/backup"
	"lifeboat/internal/blob"
	"lifeboat/internal/crypto"
	"lifeboat/internal/job"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/policy"
	"lifeboat/internal/recovery"
	"lifeboat/internal/source"
	"lifeboat/internal/vault"
)

func TestDiskSpecs(t *testing.T) {
	def := &recovery.Definition{Disks: []recovery.DefinitionDisk{{Name: "root"}}}
	for _, c := range []struct {
		in           []string
		def          *recovery.Definition
		names, paths string
		err          string
	}{
		{[]string{"data=/d/x.raw", "/d/root.img"}, nil, "data,root", "/d/x.raw,/d/root.img", ""},
		{[]string{"/d/a.raw", "/d/b.qcow2"}, def, "root,b", "/d/a.raw,/d/b.qcow2", ""},
		{[]string{"/d/bad name.raw"}, nil, "disk0", "/d/bad name.raw", ""},
		{[]string{"/a/x.raw", "/b/x.raw"}, nil, "", "", `two disks are named "x": name them with --disk NAME=PATH`},
	} {
		names, paths, err := job.DiskSpecs(c.in, c.def)
		if c.err != "" {
			var ie *job.InvalidError
			if err == nil || !strings.Contains(err.Error(), c.err) || !errors.As(err, &ie) {
				t.Errorf("DiskSpecs(%q): %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || strings.Join(names, ",") != c.names || strings.Join(paths, ",") != c.paths {
			t.Errorf("DiskSpecs(%q) = %q, %q, %v", c.in, names, paths, err)
		}
	}
}

// TestReports: points, forget decisions, soft-deleted points and the
// soft-delete window as the commands report them, from a real vault.
func TestReports(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "vault"), 0o700)
	store, err := blob.NewDir(filepath.Join(dir, "vault"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.Init(ctx, store, []byte("a long passphrase"), vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, SoftDelete: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "d.raw")
	os.WriteFile(img, []byte(strings.Repeat("lifeboat", 1<<14)), 0o600)
	for _, m := range []string{"web1", "db1", "web1"} {
		src, err := source.OpenFile(img)
		if err != nil {
			t.Fatal(err)
		}
		_, err = backup.Run(ctx, v, backup.Options{Machine: m, Consistency: recovery.Crash, Disks: []backup.Disk{{Name: "root", Source: src}}})
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	out, all, err := job.ListPoints(ctx, v, "web1", job.Env{Warn: func(s string) { t.Error(s) }})
	if err != nil || len(all) != 3 || len(out) != 2 {
		t.Fatalf("ListPoints: %d of %d, %v", len(out), len(all), err)
	}
	p := out[0]
	if p.Machine != "web1" || p.Short != all[0].ID.Short() || strings.Join(p.DiskNames(), ",") != "root" || p.NewBytes() != all[0].Disks[0].Stats.NewBytes || p.Drill != nil {
		t.Fatalf("point %+v", p)
	}
	if out[1].NewBytes() >= p.NewBytes() || p.NewBytes() == 0 {
		t.Fatalf("new bytes %d then %d: the second backup of the same data stores less", p.NewBytes(), out[1].NewBytes())
	}

	f, err := job.RunForget(ctx, v, job.Forget{Machine: "web1", Vault: "x", Keep: policy.Retention{KeepLast: 1}, DryRun: true}, job.Env{})
	if err != nil || f.Removing() != 1 || len(f.Removed) != 0 {
		t.Fatalf("dry run: %v, %+v", err, f)
	}
	raw, _ := json.Marshal(f.Report(true))
	var rep struct {
		Decisions []struct {
			ID   string `json:"id"`
			Keep bool   `json:"keep"`
		} `json:"decisions"`
		DryRun bool  `json:"dry_run"`
		Window int64 `json:"soft_delete_seconds"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil || !rep.DryRun || len(rep.Decisions) != 2 || rep.Window != 86400 {
		t.Fatalf("forget report %s: %v", raw, err)
	}
	f, err = job.RunForget(ctx, v, job.Forget{Machine: "web1", Vault: "x", Keep: policy.Retention{KeepLast: 1}}, job.Env{})
	if err != nil || len(f.Removed) != 1 {
		t.Fatalf("forget: %v, %+v", err, f)
	}
	deleted, err := maintenance.Deleted(ctx, v, "web1")
	if err != nil {
		t.Fatal(err)
	}
	ds := job.DeletedOf(deleted)
	if len(ds) != 1 || ds[0].ID != f.Removed[0] || ds[0].PurgeAt.Sub(ds[0].Deleted) != 24*time.Hour {
		t.Fatalf("deleted %+v (removed %v)", ds, f.Removed)
	}
	st, err := maintenance.SetSoftDelete(ctx, v, 48*time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	sd := job.SoftDeleteOf(st)
	if sd["soft_delete_seconds"] != int64(172800) || sd["effective"] == nil {
		t.Fatalf("soft delete %v", sd)
	}
}

func TestInstantStatusText(t *testing.T) {
	for _, c := range []struct {
		st    job.InstantStatus
		state string
		pct   float64
	}{
		{job.InstantStatus{DoneBytes: 1, TotalBytes: 4, Copying: true}, "copying", 25},
		{job.InstantStatus{DoneBytes: 4, TotalBytes: 4, Standalone: true}, "done: the images are standalone", 100},
		{job.InstantStatus{DoneBytes: 1, TotalBytes: 4}, "INTERRUPTED: run the same restore --instant --start again to finish the copy", 25},
		{job.InstantStatus{Copying: true}, "copying", 0},
	} {
		if c.st.StateText() != c.state || c.st.Percent() != c.pct {
			t.Errorf("%+v: %q %v", c.st, c.st.StateText(), c.st.Percent())
		}
	}
}
