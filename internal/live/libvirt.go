package live

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"libvirt.org/go/libvirtxml"

	"lifeboat/internal/backup"
	"lifeboat/internal/container"
	"lifeboat/internal/guestagent"
	"lifeboat/internal/libvirt"
	"lifeboat/internal/nbd"
	"lifeboat/internal/qmp"
	"lifeboat/internal/quiesce"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// LibvirtOptions describe one backup of a libvirt domain.
type LibvirtOptions struct {
	Machine string
	// Domain is the libvirt domain's name; URI the daemon's (default
	// qemu:///system).
	Domain, URI string
	// Consistency is what was asked for (crash or file); the point records
	// what was got.
	Consistency   recovery.Consistency
	FreezeTimeout time.Duration // 0: 30 s
	// Disks limits the backup to these disks (by target name); empty: all.
	Disks []string
	// Dir holds the backup's NBD socket and scratch images; libvirt's
	// QEMU must be able to write there. Empty: a directory under
	// os.TempDir() owned by the user of the domain's first image file
	// (QEMU's, with libvirt's dynamic ownership).
	Dir      string
	Tags     []string
	Audit    float64
	Progress func(backup.Progress)
	Warn     func(string)
	// AfterInstant, if set, is called once the backup job runs and the
	// guest is thawed, before any disk is read.
	AfterInstant func()
	// Executable is lifeboat's own binary, run as a watchdog that thaws
	// the guest if this process dies while it is frozen ("" runs none).
	Executable string
}

// BackupLibvirt takes one recovery point of a libvirt domain through
// libvirt's backup API, the libvirt form of Backup:
//
//  1. For file consistency the guest's filesystems are frozen through
//     libvirt's guest agent support, around the next step only.
//  2. virDomainBackupBegin in pull mode is the instant: it creates the new
//     checkpoint (a dirty bitmap on each qcow2 disk) and exports a
//     point-in-time view of each disk over NBD on a unix socket, with
//     the previous checkpoint's bitmap as a metadata context for the
//     disks whose change tracking is trusted (judgeBitmap, the same rule
//     as the QMP path, plus: libvirt still has the checkpoint).
//  3. Each export is read with lifeboat's own NBD client: only the
//     bitmap's extents when trusted, else the whole disk compared with the
//     previous point.
//  4. The point is committed, the job ended and every checkpoint of this
//     vault but the new one deleted. A failed backup deletes the new
//     checkpoint instead; libvirt merges its bitmap into the previous
//     checkpoint's, so the next backup still sees every change.
//
// A stopped domain's images are read directly and compared with the
// previous point.
func BackupLibvirt(ctx context.Context, v *vault.Vault, opts LibvirtOptions) (*recovery.Point, error) {
	warn := opts.Warn
	if warn == nil {
		warn = func(string) {}
	}
	if opts.FreezeTimeout == 0 {
		opts.FreezeTimeout = 30 * time.Second
	}
	conn, err := libvirt.Dial(ctx, opts.URI)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	dom, err := conn.Lookup(ctx, opts.Domain)
	if err != nil {
		return nil, err
	}
	disks, err := libvirtDisks(dom, opts.Disks)
	if err != nil {
		return nil, err
	}
	defXML, err := conn.InactiveXML(ctx, dom)
	if err != nil {
		return nil, err
	}
	def, err := libvirt.Definition(opts.Machine, defXML)
	if err != nil {
		return nil, err
	}
	points, err := recovery.List(ctx, v)
	if err != nil {
		return nil, err
	}
	parent, _ := recovery.Find(points, opts.Machine, "latest")
	bopts := backup.Options{Machine: opts.Machine, Definition: def, Tags: opts.Tags, Progress: opts.Progress,
		Warn: warn, Audit: opts.Audit, Consistency: recovery.Crash}
	if !dom.Running {
		return backupStoppedDomain(ctx, v, dom, disks, bopts, opts)
	}
	if err := conn.CheckBackupAPI(ctx, domainType(dom.XML)); err != nil {
		return nil, err
	}
	dir := opts.Dir
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "lifeboat-libvirt-"+opts.Machine)
		if err := qemuDirFor(dir, disks); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("scratch directory: %w", err)
	}
	socket := filepath.Join(dir, "nbd.sock")
	if err := endKilledJob(ctx, conn, dom, socket, warn); err != nil {
		return nil, jobRunning(err, opts.Domain)
	}

	// What QEMU says of each disk's bitmaps, for the one trust rule.
	var devs []qmp.BlockInfo
	var nodes []qmp.BlockNode
	if err := conn.MonitorCommand(ctx, dom, "query-block", nil, &devs); err != nil {
		return nil, err
	}
	if err := conn.MonitorCommand(ctx, dom, "query-named-block-nodes", map[string]any{"flat": true}, &nodes); err != nil {
		return nil, err
	}
	qdisks := map[string]qmp.Disk{}
	for _, d := range qmp.DevicesDisks(devs, nodes) {
		qdisks[diskName(d)] = d
	}
	checkpoints, err := conn.Checkpoints(ctx, dom)
	if err != nil {
		return nil, err
	}
	prefix := bitmapPrefix(v)
	suffix, err := randomSuffix()
	if err != nil {
		return nil, err
	}
	newCP := prefix + suffix

	os.Remove(socket) // a killed backup's
	breq := &libvirtxml.DomainBackup{Pull: &libvirtxml.DomainBackupPull{
		Server: &libvirtxml.DomainBackupPullServer{UNIX: &libvirtxml.DomainBackupPullServerUNIX{Socket: socket}},
		Disks:  &libvirtxml.DomainBackupPullDisks{}}}
	creq := &libvirtxml.DomainCheckpoint{Name: newCP, Description: "lifeboat: changes since the point of machine " + opts.Machine,
		Disks: &libvirtxml.DomainCheckpointDisks{}}
	tracked := map[string]bool{}     // disks the new checkpoint tracks
	incremental := map[string]bool{} // disks read through the previous checkpoint's bitmap
	chosen := map[string]bool{}
	for _, d := range disks {
		chosen[d.Target] = true
		scratch := filepath.Join(dir, d.Target+".scratch.qcow2")
		os.Remove(scratch) // a killed backup's
		pd := libvirtxml.DomainBackupPullDisk{Name: d.Target, Backup: "yes", BackupMode: "full",
			Scratch: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: scratch}}}
		prev := ""
		if parent != nil {
			if p, ok := parent.Disk(d.Target); ok {
				prev = p.Tracking
			}
		}
		qd, ok := qdisks[sanitize(d.Alias)]
		usable, why := false, fmt.Sprintf("QEMU shows no disk for device %s", d.Alias)
		if ok {
			usable, why = judgeBitmap(liveDisk{qd, d.Target}, prev, prefix, parent)
		}
		if usable && !slices.Contains(checkpoints, prev) {
			usable, why = false, fmt.Sprintf("libvirt has no checkpoint %s any more (someone deleted it, or the domain was defined again)", prev)
		}
		if usable {
			pd.BackupMode, pd.Incremental = "incremental", prev
			incremental[d.Target] = true
		} else if parent != nil {
			warn(fmt.Sprintf("disk %s: %s: reading the whole disk and comparing with point %s", d.Target, why, parent.ID.Short()))
		}
		breq.Pull.Disks.Disks = append(breq.Pull.Disks.Disks, pd)
		cd := libvirtxml.DomainCheckpointDisk{Name: d.Target, Checkpoint: "bitmap"}
		if d.Format != "qcow2" {
			// Bitmaps live in qcow2 images only: this disk is compared
			// with the previous point every time.
			cd.Checkpoint = "no"
			warn(fmt.Sprintf("disk %s is %s, not qcow2: libvirt cannot track its changes, so every backup reads it whole", d.Target, d.Format))
		} else {
			tracked[d.Target] = true
		}
		creq.Disks.Disks = append(creq.Disks.Disks, cd)
	}
	// Disks left out of the backup are left out of the checkpoint too.
	for _, d := range dom.Disks {
		if !chosen[d.Target] {
			breq.Pull.Disks.Disks = append(breq.Pull.Disks.Disks, libvirtxml.DomainBackupPullDisk{Name: d.Target, Backup: "no"})
			creq.Disks.Disks = append(creq.Disks.Disks, libvirtxml.DomainCheckpointDisk{Name: d.Target, Checkpoint: "no"})
		}
	}
	if len(tracked) == 0 {
		creq = nil
	}

	// The instant, frozen around the backup's start only.
	got := recovery.Crash
	var notes []string
	frozen := false
	var dog *quiesce.Watchdog
	if opts.Consistency == recovery.File || opts.Consistency == recovery.App {
		// libvirt's agent never thaws by itself: a watchdog process
		// thaws the guest if this one dies while it is frozen.
		if opts.Executable != "" {
			args := []string{"__thaw-watchdog", "--timeout", (opts.FreezeTimeout + 5*time.Second).String(), "--libvirt", opts.Domain}
			if opts.URI != "" {
				args = append(args, "--connect", opts.URI)
			}
			if dog, err = quiesce.StartWatchdog(opts.Executable, args...); err != nil {
				return nil, err
			}
			dog.Arm(GuestWatchdogItem)
		}
		fctx, cancel := context.WithTimeout(ctx, opts.FreezeTimeout)
		n, err := conn.Freeze(fctx, dom)
		cancel()
		switch {
		case err != nil:
			notes = append(notes, fmt.Sprintf("asked for %s consistency, got crash: %v", opts.Consistency, err))
		case n == 0:
			notes = append(notes, fmt.Sprintf("asked for %s consistency, got crash: the guest agent froze no filesystem", opts.Consistency))
			frozen = true
		default:
			got, frozen = recovery.File, true
		}
		if opts.Consistency == recovery.App && got == recovery.File {
			notes = append(notes, "asked for app consistency, got file: libvirt domains run no application hooks")
		}
	}
	berr := conn.BackupBegin(ctx, dom, breq, creq)
	if frozen {
		if _, err := conn.Thaw(context.WithoutCancel(ctx), dom); err != nil {
			warn(err.Error())
			notes = append(notes, err.Error())
		} else {
			dog.Disarm(GuestWatchdogItem)
		}
	} else {
		dog.Disarm(GuestWatchdogItem) // the freeze failed: a frozen guest is someone else's
	}
	if dog != nil {
		if err := dog.Stop(); err != nil {
			warn(err.Error())
		}
	}
	if berr != nil {
		return nil, jobRunning(berr, opts.Domain)
	}
	committed := false
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		conn, dom := conn, dom
		if ctx.Err() != nil {
			// The connection was cut when ctx ended: the job and the
			// checkpoint are ended through a new one.
			if c, err := libvirt.Dial(cctx, opts.URI); err == nil {
				defer c.Close()
				if d, err := c.Lookup(cctx, opts.Domain); err == nil {
					conn, dom = c, d
				}
			}
		}
		if err := conn.AbortJob(cctx, dom); err != nil {
			warn(fmt.Sprintf("%v (the next backup ends it)", err))
		}
		if !committed && creq != nil {
			if err := conn.DeleteCheckpoint(cctx, dom, newCP); err != nil {
				warn(fmt.Sprintf("%v (the next backup deletes it)", err))
			}
		}
		for _, d := range disks {
			os.Remove(filepath.Join(dir, d.Target+".scratch.qcow2"))
		}
	}()
	if opts.AfterInstant != nil {
		opts.AfterInstant()
	}
	job, err := conn.BackupXML(ctx, dom)
	if err != nil {
		return nil, err
	}
	exports := map[string]libvirtxml.DomainBackupPullDisk{}
	if job.Pull != nil && job.Pull.Disks != nil {
		for _, d := range job.Pull.Disks.Disks {
			exports[d.Name] = d
		}
	}
	bdisks := make([]backup.Disk, len(disks))
	for i, d := range disks {
		ex, ok := exports[d.Target]
		if !ok {
			return nil, fmt.Errorf("disk %s: libvirt's backup job exports no such disk", d.Target)
		}
		name := ex.ExportName
		if name == "" {
			name = d.Target
		}
		var nopts []nbd.Option
		if incremental[d.Target] {
			if ex.ExportBitmap == "" {
				return nil, fmt.Errorf("disk %s: libvirt's incremental backup exports no bitmap", d.Target)
			}
			nopts = append(nopts, nbd.WithMetaContexts(nbd.DirtyBitmapContext(ex.ExportBitmap)))
		}
		nd, err := nbd.OpenDisk(ctx, "nbd+unix:///"+name+"?socket="+socket, nopts...)
		if err != nil {
			return nil, fmt.Errorf("disk %s: reading libvirt's export: %w", d.Target, err)
		}
		defer nd.Close()
		bdisks[i] = backup.Disk{Name: d.Target, Source: named{nd, "libvirt:" + opts.Domain + "#" + d.Target},
			Image: d.Source, Format: d.Format}
		if tracked[d.Target] {
			bdisks[i].Tracking = newCP
		}
		if incremental[d.Target] {
			dirty, err := nd.DirtyExtents(ctx, ex.ExportBitmap)
			if err != nil {
				return nil, fmt.Errorf("disk %s: %w", d.Target, err)
			}
			bdisks[i].Changed = &backup.Changes{Since: parent.ID.String(), Extents: dirty}
		}
	}
	bopts.Disks, bopts.Consistency, bopts.Notes = bdisks, got, notes
	// The export must still be the instant when the point commits.
	bopts.Precommit = func() error {
		_, err := conn.BackupXML(context.WithoutCancel(ctx), dom)
		return err
	}
	p, err := backup.Run(ctx, v, bopts)
	if err != nil {
		return nil, err
	}
	committed = true
	// Only the new point's checkpoint is needed now; older ones of this
	// vault (the previous point's, killed backups') only cost the guest.
	for _, cp := range checkpoints {
		if strings.HasPrefix(cp, prefix) && cp != newCP {
			if err := conn.DeleteCheckpoint(context.WithoutCancel(ctx), dom, cp); err != nil {
				warn(fmt.Sprintf("%v (the next backup deletes it)", err))
			}
		}
	}
	return p, nil
}

// qemuDirFor makes dir, the default home of the backup's socket and
// scratch images, for libvirt's QEMU: it may run as its own user (with
// dynamic ownership libvirt gives it the domain's images while it runs),
// so the directory is that user's, and only it and root can enter.
func qemuDirFor(dir string, disks []libvirt.Disk) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("scratch directory: %w", err)
	}
	for _, d := range disks {
		if d.Type != "file" {
			continue
		}
		if fi, err := os.Stat(d.Source); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				if err := os.Chown(dir, int(st.Uid), int(st.Gid)); err != nil {
					return fmt.Errorf("giving the scratch directory %s to QEMU's user: %w", dir, err)
				}
			}
			break
		}
	}
	return nil
}

// libvirtDisks picks the domain's disks to back up, refusing disks
// lifeboat cannot read.
func libvirtDisks(dom *libvirt.Domain, only []string) ([]libvirt.Disk, error) {
	var out []libvirt.Disk
	for _, d := range dom.Disks {
		if len(only) > 0 && !slices.Contains(only, d.Target) {
			continue
		}
		if why := d.Readable(); why != "" {
			return nil, fmt.Errorf("domain %s: %s: %w", dom.Name, why, libvirt.ErrUnsupported)
		}
		if err := recovery.ValidName("disk", d.Target); err != nil {
			return nil, fmt.Errorf("domain %s: %w", dom.Name, err)
		}
		out = append(out, d)
	}
	for _, n := range only {
		if !slices.ContainsFunc(out, func(d libvirt.Disk) bool { return d.Target == n }) {
			var have []string
			for _, d := range dom.Disks {
				have = append(have, d.Target)
			}
			return nil, fmt.Errorf("domain %s has no disk %q (it has %s)", dom.Name, n, strings.Join(have, ", "))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("domain %s has no disks", dom.Name)
	}
	return out, nil
}

// backupStoppedDomain reads a stopped domain's images as they rest:
// nothing writes them, so crash consistency is all there is to have (the
// guest shut down cleanly or did not), and without QEMU no bitmap can say
// what changed: each disk is compared with the previous point.
func backupStoppedDomain(ctx context.Context, v *vault.Vault, dom *libvirt.Domain, disks []libvirt.Disk, bopts backup.Options, opts LibvirtOptions) (*recovery.Point, error) {
	if opts.Consistency != "" && opts.Consistency != recovery.Crash {
		bopts.Notes = append(bopts.Notes, fmt.Sprintf("asked for %s consistency: domain %s is not running, its disks are as it left them", opts.Consistency, dom.Name))
	}
	for _, d := range disks {
		src, err := container.Open(ctx, d.Source, d.Format)
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", d.Target, err)
		}
		defer src.Close()
		bopts.Disks = append(bopts.Disks, backup.Disk{Name: d.Target, Source: src, Image: d.Source, Format: src.Info.Format, Backing: src.Info.Backing})
	}
	return backup.Run(ctx, v, bopts)
}

// domainType is the domain's virtualisation type (kvm, qemu).
func domainType(doc string) string {
	var x libvirtxml.Domain
	if x.Unmarshal(doc) == nil && x.Type != "" {
		return x.Type
	}
	return "kvm"
}

// endKilledJob makes sure no job runs on the domain. A pull-mode backup
// job serving on socket is this machine's backup that lifeboat was killed
// during (the job never ends by itself): it is ended, and the next steps
// delete its checkpoint. Any other job is someone else's: ErrJobRunning.
func endKilledJob(ctx context.Context, conn *libvirt.Conn, dom *libvirt.Domain, socket string, warn func(string)) error {
	err := conn.CheckNoJob(ctx, dom)
	if !errors.Is(err, libvirt.ErrJobRunning) {
		return err
	}
	job, jerr := conn.BackupXML(ctx, dom)
	if jerr != nil || job.Pull == nil || job.Pull.Server == nil || job.Pull.Server.UNIX == nil || job.Pull.Server.UNIX.Socket != socket {
		return err
	}
	warn(fmt.Sprintf("domain %s: ending the backup job an earlier backup of this machine left running (it was killed)", dom.Name))
	return conn.AbortJob(ctx, dom)
}

// jobRunning adds what to do to an ErrJobRunning.
func jobRunning(err error, domain string) error {
	if errors.Is(err, libvirt.ErrJobRunning) {
		return fmt.Errorf("%w (another backup of %s may be running: wait for it, or end it with virsh domjobabort %s)", err, domain, domain)
	}
	return err
}

// LibvirtWatchdogMain is the thaw watchdog of a libvirt domain
// (quiesce.RunWatchdog): armed, it thaws the domain through libvirt's
// guest agent support once the backup that froze it has gone.
func LibvirtWatchdogMain(ctx context.Context, stdin io.Reader, timeout time.Duration, uri, domain string) error {
	return quiesce.RunWatchdog(ctx, stdin, timeout, func(ctx context.Context, _ string) error {
		ctx, cancel := context.WithTimeout(ctx, 2*guestagent.DefaultTimeout)
		defer cancel()
		c, err := libvirt.Dial(ctx, uri)
		if err != nil {
			return err
		}
		defer c.Close()
		dom, err := c.Lookup(ctx, domain)
		if err != nil {
			return err
		}
		_, err = c.Thaw(ctx, dom)
		return err
	})
}
