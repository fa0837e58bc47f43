// Package libvirt talks to a libvirt daemon over its own socket (pure Go:
// github.com/digitalocean/go-libvirt for the RPC, libvirt.org/go/libvirtxml
// for the documents): the domains and their disks, the backup API
// (virDomainBackupBegin in pull mode, with checkpoints), the guest agent's
// freeze and thaw, and defining and starting a domain. What a backup does
// with these is internal/live's; this package only speaks libvirt.
//
// go-libvirt's calls take no context: a call blocked in the daemon is cut
// by closing the connection when the context ends (Conn.guard).
package libvirt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"libvirt.org/go/libvirtxml"
)

// DefaultURI is the connection lifeboat uses unless told otherwise.
const DefaultURI = "qemu:///system"

// Errors a caller tells apart (errors.Is).
var (
	// ErrNoDaemon: nothing answers on the daemon's socket.
	ErrNoDaemon = errors.New("no libvirt daemon")
	// ErrNoDomain: the daemon has no domain of that name.
	ErrNoDomain = errors.New("no such libvirt domain")
	// ErrJobRunning: the domain already runs a backup or another job.
	ErrJobRunning = errors.New("a job is already running on the domain")
	// ErrUnsupported: libvirt or QEMU is too old for the backup API, or a
	// disk is of a kind lifeboat cannot read.
	ErrUnsupported = errors.New("not supported")
)

// MinVersion is the oldest libvirt whose backup API lifeboat uses: 7.2
// enabled incremental pull-mode backups with checkpoints by default.
const MinVersion = 7_002_000

// Conn is a connection to one libvirt daemon.
type Conn struct {
	l   *golibvirt.Libvirt
	uri string
}

// Dial connects to the daemon at uri (DefaultURI when ""): qemu:///system,
// qemu:///session, or either with ?socket=PATH for a daemon on another
// socket.
func Dial(ctx context.Context, uri string) (*Conn, error) {
	if uri == "" {
		uri = DefaultURI
	}
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("libvirt URI %q: %w", uri, err)
	}
	if !strings.HasPrefix(u.Scheme, "qemu") || u.Host != "" || (u.Scheme != "qemu" && u.Scheme != "qemu+unix") {
		return nil, fmt.Errorf("libvirt URI %q: lifeboat reads the disks over a local socket: use qemu:///system or qemu:///session (with ?socket=PATH if needed)", uri)
	}
	socket := u.Query().Get("socket")
	if socket == "" {
		socket = "/run/libvirt/libvirt-sock"
		if u.Path == "/session" {
			return nil, fmt.Errorf("libvirt URI %q: give the session daemon's socket as ?socket=PATH", uri)
		}
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	l := golibvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(socket), dialers.WithLocalTimeout(timeout)))
	remote := (&url.URL{Scheme: "qemu", Path: u.Path}).String()
	if err := l.ConnectToURI(golibvirt.ConnectURI(remote)); err != nil {
		return nil, fmt.Errorf("connecting to libvirt at %s (socket %s): %w: %v (is libvirtd or virtqemud running?)", uri, socket, ErrNoDaemon, err)
	}
	return &Conn{l: l, uri: uri}, nil
}

// URI is what the connection was dialled with.
func (c *Conn) URI() string { return c.uri }

// Close hangs up.
func (c *Conn) Close() error { return c.l.Disconnect() }

// guard runs call, cutting the connection if ctx ends first: go-libvirt's
// calls cannot be cancelled otherwise. The connection is unusable after a
// cut.
func (c *Conn) guard(ctx context.Context, call func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(chan struct{})
	cut := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			c.l.Disconnect()
			close(cut)
		case <-done:
		}
	}()
	err := call()
	close(done)
	select {
	case <-cut:
		return ctx.Err()
	default:
	}
	return err
}

// Versions are the daemon's libvirt version and its hypervisor's, as
// major*1,000,000 + minor*1,000 + release.
func (c *Conn) Versions(ctx context.Context) (lib, hv uint64, err error) {
	err = c.guard(ctx, func() error {
		if lib, err = c.l.ConnectGetLibVersion(); err != nil {
			return err
		}
		hv, err = c.l.ConnectGetVersion()
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("asking libvirt for its version: %w", err)
	}
	return lib, hv, nil
}

// FormatVersion writes a libvirt version number as 9.0.0.
func FormatVersion(v uint64) string {
	return fmt.Sprintf("%d.%d.%d", v/1_000_000, v/1000%1000, v%1000)
}

// CheckBackupAPI fails with ErrUnsupported when the daemon or its QEMU
// cannot take pull-mode backups with checkpoints: libvirt older than
// MinVersion, or domain capabilities that do not report backup support.
func (c *Conn) CheckBackupAPI(ctx context.Context, virtType string) error {
	lib, hv, err := c.Versions(ctx)
	if err != nil {
		return err
	}
	if lib < MinVersion {
		return backupSupport(lib, hv, "", virtType)
	}
	var caps string
	err = c.guard(ctx, func() (err error) {
		caps, err = c.l.ConnectGetDomainCapabilities(nil, nil, nil, golibvirt.OptString{virtType}, 0)
		return err
	})
	if err != nil {
		return fmt.Errorf("asking libvirt for the domain capabilities of %s: %w", virtType, err)
	}
	return backupSupport(lib, hv, caps, virtType)
}

// backupSupport judges the daemon's versions and domain capabilities
// (caps, XML) for pull-mode backups with checkpoints.
func backupSupport(lib, hv uint64, caps, virtType string) error {
	if lib < MinVersion {
		return fmt.Errorf("libvirt %s is too old for incremental backups (lifeboat needs %s or newer): %w", FormatVersion(lib), FormatVersion(MinVersion), ErrUnsupported)
	}
	var dc libvirtxml.DomainCaps
	if err := dc.Unmarshal(caps); err != nil {
		return fmt.Errorf("reading libvirt's domain capabilities: %w", err)
	}
	if dc.Features == nil || dc.Features.Backup == nil || dc.Features.Backup.Supported != "yes" {
		return fmt.Errorf("libvirt %s with QEMU %s reports no backup support for %s domains (QEMU 6.0 or newer is needed): %w",
			FormatVersion(lib), FormatVersion(hv), virtType, ErrUnsupported)
	}
	return nil
}

// Domain is a domain as libvirt describes it.
type Domain struct {
	Name    string
	UUID    string
	Running bool
	// XML is the domain's live description when running, else its
	// persistent one.
	XML   string
	Disks []Disk
	dom   golibvirt.Domain
}

// Disk is one disk of a domain.
type Disk struct {
	// Target is the guest-side name (vda, sda): the disk's name in points.
	Target string
	Bus    string
	// Type is the source's kind: file, block, network, volume, ...
	Type string
	// Source is the image file or block device ("" for other kinds).
	Source string
	// Format is the driver's image format (qcow2, raw).
	Format string
	// Alias is QEMU's device id for a running domain (virtio-disk0).
	Alias string
}

// Readable tells why lifeboat cannot back up the disk, or "" when it can.
func (d Disk) Readable() string {
	switch d.Type {
	case "file", "block":
		return ""
	case "network":
		return fmt.Sprintf("disk %s is a network disk: lifeboat reads file and block disks only; back it up on its storage", d.Target)
	}
	return fmt.Sprintf("disk %s is of type %q: lifeboat reads file and block disks only", d.Target, d.Type)
}

// Domains lists every domain, running or defined.
func (c *Conn) Domains(ctx context.Context) ([]Domain, error) {
	var doms []golibvirt.Domain
	err := c.guard(ctx, func() (err error) {
		doms, _, err = c.l.ConnectListAllDomains(1, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing libvirt domains: %w", err)
	}
	out := make([]Domain, 0, len(doms))
	for _, d := range doms {
		dom, err := c.describe(ctx, d)
		if err != nil {
			if golibvirt.IsNotFound(err) {
				continue // undefined meanwhile
			}
			return nil, err
		}
		out = append(out, *dom)
	}
	return out, nil
}

// Lookup describes the named domain.
func (c *Conn) Lookup(ctx context.Context, name string) (*Domain, error) {
	var d golibvirt.Domain
	err := c.guard(ctx, func() (err error) {
		d, err = c.l.DomainLookupByName(name)
		return err
	})
	if err != nil {
		if golibvirt.IsNotFound(err) {
			return nil, fmt.Errorf("domain %q at %s: %w", name, c.uri, ErrNoDomain)
		}
		return nil, fmt.Errorf("looking up domain %q: %w", name, err)
	}
	return c.describe(ctx, d)
}

func (c *Conn) describe(ctx context.Context, d golibvirt.Domain) (*Domain, error) {
	var state int32
	var doc string
	err := c.guard(ctx, func() (err error) {
		if state, _, err = c.l.DomainGetState(d, 0); err != nil {
			return err
		}
		doc, err = c.l.DomainGetXMLDesc(d, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("describing domain %s: %w", d.Name, err)
	}
	dom := &Domain{Name: d.Name, UUID: fmt.Sprintf("%x-%x-%x-%x-%x", d.UUID[:4], d.UUID[4:6], d.UUID[6:8], d.UUID[8:10], d.UUID[10:]),
		Running: golibvirt.DomainState(state) == golibvirt.DomainRunning || golibvirt.DomainState(state) == golibvirt.DomainPaused,
		XML:     doc, dom: d}
	if dom.Disks, err = DisksOf(doc); err != nil {
		return nil, fmt.Errorf("domain %s: %w", d.Name, err)
	}
	return dom, nil
}

// DisksOf lists the disks (device "disk", not CD-ROMs or floppies) of a
// domain XML document.
func DisksOf(doc string) ([]Disk, error) {
	var x libvirtxml.Domain
	if err := x.Unmarshal(doc); err != nil {
		return nil, fmt.Errorf("reading the domain XML: %w", err)
	}
	var out []Disk
	if x.Devices == nil {
		return nil, nil
	}
	for _, d := range x.Devices.Disks {
		if d.Device != "" && d.Device != "disk" {
			continue
		}
		disk := Disk{}
		if d.Target != nil {
			disk.Target, disk.Bus = d.Target.Dev, d.Target.Bus
		}
		if d.Driver != nil {
			disk.Format = d.Driver.Type
		}
		if d.Alias != nil {
			disk.Alias = d.Alias.Name
		}
		if s := d.Source; s != nil {
			switch {
			case s.File != nil:
				disk.Type, disk.Source = "file", s.File.File
			case s.Block != nil:
				disk.Type, disk.Source = "block", s.Block.Dev
			case s.Network != nil:
				disk.Type, disk.Source = "network", s.Network.Protocol+":"+s.Network.Name
			case s.Volume != nil:
				disk.Type, disk.Source = "volume", s.Volume.Pool+"/"+s.Volume.Volume
			case s.NVME != nil:
				disk.Type = "nvme"
			default:
				disk.Type = "other"
			}
		} else {
			disk.Type = "empty"
		}
		out = append(out, disk)
	}
	return out, nil
}

// Checkpoints lists the domain's checkpoints by name.
func (c *Conn) Checkpoints(ctx context.Context, d *Domain) ([]string, error) {
	var cps []golibvirt.DomainCheckpoint
	err := c.guard(ctx, func() (err error) {
		cps, _, err = c.l.DomainListAllCheckpoints(d.dom, 1, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing the checkpoints of %s: %w", d.Name, err)
	}
	names := make([]string, len(cps))
	for i, cp := range cps {
		names[i] = cp.Name
	}
	return names, nil
}

// DeleteCheckpoint deletes one checkpoint (and its bitmaps; libvirt merges
// them into the parent checkpoint's when it has one).
func (c *Conn) DeleteCheckpoint(ctx context.Context, d *Domain, name string) error {
	err := c.guard(ctx, func() error {
		cp, err := c.l.DomainCheckpointLookupByName(d.dom, name, 0)
		if err != nil {
			return err
		}
		err = c.l.DomainCheckpointDelete(cp, 0)
		var e golibvirt.Error
		if errors.As(err, &e) && strings.Contains(e.Message, "not found") {
			// QEMU died before writing the checkpoint's bitmaps to the
			// images: there is nothing but libvirt's record to delete.
			err = c.l.DomainCheckpointDelete(cp, golibvirt.DomainCheckpointDeleteMetadataOnly)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("deleting checkpoint %s of %s: %w", name, d.Name, err)
	}
	return nil
}

// BackupBegin starts a backup job (virDomainBackupBegin) described by
// backup, creating the checkpoint cp when it is not nil.
func (c *Conn) BackupBegin(ctx context.Context, d *Domain, backup *libvirtxml.DomainBackup, cp *libvirtxml.DomainCheckpoint) error {
	bx, err := backup.Marshal()
	if err != nil {
		return fmt.Errorf("encoding the backup request: %w", err)
	}
	var cpx golibvirt.OptString
	if cp != nil {
		s, err := cp.Marshal()
		if err != nil {
			return fmt.Errorf("encoding the checkpoint: %w", err)
		}
		cpx = golibvirt.OptString{s}
	}
	err = c.guard(ctx, func() error { return c.l.DomainBackupBegin(d.dom, bx, cpx, 0) })
	if err != nil {
		return fmt.Errorf("starting libvirt's backup of %s: %w", d.Name, classify(err))
	}
	return nil
}

// CheckNoJob fails with ErrJobRunning when the domain runs a job (a
// backup, a migration, a block copy): libvirt would make a new backup wait
// for it half a minute and then fail with a lock timeout.
func (c *Conn) CheckNoJob(ctx context.Context, d *Domain) error {
	var typ int32
	err := c.guard(ctx, func() (err error) {
		typ, _, _, _, _, _, _, _, _, _, _, _, err = c.l.DomainGetJobInfo(d.dom)
		return err
	})
	if err != nil {
		return fmt.Errorf("asking libvirt for the jobs of %s: %w", d.Name, err)
	}
	switch golibvirt.DomainJobType(typ) {
	case golibvirt.DomainJobNone, golibvirt.DomainJobCompleted, golibvirt.DomainJobFailed, golibvirt.DomainJobCancelled:
		return nil
	}
	return fmt.Errorf("domain %s: %w", d.Name, ErrJobRunning)
}

// BackupXML describes the domain's running backup job, as libvirt
// completed it (export names, bitmaps).
func (c *Conn) BackupXML(ctx context.Context, d *Domain) (*libvirtxml.DomainBackup, error) {
	var s string
	err := c.guard(ctx, func() (err error) {
		s, err = c.l.DomainBackupGetXMLDesc(d.dom, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("describing the backup job of %s: %w", d.Name, err)
	}
	var b libvirtxml.DomainBackup
	if err := b.Unmarshal(s); err != nil {
		return nil, fmt.Errorf("reading the backup job of %s: %w", d.Name, err)
	}
	return &b, nil
}

// AbortJob ends the domain's running job: a pull-mode backup ends this way
// once its exports are read. libvirt tears the job down after it answers:
// AbortJob returns once the job is gone, so the next backup can start.
func (c *Conn) AbortJob(ctx context.Context, d *Domain) error {
	err := c.guard(ctx, func() error { return c.l.DomainAbortJob(d.dom) })
	if err != nil {
		return fmt.Errorf("ending the backup job of %s: %w", d.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		err := c.CheckNoJob(ctx, d)
		if !errors.Is(err, ErrJobRunning) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the backup job of %s has not ended a minute after it was told to: %w", d.Name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Freeze freezes the guest's filesystems through libvirt's guest agent
// and returns how many it froze.
func (c *Conn) Freeze(ctx context.Context, d *Domain) (int, error) {
	var n int32
	err := c.guard(ctx, func() (err error) {
		n, err = c.l.DomainFsfreeze(d.dom, nil, 0)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("freezing the filesystems of %s through its guest agent: %w", d.Name, err)
	}
	return int(n), nil
}

// Thaw thaws what Freeze froze and returns how many filesystems it thawed
// (0 when none was frozen).
func (c *Conn) Thaw(ctx context.Context, d *Domain) (int, error) {
	var n int32
	err := c.guard(ctx, func() (err error) {
		n, err = c.l.DomainFsthaw(d.dom, nil, 0)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("thawing the filesystems of %s through its guest agent: %w", d.Name, err)
	}
	return int(n), nil
}

// MonitorCommand runs a QMP query in the domain's QEMU through libvirt
// (queries only: libvirt owns the monitor) and decodes its "return" into
// result.
func (c *Conn) MonitorCommand(ctx context.Context, d *Domain, command string, args, result any) error {
	cmd := map[string]any{"execute": command}
	if args != nil {
		cmd["arguments"] = args
	}
	req, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	var out string
	err = c.guard(ctx, func() (err error) {
		out, err = c.l.QEMUDomainMonitorCommand(d.dom, string(req), 0)
		return err
	})
	if err != nil {
		return fmt.Errorf("asking QEMU of %s (%s): %w", d.Name, command, err)
	}
	var reply struct {
		Return json.RawMessage `json:"return"`
		Error  *struct {
			Desc string `json:"desc"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &reply); err != nil {
		return fmt.Errorf("QEMU of %s answered %s with %q: %w", d.Name, command, out, err)
	}
	if reply.Error != nil || reply.Return == nil {
		return fmt.Errorf("QEMU of %s answered %s with %q", d.Name, command, out)
	}
	if err := json.Unmarshal(reply.Return, result); err != nil {
		return fmt.Errorf("QEMU of %s answered %s: %w", d.Name, command, err)
	}
	return nil
}

// InactiveXML is the domain's persistent definition, as it would start
// next: what a restore defines again.
func (c *Conn) InactiveXML(ctx context.Context, d *Domain) (string, error) {
	var doc string
	err := c.guard(ctx, func() (err error) {
		doc, err = c.l.DomainGetXMLDesc(d.dom, golibvirt.DomainXMLInactive)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("reading the definition of %s: %w", d.Name, err)
	}
	return doc, nil
}

// Define defines a new persistent domain from doc.
func (c *Conn) Define(ctx context.Context, doc string) (*Domain, error) {
	var d golibvirt.Domain
	err := c.guard(ctx, func() (err error) {
		d, err = c.l.DomainDefineXML(doc)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("defining the domain: %w", err)
	}
	return c.describe(ctx, d)
}

// Start starts a defined domain.
func (c *Conn) Start(ctx context.Context, d *Domain) error {
	err := c.guard(ctx, func() error { return c.l.DomainCreate(d.dom) })
	if err != nil {
		return fmt.Errorf("starting domain %s: %w", d.Name, err)
	}
	return nil
}

// Destroy stops a running domain at once (pulls the power cord).
func (c *Conn) Destroy(ctx context.Context, d *Domain) error {
	err := c.guard(ctx, func() error { return c.l.DomainDestroy(d.dom) })
	if err != nil {
		return fmt.Errorf("stopping domain %s: %w", d.Name, err)
	}
	return nil
}

// Undefine removes a stopped domain's definition and its checkpoints'
// metadata (the images stay).
func (c *Conn) Undefine(ctx context.Context, d *Domain) error {
	err := c.guard(ctx, func() error {
		return c.l.DomainUndefineFlags(d.dom, golibvirt.DomainUndefineCheckpointsMetadata|golibvirt.DomainUndefineNvram)
	})
	if err != nil {
		return fmt.Errorf("undefining domain %s: %w", d.Name, err)
	}
	return nil
}

// classify wraps libvirt's errors that mean the same to a user whatever
// the wording.
func classify(err error) error {
	var e golibvirt.Error
	if !errors.As(err, &e) {
		return err
	}
	switch golibvirt.ErrorNumber(e.Code) {
	case golibvirt.ErrOperationInvalid, golibvirt.ErrOperationTimeout:
		if strings.Contains(e.Message, "job") || strings.Contains(e.Message, "lock") {
			return fmt.Errorf("%w: %v", ErrJobRunning, err)
		}
	case golibvirt.ErrNoSupport, golibvirt.ErrOperationUnsupported, golibvirt.ErrArgumentUnsupported:
		return fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	return err
}
