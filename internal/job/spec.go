// Package job holds the specs of the work lifeboat does — what to protect
// and how — as JSON documents that are at once the API's request bodies,
// the agent's wire format and what the CLI builds from its flags. One
// Validate per spec, one typed error for bad input: the CLI maps it to
// exit 2, the API to HTTP 400.
package job

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"lifeboat/internal/recovery"
)

// ErrInvalid is wrapped by every error about a spec that cannot be run.
var ErrInvalid = errors.New("invalid job spec")

// InvalidError names the field that is wrong and why.
type InvalidError struct {
	Field, Reason string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Disk is one disk of a machine read from a path: a raw or qcow2 image
// file, a block device, or an NBD export (nbd://HOST[:PORT]/EXPORT,
// nbd+unix:///EXPORT?socket=PATH).
type Disk struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

// Source says where a machine's disks are read: named paths, or a running
// QEMU's QMP socket (every disk, or those named in Disks by name only),
// with a guest agent socket for freezing filesystems.
type Source struct {
	Disks      []Disk          `json:"disks,omitempty"`
	QMP        string          `json:"qmp,omitempty"`
	GuestAgent string          `json:"guest_agent,omitempty"`
	Bitmap     string          `json:"bitmap,omitempty"`
	Definition json.RawMessage `json:"definition,omitempty"`
}

// Validate reports the first thing wrong with s.
func (s Source) Validate() error {
	if len(s.Disks) == 0 && s.QMP == "" {
		return invalid("disks", "give the machine's disks (NAME=PATH) or its QMP socket")
	}
	seen := map[string]bool{}
	for i, d := range s.Disks {
		field := fmt.Sprintf("disks[%d]", i)
		if err := recovery.ValidName("disk", d.Name); err != nil {
			return invalid(field+".name", "%v", err)
		}
		if seen[d.Name] {
			return invalid(field+".name", "disk %q is named twice", d.Name)
		}
		seen[d.Name] = true
		if s.QMP != "" {
			if d.Path != "" {
				return invalid(field+".path", "with a QMP socket, disks are chosen by name only; QEMU knows their paths")
			}
			continue
		}
		if err := checkDiskPath(d.Path); err != nil {
			return invalid(field+".path", "%v", err)
		}
	}
	if s.QMP != "" && !filepath.IsAbs(s.QMP) {
		return invalid("qmp", "socket path %q is not absolute", s.QMP)
	}
	if s.GuestAgent != "" {
		if s.QMP == "" {
			return invalid("guest_agent", "a guest agent freezes a QEMU guest: give the machine's QMP socket too")
		}
		if !filepath.IsAbs(s.GuestAgent) {
			return invalid("guest_agent", "socket path %q is not absolute", s.GuestAgent)
		}
	}
	if s.Bitmap != "" {
		nbdDisks := 0
		for _, d := range s.Disks {
			if isNBD(d.Path) {
				nbdDisks++
			}
		}
		if nbdDisks == 0 {
			return invalid("bitmap", "a server's dirty bitmap applies to NBD disks only")
		}
	}
	if len(s.Definition) > 0 {
		if _, err := recovery.ParseDefinition(s.Definition); err != nil {
			return invalid("definition", "%v", err)
		}
	}
	return nil
}

func isNBD(path string) bool {
	return strings.HasPrefix(path, "nbd://") || strings.HasPrefix(path, "nbd+unix://")
}

// checkDiskPath accepts absolute paths and NBD URLs. A relative path would
// mean something different on the agent that runs the job.
func checkDiskPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case isNBD(p):
		if _, err := url.Parse(p); err != nil {
			return fmt.Errorf("NBD URL %q: %v", p, err)
		}
		return nil
	case strings.Contains(p, "://"):
		return fmt.Errorf("%q: only image files, block devices and nbd:// or nbd+unix:// URLs are disks", p)
	case !filepath.IsAbs(p):
		return fmt.Errorf("path %q is not absolute", p)
	}
	return nil
}

// Consistency levels a backup can ask for.
var consistencies = map[string]bool{"crash": true, "file": true, "app": true}

// Backup is a backup of one machine into one vault.
type Backup struct {
	Machine string `json:"machine"`
	Source
	// Vault is the vault's URL (a directory or s3://bucket/prefix).
	Vault       string `json:"vault"`
	Consistency string `json:"consistency,omitempty"`
	// RequireConsistency makes a point that achieved less than asked a
	// failure of the job (the point is kept).
	RequireConsistency bool     `json:"require_consistency,omitempty"`
	PreHook            string   `json:"pre_hook,omitempty"`
	PostHook           string   `json:"post_hook,omitempty"`
	Tags               []string `json:"tags,omitempty"`
}

// Validate reports the first thing wrong with b.
func (b Backup) Validate() error {
	if err := recovery.ValidName("machine", b.Machine); err != nil {
		return invalid("machine", "%v", err)
	}
	if b.Vault == "" {
		return invalid("vault", "no vault to back up into")
	}
	if b.Consistency != "" && !consistencies[b.Consistency] {
		return invalid("consistency", "%q: want crash, file or app", b.Consistency)
	}
	if (b.PreHook != "" || b.PostHook != "") && b.Consistency != "app" {
		return invalid("pre_hook", "hooks run around an application-consistent instant: set consistency to app")
	}
	if b.Consistency == "app" && b.PreHook == "" {
		return invalid("pre_hook", "app consistency needs a pre-hook that quiesces the application")
	}
	return b.Source.Validate()
}
