package restore

import (
	"errors"
	"path/filepath"
	"testing"

	"lifeboat/internal/recovery"
)

func TestPlan(t *testing.T) {
	p := &recovery.Point{Disks: []recovery.Disk{
		{Name: "vda", Source: "qemu:/run/vm1/qmp.sock#disk0", Image: "/var/lib/vm1-a.raw", ImageFormat: "raw"},
		{Name: "vdb", Source: "qemu:/run/vm1/qmp.sock#disk1", Image: "/var/lib/vm1-b.qcow2", ImageFormat: "qcow2"},
		{Name: "vdc", Source: "qemu:run/vm1/qmp.sock#disk2"}, // an older point
	}}
	paths := func(ts []Target) (out []string) {
		for _, t := range ts {
			out = append(out, t.Path)
		}
		return out
	}
	ts, err := Plan(p, Request{Dir: "/r"})
	if err != nil || len(ts) != 3 || ts[1].Path != filepath.Join("/r", "vdb.raw") || ts[1].Format != "raw" {
		t.Fatalf("--to: %v %v", paths(ts), err)
	}
	ts, err = Plan(p, Request{Disk: "vda", InPlace: true})
	if err != nil || len(ts) != 1 || ts[0].Path != "/var/lib/vm1-a.raw" || !ts[0].InPlace {
		t.Fatalf("in place onto the recorded image: %v %v", paths(ts), err)
	}
	if _, err := Plan(p, Request{Disk: "vdb", InPlace: true}); !errors.Is(err, ErrFormat) {
		t.Fatalf("raw blocks into a qcow2 image: %v", err)
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
