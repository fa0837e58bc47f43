package recovery

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
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

// DiskFormat is the format the definition gives disk name, "" when it
// gives none (or d is nil).
func (d *Definition) DiskFormat(name string) string {
	if d == nil {
		return ""
	}
	for _, disk := range d.Disks {
		if disk.Name == name {
			return disk.Format
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

// RestoredDefinition rewrites a stored definition for a restored copy:
// name gets suffix and each disk's "file" points at its restored image,
// whose "format" is formats[disk] (raw when not given). Fields lifeboat
// does not know are kept.
func RestoredDefinition(raw json.RawMessage, suffix string, files, formats map[string]string) ([]byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("stored definition: %w", err)
	}
	if name, ok := doc["name"].(string); ok {
		doc["name"] = name + suffix
	}
	if disks, ok := doc["disks"].([]any); ok {
		for _, d := range disks {
			if m, ok := d.(map[string]any); ok {
				if n, ok := m["name"].(string); ok && files[n] != "" {
					m["file"] = files[n]
					m["format"] = "raw"
					if f := formats[n]; f != "" {
						m["format"] = f
					}
				}
			}
		}
	}
	return json.MarshalIndent(doc, "", "  ")
}
