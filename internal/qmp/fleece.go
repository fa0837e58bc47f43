package qmp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// FleeceNodePrefix starts the names of every node, job and export a fleecing
// session creates, so they can be told apart from the machine's own.
const FleeceNodePrefix = "lbfl-"

// TeardownTimeout bounds the teardown of a fleecing session. Teardown does
// not stop when the caller's context is cancelled: leaving half a session in
// a running QEMU is worse than taking a few more seconds.
const TeardownTimeout = 30 * time.Second

var (
	// ErrBitmapMissing: the previous bitmap is not on the disk (QEMU was
	// restarted and the bitmap was not persistent, or it was never stored).
	// The backup engine must fall back to a full backup.
	ErrBitmapMissing = errors.New("dirty bitmap not found")
	// ErrBitmapInconsistent: the previous bitmap is marked inconsistent
	// because QEMU did not shut down cleanly; it may have missed writes.
	// Remove it (BitmapRemove) and fall back to a full backup.
	ErrBitmapInconsistent = errors.New("dirty bitmap is inconsistent (QEMU was not shut down cleanly)")
	// ErrFleeceBroken: a fleecing job ended before the session did (for
	// example the overlay's file system filled up), so the export no longer
	// shows the point-in-time image. Whatever was read must be discarded.
	ErrFleeceBroken = errors.New("fleecing job ended early: the export is no longer the point-in-time image")
)

// FleeceDisk is one disk to fleece.
type FleeceDisk struct {
	// Node is the disk's top node (Disk.Node): the format node for qcow2.
	Node string
	// Export is the NBD export name; Node when empty.
	Export string
	// NewBitmap is added at the instant and records the writes after it,
	// for the next incremental backup. It is persistent when Node is qcow2.
	NewBitmap string
	// PrevBitmap, when set, is the bitmap added at the previous recovery
	// point. It is frozen at the instant and exported, so its dirty extents
	// are exactly what changed since then. Empty for a full backup.
	PrevBitmap string
	// Granularity of NewBitmap in bytes (0: QEMU's default).
	Granularity uint32
}

// FleeceOptions configure a fleecing session.
type FleeceOptions struct {
	// Dir holds the temporary overlays. QEMU creates them, so it must be on
	// QEMU's host and writable by QEMU; it needs room for every block the
	// guest overwrites while the session lasts.
	Dir string
	// Server is the address of QEMU's NBD server.
	Server SocketAddress
	// BeforeInstant, if set, runs right before the instant's transaction,
	// once everything else is ready: the place to quiesce the guest, so
	// that it stays quiesced for the transaction only. An error aborts.
	BeforeInstant func(context.Context) error
	// AfterInstant, if set, runs right after the transaction, whether it
	// succeeded or not, whenever BeforeInstant ran and succeeded.
	AfterInstant func()
	// InstantTimeout, if positive, bounds the transaction.
	InstantTimeout time.Duration
	// StartServer starts the NBD server at Server, and stops it at
	// teardown. When false, a server must already be running there.
	StartServer bool
}

// FleecedDisk is one disk of a running session.
type FleecedDisk struct {
	FleeceDisk
	Size        int64  // virtual size in bytes
	Persistent  bool   // NewBitmap is stored in the image
	URI         string // NBD URI of the read-only export
	Overlay     string // temporary qcow2 node, backed by Node
	OverlayFile string // its file, in FleeceOptions.Dir
	JobID       string // the blockdev-backup sync=none job

	// What exists, for teardown.
	fileCreated, fileNode, overlayNode, job, export bool
}

// FleeceSession is a point-in-time image of one or more disks, served
// read-only over NBD while the guest keeps writing. End it with Commit
// (backup succeeded) or Close (anything else); Close after Commit is a no-op.
type FleeceSession struct {
	Disks  []FleecedDisk
	Server SocketAddress

	mon           *Monitor
	serverStarted bool
	switched      bool // the transaction ran: bitmaps were switched, jobs started

	mu   sync.Mutex
	done bool
}

// Fleece takes a point-in-time image of the disks and exports each over NBD
// with the frozen previous bitmap attached. See the package documentation
// for the recipe. On error nothing it did is left behind.
func Fleece(ctx context.Context, mon *Monitor, disks []FleeceDisk, opts FleeceOptions) (*FleeceSession, error) {
	s := &FleeceSession{mon: mon, Server: opts.Server}
	if err := s.start(ctx, disks, opts); err != nil {
		if terr := s.teardown(ctx, false); terr != nil {
			err = errors.Join(err, fmt.Errorf("undoing the partial fleecing session: %w", terr))
		}
		return nil, fmt.Errorf("fleecing: %w", err)
	}
	return s, nil
}

func (s *FleeceSession) start(ctx context.Context, disks []FleeceDisk, opts FleeceOptions) error {
	if len(disks) == 0 {
		return errors.New("no disks given")
	}
	if opts.Dir == "" {
		return errors.New("no directory for the temporary overlays (FleeceOptions.Dir)")
	}
	if _, err := opts.Server.legacy(); err != nil {
		return fmt.Errorf("NBD server address: %w", err)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return fmt.Errorf("overlay directory: %w", err)
	}
	nodes, err := s.mon.QueryNamedBlockNodes(ctx)
	if err != nil {
		return err
	}
	byName := make(map[string]BlockNode, len(nodes))
	for _, n := range nodes {
		byName[n.NodeName] = n
	}
	var tok [4]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return fmt.Errorf("session id: %w", err)
	}
	session := FleeceNodePrefix + hex.EncodeToString(tok[:])

	seen := make(map[string]bool)
	for i, d := range disks {
		if d.Node == "" || d.NewBitmap == "" {
			return fmt.Errorf("disk %d: node and new bitmap names are required", i)
		}
		if seen[d.Node] {
			return fmt.Errorf("disk %s given twice", d.Node)
		}
		seen[d.Node] = true
		if d.NewBitmap == d.PrevBitmap {
			return fmt.Errorf("disk %s: new and previous bitmap are both %q", d.Node, d.NewBitmap)
		}
		n, ok := byName[d.Node]
		if !ok {
			return fmt.Errorf("disk %s: no block node of that name", d.Node)
		}
		if _, ok := n.Bitmap(d.NewBitmap); ok {
			return fmt.Errorf("disk %s: bitmap %q already exists", d.Node, d.NewBitmap)
		}
		if d.PrevBitmap != "" {
			b, ok := n.Bitmap(d.PrevBitmap)
			if !ok {
				return fmt.Errorf("disk %s: bitmap %q: %w", d.Node, d.PrevBitmap, ErrBitmapMissing)
			}
			if b.Inconsistent {
				return fmt.Errorf("disk %s: bitmap %q: %w", d.Node, d.PrevBitmap, ErrBitmapInconsistent)
			}
		}
		if d.Export == "" {
			d.Export = d.Node
		}
		overlay := fmt.Sprintf("%s-%d", session, i)
		s.Disks = append(s.Disks, FleecedDisk{
			FleeceDisk:  d,
			Size:        n.Image.VirtualSize,
			Persistent:  n.Driver == "qcow2",
			URI:         opts.Server.URI(d.Export),
			Overlay:     overlay,
			OverlayFile: filepath.Join(dir, overlay+".qcow2"),
			JobID:       overlay,
		})
	}

	if opts.StartServer {
		if err := s.mon.NBDServerStart(ctx, opts.Server); err != nil {
			return err
		}
		s.serverStarted = true
	}

	// The overlays: an empty qcow2 of the disk's size, backed by the disk.
	for i := range s.Disks {
		d := &s.Disks[i]
		fileNode := d.Overlay + "-f"
		d.fileCreated = true // set first: a failed create may leave the file
		if err := s.mon.BlockdevCreate(ctx, d.Overlay+"-c1", map[string]any{
			"driver": "file", "filename": d.OverlayFile, "size": 0,
		}); err != nil {
			return fmt.Errorf("disk %s: creating overlay file %s: %w", d.Node, d.OverlayFile, err)
		}
		// The overlay lives for one backup and is thrown away after it,
		// or by the next backup if this one dies: syncing it (formatting
		// it, and at each guest flush while the backup runs) buys nothing.
		if err := s.mon.BlockdevAdd(ctx, map[string]any{
			"driver": "file", "node-name": fileNode, "filename": d.OverlayFile,
			"cache": map[string]any{"no-flush": true},
		}); err != nil {
			return fmt.Errorf("disk %s: opening overlay file %s: %w", d.Node, d.OverlayFile, err)
		}
		d.fileNode = true
		if err := s.mon.BlockdevCreate(ctx, d.Overlay+"-c2", map[string]any{
			"driver": "qcow2", "file": fileNode, "size": d.Size,
		}); err != nil {
			return fmt.Errorf("disk %s: formatting overlay %s: %w", d.Node, d.OverlayFile, err)
		}
		if err := s.mon.BlockdevAdd(ctx, map[string]any{
			"driver": "qcow2", "node-name": d.Overlay, "file": fileNode, "backing": d.Node,
		}); err != nil {
			return fmt.Errorf("disk %s: adding overlay node: %w", d.Node, err)
		}
		d.overlayNode = true
	}

	// The instant, for all disks at once.
	var actions []Action
	for _, d := range s.Disks {
		actions = append(actions, BitmapAdd(d.Node, d.NewBitmap, BitmapAddOptions{
			Persistent: d.Persistent, Granularity: d.Granularity,
		}))
		if d.PrevBitmap != "" {
			actions = append(actions, BitmapDisable(d.Node, d.PrevBitmap))
		}
		actions = append(actions, BlockdevBackup(BackupOptions{
			JobID: d.JobID, Device: d.Node, Target: d.Overlay, Sync: "none",
		}))
	}
	if opts.BeforeInstant != nil {
		if err := opts.BeforeInstant(ctx); err != nil {
			return err
		}
	}
	tctx := ctx
	if opts.InstantTimeout > 0 {
		var cancel context.CancelFunc
		tctx, cancel = context.WithTimeout(ctx, opts.InstantTimeout)
		defer cancel()
	}
	err = s.mon.Transaction(tctx, actions...)
	if opts.AfterInstant != nil {
		opts.AfterInstant()
	}
	if err != nil {
		return err
	}
	s.switched = true
	for i := range s.Disks {
		s.Disks[i].job = true
	}

	for i := range s.Disks {
		d := &s.Disks[i]
		o := ExportOptions{ID: d.Overlay, NodeName: d.Overlay, Name: d.Export}
		if d.PrevBitmap != "" {
			o.Bitmaps = []string{d.PrevBitmap}
		}
		if err := s.mon.BlockExportAdd(ctx, o); err != nil {
			return fmt.Errorf("disk %s: %w", d.Node, err)
		}
		d.export = true
	}
	return nil
}

// Check verifies that every fleecing job is still running, i.e. that the
// exports still show the point-in-time image. It fails with ErrFleeceBroken
// otherwise.
func (s *FleeceSession) Check(ctx context.Context) error {
	jobs, err := s.mon.QueryJobs(ctx)
	if err != nil {
		return fmt.Errorf("checking fleecing jobs: %w", err)
	}
	status := make(map[string]JobInfo, len(jobs))
	for _, j := range jobs {
		status[j.ID] = j
	}
	for _, d := range s.Disks {
		j, ok := status[d.JobID]
		switch {
		case !ok:
			return fmt.Errorf("disk %s: job %s is gone: %w", d.Node, d.JobID, ErrFleeceBroken)
		case j.Status != "running" && j.Status != "paused":
			return fmt.Errorf("disk %s: job %s is %s (%s): %w", d.Node, d.JobID, j.Status, j.Error, ErrFleeceBroken)
		}
	}
	return nil
}

// Commit ends a session whose data was read successfully: it checks the
// jobs were running all along (else ErrFleeceBroken and Close's rollback),
// tears everything down and removes the previous bitmaps. The new bitmaps
// stay, recording. Teardown runs even if ctx is cancelled.
func (s *FleeceSession) Commit(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return errors.New("fleecing session already ended")
	}
	s.done = true
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), TeardownTimeout)
	defer cancel()
	if err := s.Check(tctx); err != nil {
		if terr := s.teardown(ctx, false); terr != nil {
			err = errors.Join(err, terr)
		}
		return fmt.Errorf("committing fleecing session: %w", err)
	}
	if err := s.teardown(ctx, true); err != nil {
		return fmt.Errorf("committing fleecing session: %w", err)
	}
	return nil
}

// Close ends the session, unless Commit already did, and rolls the bitmaps
// back: the new bitmap's changes are merged into the previous one, which
// records again, and the new one is removed — so the next backup still sees
// every change since the previous recovery point. Without a previous bitmap
// the new one is just removed. Teardown runs even if ctx is cancelled.
func (s *FleeceSession) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return nil
	}
	s.done = true
	if err := s.teardown(ctx, false); err != nil {
		return fmt.Errorf("closing fleecing session: %w", err)
	}
	return nil
}

// teardown removes everything the session created, in reverse order, and
// settles the bitmaps: commit removes the previous ones, otherwise they are
// rolled back. It ignores ctx's cancellation (not its values), is bounded by
// TeardownTimeout, and carries on past errors, reporting them all.
func (s *FleeceSession) teardown(ctx context.Context, commit bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), TeardownTimeout)
	defer cancel()
	var errs []error
	for i := range s.Disks {
		d := &s.Disks[i]
		if d.export {
			if err := s.mon.BlockExportDel(ctx, d.Overlay, true); err != nil {
				errs = append(errs, fmt.Errorf("disk %s: %w", d.Node, err))
			} else {
				d.export = false
			}
		}
	}
	for i := range s.Disks {
		d := &s.Disks[i]
		if d.job {
			if err := s.cancelJob(ctx, d.JobID); err != nil {
				errs = append(errs, fmt.Errorf("disk %s: %w", d.Node, err))
			} else {
				d.job = false
			}
		}
	}
	for i := range s.Disks {
		d := &s.Disks[i]
		if d.overlayNode && !d.job {
			if err := s.mon.BlockdevDel(ctx, d.Overlay); err != nil {
				errs = append(errs, fmt.Errorf("disk %s: removing overlay node %s: %w", d.Node, d.Overlay, err))
			} else {
				d.overlayNode = false
			}
		}
		if d.fileNode && !d.overlayNode {
			if err := s.mon.BlockdevDel(ctx, d.Overlay+"-f"); err != nil {
				errs = append(errs, fmt.Errorf("disk %s: removing overlay file node: %w", d.Node, err))
			} else {
				d.fileNode = false
			}
		}
		if d.fileCreated && !d.fileNode {
			if err := os.Remove(d.OverlayFile); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("disk %s: removing overlay file: %w", d.Node, err))
			} else {
				d.fileCreated = false
			}
		}
	}
	if s.serverStarted {
		if err := s.mon.NBDServerStop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping NBD server: %w", err))
		} else {
			s.serverStarted = false
		}
	}
	if s.switched {
		var actions []Action
		for _, d := range s.Disks {
			switch {
			case commit && d.PrevBitmap != "":
				actions = append(actions, BitmapRemove(d.Node, d.PrevBitmap))
			case !commit && d.PrevBitmap != "":
				actions = append(actions,
					BitmapMerge(d.Node, d.PrevBitmap, d.NewBitmap),
					BitmapEnable(d.Node, d.PrevBitmap),
					BitmapRemove(d.Node, d.NewBitmap))
			case !commit:
				actions = append(actions, BitmapRemove(d.Node, d.NewBitmap))
			}
		}
		if len(actions) > 0 {
			what := "removing the previous bitmaps"
			if !commit {
				what = "rolling the bitmaps back"
			}
			if err := s.mon.Transaction(ctx, actions...); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", what, err))
			} else {
				s.switched = false
			}
		}
	}
	return errors.Join(errs...)
}

// cancelJob cancels a fleecing job; a job that already ended is not an error
// here (Check is where that matters).
func (s *FleeceSession) cancelJob(ctx context.Context, id string) error {
	err := s.mon.BlockJobCancel(ctx, id, true)
	if err == nil {
		return nil
	}
	jobs, qerr := s.mon.QueryJobs(ctx)
	if qerr != nil {
		return errors.Join(err, qerr)
	}
	for _, j := range jobs {
		if j.ID == id {
			if j.Status == "concluded" {
				return s.mon.JobDismiss(ctx, id)
			}
			return err
		}
	}
	return nil // gone
}

// RemoveStaleFleecing removes what fleecing sessions left in QEMU when the
// process running them died before teardown: exports, jobs and nodes whose
// names start with FleeceNodePrefix, and overlay files of that prefix in
// dir (skipped when dir is empty). Left alone, such a job would keep
// copying every guest write's old data into its overlay. It does not touch
// bitmaps: the engine knows which of them belong to committed points.
// Call it after Dial, before fleecing anew.
func RemoveStaleFleecing(ctx context.Context, mon *Monitor, dir string) error {
	var errs []error
	exps, err := mon.QueryBlockExports(ctx)
	if err != nil {
		return fmt.Errorf("removing stale fleecing: %w", err)
	}
	for _, e := range exps {
		if strings.HasPrefix(e.ID, FleeceNodePrefix) {
			if err := mon.BlockExportDel(ctx, e.ID, true); err != nil {
				errs = append(errs, err)
			}
		}
	}
	jobs, err := mon.QueryJobs(ctx)
	if err != nil {
		return fmt.Errorf("removing stale fleecing: %w", err)
	}
	for _, j := range jobs {
		if !strings.HasPrefix(j.ID, FleeceNodePrefix) {
			continue
		}
		var err error
		if j.Status == "concluded" {
			err = mon.JobDismiss(ctx, j.ID)
		} else if j.Type == "backup" {
			err = mon.BlockJobCancel(ctx, j.ID, true)
		} else {
			err = fmt.Errorf("job %s (%s) is %s; leaving it", j.ID, j.Type, j.Status)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	nodes, err := mon.QueryNamedBlockNodes(ctx)
	if err != nil {
		return fmt.Errorf("removing stale fleecing: %w", err)
	}
	// Overlays before the file nodes under them.
	for _, fileNodes := range []bool{false, true} {
		for _, n := range nodes {
			if strings.HasPrefix(n.NodeName, FleeceNodePrefix) && strings.HasSuffix(n.NodeName, "-f") == fileNodes {
				if err := mon.BlockdevDel(ctx, n.NodeName); err != nil {
					errs = append(errs, fmt.Errorf("removing stale node %s: %w", n.NodeName, err))
				}
			}
		}
	}
	if dir != "" && len(errs) == 0 {
		files, err := filepath.Glob(filepath.Join(dir, FleeceNodePrefix+"*.qcow2"))
		if err != nil {
			errs = append(errs, err)
		}
		for _, f := range files {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing stale fleecing: %w", err)
	}
	return nil
}
