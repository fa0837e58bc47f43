package recovery

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// DefinitionSchema is the schema name a machine definition declares.
const DefinitionSchema = "lifeboat.machine/v1"

// Definition is the machine definition (docs/definition.md). Points store
// the user's JSON as given; this struct is for validation and rewriting.
type Definition struct {
	Schema    string           `json:"schema"`
	Name      string           `json:"name"`
	CPUs      int              `json:"cpus"`
	MemoryMiB int              `json:"memory_mib"`
	Firmware  string           `json:"firmware,omitempty"`
	Disks     []DefinitionDisk `json:"disks"`
	NICs      []DefinitionNIC  `json:"nics,omitempty"`
}

// DefinitionDisk is a disk of a machine definition.
type DefinitionDisk struct {
	Name      string `json:"name"`
	Bus       string `json:"bus,omitempty"`
	Format    string `json:"format,omitempty"`
	BootOrder int    `json:"boot_order,omitempty"`
	File      string `json:"file,omitempty"`
}

// DefinitionNIC is a network interface of a machine definition.
type DefinitionNIC struct {
	Model   string `json:"model,omitempty"`
	MAC     string `json:"mac,omitempty"`
	Network string `json:"network,omitempty"`
}

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	macRE  = regexp.MustCompile(`^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$`)
)

// ValidName checks a machine or disk name.
func ValidName(what, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid %s name %q: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", what, name)
	}
	return nil
}

// ParseDefinition validates a definition document against lifeboat.machine/v1.
// Unknown fields are allowed (kept as given) so newer writers stay readable.
func ParseDefinition(raw []byte) (*Definition, error) {
	var d Definition
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("machine definition is not valid JSON: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("machine definition: trailing data after the JSON object")
	}
	bad := func(f string, a ...any) (*Definition, error) {
		return nil, fmt.Errorf("machine definition: "+f, a...)
	}
	switch {
	case d.Schema != DefinitionSchema:
		return bad("schema is %q, want %q", d.Schema, DefinitionSchema)
	case ValidName("machine", d.Name) != nil:
		return bad("%v", ValidName("machine", d.Name))
	case d.CPUs < 1 || d.CPUs > 1024:
		return bad("cpus %d outside 1..1024", d.CPUs)
	case d.MemoryMiB < 16 || d.MemoryMiB > 64<<20:
		return bad("memory_mib %d outside 16..%d", d.MemoryMiB, 64<<20)
	case d.Firmware != "" && d.Firmware != "bios" && d.Firmware != "uefi":
		return bad("firmware %q: want bios or uefi", d.Firmware)
	case len(d.Disks) == 0:
		return bad("no disks")
	}
	seen := map[string]bool{}
	for i, disk := range d.Disks {
		if err := ValidName("disk", disk.Name); err != nil {
			return bad("disks[%d]: %v", i, err)
		}
		if seen[disk.Name] {
			return bad("disks[%d]: duplicate disk name %q", i, disk.Name)
		}
		seen[disk.Name] = true
		switch disk.Bus {
		case "", "virtio", "scsi", "sata", "ide", "nvme":
		default:
			return bad("disks[%d]: bus %q: want virtio, scsi, sata, ide or nvme", i, disk.Bus)
		}
		switch disk.Format {
		case "", "raw", "qcow2":
		default:
			return bad("disks[%d]: format %q: want raw or qcow2", i, disk.Format)
		}
	}
	for i, nic := range d.NICs {
		if nic.MAC != "" && !macRE.MatchString(nic.MAC) {
			return bad("nics[%d]: mac %q is not of the form 52:54:00:12:34:56", i, nic.MAC)
		}
	}
	return &d, nil
}

// DiskFormat is the format the definition gives the machine's disk name,
// one of disks (the machine's disks, in order), paired with the
// definition's disks as MatchDisks pairs them; "" when it gives none (or d
// is nil).
func (d *Definition) DiskFormat(disks []string, name string) string {
	if d == nil {
		return ""
	}
	for _, p := range MatchDisks(d.Disks, disks).Pairs {
		if p.Disk == name {
			for _, dd := range d.Disks {
				if dd.Name == p.Def {
					return dd.Format
				}
			}
		}
	}
	return ""
}

// DefaultDefinition is recorded when a backup is given none: the disks and
// nothing invented. formats are the disks' image formats: qcow2 is
// recorded as such, anything else (or unknown) as raw.
func DefaultDefinition(machine string, disks, formats []string) json.RawMessage {
	d := map[string]any{"schema": DefinitionSchema, "name": machine}
	var list []map[string]any
	for i, n := range disks {
		format := "raw"
		if i < len(formats) && formats[i] == "qcow2" {
			format = "qcow2"
		}
		list = append(list, map[string]any{"name": n, "format": format})
	}
	d["disks"] = list
	out, _ := json.Marshal(d)
	return out
}

// RestoredName is the name of a restored copy of machine name: name with
// suffix, unless it has it already (restoring a restored machine does not
// make web1-dr-dr), shortened to stay a valid name.
func RestoredName(name, suffix string) string {
	if suffix == "" || strings.HasSuffix(name, suffix) {
		return name
	}
	const maxName = 63
	if len(name)+len(suffix) > maxName {
		name = strings.TrimRight(name[:max(1, maxName-len(suffix))], "-_.")
	}
	return name + suffix
}

// RestoredMachineName is the name of the restored copy of a point's
// machine, as RestoredDefinition writes it: the stored definition's name,
// else machine, with suffix (RestoredName).
func RestoredMachineName(raw json.RawMessage, machine, suffix string) string {
	var doc map[string]any
	if json.Unmarshal(raw, &doc) == nil {
		if name, ok := doc["name"].(string); ok {
			return RestoredName(name, suffix)
		}
	}
	return RestoredName(machine, suffix)
}

// RestoredDisk is one disk of a point as restored: its name in the point,
// the absolute path of its new image and the image's format.
type RestoredDisk struct {
	Name, File, Format string
}

// RestoreOptions say how to rewrite a definition for a restored copy.
type RestoreOptions struct {
	Suffix string // appended to the name (RestoredName)
	// NewMACs gives every NIC a new random MAC address, so the copy can
	// run on the same network as the original.
	NewMACs bool
	Rand    io.Reader // source of the new MACs; nil is crypto/rand
}

// Restored is a definition rewritten for a restored copy.
type Restored struct {
	JSON []byte
	Name string
	// MACs maps each NIC's old MAC address ("" when it had none) to its
	// new one, with NewMACs.
	MACs []MACChange
	// Warnings say what the copy's user must know: disks that did not
	// pair by name, definition disks that were not restored, original MAC
	// addresses kept.
	Warnings []string
}

// MACChange is one NIC's new address.
type MACChange struct {
	NIC      int
	Old, New string
}

// RestoredDefinition rewrites a stored definition for a restored copy: the
// name gets the suffix once, and every disk names its restored image and
// that image's format. Definition disks pair with the restored disks as
// MatchDisks says; a definition disk with no restored disk is left out
// (a definition naming an image that does not exist would not start), and
// a restored disk the definition lacks is added. Fields lifeboat does not
// know are kept.
func RestoredDefinition(raw json.RawMessage, disks []RestoredDisk, opts RestoreOptions) (*Restored, error) {
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("stored definition: %w", err)
	}
	r := &Restored{}
	if name, ok := doc["name"].(string); ok {
		r.Name = RestoredName(name, opts.Suffix)
		doc["name"] = r.Name
	}
	var defs []DefinitionDisk
	var entries []map[string]any
	list, _ := doc["disks"].([]any)
	for _, d := range list {
		m, ok := d.(map[string]any)
		if !ok {
			continue
		}
		name, _ := m["name"].(string)
		bus, _ := m["bus"].(string)
		defs = append(defs, DefinitionDisk{Name: name, Bus: bus})
		entries = append(entries, m)
	}
	names := make([]string, len(disks))
	byName := map[string]RestoredDisk{}
	for i, d := range disks {
		names[i] = d.Name
		byName[d.Name] = d
	}
	match := MatchDisks(defs, names)
	if w := match.Disagreement(); w != "" {
		r.Warnings = append(r.Warnings, w+": the restored definition follows this pairing, leaves out definition disks without a disk and adds the machine's others")
	}
	out := []any{}
	for i, m := range entries {
		pd, ok := match.Disk(defs[i].Name)
		if !ok {
			continue
		}
		rd := byName[pd]
		m["file"], m["format"] = rd.File, rd.Format
		out = append(out, m)
	}
	for _, n := range match.Undefined {
		rd := byName[n]
		m := map[string]any{"name": n, "file": rd.File, "format": rd.Format}
		if bus := GuessBus(n); bus != "" {
			m["bus"] = bus
		}
		out = append(out, m)
	}
	doc["disks"] = out
	if err := r.nics(doc, opts); err != nil {
		return nil, err
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the restored definition: %w", err)
	}
	r.JSON = data
	return r, nil
}

// nics gives the NICs new MAC addresses, or warns that they kept theirs.
func (r *Restored) nics(doc map[string]any, opts RestoreOptions) error {
	list, _ := doc["nics"].([]any)
	var kept []string
	taken := map[string]bool{}
	for _, n := range list {
		if m, ok := n.(map[string]any); ok {
			if mac, ok := m["mac"].(string); ok && mac != "" {
				kept = append(kept, mac)
				taken[strings.ToLower(mac)] = true
			}
		}
	}
	if !opts.NewMACs {
		if len(kept) > 0 {
			r.Warnings = append(r.Warnings, fmt.Sprintf("the restored machine %s keeps the MAC addresses %s: started while the original runs on the same network, the two clash; restore with --new-macs to give it new ones",
				r.Name, strings.Join(kept, ", ")))
		}
		return nil
	}
	rnd := opts.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	for i, n := range list {
		m, ok := n.(map[string]any)
		if !ok {
			continue
		}
		mac, err := newMAC(rnd, taken)
		if err != nil {
			return err
		}
		old, _ := m["mac"].(string)
		m["mac"] = mac
		r.MACs = append(r.MACs, MACChange{NIC: i, Old: old, New: mac})
	}
	return nil
}

// newMAC draws a random address in 52:54:00:xx:xx:xx, the locally
// administered range QEMU and libvirt give guests, that is not taken.
func newMAC(rnd io.Reader, taken map[string]bool) (string, error) {
	for range 1000 {
		var b [3]byte
		if _, err := io.ReadFull(rnd, b[:]); err != nil {
			return "", fmt.Errorf("drawing a MAC address: %w", err)
		}
		mac := fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
		if !taken[mac] {
			taken[mac] = true
			return mac, nil
		}
	}
	return "", errors.New("drawing a MAC address: no free one found")
}
