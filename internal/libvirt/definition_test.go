package libvirt

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"lifeboat/internal/recovery"
)

const sampleXML = `<domain type='kvm'>
  <name>web1</name>
  <uuid>6d1f6c4e-8f0e-4b7a-9d55-0c2f0c1f9a01</uuid>
  <memory unit='KiB'>2097152</memory>
  <vcpu placement='static'>2</vcpu>
  <os firmware='efi'><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/web1.qcow2'/>
      <backingStore type='file'><format type='qcow2'/><source file='/var/lib/libvirt/images/base.qcow2'/></backingStore>
      <target dev='vda' bus='virtio'/></disk>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg0/web1-data'/><target dev='sda' bus='sata'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/iso/debian.iso'/><target dev='sdb' bus='sata'/><readonly/></disk>
    <interface type='network'><mac address='52:54:00:AA:BB:CC'/><source network='default'/><model type='virtio'/></interface>
  </devices>
</domain>`

func TestDefinition(t *testing.T) {
	raw, err := Definition("web", sampleXML)
	if err != nil {
		t.Fatal(err)
	}
	def, err := recovery.ParseDefinition(raw)
	if err != nil {
		t.Fatal(err)
	}
	if def.Name != "web" || def.CPUs != 2 || def.MemoryMiB != 2048 || def.Firmware != "uefi" {
		t.Fatalf("definition %+v", def)
	}
	if len(def.Disks) != 2 || def.Disks[0] != (recovery.DefinitionDisk{Name: "vda", Bus: "virtio", Format: "qcow2"}) ||
		def.Disks[1] != (recovery.DefinitionDisk{Name: "sda", Bus: "sata", Format: "raw"}) {
		t.Fatalf("disks %+v (the CD-ROM is no disk)", def.Disks)
	}
	if len(def.NICs) != 1 || def.NICs[0] != (recovery.DefinitionNIC{Model: "virtio", MAC: "52:54:00:aa:bb:cc", Network: "default"}) {
		t.Fatalf("nics %+v", def.NICs)
	}
	if StoredXML(raw) != sampleXML {
		t.Fatal("the definition does not keep the domain XML as given")
	}
	if StoredXML(json.RawMessage(`{"schema":"lifeboat.machine/v1"}`)) != "" || StoredXML(nil) != "" {
		t.Fatal("StoredXML found XML where there is none")
	}
}

func TestToMiB(t *testing.T) {
	for _, tc := range []struct {
		v    uint
		unit string
		want uint
	}{{2097152, "", 2048}, {2097152, "KiB", 2048}, {512, "MiB", 512}, {2, "GiB", 2048}, {1 << 30, "b", 1024}, {1000, "MB", 953}} {
		if got := toMiB(tc.v, tc.unit); got != tc.want {
			t.Errorf("toMiB(%d, %q) = %d, want %d", tc.v, tc.unit, got, tc.want)
		}
	}
}

func TestRestoredXML(t *testing.T) {
	out, err := RestoredXML(sampleXML, "web1-dr", []recovery.RestoredDisk{{Name: "vda", File: "/srv/dr/vda.raw", Format: "raw"}},
		[]recovery.MACChange{{NIC: 0, Old: "52:54:00:aa:bb:cc", New: "52:54:00:12:34:56"}})
	if err != nil {
		t.Fatal(err)
	}
	var x libvirtxml.Domain
	if err := x.Unmarshal(out); err != nil {
		t.Fatal(err)
	}
	if x.Name != "web1-dr" || x.UUID != "" {
		t.Fatalf("name %q uuid %q: want web1-dr and none (libvirt draws one)", x.Name, x.UUID)
	}
	// vda on its new image, without its old backing chain; sda (not
	// restored) left out; the CD-ROM kept.
	if len(x.Devices.Disks) != 2 {
		t.Fatalf("disks %d, want vda and the CD-ROM", len(x.Devices.Disks))
	}
	vda := x.Devices.Disks[0]
	if vda.Source.File.File != "/srv/dr/vda.raw" || vda.Driver.Type != "raw" || vda.BackingStore != nil || vda.Target.Dev != "vda" {
		t.Fatalf("vda %+v", vda)
	}
	if x.Devices.Disks[1].Device != "cdrom" {
		t.Fatalf("second disk %+v, want the CD-ROM", x.Devices.Disks[1])
	}
	if mac := x.Devices.Interfaces[0].MAC.Address; mac != "52:54:00:12:34:56" {
		t.Fatalf("mac %s", mac)
	}
}

func TestDisksOfReadable(t *testing.T) {
	doc := strings.Replace(sampleXML, "</devices>", `<disk type='network' device='disk'><driver name='qemu' type='raw'/>
	<source protocol='rbd' name='pool/img'/><target dev='vdc' bus='virtio'/></disk></devices>`, 1)
	disks, err := DisksOf(doc)
	if err != nil {
		t.Fatal(err)
	}
	var why []string
	for _, d := range disks {
		if w := d.Readable(); w != "" {
			why = append(why, w)
		}
	}
	if len(disks) != 3 || disks[1].Type != "block" || disks[1].Source != "/dev/vg0/web1-data" || len(why) != 1 || !strings.Contains(why[0], "vdc is a network disk") {
		t.Fatalf("disks %+v, problems %q", disks, why)
	}
}

func TestProtection(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	points := []*recovery.Point{
		{Machine: "web", Time: t0, Disks: []recovery.Disk{{Name: "vda", Source: "libvirt:web1#vda"}}},
		{Machine: "web", Time: t0.Add(time.Hour), Disks: []recovery.Disk{{Name: "vda", Source: "libvirt:web1#vda"}}},
		{Machine: "other", Time: t0, Disks: []recovery.Disk{{Name: "vda", Source: "libvirt:web10#vda"}}},
		{Machine: "file", Time: t0, Disks: []recovery.Disk{{Name: "root", Source: "/img/web1.raw"}}},
	}
	doms := []Domain{{Name: "web1", Disks: []Disk{{Target: "vda", Type: "file"}}}, {Name: "db", Disks: []Disk{{Target: "vda", Type: "network"}}}}
	got := Protection(doms, points)
	if len(got) != 2 || got[0].Name != "db" || got[1].Name != "web1" {
		t.Fatalf("%+v", got)
	}
	if got[0].Readable || len(got[0].Machines) != 0 || got[0].LastPoint != nil {
		t.Fatalf("db: %+v", got[0])
	}
	if !got[1].Readable || strings.Join(got[1].Machines, ",") != "web" || !got[1].LastPoint.Equal(t0.Add(time.Hour)) {
		t.Fatalf("web1: %+v", got[1])
	}
	// As libvirt list shows them.
	got[1].Running = true
	for _, c := range []struct {
		l                      Listed
		vault                  bool
		state, disks, by, last string
	}{
		{got[0], true, "stopped", "vda(network)", "unprotected", "-"},
		{got[1], true, "running", "vda(file)", "web", "2026-12-01 11:00:00"},
		{got[1], false, "running", "vda(file)", "(no vault given)", "-"},
		{Listed{}, true, "stopped", "", "unprotected", "-"},
	} {
		by, last := c.l.Protection(c.vault)
		if c.l.StateText() != c.state || c.l.DisksText() != c.disks || by != c.by || last != c.last {
			t.Errorf("%+v (vault %t): %q %q %q %q", c.l, c.vault, c.l.StateText(), c.l.DisksText(), by, last)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  golibvirt.Error
		want error
	}{
		{golibvirt.Error{Code: uint32(golibvirt.ErrOperationInvalid), Message: "Requested operation is not valid: another job is active"}, ErrJobRunning},
		{golibvirt.Error{Code: uint32(golibvirt.ErrOperationTimeout), Message: "cannot acquire state change lock (held by monitor=remoteDispatchDomainBackupBegin)"}, ErrJobRunning},
		{golibvirt.Error{Code: uint32(golibvirt.ErrNoSupport), Message: "this function is not supported by the connection driver: virDomainBackupBegin"}, ErrUnsupported},
		{golibvirt.Error{Code: uint32(golibvirt.ErrOperationUnsupported), Message: "incremental backup is not supported yet"}, ErrUnsupported},
	} {
		if got := classify(tc.err); !errors.Is(got, tc.want) {
			t.Errorf("classify(%q) = %v, want %v", tc.err.Message, got, tc.want)
		}
	}
	other := golibvirt.Error{Code: uint32(golibvirt.ErrOperationFailed), Message: "domain moment x already exists"}
	if got := classify(other); errors.Is(got, ErrJobRunning) || errors.Is(got, ErrUnsupported) {
		t.Errorf("classify(%q) = %v", other.Message, got)
	}
}

func TestBackupSupport(t *testing.T) {
	yes := `<domainCapabilities><domain>qemu</domain><features><backup supported='yes'/></features></domainCapabilities>`
	no := `<domainCapabilities><domain>qemu</domain><features><backup supported='no'/></features></domainCapabilities>`
	none := `<domainCapabilities><domain>qemu</domain><features></features></domainCapabilities>`
	for _, tc := range []struct {
		lib, hv uint64
		caps    string
		want    string
	}{
		{9_000_000, 7_002_000, yes, ""},
		{6_010_000, 5_002_000, yes, "libvirt 6.10.0 is too old"},
		{9_000_000, 5_002_000, no, "libvirt 9.0.0 with QEMU 5.2.0 reports no backup support for qemu domains"},
		{8_000_000, 5_002_000, none, "reports no backup support"},
	} {
		err := backupSupport(tc.lib, tc.hv, tc.caps, "qemu")
		if tc.want == "" {
			if err != nil {
				t.Errorf("%d/%d: %v", tc.lib, tc.hv, err)
			}
			continue
		}
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%d/%d: %v, want %q", tc.lib, tc.hv, err, tc.want)
		}
	}
}
