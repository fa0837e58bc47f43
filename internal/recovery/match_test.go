package recovery

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestGuessBus(t *testing.T) {
	for name, want := range map[string]string{
		"virtio0": "virtio", "vda": "virtio", "vdb1": "virtio", "VDA": "virtio",
		"scsi0-0-0": "scsi", "sda": "scsi", "hda": "ide", "ide0-hd0": "ide",
		"sata0": "sata", "ahci0": "sata", "nvme0": "nvme",
		"root": "", "data": "", "vd": "", "sd0": "", "disk0": "", "d0": "",
	} {
		if got := GuessBus(name); got != want {
			t.Errorf("GuessBus(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestMatchDisks(t *testing.T) {
	def := func(spec ...string) []DefinitionDisk { // "name" or "name:bus"
		var out []DefinitionDisk
		for _, s := range spec {
			n, b, _ := strings.Cut(s, ":")
			out = append(out, DefinitionDisk{Name: n, Bus: b})
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		def       []DefinitionDisk
		disks     []string
		pairs     []string // def=disk/by
		unbacked  []string
		undefined []string
		agree     bool
	}{
		{name: "same names", def: def("root", "data"), disks: []string{"data", "root"},
			pairs: []string{"root=root/name", "data=data/name"}, agree: true},
		{name: "drive if=virtio, definition without bus", def: def("root", "data"), disks: []string{"virtio0", "virtio1"},
			pairs: []string{"root=virtio0/order", "data=virtio1/order"}},
		{name: "by bus before order", def: def("cd:ide", "root:virtio", "data:virtio"), disks: []string{"virtio0", "ide0-hd0", "virtio1"},
			pairs: []string{"cd=ide0-hd0/bus", "root=virtio0/bus", "data=virtio1/bus"}},
		{name: "names first, then the rest by bus", def: def("root:virtio", "vdb:virtio"), disks: []string{"vda", "vdb"},
			pairs: []string{"root=vda/bus", "vdb=vdb/name"}},
		{name: "known buses that differ pair last, in order", def: def("root:scsi"), disks: []string{"vda"},
			pairs: []string{"root=vda/order"}},
		{name: "more definition disks", def: def("root", "data", "logs"), disks: []string{"vda", "vdb"},
			pairs: []string{"root=vda/order", "data=vdb/order"}, unbacked: []string{"logs"}},
		{name: "more point disks", def: def("root"), disks: []string{"root", "vdb"},
			pairs: []string{"root=root/name"}, undefined: []string{"vdb"}},
		{name: "no definition disks", def: nil, disks: []string{"vda"}, undefined: []string{"vda"}, agree: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := MatchDisks(tc.def, tc.disks)
			var pairs []string
			for _, p := range m.Pairs {
				pairs = append(pairs, p.Def+"="+p.Disk+"/"+p.By)
			}
			if !reflect.DeepEqual(pairs, tc.pairs) || !reflect.DeepEqual(m.Unbacked, tc.unbacked) || !reflect.DeepEqual(m.Undefined, tc.undefined) {
				t.Fatalf("got pairs %q unbacked %q undefined %q\nwant %q %q %q", pairs, m.Unbacked, m.Undefined, tc.pairs, tc.unbacked, tc.undefined)
			}
			if w := m.Disagreement(); (w == "") != tc.agree {
				t.Fatalf("disagreement %q, want agreement %v", w, tc.agree)
			}
		})
	}
	w := MatchDisks(def("root", "data", "logs"), []string{"virtio0", "virtio1"}).Disagreement()
	for _, s := range []string{"root=virtio0", "data=virtio1", "logs"} {
		if !strings.Contains(w, s) {
			t.Errorf("disagreement %q does not say %q", w, s)
		}
	}
}

func TestRestoredName(t *testing.T) {
	long := strings.Repeat("a", 62)
	for _, tc := range []struct{ name, suffix, want string }{
		{"vm1", "-dr", "vm1-dr"},
		{"vm1-dr", "-dr", "vm1-dr"}, // a restored machine restored again
		{"vm1-dr", "-test", "vm1-dr-test"},
		{"vm1", "", "vm1"},
		{long, "-dr", strings.Repeat("a", 60) + "-dr"},
		{strings.Repeat("a", 59) + "-b", "-dr", strings.Repeat("a", 59) + "-dr"},
	} {
		got := RestoredName(tc.name, tc.suffix)
		if got != tc.want {
			t.Errorf("RestoredName(%q, %q) = %q, want %q", tc.name, tc.suffix, got, tc.want)
		}
		if err := ValidName("machine", got); err != nil {
			t.Errorf("RestoredName(%q, %q): %v", tc.name, tc.suffix, err)
		}
	}
}

const storedDef = `{"schema":"lifeboat.machine/v1","name":"vm1","cpus":1,"memory_mib":256,"x-owner":"ops",
 "disks":[{"name":"root","format":"qcow2","boot_order":1},{"name":"data","format":"qcow2"},{"name":"scratch"}],
 "nics":[{"model":"virtio","mac":"52:54:00:12:34:56"},{"model":"e1000"}]}`

func restoredDoc(t *testing.T, r *Restored) *Definition {
	t.Helper()
	d, err := ParseDefinition(r.JSON)
	if err != nil {
		t.Fatalf("restored definition does not validate: %v\n%s", err, r.JSON)
	}
	return d
}

// Every disk of a restored definition names a restored file and its
// format, whatever the names; the name is suffixed once.
func TestRestoredDefinitionDisks(t *testing.T) {
	disks := []RestoredDisk{{Name: "virtio0", File: "/r/virtio0.raw", Format: "raw"}, {Name: "virtio1", File: "/r/virtio1.raw", Format: "raw"}}
	r, err := RestoredDefinition(json.RawMessage(storedDef), disks, RestoreOptions{Suffix: "-dr"})
	if err != nil {
		t.Fatal(err)
	}
	d := restoredDoc(t, r)
	want := []DefinitionDisk{{Name: "root", Format: "raw", BootOrder: 1, File: "/r/virtio0.raw"}, {Name: "data", Format: "raw", File: "/r/virtio1.raw"}}
	if d.Name != "vm1-dr" || r.Name != "vm1-dr" || !reflect.DeepEqual(d.Disks, want) {
		t.Fatalf("restored: name %q disks %+v, want vm1-dr %+v", d.Name, d.Disks, want)
	}
	if !bytes.Contains(r.JSON, []byte(`"x-owner": "ops"`)) {
		t.Errorf("unknown field lost:\n%s", r.JSON)
	}
	warned := strings.Join(r.Warnings, "\n")
	for _, s := range []string{"root=virtio0", "scratch", "52:54:00:12:34:56", "--new-macs"} {
		if !strings.Contains(warned, s) {
			t.Errorf("warnings do not say %q:\n%s", s, warned)
		}
	}

	// Restoring the restored machine: the name stays, a disk the
	// definition lacks is added.
	disks = append(disks, RestoredDisk{Name: "vdc", File: "/r/vdc.raw", Format: "qcow2"})
	r, err = RestoredDefinition(r.JSON, disks, RestoreOptions{Suffix: "-dr"})
	if err != nil {
		t.Fatal(err)
	}
	d = restoredDoc(t, r)
	if d.Name != "vm1-dr" || len(d.Disks) != 3 || d.Disks[2] != (DefinitionDisk{Name: "vdc", Bus: "virtio", Format: "qcow2", File: "/r/vdc.raw"}) {
		t.Fatalf("restored again: name %q disks %+v", d.Name, d.Disks)
	}
}

func TestRestoredDefinitionNewMACs(t *testing.T) {
	disks := []RestoredDisk{{Name: "root", File: "/r/root.raw", Format: "raw"}}
	// A source whose first draw collides with the original MAC.
	rnd := bytes.NewReader([]byte{0x12, 0x34, 0x56, 0xab, 0xcd, 0xef, 0x01, 0x02, 0x03})
	r, err := RestoredDefinition(json.RawMessage(storedDef), disks, RestoreOptions{Suffix: "-dr", NewMACs: true, Rand: rnd})
	if err != nil {
		t.Fatal(err)
	}
	d := restoredDoc(t, r)
	if d.NICs[0].MAC != "52:54:00:ab:cd:ef" || d.NICs[1].MAC != "52:54:00:01:02:03" || d.NICs[0].Model != "virtio" {
		t.Fatalf("new MACs: %+v", d.NICs)
	}
	want := []MACChange{{0, "52:54:00:12:34:56", "52:54:00:ab:cd:ef"}, {1, "", "52:54:00:01:02:03"}}
	if !reflect.DeepEqual(r.MACs, want) {
		t.Fatalf("MAC changes %+v, want %+v", r.MACs, want)
	}
	for _, w := range r.Warnings {
		if strings.Contains(w, "MAC") {
			t.Errorf("warned about kept MACs with --new-macs: %s", w)
		}
	}
	// With crypto/rand: two NICs, two different valid addresses.
	r, err = RestoredDefinition(json.RawMessage(storedDef), disks, RestoreOptions{NewMACs: true})
	if err != nil {
		t.Fatal(err)
	}
	d = restoredDoc(t, r)
	if d.NICs[0].MAC == d.NICs[1].MAC || !strings.HasPrefix(d.NICs[0].MAC, "52:54:00:") {
		t.Fatalf("random MACs: %+v", d.NICs)
	}
	if _, err := RestoredDefinition(json.RawMessage(storedDef), disks, RestoreOptions{NewMACs: true, Rand: bytes.NewReader(nil)}); err == nil {
		t.Fatal("no error when no random bytes could be read")
	}
}

func TestInPlacePath(t *testing.T) {
	for _, tc := range []struct {
		disk Disk
		want string // "" for ErrNoImage
	}{
		{Disk{Name: "vda", Source: "qemu:/run/vm1/qmp.sock#disk0", Image: "/var/lib/vm1.raw"}, "/var/lib/vm1.raw"},
		{Disk{Name: "vda", Source: "/var/lib/vm1.raw"}, "/var/lib/vm1.raw"},                       // older offline point
		{Disk{Name: "root", Source: "qemu:run/vm1/qmp.sock#root-fmt"}, ""},                        // older live point
		{Disk{Name: "root", Source: "vm-root.raw"}, ""},                                           // relative: refused
		{Disk{Name: "nas", Source: "nbd+unix:///nas?socket=/run/nas.nbd"}, ""},                    // not a file
		{Disk{Name: "nas", Source: "nbd://host/nas", Image: ""}, ""},                              // not a file
		{Disk{Name: "d", Source: "/dev/vg0/d", Image: "/dev/vg0/d", Format: "raw"}, "/dev/vg0/d"}, // block device
	} {
		got, err := tc.disk.InPlacePath()
		if tc.want == "" {
			if !errors.Is(err, ErrNoImage) || !strings.Contains(err.Error(), "--to-file") {
				t.Errorf("%+v: got %q, %v; want ErrNoImage naming --to-file", tc.disk, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%+v: got %q, %v; want %q", tc.disk, got, err, tc.want)
		}
	}
}
