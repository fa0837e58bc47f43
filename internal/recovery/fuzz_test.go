package recovery

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"lifeboat/internal/chunk"
	"lifeboat/internal/testenv"
)

// FuzzPoint: a point's plaintext either fails to decode or gives a point
// whose names are valid, local file names (restore joins them to a
// directory); decoding allocates in proportion to the input (issue 10,
// "Proof").
func FuzzPoint(f *testing.F) {
	p := &Point{Version: 1, Machine: "web1", Time: time.Date(2026, 11, 23, 10, 0, 0, 123e6, time.UTC), Consistency: File,
		Host: "hv1", Parent: chunk.ID{7}.String(), Tags: []string{"manual"}, Notes: []string{"pre-hook failed"},
		Definition: DefaultDefinition("web1", []string{"vda", "vdb"}, []string{"qcow2"}),
		Disks: []Disk{{Name: "vda", Source: "/var/lib/images/web1.raw", Size: 4 << 30, ChunkSize: 256 << 10, Manifest: chunk.ID{1},
			Stats: DiskStats{ReadBytes: 1 << 20, NewChunks: 3}, Tracking: "nbd:b0", ChangeSource: "tracking",
			Image: "/var/lib/images/web1.qcow2", Format: "qcow2", Backing: []string{"/var/lib/images/base.qcow2"}},
			{Name: "vdb", Source: "/dev/vg0/web1-data", Size: 1 << 30, ChunkSize: 256 << 10, Manifest: chunk.ID{2}}},
		Stats: Stats{DurationMS: 1500}}
	seed, err := json.Marshal(p)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"version":1,"machine":"web1","consistency":"crash","disks":[{"name":"../../x"}]}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var p *Point
		var err error
		testenv.CheckAlloc(t, len(data), 64, 0, func() { p, err = Decode(data) })
		if err != nil {
			return
		}
		if ValidName("machine", p.Machine) != nil {
			t.Fatalf("decoded a point of machine %q", p.Machine)
		}
		for _, d := range p.Disks {
			if ValidName("disk", d.Name) != nil || !filepath.IsLocal(d.Name) || filepath.Base(d.Name) != d.Name {
				t.Fatalf("decoded a point with disk %q", d.Name)
			}
		}
	})
}

// FuzzDefinition: a machine definition given to backup, and its rewriting
// for a restored copy, never panic and keep names valid.
func FuzzDefinition(f *testing.F) {
	f.Add([]byte(`{"schema":"lifeboat.machine/v1","name":"web1","cpus":2,"memory_mib":2048,"firmware":"uefi",` +
		`"disks":[{"name":"vda","bus":"virtio","format":"qcow2","boot_order":1}],"nics":[{"model":"virtio","mac":"52:54:00:12:34:56","network":"br0"}]}`))
	f.Add([]byte(DefaultDefinition("web1", []string{"vda"}, nil)))
	f.Fuzz(func(t *testing.T, data []byte) {
		var d *Definition
		var err error
		testenv.CheckAlloc(t, len(data), 64, 0, func() { d, err = ParseDefinition(data) })
		if err == nil {
			for _, disk := range d.Disks {
				if ValidName("disk", disk.Name) != nil {
					t.Fatalf("accepted disk %q", disk.Name)
				}
			}
		}
		disks := []RestoredDisk{{Name: "vda", File: "/srv/vda.raw", Format: "raw"}, {Name: "virtio1", File: "/srv/virtio1.qcow2", Format: "qcow2"}}
		RestoredDefinition(data, disks, RestoreOptions{Suffix: "-dr"})
		RestoredDefinition(data, disks, RestoreOptions{Suffix: "-dr", NewMACs: true})
		RestoredMachineName(data, "web1", "-dr")
	})
}
