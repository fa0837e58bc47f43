package libvirt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"libvirt.org/go/libvirtxml"

	"lifeboat/internal/recovery"
)

// DefinitionKey is the field of a lifeboat.machine/v1 definition that
// keeps the domain's own XML: {"libvirt": {"domain": NAME, "xml": DOC}}.
const DefinitionKey = "libvirt"

// Definition converts a domain's XML into a lifeboat.machine/v1
// definition of machine, keeping the XML itself under DefinitionKey so a
// restore can define the domain again exactly.
func Definition(machine, doc string) (json.RawMessage, error) {
	var x libvirtxml.Domain
	if err := x.Unmarshal(doc); err != nil {
		return nil, fmt.Errorf("reading the domain XML: %w", err)
	}
	d := map[string]any{"schema": recovery.DefinitionSchema, "name": machine,
		DefinitionKey: map[string]string{"domain": x.Name, "xml": doc}}
	cpus := 1
	if x.VCPU != nil && x.VCPU.Value > 0 {
		cpus = int(x.VCPU.Value)
	}
	d["cpus"] = cpus
	mem := 256
	if x.Memory != nil {
		mem = int(toMiB(x.Memory.Value, x.Memory.Unit))
	}
	d["memory_mib"] = max(mem, 16)
	if x.OS != nil && (x.OS.Firmware == "efi" || x.OS.Loader != nil && x.OS.Loader.Type == "pflash") {
		d["firmware"] = "uefi"
	}
	disks, err := DisksOf(doc)
	if err != nil {
		return nil, err
	}
	var list []map[string]any
	for _, disk := range disks {
		m := map[string]any{"name": disk.Target}
		switch disk.Bus {
		case "virtio", "scsi", "sata", "ide", "nvme":
			m["bus"] = disk.Bus
		}
		if disk.Format == "raw" || disk.Format == "qcow2" {
			m["format"] = disk.Format
		}
		list = append(list, m)
	}
	d["disks"] = list
	var nics []map[string]any
	if x.Devices != nil {
		for _, n := range x.Devices.Interfaces {
			m := map[string]any{}
			if n.MAC != nil {
				m["mac"] = strings.ToLower(n.MAC.Address)
			}
			if n.Model != nil {
				m["model"] = n.Model.Type
			}
			if s := n.Source; s != nil {
				switch {
				case s.Network != nil:
					m["network"] = s.Network.Network
				case s.Bridge != nil:
					m["network"] = "bridge:" + s.Bridge.Bridge
				}
			}
			nics = append(nics, m)
		}
	}
	if len(nics) > 0 {
		d["nics"] = nics
	}
	out, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	if _, err := recovery.ParseDefinition(out); err != nil {
		return nil, fmt.Errorf("converting the XML of domain %s: %w", x.Name, err)
	}
	return out, nil
}

func toMiB(v uint, unit string) uint {
	switch strings.ToLower(unit) {
	case "b", "bytes":
		return v >> 20
	case "", "k", "kib":
		return v >> 10
	case "kb":
		return v * 1000 >> 20
	case "m", "mib":
		return v
	case "mb":
		return v * 1000_000 >> 20
	case "g", "gib":
		return v << 10
	case "gb":
		return v * 1000_000_000 >> 20
	}
	return v >> 10
}

// StoredXML is the domain XML a point's definition keeps, "" when it
// keeps none (the point was not taken through libvirt).
func StoredXML(def json.RawMessage) string {
	var doc map[string]json.RawMessage
	if json.Unmarshal(def, &doc) != nil {
		return ""
	}
	var lv struct {
		XML string `json:"xml"`
	}
	if json.Unmarshal(doc[DefinitionKey], &lv) != nil {
		return ""
	}
	return lv.XML
}

// RestoredXML rewrites a stored domain XML for a restored copy named
// name: no UUID (libvirt draws a new one), each disk the restore wrote
// pointing at its new image (disks the point lacks are dropped, as a
// domain naming a missing image would not start), and the NICs' new MAC
// addresses, in the order of the XML's interfaces.
func RestoredXML(doc, name string, disks []recovery.RestoredDisk, macs []recovery.MACChange) (string, error) {
	var x libvirtxml.Domain
	if err := x.Unmarshal(doc); err != nil {
		return "", fmt.Errorf("reading the stored domain XML: %w", err)
	}
	x.Name, x.UUID, x.ID = name, "", nil
	byName := map[string]recovery.RestoredDisk{}
	for _, d := range disks {
		byName[d.Name] = d
	}
	if x.Devices != nil {
		var kept []libvirtxml.DomainDisk
		for _, d := range x.Devices.Disks {
			if d.Device != "" && d.Device != "disk" {
				kept = append(kept, d) // CD-ROMs and floppies are not restored: keep them as they were
				continue
			}
			if d.Target == nil {
				continue
			}
			rd, ok := byName[d.Target.Dev]
			if !ok {
				continue
			}
			d.Source = &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: rd.File}}
			d.BackingStore = nil
			if d.Driver == nil {
				d.Driver = &libvirtxml.DomainDiskDriver{Name: "qemu"}
			}
			d.Driver.Type = rd.Format
			kept = append(kept, d)
		}
		x.Devices.Disks = kept
		for _, m := range macs {
			if m.NIC < len(x.Devices.Interfaces) {
				x.Devices.Interfaces[m.NIC].MAC = &libvirtxml.DomainInterfaceMAC{Address: m.New}
			}
		}
	}
	out, err := x.Marshal()
	if err != nil {
		return "", fmt.Errorf("writing the restored domain XML: %w", err)
	}
	return out, nil
}

// DefineRestored defines, at the daemon uri, the libvirt domain of a
// restored point: its stored XML (StoredXML of def) rewritten by
// RestoredXML for the images in disks and the NICs' addresses in rdef,
// named name (default: the stored domain's name with suffix); with start
// it starts it too.
func DefineRestored(ctx context.Context, uri string, def json.RawMessage, name, suffix string, disks []recovery.RestoredDisk, macs []recovery.MACChange, start bool) (*Domain, error) {
	doc := StoredXML(def)
	if doc == "" {
		return nil, errors.New("the point stores no libvirt domain XML")
	}
	if name == "" {
		var x libvirtxml.Domain
		if err := x.Unmarshal(doc); err != nil {
			return nil, fmt.Errorf("reading the stored domain XML: %w", err)
		}
		name = recovery.RestoredName(x.Name, suffix)
	}
	out, err := RestoredXML(doc, name, disks, macs)
	if err != nil {
		return nil, err
	}
	c, err := Dial(ctx, uri)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.Lookup(ctx, name); err == nil {
		return nil, fmt.Errorf("libvirt already has a domain %s: restore with --name to give the copy another name, or undefine it first", name)
	} else if !errors.Is(err, ErrNoDomain) {
		return nil, err
	}
	dom, err := c.Define(ctx, out)
	if err != nil {
		return nil, fmt.Errorf("domain %s: %w", name, err)
	}
	if start {
		if err := c.Start(ctx, dom); err != nil {
			return dom, err
		}
		dom.Running = true
	}
	return dom, nil
}

// CheckStopped fails when a disk of point p was read from a libvirt domain
// that is running now at the daemon uri: its images are QEMU's, and an
// in-place restore must not write under it.
func CheckStopped(ctx context.Context, uri string, p *recovery.Point) error {
	doms := map[string]bool{}
	for _, d := range p.Disks {
		if rest, ok := strings.CutPrefix(d.Source, "libvirt:"); ok {
			dom, _, _ := strings.Cut(rest, "#")
			doms[dom] = true
		}
	}
	if len(doms) == 0 {
		return nil
	}
	c, err := Dial(ctx, uri)
	if err != nil {
		return fmt.Errorf("checking that the domain is stopped before restoring in place: %w", err)
	}
	defer c.Close()
	for name := range doms {
		dom, err := c.Lookup(ctx, name)
		if errors.Is(err, ErrNoDomain) {
			continue
		}
		if err != nil {
			return err
		}
		if dom.Running {
			return fmt.Errorf("domain %s is running: stop it (virsh shutdown %s) before restoring its disks in place", name, name)
		}
	}
	return nil
}
