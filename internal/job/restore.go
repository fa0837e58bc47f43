package job

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"lifeboat/internal/libvirt"
	"lifeboat/internal/recovery"
	"lifeboat/internal/restore"
	"lifeboat/internal/vault"
)

// Restore restores one point of a machine from a vault: every disk into a
// directory (with the -dr definition), one disk into a file, or the disks
// in place.
type Restore struct {
	Machine string `json:"machine"`
	// Point is a point ID, a unique prefix of one, or "latest".
	Point string `json:"point"`
	Vault string `json:"vault"`
	// Dir receives every disk and the definition; File one Disk.
	Dir     string `json:"dir,omitempty"`
	Disk    string `json:"disk,omitempty"`
	File    string `json:"file,omitempty"`
	InPlace bool   `json:"in_place,omitempty"`
	// Format of new images: raw or qcow2 (default: the disk's own).
	Format string `json:"format,omitempty"`
	// Suffix of the restored machine's name (default "-dr"); NewMACs gives
	// its NICs new addresses.
	Suffix  string `json:"suffix,omitempty"`
	NewMACs bool   `json:"new_macs,omitempty"`
	// LibvirtDefine defines the restored machine (Dir) as a new libvirt
	// domain, with new MAC addresses (it is defined beside the original,
	// on the same host and likely the same network), a new UUID and new
	// disk images, from the point's stored domain XML, named Name (default: the
	// domain's name with the suffix), at the daemon Connect (default
	// qemu:///system); Start starts it.
	LibvirtDefine bool   `json:"libvirt_define,omitempty"`
	Name          string `json:"name,omitempty"`
	Connect       string `json:"connect,omitempty"`
	Start         bool   `json:"start,omitempty"`
}

// DefaultSuffix is added to a restored machine's name.
const DefaultSuffix = "-dr"

func (r Restore) request() restore.Request {
	suffix := r.Suffix
	if suffix == "" {
		suffix = DefaultSuffix
	}
	return restore.Request{Dir: r.Dir, Disk: r.Disk, File: r.File, InPlace: r.InPlace, Format: r.Format,
		Definition: recovery.RestoreOptions{Suffix: suffix, NewMACs: r.NewMACs || r.LibvirtDefine}}
}

// Validate reports the first thing wrong with r. Paths must be absolute:
// the agent that runs a restore may not share the caller's directory.
func (r Restore) Validate() error {
	if err := pointRef(r.Machine, r.Point, r.Vault, "restore from"); err != nil {
		return err
	}
	for field, p := range map[string]string{"dir": r.Dir, "file": r.File} {
		if p != "" && !filepath.IsAbs(p) {
			return invalid(field, "path %q is not absolute", p)
		}
	}
	switch {
	case r.LibvirtDefine && r.Dir == "":
		return invalid("libvirt_define", "a libvirt domain is defined for a restore into a directory (--dir): its disks need new images")
	case r.Start && !r.LibvirtDefine:
		return invalid("start", "only a restored libvirt domain can be started: add --libvirt-define")
	case r.Name != "" && !r.LibvirtDefine:
		return invalid("name", "a name is given to the libvirt domain a restore defines: add --libvirt-define")
	case r.Name != "":
		if err := recovery.ValidName("domain", r.Name); err != nil {
			return invalid("name", "%v", err)
		}
	}
	if err := r.request().Validate(); err != nil {
		return &InvalidError{Field: "dir", Reason: err.Error()}
	}
	return nil
}

// Restored is what a restore did.
type Restored struct {
	Point   *recovery.Point
	Targets []restore.Target
	Stats   restore.Stats
	// DefinitionPath and Definition: the -dr definition written (Dir only).
	DefinitionPath string
	Definition     *recovery.Restored
	// Domain is the libvirt domain defined (LibvirtDefine).
	Domain *libvirt.Domain
}

// RunRestore restores the point r names from v, which must be the vault
// r.Vault names, opened.
func RunRestore(ctx context.Context, v *vault.Vault, r Restore, env Env) (*Restored, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	p, points, err := recovery.Resolve(ctx, v, r.Machine, r.Point)
	if points != nil && env.Seen != nil {
		for _, w := range env.Seen.CheckPoints(v.Config().ID, points, v.Clock().Now()) {
			env.warn(fmt.Sprintf("%s: %s", v.Store(), w))
		}
	}
	if err != nil {
		return nil, err
	}
	req := r.request()
	targets, err := restore.Plan(p, req)
	if err != nil {
		return nil, err
	}
	if r.LibvirtDefine && libvirt.StoredXML(p.Definition) == "" {
		return nil, invalid("libvirt_define", "point %s was not taken from a libvirt domain: it stores no domain XML to define", p.ID.Short())
	}
	if r.InPlace {
		// A running domain's images are QEMU's: never write under it.
		if err := libvirt.CheckStopped(ctx, r.Connect, p); err != nil {
			return nil, err
		}
	}
	if r.Dir != "" {
		if err := os.MkdirAll(r.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("creating %s: %w", r.Dir, err)
		}
	}
	st, err := restore.Run(ctx, v, p, targets, restore.Options{Warn: env.Warn, Progress: env.RestoreProgress})
	if err != nil {
		return nil, fmt.Errorf("restore of %s point %s: %w", r.Machine, p.ID.Short(), err)
	}
	out := &Restored{Point: p, Targets: targets, Stats: st}
	if r.Dir != "" {
		if out.DefinitionPath, out.Definition, err = restore.WriteDefinition(p, req, targets); err != nil {
			return out, err
		}
		for _, w := range out.Definition.Warnings {
			env.warn(w)
		}
	}
	if r.LibvirtDefine {
		disks, err := restore.RestoredDisks(targets)
		if err != nil {
			return out, err
		}
		if out.Domain, err = libvirt.DefineRestored(ctx, r.Connect, p.Definition, r.Name, req.Definition.Suffix, disks, out.Definition.MACs, r.Start); err != nil {
			return out, err
		}
	}
	return out, nil
}

// RestoredJSON is a restore as reported (restore --json, a restore job's
// result). Fields are in the order of their names.
type RestoredJSON struct {
	// Definition is the -dr definition written ("" without one).
	Definition string `json:"definition"`
	// Disks and Formats: each disk's image and its format.
	Disks   map[string]string `json:"disks"`
	Domain  *DomainJSON       `json:"domain,omitempty"`
	Formats map[string]string `json:"formats"`
	Machine string            `json:"machine"`
	// NewMACs are the NICs' new addresses (restore --new-macs).
	NewMACs []recovery.MACChange `json:"new_macs,omitempty"`
	Point   string               `json:"point"`
	Stats   restore.Stats        `json:"stats"`
}

// DomainJSON is the libvirt domain a restore defined.
type DomainJSON struct {
	Name    string `json:"name"`
	UUID    string `json:"uuid"`
	Running bool   `json:"running"`
}

// Report is r as reported.
func (r *Restored) Report() RestoredJSON {
	out := RestoredJSON{Point: r.Point.ID.String(), Machine: r.Point.Machine, Disks: map[string]string{}, Formats: map[string]string{},
		Definition: r.DefinitionPath, Stats: r.Stats}
	for _, t := range r.Targets {
		out.Disks[t.Disk.Name], out.Formats[t.Disk.Name] = t.Path, t.Format
	}
	if r.Definition != nil {
		out.NewMACs = r.Definition.MACs
	}
	if r.Domain != nil {
		out.Domain = &DomainJSON{Name: r.Domain.Name, UUID: r.Domain.UUID, Running: r.Domain.Running}
	}
	return out
}
