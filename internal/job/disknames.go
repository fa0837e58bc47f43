package job

import (
	"fmt"
	"path/filepath"
	"strings"

	"lifeboat/internal/capture"
	"lifeboat/internal/recovery"
)

// DiskSpecs turns disk arguments into names and paths: NAME=PATH, or
// PATH named by the definition's disks in order (def may be nil), or by
// the file's base name without its extension (diskN when that is not a
// valid name). Two disks of one name are an InvalidError.
func DiskSpecs(values []string, def *recovery.Definition) (names, paths []string, err error) {
	seen := map[string]bool{}
	for i, v := range values {
		name, path := "", v
		if k, p, ok := strings.Cut(v, "="); ok && recovery.ValidName("disk", k) == nil {
			name, path = k, p
		} else if def != nil && i < len(def.Disks) {
			name = def.Disks[i].Name
		} else {
			base := filepath.Base(path)
			name = strings.TrimSuffix(base, filepath.Ext(base))
			if recovery.ValidName("disk", name) != nil {
				name = fmt.Sprintf("disk%d", i)
			}
		}
		if seen[name] {
			return nil, nil, &InvalidError{Field: "disks", Reason: fmt.Sprintf("two disks are named %q: name them with --disk NAME=PATH", name)}
		}
		seen[name] = true
		names = append(names, name)
		paths = append(paths, path)
	}
	return names, paths, nil
}

// LocalDisks are the Disks of a backup spec from disk arguments given on
// this host (DiskSpecs): file paths made absolute, NBD URLs as they are.
func LocalDisks(values []string, def *recovery.Definition) ([]Disk, error) {
	names, paths, err := DiskSpecs(values, def)
	if err != nil {
		return nil, err
	}
	disks := make([]Disk, len(names))
	for i := range names {
		path := paths[i]
		if !capture.IsNBD(path) {
			path = AbsPath(path)
		}
		disks[i] = Disk{Name: names[i], Path: path}
	}
	return disks, nil
}

// SetDisks sets the Disks of a backup spec from the disk arguments given
// on this host: with a QMP or libvirt source they only name the disks
// (the source knows where they are); otherwise they are LocalDisks.
func (b *Backup) SetDisks(values []string, def *recovery.Definition) error {
	if b.QMP != "" || b.Libvirt != "" {
		b.Disks = nil
		for _, name := range values {
			b.Disks = append(b.Disks, Disk{Name: name})
		}
		return nil
	}
	disks, err := LocalDisks(values, def)
	if err != nil {
		return err
	}
	b.Disks = disks
	return nil
}

// AbsPath makes a local path absolute, as job specs want (the agent that
// runs a job may not share the caller's directory); "" stays "".
func AbsPath(p string) string {
	if p == "" {
		return ""
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}
