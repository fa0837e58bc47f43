package restore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lifeboat/internal/recovery"
)

func TestPlanFormats(t *testing.T) {
	def := `{"schema":"lifeboat.machine/v1","name":"vm","cpus":1,"memory_mib":64,"disks":[{"name":"root","format":"qcow2"},{"name":"data"}]}`
	p := &recovery.Point{Machine: "vm", Consistency: recovery.Crash, Definition: []byte(def), Disks: []recovery.Disk{{Name: "root", Image: "/img/root.qcow2"}, {Name: "data", Format: "vmdk"}}}
	for _, c := range []struct {
		req  Request
		want []string // path:format per target
		err  error
	}{
		{Request{Dir: "/d"}, []string{"/d/root.qcow2:qcow2", "/d/data.raw:raw"}, nil},
		{Request{Dir: "/d", Format: "raw"}, []string{"/d/root.raw:raw", "/d/data.raw:raw"}, nil},
		{Request{Disk: "root", File: "/x.qcow2"}, []string{"/x.qcow2:qcow2"}, nil},
		{Request{Disk: "root", File: "/x.raw"}, []string{"/x.raw:raw"}, nil},
		{Request{Disk: "root", File: "/x"}, []string{"/x:qcow2"}, nil},
		{Request{Disk: "data", File: "/x"}, []string{"/x:raw"}, nil},
		{Request{Disk: "data", File: "/x.img", Format: "raw"}, []string{"/x.img:raw"}, nil},
		{Request{Disk: "root", File: "/x.qcow2", Format: "raw"}, nil, ErrFormat},
		{Request{Disk: "root", File: "/x.vmdk"}, nil, ErrFormat},
		{Request{Dir: "/d", Format: "vmdk"}, nil, ErrFormat},
		{Request{Disk: "nope", Dir: "/d"}, nil, recovery.ErrNoPoint},
		// In place, the image's own format: Run reads it.
		{Request{Disk: "root", InPlace: true}, []string{"/img/root.qcow2:"}, nil},
		{Request{Disk: "data", File: "/x.vmdk", InPlace: true}, []string{"/x.vmdk:"}, nil},
		{Request{Disk: "data", InPlace: true}, nil, recovery.ErrNoImage},
	} {
		ts, err := Plan(p, c.req)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("Plan(%+v): %v, want %v", c.req, err, c.err)
			}
			continue
		}
		if err != nil || len(ts) != len(c.want) {
			t.Errorf("Plan(%+v) = %v, %v", c.req, ts, err)
			continue
		}
		for i, tg := range ts {
			if got := tg.Path + ":" + tg.Format; got != c.want[i] {
				t.Errorf("Plan(%+v)[%d] = %s, want %s", c.req, i, got, c.want[i])
			}
		}
	}
}

// A definition naming its disks unlike the point (root for QEMU's
// virtio0) still gives the paired disk its format.
func TestPlanFormatOfPairedDisk(t *testing.T) {
	def := `{"schema":"lifeboat.machine/v1","name":"vm","cpus":1,"memory_mib":64,"disks":[{"name":"root","bus":"virtio","format":"qcow2"},{"name":"data","bus":"virtio","format":"raw"}]}`
	p := &recovery.Point{Machine: "vm", Consistency: recovery.Crash, Definition: []byte(def), Disks: []recovery.Disk{{Name: "virtio0", Format: "raw"}, {Name: "virtio1", Format: "qcow2"}}}
	ts, err := Plan(p, Request{Dir: "/d"})
	if err != nil || len(ts) != 2 || ts[0].Path != "/d/virtio0.qcow2" || ts[1].Path != "/d/virtio1.raw" {
		t.Fatalf("Plan = %+v, %v; want virtio0 as qcow2 (the definition's root), virtio1 as raw (its data)", ts, err)
	}
}

func TestPlan(t *testing.T) {
	p := &recovery.Point{Machine: "vm1", Consistency: recovery.Crash, Disks: []recovery.Disk{
		{Name: "vda", Source: "qemu:/run/vm1/qmp.sock#disk0", Image: "/var/lib/vm1-a.raw", Format: "raw"},
		{Name: "vdb", Source: "qemu:/run/vm1/qmp.sock#disk1", Image: "/var/lib/vm1-b.qcow2", Format: "qcow2"},
		{Name: "vdc", Source: "qemu:run/vm1/qmp.sock#disk2"}, // an older point
	}}
	paths := func(ts []Target) (out []string) {
		for _, t := range ts {
			out = append(out, t.Path)
		}
		return out
	}
	ts, err := Plan(p, Request{Dir: "/r"})
	if err != nil || len(ts) != 3 || ts[0].Path != filepath.Join("/r", "vda.raw") || ts[0].Format != "raw" ||
		ts[1].Path != filepath.Join("/r", "vdb.qcow2") || ts[1].Format != "qcow2" {
		t.Fatalf("--to: %v %v", paths(ts), err)
	}
	ts, err = Plan(p, Request{Disk: "vda", InPlace: true})
	if err != nil || len(ts) != 1 || ts[0].Path != "/var/lib/vm1-a.raw" || !ts[0].InPlace {
		t.Fatalf("in place onto the recorded image: %v %v", paths(ts), err)
	}
	// A qcow2 image is reverted through qemu-nbd (Run), not refused.
	ts, err = Plan(p, Request{Disk: "vdb", InPlace: true})
	if err != nil || len(ts) != 1 || ts[0].Path != "/var/lib/vm1-b.qcow2" || !ts[0].InPlace || ts[0].Disk.Format != "qcow2" {
		t.Fatalf("in place onto the recorded qcow2 image: %v %v", paths(ts), err)
	}
	if _, err := Plan(p, Request{Disk: "vdc", InPlace: true}); !errors.Is(err, recovery.ErrNoImage) {
		t.Fatalf("older live point in place: %v", err)
	}
	if ts, err := Plan(p, Request{Disk: "vdc", File: "/x.raw", InPlace: true}); err != nil || ts[0].Path != "/x.raw" {
		t.Fatalf("older live point in place with --to-file: %v %v", paths(ts), err)
	}
	if _, err := Plan(p, Request{Disk: "vdz", File: "/x.raw"}); !errors.Is(err, recovery.ErrNoPoint) {
		t.Fatalf("no such disk: %v", err)
	}
	for _, bad := range []Request{{}, {Dir: "/r", InPlace: true}, {File: "/x"}, {Disk: "vda"}, {Dir: "/r", Disk: "vda", File: "/x"}} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
	for _, good := range []Request{{Dir: "/r"}, {Disk: "vda", File: "/x"}, {InPlace: true}, {Disk: "vda", InPlace: true}, {Disk: "vda", File: "/x", InPlace: true}} {
		if err := good.Validate(); err != nil {
			t.Errorf("%+v: %v", good, err)
		}
	}
}

// A directory restore checks the point's names again, since they become
// file names in the directory, and refuses a file or a symbolic link at
// the definition's path before any image is written. WriteDefinition
// creates the definition as the images are created: new, mode 0600, never
// through a link.
func TestPlanDirDefinition(t *testing.T) {
	def := `{"schema":"lifeboat.machine/v1","name":"web1","cpus":1,"memory_mib":64,"disks":[{"name":"vda"}]}`
	good := recovery.Point{Machine: "web1", Consistency: recovery.Crash, Definition: []byte(def), Disks: []recovery.Disk{{Name: "vda", Size: 1 << 20}}}
	dir := t.TempDir()
	req := Request{Dir: dir, Definition: recovery.RestoreOptions{Suffix: "-dr"}}
	for _, name := range []string{"../x", "a/b", "vda\x1b[2J", ""} {
		p := good
		p.Disks = []recovery.Disk{{Name: name, Size: 1 << 20}}
		if ts, err := Plan(&p, req); err == nil {
			t.Errorf("disk %q: planned %v", name, ts)
		}
	}
	p := good
	p.Machine = "../web1"
	if _, err := Plan(&p, req); err == nil {
		t.Errorf("machine %q planned", p.Machine)
	}

	defPath := filepath.Join(dir, "web1-dr.json")
	victim := filepath.Join(t.TempDir(), "victim")
	for what, plant := range map[string]func() error{
		"file":          func() error { return os.WriteFile(defPath, []byte("precious\n"), 0o644) },
		"symlink":       func() error { return os.Symlink(victim, defPath) },
		"dangling link": func() error { return os.Symlink(filepath.Join(dir, "nowhere"), defPath) },
	} {
		if err := plant(); err != nil {
			t.Fatal(err)
		}
		if _, err := Plan(&good, req); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), defPath) {
			t.Errorf("%s at the definition's path: Plan: %v, want ErrExists naming it", what, err)
		}
		ts := []Target{{Disk: good.Disks[0], Path: filepath.Join(dir, "vda.raw")}}
		if _, _, err := WriteDefinition(&good, req, ts); !errors.Is(err, ErrExists) {
			t.Errorf("%s at the definition's path: WriteDefinition: %v, want ErrExists", what, err)
		}
		os.Remove(defPath)
	}
	if _, err := os.Stat(victim); err == nil {
		t.Errorf("the link's target was created")
	}

	ts, err := Plan(&good, req)
	if err != nil {
		t.Fatal(err)
	}
	path, _, err := WriteDefinition(&good, req, ts)
	if err != nil || path != defPath {
		t.Fatalf("WriteDefinition = %s, %v; want %s", path, err, defPath)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("definition %s has mode %v, want 0600", path, st.Mode().Perm())
	}
	if _, _, err := WriteDefinition(&good, req, ts); !errors.Is(err, ErrExists) {
		t.Fatalf("WriteDefinition over its own file: %v, want ErrExists", err)
	}
}
