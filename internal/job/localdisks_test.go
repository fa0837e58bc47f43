package job_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"lifeboat/internal/job"
	"lifeboat/internal/recovery"
)

// Disk arguments become a spec's disks: names as DiskSpecs gives them,
// relative paths made absolute, NBD URLs kept as they are.
func TestLocalDisks(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	def := &recovery.Definition{Disks: []recovery.DefinitionDisk{{Name: "root"}, {Name: "data"}}}
	got, err := job.LocalDisks([]string{"img/a.raw", "data=/abs/b.raw", "nas=nbd+unix:///exp?socket=/run/s.nbd"}, def)
	if err != nil {
		t.Fatal(err)
	}
	want := []job.Disk{{Name: "root", Path: filepath.Join(wd, "img/a.raw")}, {Name: "data", Path: "/abs/b.raw"},
		{Name: "nas", Path: "nbd+unix:///exp?socket=/run/s.nbd"}}
	if len(got) != len(want) {
		t.Fatalf("disks %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("disk %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	var ie *job.InvalidError
	if _, err := job.LocalDisks([]string{"/a/x.raw", "/b/x.raw"}, nil); !errors.As(err, &ie) || ie.Field != "disks" {
		t.Fatalf("two disks named x: %v", err)
	}
	if d, err := job.LocalDisks(nil, nil); err != nil || len(d) != 0 {
		t.Fatalf("no disks: %v %v", d, err)
	}
	if job.AbsPath("") != "" || job.AbsPath("/x") != "/x" || job.AbsPath("x") != filepath.Join(wd, "x") {
		t.Fatal("AbsPath")
	}
}

// With a QMP or libvirt source, disk arguments only name the disks; without
// one they are paths, as LocalDisks makes them.
func TestBackupSetDisks(t *testing.T) {
	for _, src := range []job.Source{{QMP: "/run/vm.qmp"}, {Libvirt: "web1"}} {
		b := job.Backup{Source: src}
		if err := b.SetDisks([]string{"root", "data"}, nil); err != nil {
			t.Fatal(err)
		}
		if len(b.Disks) != 2 || b.Disks[0] != (job.Disk{Name: "root"}) || b.Disks[1] != (job.Disk{Name: "data"}) {
			t.Errorf("source %+v: disks %+v", src, b.Disks)
		}
	}
	var b job.Backup
	if err := b.SetDisks([]string{"/srv/a.raw"}, nil); err != nil {
		t.Fatal(err)
	}
	if len(b.Disks) != 1 || b.Disks[0] != (job.Disk{Name: "a", Path: "/srv/a.raw"}) {
		t.Errorf("local disks %+v", b.Disks)
	}
	var ie *job.InvalidError
	if err := b.SetDisks([]string{"/a/x.raw", "/b/x.raw"}, nil); !errors.As(err, &ie) || ie.Field != "disks" {
		t.Fatalf("two disks named x: %v", err)
	}
}
