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
	"time"

	"lifeboat/internal/capture"
	"lifeboat/internal/policy"
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
	Disks []Disk `json:"disks,omitempty"`
	QMP   string `json:"qmp,omitempty"`
	// Libvirt names a libvirt domain, backed up through libvirt's backup
	// API (every disk, or those named in Disks by name only); Connect is
	// the daemon's URI (default qemu:///system).
	Libvirt    string          `json:"libvirt,omitempty"`
	Connect    string          `json:"connect,omitempty"`
	GuestAgent string          `json:"guest_agent,omitempty"`
	Bitmap     string          `json:"bitmap,omitempty"`
	Definition json.RawMessage `json:"definition,omitempty"`
}

// AddDisks adds the disks given as NAME=PATH to s; a value without a path
// names one of a live machine's disks (QMP or Libvirt set), and is
// refused otherwise.
func (s *Source) AddDisks(values []string) error {
	for _, d := range values {
		name, path, ok := strings.Cut(d, "=")
		if !ok {
			if s.QMP == "" && s.Libvirt == "" {
				return invalid("disks", "%q: give NAME=PATH", d)
			}
			name, path = d, ""
		}
		s.Disks = append(s.Disks, Disk{Name: name, Path: path})
	}
	return nil
}

// Validate reports the first thing wrong with s.
func (s Source) Validate() error {
	if len(s.Disks) == 0 && s.QMP == "" && s.Libvirt == "" {
		return invalid("disks", "give the machine's disks (NAME=PATH), its QMP socket or its libvirt domain")
	}
	if s.Libvirt != "" {
		switch {
		case s.QMP != "":
			return invalid("libvirt", "a libvirt domain is reached through libvirt, not its QMP socket: give one of the two")
		case s.GuestAgent != "":
			return invalid("guest_agent", "libvirt talks to the domain's guest agent itself: give no guest agent socket")
		case s.Bitmap != "":
			return invalid("bitmap", "with a libvirt domain lifeboat manages the checkpoints itself")
		}
	} else if s.Connect != "" {
		return invalid("connect", "a libvirt URI is for a libvirt domain: give the domain too")
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
		if s.QMP != "" || s.Libvirt != "" {
			if d.Path != "" {
				return invalid(field+".path", "with a QMP socket or a libvirt domain, disks are chosen by name only; QEMU knows their paths")
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
		for i, d := range s.Disks {
			if !capture.IsNBD(d.Path) {
				return invalid(fmt.Sprintf("disks[%d].path", i), "a server's dirty bitmap (bitmap %q) applies to NBD disks only, and %s is not one", s.Bitmap, d.Path)
			}
		}
	}
	if len(s.Definition) > 0 {
		if _, err := recovery.ParseDefinition(s.Definition); err != nil {
			return invalid("definition", "%v", err)
		}
	}
	return nil
}

// checkDiskPath accepts absolute paths and NBD URLs. A relative path would
// mean something different on the agent that runs the job.
func checkDiskPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case capture.IsNBD(p):
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
	RequireConsistency bool   `json:"require_consistency,omitempty"`
	PreHook            string `json:"pre_hook,omitempty"`
	PostHook           string `json:"post_hook,omitempty"`
	// HookTimeout bounds each hook (default 5m); FreezeTimeout how long
	// filesystems may stay frozen (default 1m).
	HookTimeout   Duration `json:"hook_timeout,omitempty"`
	FreezeTimeout Duration `json:"freeze_timeout,omitempty"`
	// Audit re-reads this fraction of the blocks change tracking calls
	// unchanged (0 to 1).
	Audit float64 `json:"audit,omitempty"`
	// FleeceDir holds a live backup's temporary overlays (QMP) or scratch
	// images (libvirt).
	FleeceDir string `json:"fleece_dir,omitempty"`
	// NBDServer, "unix:PATH", is an NBD server the machine's QEMU already
	// runs for others: a live QMP backup adds its exports there.
	NBDServer string   `json:"nbd_server,omitempty"`
	Tags      []string `json:"tags,omitempty"`
}

// Defaults of a backup's timeouts.
const (
	DefaultHookTimeout   = 5 * time.Minute
	DefaultFreezeTimeout = time.Minute
)

func (b Backup) hookTimeout() time.Duration {
	if b.HookTimeout == 0 {
		return DefaultHookTimeout
	}
	return time.Duration(b.HookTimeout)
}

func (b Backup) freezeTimeout() time.Duration {
	if b.FreezeTimeout == 0 {
		return DefaultFreezeTimeout
	}
	return time.Duration(b.FreezeTimeout)
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
		return invalid("pre_hook", "app consistency needs a pre-hook that quiesces the application (without one, use file consistency)")
	}
	if b.HookTimeout < 0 {
		return invalid("hook_timeout", "must be positive")
	}
	if b.FreezeTimeout < 0 {
		return invalid("freeze_timeout", "must be positive")
	}
	if b.Audit < 0 || b.Audit > 1 {
		return invalid("audit", "%g: want a fraction from 0 to 1", b.Audit)
	}
	if b.FleeceDir != "" && b.QMP == "" && b.Libvirt == "" {
		return invalid("fleece_dir", "temporary overlays are for live QMP and libvirt backups only")
	}
	if b.NBDServer != "" && (b.QMP == "" || !strings.HasPrefix(b.NBDServer, "unix:") || len(b.NBDServer) == len("unix:")) {
		return invalid("nbd_server", "%q: want unix:PATH of the NBD server of the QEMU given by qmp", b.NBDServer)
	}
	if b.Libvirt != "" && len(b.Definition) > 0 {
		return invalid("definition", "a libvirt domain's definition is its XML, read from libvirt: give none")
	}
	if b.Libvirt != "" && b.Consistency == "app" {
		return invalid("consistency", "a libvirt domain is backed up crash- or file-consistent (libvirt freezes the guest through its agent; lifeboat runs no hooks there)")
	}
	if b.Bitmap != "" && b.QMP != "" {
		return invalid("bitmap", "with a QMP socket lifeboat manages the dirty bitmaps itself")
	}
	if len(b.Definition) > 0 {
		def, err := recovery.ParseDefinition(b.Definition)
		if err != nil {
			return invalid("definition", "%v", err)
		}
		if def.Name != b.Machine {
			return invalid("definition", "names machine %q, but the machine is %q", def.Name, b.Machine)
		}
	}
	return b.Source.Validate()
}

// Duration is a duration on the wire: "90s", "15m", "1h30m", "7d".
type Duration time.Duration

// Text is d as ParseDuration reads it back: "15m", "7d", "0s".
func (d Duration) Text() string {
	if d == 0 {
		return "0s"
	}
	return policy.FormatDuration(time.Duration(d))
}

// MarshalJSON writes d as ParseDuration reads it back.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.Text()) }

// UnmarshalJSON reads "15m", "36h", "7d", "2w".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"15m\", \"1h\" or \"7d\"")
	}
	if s == "0" || s == "0s" {
		*d = 0
		return nil
	}
	v, err := policy.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: write it as 90s, 15m, 1h30m, 7d or 2w", s)
	}
	*d = Duration(v)
	return nil
}
