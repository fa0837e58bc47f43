package restore

import (
	"fmt"
	"path/filepath"
	"strings"

	"lifeboat/internal/container"
	"lifeboat/internal/recovery"
)

// Request says which disks of a point go where: the restore command's
// modes. Exactly one of Dir, ToFile and InPlace is the mode (InPlace with
// ToFile reverts that file).
type Request struct {
	Disk    string // only this disk; "" for every disk
	Dir     string // each disk into a new image Dir/NAME.raw or Dir/NAME.qcow2
	ToFile  string // Disk into this file
	InPlace bool   // revert ToFile, or each disk's recorded source
	// Format of new images: raw or qcow2. Empty: the extension of ToFile
	// if it names one, else the format the point records for the disk
	// (recovery.Point.DiskFormat). In place, the target's own format.
	Format string
}

// Plan turns a request into targets, with each new image's format. A
// format lifeboat does not write, or one that contradicts ToFile's
// extension, is ErrFormat: raw bytes never go into a file named .qcow2.
func Plan(p *recovery.Point, req Request) ([]Target, error) {
	switch req.Format {
	case "", container.Raw, container.QCOW2:
	default:
		// In place, the image's own format (checked against its header).
		if !req.InPlace {
			return nil, fmt.Errorf("format %q: lifeboat writes raw or qcow2: %w", req.Format, ErrFormat)
		}
	}
	var targets []Target
	for _, d := range p.Disks {
		if req.Disk != "" && d.Name != req.Disk {
			continue
		}
		t := Target{Disk: d, InPlace: req.InPlace, Format: req.Format}
		switch {
		case req.InPlace && req.ToFile != "":
			t.Path = req.ToFile
		case req.InPlace:
			t.Path = d.Source
		case req.ToFile != "":
			t.Path = req.ToFile
			format, err := fileFormat(req.ToFile, req.Format, p.DiskFormat(d.Name))
			if err != nil {
				return nil, err
			}
			t.Format = format
		default:
			if t.Format == "" {
				t.Format = p.DiskFormat(d.Name)
			}
			t.Path = filepath.Join(req.Dir, d.Name+"."+t.Format)
		}
		targets = append(targets, t)
	}
	if len(targets) == 0 {
		var names []string
		for _, d := range p.Disks {
			names = append(names, d.Name)
		}
		return nil, fmt.Errorf("%w: point %s has no disk %q (it has %s)", recovery.ErrNoPoint, p.ID.Short(), req.Disk, strings.Join(names, ", "))
	}
	return targets, nil
}

// fileFormat is the format of a new image file: asked's, which its name
// must not contradict, else the one its name implies, else recorded's.
func fileFormat(path, asked, recorded string) (string, error) {
	named := container.FormatOfName(path)
	switch {
	case asked != "" && named != "" && named != asked:
		return "", fmt.Errorf("--format %s, but %s is named as a %s image: %w", asked, path, named, ErrFormat)
	case asked != "":
		return asked, nil
	case named == container.Raw || named == container.QCOW2:
		return named, nil
	case named != "":
		return "", fmt.Errorf("%s is named as a %s image, and lifeboat writes raw or qcow2: name it .raw or .qcow2, or give --format: %w", path, named, ErrFormat)
	}
	return recorded, nil
}
