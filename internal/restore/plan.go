package restore

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"lifeboat/internal/container"
	"lifeboat/internal/recovery"
)

// Request says what to restore and where: the restore command's modes.
// Exactly one of Dir, File and InPlace is the mode (InPlace with File
// reverts that file).
type Request struct {
	// Dir receives every disk as a new image Dir/NAME.raw or
	// Dir/NAME.qcow2 (and WriteDefinition the machine definition).
	Dir string
	// Disk restores only this disk of the point.
	Disk string
	// File is where Disk goes: a new file, or with InPlace an existing one.
	File string
	// InPlace reverts existing disks, writing only blocks that differ:
	// File, or without it the images the point records.
	InPlace bool
	// Format of new images: raw or qcow2. Empty: the extension of File if
	// it names one, else the format the point gives the disk
	// (recovery.Point.DiskFormat). In place: the target's own format,
	// which a Format given must be.
	Format string
	// Definition says how WriteDefinition rewrites the machine definition
	// of a Dir restore: the suffix its name gets, which also names its
	// file, and new MAC addresses.
	Definition recovery.RestoreOptions
}

// Validate checks that the request names exactly one mode.
func (r Request) Validate() error {
	modes := 0
	for _, on := range []bool{r.Dir != "", r.File != "", r.InPlace && r.File == ""} {
		if on {
			modes++
		}
	}
	if modes != 1 {
		return errors.New("give exactly one of --to DIR, --disk NAME --to-file PATH, or --in-place")
	}
	if (r.File != "") != (r.Disk != "") && !(r.InPlace && r.Disk != "" && r.File == "") {
		return errors.New("--to-file needs --disk NAME and --disk needs --to-file (or --in-place)")
	}
	return nil
}

// Plan turns a request into the targets Run writes, with each new image's
// format. A format lifeboat does not write, or one that contradicts
// File's extension, is ErrFormat: raw bytes never go into a file named
// .qcow2. A disk the point does not have is recovery.ErrNoPoint; an
// in-place revert of a disk whose image the point does not record is
// recovery.ErrNoImage. In place, each image is written in its own format
// (Run checks it against the point's and the image's header).
//
// For a Dir restore, the point's names are checked again
// (recovery.Point.Check), since they become file names in Dir, and a file
// or symbolic link already at the definition's path is ErrExists: refused
// now, before any image is written.
func Plan(p *recovery.Point, req Request) ([]Target, error) {
	if req.Dir != "" {
		if err := p.Check(); err != nil {
			return nil, fmt.Errorf("point %s: %w", p.ID.Short(), err)
		}
	}
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
		case req.InPlace && req.File != "":
			t.Path = req.File
		case req.InPlace:
			path, err := d.InPlacePath()
			if err != nil {
				return nil, fmt.Errorf("point %s: %w", p.ID.Short(), err)
			}
			t.Path = path
		case req.File != "":
			t.Path = req.File
			format, err := fileFormat(req.File, req.Format, p.DiskFormat(d.Name))
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
	if req.Dir != "" {
		path, err := definitionPath(p, req)
		if err != nil {
			return nil, err
		}
		if _, err := os.Lstat(path); err == nil {
			return nil, fmt.Errorf("restored machine definition %s %w: remove it first", path, ErrExists)
		}
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

// definitionPath is the file WriteDefinition writes for a restore into
// req.Dir: NAME.json, NAME being the restored machine's name.
func definitionPath(p *recovery.Point, req Request) (string, error) {
	name := recovery.RestoredMachineName(p.Definition, p.Machine, req.Definition.Suffix)
	if err := recovery.ValidName("restored machine", name); err != nil {
		return "", err // the file name comes from the point: never a path
	}
	return filepath.Join(req.Dir, name+".json"), nil
}

// WriteDefinition writes the definition of the restored machine into
// req.Dir as NAME.json, NAME being the machine's restored name, with every
// disk naming its image in targets and the format written there
// (recovery.RestoredDefinition, with req.Definition). Like the images, it
// is a new file of mode 0600 (createNew): one already there, or a symbolic
// link in its place, is refused. It returns the file's path and the
// rewritten definition, whose Warnings the caller should show.
func WriteDefinition(p *recovery.Point, req Request, targets []Target) (string, *recovery.Restored, error) {
	path, err := definitionPath(p, req)
	if err != nil {
		return "", nil, err
	}
	disks, err := RestoredDisks(targets)
	if err != nil {
		return "", nil, err
	}
	r, err := recovery.RestoredDefinition(p.Definition, disks, req.Definition)
	if err != nil {
		return "", nil, err
	}
	f, err := createNew(path)
	if err != nil {
		return "", nil, fmt.Errorf("writing the restored definition: %w", err)
	}
	_, err = f.Write(append(r.JSON, '\n'))
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", nil, fmt.Errorf("writing the restored definition %s: %w", path, err)
	}
	return path, r, nil
}

// RestoredDisks says where each target's disk was restored: its absolute
// path and format.
func RestoredDisks(targets []Target) ([]recovery.RestoredDisk, error) {
	disks := make([]recovery.RestoredDisk, len(targets))
	for i, t := range targets {
		abs, err := filepath.Abs(t.Path)
		if err != nil {
			return nil, fmt.Errorf("restored image %s: %w", t.Path, err)
		}
		disks[i] = recovery.RestoredDisk{Name: t.Disk.Name, File: abs, Format: cmp.Or(t.Format, container.Raw)}
	}
	return disks, nil
}
