// Package live backs up running QEMU machines (qemu-system or
// qemu-storage-daemon) through their QMP socket, the way a hypervisor
// backup extension does:
//
//  1. The guest's filesystems are frozen through the QEMU guest agent
//     (file consistency), after the operator's pre-hook (app consistency).
//  2. One QMP transaction over every disk is the snapshot instant: it adds
//     the next dirty bitmap, freezes the previous one, and starts a
//     point-in-time (fleecing) view of each disk (qmp.Fleece).
//  3. The guest is thawed at once and the post-hook runs: the guest is
//     frozen only for the transaction, not for the backup.
//  4. Each view is read over NBD with the frozen bitmap, so an incremental
//     reads only what changed since the previous point; a full reads only
//     allocated extents.
//  5. The point is committed, the previous bitmap removed and the views
//     torn down. On failure or cancel the bitmaps are rolled back so the
//     next attempt still sees every change since the last good point.
//
// Change tracking is trusted only when the bitmap the previous point
// recorded is still on the disk, recording and consistent, and the disk
// has its size; otherwise the backup reads the whole disk and compares it
// with the previous point (backup.Changes). It never silently skips data.
package live

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"lifeboat/internal/backup"
	"lifeboat/internal/guestagent"
	"lifeboat/internal/nbd"
	"lifeboat/internal/qmp"
	"lifeboat/internal/quiesce"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// Options describe one live backup.
type Options struct {
	Machine string
	// QMP is the machine's QMP unix socket.
	QMP string
	// Consistency is what was asked for; the point records what was got.
	Consistency recovery.Consistency
	// GuestAgent is the unix socket of the guest's QEMU guest agent, for
	// file and app consistency.
	GuestAgent    string
	FreezeTimeout time.Duration // 0: 30 s
	PreHook       quiesce.Hook
	PostHook      quiesce.Hook
	// Disks limits the backup to these disks (by name); empty means all.
	Disks []string
	// Dir holds the temporary fleecing overlays and the NBD socket; it must
	// be writable by QEMU. Empty: a new directory under os.TempDir().
	Dir        string
	Definition json.RawMessage
	Tags       []string
	Audit      float64
	Progress   func(backup.Progress)
	Warn       func(string)
	// Executable is lifeboat's own binary, run as a watchdog that thaws
	// the guest if this process dies while it is frozen ("" runs none).
	Executable string
	// AfterInstant, if set, is called once the snapshot instant is taken
	// and the guest thawed, before any disk is read.
	AfterInstant func()
	// NBDServer, "unix:PATH", is an NBD server the machine's QEMU already
	// runs for others (QEMU has one): the backup adds its exports there
	// rather than starting QEMU's NBD server. Empty: lifeboat starts it.
	NBDServer string
}

// dialTimeout bounds the wait for QEMU's QMP greeting.
var dialTimeout = 30 * time.Second

// ErrMachine marks failures to reach the machine's QMP socket.
var ErrMachine = errors.New("QEMU machine unreachable")

// BitmapPrefix starts the name of every dirty bitmap lifeboat adds.
const BitmapPrefix = "lifeboat-"

// Backup takes one recovery point of the running machine at opts.QMP.
func Backup(ctx context.Context, v *vault.Vault, opts Options) (*recovery.Point, error) {
	warn := opts.Warn
	if warn == nil {
		warn = func(string) {}
	}
	if opts.FreezeTimeout == 0 {
		opts.FreezeTimeout = 30 * time.Second
	}
	// QEMU serves one QMP client at a time and greets the next only when
	// the first leaves: do not wait for ever behind another backup.
	dctx, dcancel := context.WithTimeout(ctx, dialTimeout)
	mon, err := qmp.Dial(dctx, opts.QMP)
	dcancel()
	if err != nil {
		return nil, fmt.Errorf("connecting to QEMU at %s: %w: %w", opts.QMP, ErrMachine, err)
	}
	defer mon.Close()

	dir := opts.Dir
	if dir == "" {
		// One directory per machine, kept: the next backup finds there
		// the overlays a killed one left.
		dir = filepath.Join(os.TempDir(), "lifeboat-fleece-"+opts.Machine)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("fleecing directory: %w", err)
	}
	// Replication's mirror capture gives the disks over for the backup
	// (see handOverMirrors); its target nodes go with the leftovers.
	ended, err := handOverMirrors(ctx, mon)
	if err != nil {
		return nil, fmt.Errorf("taking the disks over from replication's mirror: %w", err)
	}
	if len(ended) > 0 {
		warn(fmt.Sprintf("replication's mirror capture (%s) was stopped for the backup: replication sends the blocks written meanwhile from its dirty bitmap and restarts the mirror after the backup", strings.Join(ended, ", ")))
	}
	// A lifeboat killed mid-backup leaves its fleecing behind; clear it.
	if err := qmp.RemoveStaleFleecing(ctx, mon, dir); err != nil {
		return nil, fmt.Errorf("removing an earlier backup's leftovers from QEMU: %w", err)
	}
	server, startServer := qmp.UnixSocket(filepath.Join(dir, "nbd.sock")), true
	if path, ok := strings.CutPrefix(opts.NBDServer, "unix:"); ok {
		server, startServer = qmp.UnixSocket(path), false
	} else if err := claimNBDServer(ctx, mon); err != nil {
		return nil, err
	}
	disks, err := selectDisks(ctx, mon, opts.Disks)
	if err != nil {
		return nil, err
	}

	points, err := recovery.List(ctx, v)
	if err != nil {
		return nil, err
	}
	parent, _ := recovery.Find(points, opts.Machine, "latest")
	// Bitmaps are namespaced by vault: two vaults protecting one machine
	// each keep their own.
	prefix := bitmapPrefix(v)
	suffix, err := randomSuffix()
	if err != nil {
		return nil, err
	}
	fdisks := make([]qmp.FleeceDisk, len(disks))
	var unused []qmp.Action // the latest point's bitmaps this backup cannot use
	for i, d := range disks {
		fdisks[i] = qmp.FleeceDisk{Node: d.Node, Export: qmp.FleeceNodePrefix + "x-" + d.name, NewBitmap: prefix + suffix}
		prev := ""
		if parent != nil {
			if pd, ok := parent.Disk(d.name); ok {
				prev = pd.Tracking
			}
		}
		usable, why := judgeBitmap(d, prev, prefix, parent)
		if usable {
			fdisks[i].PrevBitmap = prev
		} else if b, ok := d.Bitmap(prev); ok && !b.Busy && strings.HasPrefix(prev, prefix) {
			unused = append(unused, qmp.BitmapRemove(d.Node, prev))
		}
		if !usable && parent != nil {
			warn(fmt.Sprintf("disk %s: %s: reading the whole disk and comparing with point %s", d.name, why, parent.ID.Short()))
		}
		// Our other bitmaps on this disk are leftovers of failed or killed
		// backups: remove them, so they stop costing the guest. The latest
		// point's stays even when unusable, until a point replaces it: if
		// this backup fails too, the next one still finds it and can tell
		// why it is unusable, rather than find it gone.
		for _, b := range d.Bitmaps {
			if strings.HasPrefix(b.Name, prefix) && b.Name != prev {
				if err := mon.Transaction(ctx, qmp.BitmapRemove(d.Node, b.Name)); err != nil {
					warn(fmt.Sprintf("disk %s: removing stale bitmap %s: %v", d.name, b.Name, err))
				}
			}
		}
	}

	// The instant, with the guest quiesced around the transaction only:
	// the overlays and the NBD server are ready before the freeze.
	got := recovery.Crash
	var notes []string
	var unquiesce func() error
	thaw := func() {
		if unquiesce == nil {
			return
		}
		if err := unquiesce(); err != nil {
			warn(err.Error())
			notes = append(notes, err.Error())
		}
		unquiesce = nil
	}
	sess, err := qmp.Fleece(ctx, mon, fdisks, qmp.FleeceOptions{Dir: dir, Server: server,
		StartServer: startServer, InstantTimeout: opts.FreezeTimeout,
		BeforeInstant: func(ctx context.Context) error {
			got, notes, unquiesce = quiesceGuest(ctx, opts)
			return nil
		},
		AfterInstant: thaw})
	thaw() // if the instant was never reached
	if err != nil {
		return nil, fmt.Errorf("taking the snapshot instant: %w", err)
	}
	defer func() {
		// Rolls back unless committed.
		if err := sess.Close(context.WithoutCancel(ctx)); err != nil {
			warn(fmt.Sprintf("tearing down the snapshot view: %v (the next backup of %s removes what is left)", err, opts.Machine))
		}
	}()
	if opts.AfterInstant != nil {
		opts.AfterInstant()
	}

	qmpPath, err := filepath.Abs(opts.QMP)
	if err != nil {
		qmpPath = opts.QMP
	}
	cwd := qemuDir(mon)
	bdisks := make([]backup.Disk, len(disks))
	for i, fd := range sess.Disks {
		name := disks[i].name
		var nopts []nbd.Option
		if fd.PrevBitmap != "" {
			nopts = append(nopts, nbd.WithMetaContexts(nbd.DirtyBitmapContext(fd.PrevBitmap)))
		}
		nd, err := nbd.OpenDisk(ctx, fd.URI, nopts...)
		if err != nil {
			return nil, fmt.Errorf("disk %s: reading the point-in-time view: %w", name, err)
		}
		defer nd.Close()
		bdisks[i] = backup.Disk{Name: name, Source: named{nd, "qemu:" + qmpPath + "#" + disks[i].Node}, Tracking: fd.NewBitmap,
			Image: imagePath(disks[i].Disk, cwd), Format: imageFormat(disks[i].Driver)}
		if fd.PrevBitmap != "" {
			dirty, err := nd.DirtyExtents(ctx, fd.PrevBitmap)
			if err != nil {
				return nil, fmt.Errorf("disk %s: %w", name, err)
			}
			bdisks[i].Changed = &backup.Changes{Since: parent.ID.String(), Extents: dirty}
		}
	}
	def := opts.Definition
	if def == nil {
		def = definitionOf(ctx, mon, opts.Machine, disks)
	}
	p, err := backup.Run(ctx, v, backup.Options{Machine: opts.Machine, Disks: bdisks, Definition: def,
		Consistency: got, Tags: opts.Tags, Progress: opts.Progress, Warn: warn, Audit: opts.Audit, Notes: notes,
		// The view must still be the instant when the point commits.
		Precommit: func() error { return sess.Check(context.WithoutCancel(ctx)) }})
	if err != nil {
		return nil, err
	}
	if err := sess.Commit(context.WithoutCancel(ctx)); err != nil {
		// The point is committed and complete; only the clean-up failed.
		// The next backup removes stale bitmaps and leftovers.
		warn(fmt.Sprintf("point %s is committed, but tearing down the snapshot view failed: %v", p.ID.Short(), err))
	}
	// The latest point's unusable bitmaps were kept while this backup could
	// still fail; the new point replaces them.
	if len(unused) > 0 {
		if err := mon.Transaction(context.WithoutCancel(ctx), unused...); err != nil {
			warn(fmt.Sprintf("removing the unusable bitmaps of the previous point: %v (the next backup removes them)", err))
		}
	}
	return p, nil
}

// claimNBDServer makes sure QEMU's one NBD server is free for the
// backup's exports. A server that serves no NBD export is a leftover of a
// killed backup (its exports were removed with the rest of its fleecing)
// or idle, and is stopped; one that serves exports belongs to someone
// else, and the backup stops with an error naming them.
func claimNBDServer(ctx context.Context, mon *qmp.Monitor) error {
	exports, err := mon.QueryBlockExports(ctx)
	if err != nil {
		return fmt.Errorf("listing QEMU's exports: %w", err)
	}
	var theirs []string
	for _, e := range exports {
		if e.Type == "nbd" {
			theirs = append(theirs, e.ID)
		}
	}
	if len(theirs) > 0 {
		return fmt.Errorf("QEMU's NBD server is in use by exports %s: a live backup needs it for its own exports (QEMU has one NBD server)", strings.Join(theirs, ", "))
	}
	if err := mon.NBDServerStop(ctx); err != nil {
		var qe *qmp.Error
		if errors.As(err, &qe) && strings.Contains(qe.Desc, "not running") {
			return nil
		}
		return fmt.Errorf("stopping QEMU's idle NBD server: %w", err)
	}
	return nil
}

type liveDisk struct {
	qmp.Disk
	name string
}

// selectDisks lists the machine's disks and names them: the device id for
// qemu-system (vda, scsi0-0-0, ...), the node name for a storage daemon.
func selectDisks(ctx context.Context, mon *qmp.Monitor, only []string) ([]liveDisk, error) {
	all, err := mon.Disks(ctx)
	if err != nil {
		return nil, err
	}
	var out []liveDisk
	seen := map[string]bool{}
	for _, d := range all {
		name := diskName(d)
		if seen[name] {
			return nil, fmt.Errorf("two disks of the machine would both be named %q", name)
		}
		seen[name] = true
		out = append(out, liveDisk{d, name})
	}
	if len(only) == 0 {
		if len(out) == 0 {
			return nil, errors.New("the machine has no disks")
		}
		return out, nil
	}
	var sel []liveDisk
	for _, n := range only {
		found := false
		for _, d := range out {
			if d.name == n {
				sel, found = append(sel, d), true
			}
		}
		if !found {
			var have []string
			for _, d := range out {
				have = append(have, d.name)
			}
			return nil, fmt.Errorf("the machine has no disk %q (it has %s)", n, strings.Join(have, ", "))
		}
	}
	return sel, nil
}

func diskName(d qmp.Disk) string {
	if d.Device != "" {
		return sanitize(d.Device)
	}
	if d.QDev != "" {
		// /machine/peripheral/vda/virtio-backend -> vda
		parts := strings.Split(strings.Trim(d.QDev, "/"), "/")
		for i, p := range parts {
			if p == "peripheral" && i+1 < len(parts) {
				return sanitize(parts[i+1])
			}
		}
		if !strings.Contains(d.QDev, "/") {
			return sanitize(d.QDev)
		}
	}
	return sanitize(d.Node)
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 0 && (b[0] == '.' || b[0] == '-' || b[0] == '_') {
		b = append([]byte("d"), b...)
	}
	return string(b)
}

// judgeBitmap decides whether the previous point's bitmap prev can say
// what changed since it, and if not, says why as exactly as the disk's
// bitmaps tell: lifeboat's own bitmaps of this vault start with prefix.
func judgeBitmap(d liveDisk, prev, prefix string, parent *recovery.Point) (bool, string) {
	if parent == nil {
		return false, "no earlier point"
	}
	pd, ok := parent.Disk(d.name)
	switch {
	case !ok:
		return false, fmt.Sprintf("point %s has no disk %s", parent.ID.Short(), d.name)
	case prev == "":
		return false, fmt.Sprintf("point %s started no change tracking for this disk (it was not taken live through QMP or libvirt)", parent.ID.Short())
	case strings.HasPrefix(prev, "nbd:"):
		return false, fmt.Sprintf("point %s was taken with the NBD server's bitmap %s, not through QMP", parent.ID.Short(), strings.TrimPrefix(prev, "nbd:"))
	case !strings.HasPrefix(prev, prefix):
		return false, fmt.Sprintf("point %s's bitmap %s belongs to another vault (the point was copied here); it is left to that vault", parent.ID.Short(), prev)
	case pd.Size != d.Size:
		return false, fmt.Sprintf("the disk is %d bytes, was %d", d.Size, pd.Size)
	}
	// Bitmaps of backups that never finished: added at their instant,
	// left behind when lifeboat was killed before rolling them back.
	var unfinished []string
	for _, b := range d.Bitmaps {
		if b.Name != prev && strings.HasPrefix(b.Name, prefix) {
			unfinished = append(unfinished, b.Name)
		}
	}
	if b, ok := d.Bitmap(prev); ok {
		switch {
		case b.Inconsistent:
			return false, fmt.Sprintf("its dirty bitmap %s is inconsistent: QEMU stopped without closing the image cleanly (killed or crashed) since the last point, so it may have missed writes", prev)
		case !b.Recording && len(unfinished) > 0:
			return false, fmt.Sprintf("its dirty bitmap %s stopped recording at the instant of a later backup that was killed before it finished (its bitmap %s is still on the disk)", prev, strings.Join(unfinished, ", "))
		case !b.Recording:
			return false, fmt.Sprintf("its dirty bitmap %s is not recording: a later backup was killed before it finished, or someone disabled the bitmap", prev)
		case b.Busy:
			return false, fmt.Sprintf("its dirty bitmap %s is in use by another job or export", prev)
		}
		return true, ""
	}
	switch {
	case len(unfinished) > 0:
		return false, fmt.Sprintf("its dirty bitmap %s was removed while QEMU ran on (bitmap %s of a later, unfinished backup is still on the disk): an older lifeboat discarded it in a backup that was then killed, or someone removed it", prev, strings.Join(unfinished, ", "))
	case d.Driver == "qcow2":
		return false, fmt.Sprintf("its dirty bitmap %s is gone from the qcow2 image: QEMU stopped without writing it back (killed or crashed) since the last point, or someone removed it", prev)
	}
	return false, fmt.Sprintf("its dirty bitmap %s is gone: QEMU restarted since the last point (bitmaps on %s images live only as long as QEMU), or someone removed it", prev, cmp.Or(d.Driver, "non-qcow2"))
}

// quiesceGuest runs the pre-hook and freezes the guest's filesystems as
// asked, and returns the consistency achieved, notes on what fell short,
// and a function that thaws and runs the post-hook.
func quiesceGuest(ctx context.Context, opts Options) (recovery.Consistency, []string, func() error) {
	got := opts.Consistency
	if got == "" || got == recovery.Crash {
		return recovery.Crash, nil, func() error { return nil }
	}
	var notes []string
	var undo []func() error
	if got == recovery.App {
		if err := opts.PreHook.Run(ctx, "pre"); err != nil {
			notes = append(notes, fmt.Sprintf("asked for app consistency: %v", err))
			got = recovery.File
		}
		undo = append(undo, func() error { return opts.PostHook.Run(context.WithoutCancel(ctx), "post") })
	}
	freeze := func() error {
		if opts.GuestAgent == "" {
			return errors.New("no guest agent socket given (--guest-agent)")
		}
		// QEMU serves one QMP client at a time and we are it: the monitor
		// would not even greet a second connection.
		if a, err := os.Stat(opts.GuestAgent); err == nil {
			if q, err := os.Stat(opts.QMP); err == nil && os.SameFile(a, q) {
				return fmt.Errorf("%s: %w (it is the machine's --qmp socket)", opts.GuestAgent, guestagent.ErrQMPSocket)
			}
		}
		actx, cancel := context.WithTimeout(ctx, opts.FreezeTimeout)
		defer cancel()
		ga, err := guestagent.Dial(actx, opts.GuestAgent)
		if err != nil {
			return fmt.Errorf("guest agent: %w", err)
		}
		// The agent never thaws by itself: a watchdog process thaws the
		// guest if this one dies while it is frozen.
		var dog *quiesce.Watchdog
		if opts.Executable != "" {
			if dog, err = quiesce.StartWatchdog(opts.Executable, "__thaw-watchdog", "--timeout",
				(opts.FreezeTimeout + 5*time.Second).String(), "--guest-agent", opts.GuestAgent); err != nil {
				ga.Close()
				return err
			}
		}
		dog.Arm(GuestWatchdogItem)
		thaw, err := ga.Freeze(ctx, opts.FreezeTimeout)
		if err != nil {
			var refused *guestagent.Error
			if errors.As(err, &refused) {
				// The agent thawed what it froze, and a guest it found
				// frozen is someone else's: the watchdog leaves it be.
				dog.Disarm(GuestWatchdogItem)
			}
			ga.Close()
			if dog != nil {
				dog.Stop()
			}
			return err
		}
		undo = append([]func() error{func() error {
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(opts.FreezeTimeout, guestagent.DefaultTimeout))
			defer cancel()
			err := thaw(tctx)
			if err == nil {
				dog.Disarm(GuestWatchdogItem)
			}
			// The agent serves one client: let go of it before the
			// watchdog connects to thaw again.
			ga.Close()
			if dog != nil {
				err = errors.Join(err, dog.Stop())
			}
			return err
		}}, undo...)
		return nil
	}
	if err := freeze(); err != nil {
		notes = append(notes, fmt.Sprintf("asked for %s consistency, got crash: freezing the guest's filesystems: %v", opts.Consistency, err))
		got = recovery.Crash
	}
	return got, notes, func() error {
		var errs []error
		for _, f := range undo {
			if err := f(); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
}

// definitionOf describes the running machine for the point: CPUs, memory
// and disks. It returns nil for a machine without CPUs (a storage daemon):
// the backup then records a minimal definition.
func definitionOf(ctx context.Context, mon *qmp.Monitor, machine string, disks []liveDisk) json.RawMessage {
	d := map[string]any{"schema": recovery.DefinitionSchema, "name": machine}
	var cpus []json.RawMessage
	if mon.Execute(ctx, "query-cpus-fast", nil, &cpus) != nil || len(cpus) == 0 {
		return nil
	}
	d["cpus"] = len(cpus)
	var mem struct {
		Base int64 `json:"base-memory"`
	}
	if mon.Execute(ctx, "query-memory-size-summary", nil, &mem) != nil || mem.Base < 16<<20 {
		return nil
	}
	d["memory_mib"] = mem.Base >> 20
	var list []map[string]any
	for _, x := range disks {
		disk := map[string]any{"name": x.name, "size": x.Size}
		if bus := recovery.GuessBus(x.name); bus != "" {
			disk["bus"] = bus
		}
		if f := imageFormat(x.Driver); f == "raw" || f == "qcow2" {
			disk["format"] = f
		}
		list = append(list, disk)
	}
	d["disks"] = list
	out, _ := json.Marshal(d)
	return out
}

// bitmapPrefix starts the names of the bitmaps (QMP) and checkpoints
// (libvirt) lifeboat makes for vault v: two vaults protecting one machine
// each keep their own.
func bitmapPrefix(v *vault.Vault) string { return BitmapPrefix + v.Config().ID[:8] + "-" }

func randomSuffix() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// qemuDir is the working directory of the QEMU at the other end of mon,
// against which it resolves relative image names; "" if it cannot be told
// (QEMU on another host or in another PID namespace).
func qemuDir(mon *qmp.Monitor) string {
	pid, err := mon.PeerPID()
	if err != nil || pid <= 0 {
		return ""
	}
	dir, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return ""
	}
	return dir
}

// imagePath is the absolute path of the image QEMU has open for d: where
// an in-place restore of the stopped machine writes. It is "" when the
// image is no local file (NBD, json: pseudo-names) or is relative to a
// directory that cannot be told.
func imagePath(d qmp.Disk, qemuDir string) string {
	f := d.Filename
	switch {
	case f == "", strings.HasPrefix(f, "json:"), strings.Contains(f, "://"):
		return ""
	case filepath.IsAbs(f):
		return filepath.Clean(f)
	case qemuDir != "":
		return filepath.Join(qemuDir, f)
	}
	return ""
}

// imageFormat is the format a QEMU format driver stands for, or "" for
// filters and protocols.
func imageFormat(driver string) string {
	switch driver {
	case "raw", "qcow2", "qed", "vmdk", "vdi", "vhdx", "vpc":
		return driver
	}
	return ""
}

// named shows an NBD view under the machine's disk source.
type named struct {
	*nbd.Disk
	name string
}

func (n named) Source() string { return n.name }

// GuestWatchdogItem is what a guest watchdog is armed with: the backup
// arms it before it freezes the guest (quiesce.Watchdog).
const GuestWatchdogItem = "guest"

// GuestWatchdogMain is the guest's thaw watchdog (quiesce.RunWatchdog):
// armed, it thaws the guest through the agent at socket once the backup
// that froze it has gone.
func GuestWatchdogMain(ctx context.Context, stdin io.Reader, timeout time.Duration, socket string) error {
	return quiesce.RunWatchdog(ctx, stdin, timeout, func(ctx context.Context, _ string) error { return ThawGuest(ctx, socket) })
}

// ThawGuest thaws a guest's filesystems through its agent: what the thaw
// watchdog does once the backup that froze them has gone. The agent serves
// one client at a time, so it retries while the socket is busy.
func ThawGuest(ctx context.Context, socket string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*guestagent.DefaultTimeout)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		ga, err := guestagent.Dial(dctx, socket)
		dcancel()
		if err == nil {
			_, err = ga.ThawFilesystems(ctx)
			ga.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("thawing the guest through %s: %w", socket, last)
}
