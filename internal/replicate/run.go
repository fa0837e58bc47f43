package replicate

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"lifeboat/internal/clock"
	"lifeboat/internal/live"
	"lifeboat/internal/nbd"
	"lifeboat/internal/qmp"
	"lifeboat/internal/replica"
	"lifeboat/internal/source"
)

// BitmapPrefix starts the dirty bitmaps replication adds (live backups use
// live.BitmapPrefix: the two never touch each other's).
const BitmapPrefix = "lbrep-"

// State is what a runner keeps between cycles and across restarts
// (state/NAME.json): the bitmap recording the writes since the last cut
// the target acknowledged.
type State struct {
	Bitmap  string             `json:"bitmap"`
	Acked   uint64             `json:"acked"`
	Cut     time.Time          `json:"cut"`
	AppCut  time.Time          `json:"app_cut,omitzero"`
	Disks   []replica.DiskSpec `json:"disks"`
	Synced  bool               `json:"synced"` // an initial sync completed once
	Resyncs int                `json:"resyncs"`
}

// Runner replicates one machine until its context ends. Each cycle:
//
//  1. One QMP transaction over every disk is the consistent cut: it adds
//     the next dirty bitmap, freezes the current one and starts a
//     point-in-time view of each disk (qmp.Fleece) — so every cut is
//     crash-consistent across the machine's disks. When an app-consistent
//     point is due, the guest is frozen through its agent around the
//     transaction only.
//  2. The frozen bitmap's extents (all data extents, and zeros for the
//     rest, on the first cycle or a resync) are read from the view over
//     NBD and streamed to the target as one batch.
//  3. Once the target acknowledges the batch (it is durable there), the
//     new bitmap is recorded as current, then the frozen one is dropped;
//     if anything fails before, the bitmaps are merged back, so the next
//     cycle still sends every write since the last acknowledged cut.
//
// A bitmap that is gone or inconsistent (QEMU restarted), or a target that
// holds less than the runner last had acknowledged, makes the next cycle a
// full resync; status says so.
type Runner struct {
	Config  *Config
	Machine Machine
	Clock   clock.Clock
	Log     *slog.Logger
	// Dir holds the temporary overlays and QEMU's NBD socket; it must be
	// writable by QEMU (default: a directory under os.TempDir()). In the
	// template of RunMachines or Supervise it is the parent of one
	// directory per machine.
	Dir string
	// Executable is lifeboat's own binary, run as the watchdog that thaws
	// the guest if this process dies while it is frozen ("" runs none).
	Executable string
	// StallTimeout is how long shipping a cut may make no progress before
	// it is abandoned and retried (DefaultStallTimeout when 0).
	StallTimeout time.Duration

	client     *Client
	registered bool
	status     Status
	lastProg   time.Time
	lastAppTry time.Time
	// group, when set, is the group cut this cycle takes its share of.
	group    *groupCut
	groupIdx int
	// mirror is the running mirror capture (Machine.Capture "mirror");
	// after mirrorFails failures in a row it starts again at mirrorRetryAt.
	mirror        *mirrorSession
	mirrorFails   int
	mirrorRetryAt time.Time
	// marks are the verdicts on the group cut markers in the journal
	// (mirror capture in a group); starving, when set, says why the
	// group's cuts starve: the saved status shows it as an error.
	marks    *groupMarks
	starving string
	// cannotPause says why the machine cannot be paused for a paused
	// group cut (no vCPUs: qemu-storage-daemon).
	cannotPause string
}

func (r *Runner) init() error {
	if r.Clock == nil {
		r.Clock = clock.Real{}
	}
	if r.Log == nil {
		r.Log = slog.New(slog.DiscardHandler)
	}
	if r.Dir == "" {
		r.Dir = filepath.Join(os.TempDir(), "lifeboat-repl-"+r.Machine.Name)
	}
	if err := os.MkdirAll(r.Dir, 0o700); err != nil {
		return fmt.Errorf("replication directory: %w", err)
	}
	site, err := r.Config.Site(r.Machine.Target)
	if err != nil {
		return err
	}
	if r.client, err = Dial(site); err != nil {
		return err
	}
	// A site that does not answer a status within the stall timeout is
	// as unreachable as one whose shipping stalls.
	r.client.Timeout = min(RequestTimeout, r.stallTimeout())
	// And a link that stops carrying anything is cut within it, even while
	// a shipped batch's reply is awaited (watchStall allows the site ten
	// times as long to check and store it).
	r.client.LinkTimeout = r.stallTimeout()
	r.status = Status{Machine: r.Machine.Name, Target: r.Machine.Target, Group: r.Machine.Group, State: StateStarting, PID: os.Getpid(), Capture: CaptureBitmap}
	var st State
	if r.Config.get("state", r.Machine.Name, &st) == nil {
		r.status.LastSeq = st.Acked
		if !st.Cut.IsZero() {
			c := st.Cut
			r.status.LastCut = &c
		}
		if !st.AppCut.IsZero() {
			c := st.AppCut
			r.status.LastAppCut = &c
		}
	}
	return nil
}

// Run replicates until ctx ends; failures are reported in the status and
// retried every cycle. It returns an error only when it cannot start.
func (r *Runner) Run(ctx context.Context) error {
	if err := r.init(); err != nil {
		return err
	}
	r.saveStatus()
	// A mirror must not outlive its receiver: stopped with the runner.
	defer r.stopMirror(ctx)
	for {
		start := r.Clock.Now()
		if r.pausedNow() {
			r.holdPaused(ctx, true)
		} else {
			r.leavePause()
			r.step(ctx)
		}
		if ctx.Err() != nil {
			return nil
		}
		// Cuts start every Every: a slow cycle is followed at once.
		t := time.NewTimer(max(0, r.Machine.every()-r.Clock.Now().Sub(start)))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// step runs one cycle and records its outcome in the status.
func (r *Runner) step(ctx context.Context) error {
	start := r.Clock.Now()
	var err error
	if r.Machine.capture() == CaptureMirror && r.group == nil {
		err = r.mirrorCycle(ctx)
	} else {
		err = r.Cycle(ctx)
	}
	if ctx.Err() != nil {
		return err
	}
	r.status.LastCycleSeconds = r.Clock.Now().Sub(start).Seconds()
	if err != nil {
		if errors.Is(err, ErrGroupMoved) {
			r.Log.Debug("group cut dropped, retried", "machine", r.Machine.Name, "err", err)
		} else {
			r.Log.Warn("replication cycle failed", "machine", r.Machine.Name, "err", err)
		}
		r.status.Error = err.Error()
		if siteCode(err) == "failed_over" {
			r.status.State = StateFailedOver
		} else if errors.Is(err, ErrGroupMoved) || errors.Is(err, errQMPBusy) {
			// Not a failure: the group cut is taken again, or the cycle
			// waits for QEMU's monitor; the lag tells how long ago the
			// last cut was.
		} else if r.status.State != StateInitialSync && r.status.State != StateResyncing {
			r.status.State = StateError
		}
	}
	r.saveStatus()
	return err
}

// Cycle takes one cut and ships it. Run calls it in a loop;
// PlannedFailover calls it to drain the last writes.
func (r *Runner) Cycle(ctx context.Context) error {
	if r.client == nil {
		if err := r.init(); err != nil {
			return err
		}
	}
	name := r.Machine.Name
	// The target first: a machine failed over there is not touched (its
	// source QEMU may well be gone).
	target, err := r.client.Status(ctx, name)
	switch {
	case err == nil:
		r.status.FailoverExports = failoverExports(target.FailedOver)
		for _, fo := range target.FailedOver {
			if !fo.Test {
				r.status.State, r.status.Error = StateFailedOver, ""
				return nil
			}
		}
	case siteCode(err) == "not_found":
		r.registered = false
	default:
		return err
	}
	// QEMU serves one QMP client at a time: the monitor is held for the
	// cycle only, so a live backup of the machine can run between cycles.
	mon, err := r.dialQMP(ctx)
	if err != nil {
		return err
	}
	defer mon.Close()
	// A killed runner's mirror first: its target node is a fleecing node
	// in use until the job is gone.
	if err := r.settleStaleMirror(ctx, mon); err != nil {
		return err
	}
	// Whoever held the monitor before has finished: fleecing nodes left
	// in QEMU are a killed cycle's (or a killed backup's).
	if err := qmp.RemoveStaleFleecing(ctx, mon, r.Dir); err != nil {
		return err
	}
	disks, err := live.MachineDisks(ctx, mon)
	if err != nil {
		return fmt.Errorf("listing the disks of %s: %w", name, err)
	}
	specs := make([]replica.DiskSpec, len(disks))
	for i, d := range disks {
		specs[i] = replica.DiskSpec{Name: d.Name, Size: d.Size}
	}
	if !r.registered {
		def := r.Machine.Definition
		if len(def) == 0 {
			def = live.MachineDefinition(ctx, mon, name, disks)
		}
		target, err = r.client.Register(ctx, replica.Spec{Machine: name, Definition: def, Disks: specs, Policy: r.Machine.Policy, Seed: r.Machine.Seed,
			Group: r.Machine.Group})
		if err != nil {
			return fmt.Errorf("registering %s at %s: %w", name, r.Machine.Target, err)
		}
		r.registered = true
	}
	r.status.JournalBytes, r.status.Points = target.JournalBytes, len(target.Points)

	var st State
	if err := r.Config.get("state", name, &st); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	usable, why := judge(name, st, target.LastSeq, specs, disks)
	// Leftover bitmaps (a cycle killed between the target's ack and the
	// commit) are merged into the current one: sending a block twice is
	// harmless, missing one is not. Without a usable bitmap they all go.
	for _, d := range disks {
		var actions []qmp.Action
		var stale []string
		for _, b := range d.Bitmaps {
			if strings.HasPrefix(b.Name, BitmapPrefix+name+"-") && (!usable || b.Name != st.Bitmap) {
				stale = append(stale, b.Name)
			}
		}
		if usable && len(stale) > 0 {
			actions = append(actions, qmp.BitmapMerge(d.Node, st.Bitmap, stale...))
			if b, _ := d.Bitmap(st.Bitmap); !b.Recording {
				actions = append(actions, qmp.BitmapEnable(d.Node, st.Bitmap))
			}
		}
		for _, b := range stale {
			actions = append(actions, qmp.BitmapRemove(d.Node, b))
		}
		if len(actions) > 0 {
			if err := mon.Transaction(ctx, actions...); err != nil {
				return fmt.Errorf("disk %s: settling leftover bitmaps: %w", d.Name, err)
			}
		}
	}
	full := !usable
	switch {
	case full && !st.Synced:
		r.status.State = StateInitialSync
	case full:
		r.status.State = StateResyncing
		r.status.Error = why
		r.Log.Warn("resyncing", "machine", name, "why", why)
	}
	// A resync against a replica that holds the same disks sends only the
	// blocks whose hashes differ from its latest cut. Asked before the
	// cut, so the guest does not pay for the view while the site hashes.
	var diff *replica.Hashes
	if full && target.LastSeq > 0 && replica.SameDisks(target.Disks, specs) {
		h, err := r.client.Hashes(ctx, name)
		switch {
		case err != nil:
			r.Log.Warn("resyncing without the site's hashes: sending every block", "machine", name, "err", err)
		case h.Seq == target.LastSeq && replica.SameDisks(h.Specs, specs) && validHashes(h, specs):
			diff = h
		}
	}

	seq := target.LastSeq + 1
	newBitmap := fmt.Sprintf("%s%s-%d-%s", BitmapPrefix, name, seq, randomHex())
	fdisks := make([]qmp.FleeceDisk, len(disks))
	for i, d := range disks {
		fdisks[i] = qmp.FleeceDisk{Node: d.Node, Export: qmp.FleeceNodePrefix + "r-" + d.Name, NewBitmap: newBitmap,
			Granularity: granularity(d.Size)}
		if usable {
			fdisks[i].PrevBitmap = st.Bitmap
		}
	}
	server, startServer, err := r.nbdServer(ctx, mon)
	if err != nil {
		return err
	}
	app := false
	// An app-consistent cut is due once the interval passed since the last
	// one, and since the last attempt (a guest whose agent does not answer
	// is not made to wait for it every cycle).
	now := r.Clock.Now()
	wantApp := r.Machine.Policy.AppInterval > 0 && now.Sub(st.AppCut) >= r.Machine.Policy.AppInterval &&
		now.Sub(r.lastAppTry) >= r.Machine.Policy.AppInterval
	if wantApp {
		r.lastAppTry = now
	}
	var cut time.Time
	var undo func() error
	var resume func() // ends a paused group cut's pause
	sess, err := qmp.Fleece(ctx, mon, fdisks, qmp.FleeceOptions{Dir: r.Dir, Server: server,
		StartServer: startServer, InstantTimeout: 30 * time.Second,
		BeforeInstant: func(ctx context.Context) error {
			if wantApp {
				app, undo = r.quiesceForCut(ctx)
			}
			if r.group != nil {
				// Frozen first (when app-consistent), then every member
				// ready before the first instant: the window between the
				// members' instants is their transactions only. A paused
				// cut pauses the guest once every member is ready.
				err := r.group.arrive(ctx, r.groupIdx)
				if err == nil && r.group.pause {
					resume = r.pauseForCut(ctx, mon)
				}
				t0, err := r.group.take(ctx, r.groupIdx, err)
				if err != nil {
					if undo != nil {
						undo()
					}
					return err
				}
				cut = t0 // every member's cut is the group's instant
				return nil
			}
			// Read before the instant, so a cut's time never claims
			// writes the cut does not hold.
			cut = r.Clock.Now()
			return nil
		},
		AfterInstant: func() {
			if r.group != nil {
				r.group.after(r.groupIdx)
			}
			if undo != nil {
				if err := undo(); err != nil {
					r.Log.Warn("thawing the guest", "machine", name, "err", err)
				}
			}
		}})
	if resume != nil {
		// Paused until the last member's instant, and past this member's
		// check that it wrote nothing since its own (or the pause's limit).
		defer resume()
		if err != nil || r.groupIdx == r.group.n-1 {
			r.group.waitCut(ctx)
			resume()
		}
	}
	if err != nil {
		return fmt.Errorf("taking the cut of %s: %w", name, err)
	}
	defer sess.Close(context.WithoutCancel(ctx)) // rolls the bitmaps back unless committed
	cons := "crash"
	if app {
		cons = "app" // the guest's filesystems were frozen at the cut (the pre-hook ran)
	}
	h := replica.Header{Seq: seq, Cut: cut, Consistency: cons, Full: full && diff == nil}
	if r.group != nil {
		// The group's verdict before anything ships: a member that wrote
		// since its instant makes every member drop this cut.
		err := r.group.settle(ctx, r.groupIdx, name, func(ctx context.Context) (bool, error) {
			// Read on the disks' own nodes: a device's inserted node is
			// the fleecing filter now (query-block would not show it).
			nodes, err := mon.QueryNamedBlockNodes(ctx)
			if err != nil {
				return false, fmt.Errorf("checking the cut of %s: %w", name, err)
			}
			byName := make(map[string]qmp.BlockNode, len(nodes))
			for _, n := range nodes {
				byName[n.NodeName] = n
			}
			for _, d := range disks {
				if b, ok := byName[d.Node].Bitmap(newBitmap); !ok || b.Count != 0 {
					return false, nil
				}
			}
			if resume != nil {
				resume()
			}
			return true, nil
		})
		if err != nil {
			return err
		}
		h.Group, h.GroupCut = r.Machine.Group, cut.UnixNano()
	}

	n, err := r.send(ctx, seq, func(ctx context.Context, w io.Writer) error {
		if diff != nil {
			return r.writeDiff(ctx, sess, h, diff, w)
		}
		return r.writeBatch(ctx, sess, h, w)
	})
	if err != nil {
		return fmt.Errorf("shipping cut %d of %s: %w", seq, name, err)
	}
	// Acknowledged: the new bitmap is the current one from now on.
	st = State{Bitmap: newBitmap, Acked: seq, Cut: cut, AppCut: st.AppCut, Disks: specs, Synced: true, Resyncs: st.Resyncs}
	if full && r.status.State == StateResyncing {
		st.Resyncs++
	}
	if cons == "app" {
		st.AppCut = cut
		c := cut
		r.status.LastAppCut = &c
	}
	if err := r.Config.put("state", name, st); err != nil {
		return err
	}
	if err := sess.Commit(context.WithoutCancel(ctx)); err != nil {
		r.Log.Warn("tearing down the cut's view", "machine", name, "err", err)
	}
	r.status.State, r.status.Error, r.status.Progress = StateProtected, "", nil
	r.status.LastSeq, r.status.LastCut, r.status.LastBatchBytes = seq, &cut, n
	if h.GroupCut != 0 {
		r.status.LastGroupCut, r.starving = &cut, "" // the group's cuts go on
	}
	r.status.Resyncs = st.Resyncs
	if full && st.Resyncs > 0 {
		r.status.LastResyncBytes = n
	}
	return nil
}

// send streams batch seq, written by write, to the target, compressed,
// and returns once the target acknowledged it (it is durable there), with
// the bytes sent. A send that makes no progress for the stall timeout is
// abandoned (ErrStalled).
func (r *Runner) send(ctx context.Context, seq uint64, write func(context.Context, io.Writer) error) (int64, error) {
	pr, pw := io.Pipe()
	sent := &countWriter{w: pw}
	done := make(chan error, 1)
	sctx, scancel := context.WithCancelCause(ctx)
	defer scancel(nil)
	go func() {
		// Compressed on the wire (zstd, fastest): the site stores batches
		// as they are, for random reads when it applies them.
		enc, err := zstd.NewWriter(sent, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		if err == nil {
			err = write(sctx, enc)
			if cerr := enc.Close(); err == nil {
				err = cerr
			}
		}
		pw.CloseWithError(err)
		done <- err
	}()
	go watchStall(sctx, scancel, r.stallTimeout(), sent, done)
	err := r.client.Send(sctx, r.Machine.Name, seq, pr)
	pr.CloseWithError(errors.New("the target stopped reading"))
	werr := <-done
	if cause := context.Cause(sctx); errors.Is(cause, ErrStalled) {
		err = errors.Join(err, cause)
	}
	if werr != nil && (err == nil || errors.Is(err, ErrSite)) {
		err = errors.Join(err, werr)
	}
	return sent.n.Load(), err
}

// nbdServer is where QEMU serves lifeboat's views of the disks: the NBD
// server the machine's owner runs (Machine.NBDServer), or one lifeboat
// starts (start) once nobody else uses QEMU's one NBD server.
func (r *Runner) nbdServer(ctx context.Context, mon *qmp.Monitor) (addr qmp.SocketAddress, start bool, err error) {
	if path, ok := strings.CutPrefix(r.Machine.NBDServer, "unix:"); ok {
		return qmp.UnixSocket(path), false, nil
	}
	if err := live.ClaimNBDServer(ctx, mon); err != nil {
		return qmp.SocketAddress{}, false, err
	}
	return qmp.UnixSocket(filepath.Join(r.Dir, "nbd.sock")), true, nil
}

// validHashes checks the site sent one hash per block of every disk.
func validHashes(h *replica.Hashes, specs []replica.DiskSpec) bool {
	if h.Block != replica.HashBlock || len(h.Disks) != len(specs) {
		return false
	}
	for i, d := range specs {
		if int64(len(h.Disks[i])) != (d.Size+h.Block-1)/h.Block*32 {
			return false
		}
	}
	return true
}

// writeDiff reads every block of the cut's view and sends those whose hash
// differs from the site's latest cut: the batch turns that cut into this one.
func (r *Runner) writeDiff(ctx context.Context, sess *qmp.FleeceSession, h replica.Header, diff *replica.Hashes, w io.Writer) error {
	bw, err := replica.NewBatchWriter(w, h)
	if err != nil {
		return err
	}
	var total, done int64
	for _, d := range sess.Disks {
		total += d.Size
	}
	buf := make([]byte, diff.Block)
	for i, fd := range sess.Disks {
		nd, err := nbd.OpenDisk(ctx, fd.URI)
		if err != nil {
			return fmt.Errorf("disk %s: reading the cut's view: %w", fd.Node, err)
		}
		defer nd.Close()
		for k, off := 0, int64(0); off < nd.Size(); k, off = k+1, off+diff.Block {
			n := min(diff.Block, nd.Size()-off)
			if _, err := nd.ReadAtContext(ctx, buf[:n], off); err != nil {
				return fmt.Errorf("disk %s: reading %d bytes at %d: %w", fd.Node, n, off, err)
			}
			if sum := replica.BlockHash(buf[:n]); !bytes.Equal(sum[:], diff.Disks[i][k*32:k*32+32]) {
				if err := bw.Data(i, off, buf[:n]); err != nil {
					return err
				}
			}
			done += n
			r.progress(done, total)
		}
	}
	if err := sess.Check(ctx); err != nil {
		return err
	}
	return bw.Close()
}

// judge says whether the state's bitmap still records every write since
// the last acknowledged cut, and if not why.
func judge(machine string, st State, targetSeq uint64, specs []replica.DiskSpec, disks []live.MachineDisk) (bool, string) {
	switch {
	case st.Bitmap == "" || st.Acked == 0:
		return false, "no cut acknowledged yet"
	case targetSeq < st.Acked:
		return false, fmt.Sprintf("the target holds cut %d, older than the acknowledged %d (its replica was reset)", targetSeq, st.Acked)
	case len(specs) != len(st.Disks):
		return false, "the machine's disks changed"
	}
	for i, s := range specs {
		if s != st.Disks[i] {
			return false, fmt.Sprintf("disk %s changed (was %s of %d bytes, now %d)", s.Name, st.Disks[i].Name, st.Disks[i].Size, s.Size)
		}
		b, ok := disks[i].Bitmap(st.Bitmap)
		switch {
		case !ok:
			return false, fmt.Sprintf("disk %s: its change-tracking bitmap is gone (QEMU restarted)", s.Name)
		case b.Inconsistent:
			return false, fmt.Sprintf("disk %s: its change-tracking bitmap is inconsistent (QEMU was not shut down cleanly)", s.Name)
		case !b.Recording && !recordingLeftover(machine, st.Bitmap, disks[i]):
			// Frozen by a cycle that was killed, with no newer bitmap
			// recording since: writes went unrecorded.
			return false, fmt.Sprintf("disk %s: its change-tracking bitmap stopped recording", s.Name)
		}
	}
	return true, ""
}

// granularity is the dirty bitmaps' block size: 4 KiB, the guest's write
// size, so a cut sends what was written rather than whole 64 KiB clusters,
// as long as the bitmap stays under 4 MiB of QEMU's memory (a 128 GiB
// disk); coarser for larger disks.
func granularity(size int64) uint32 {
	g := int64(4096)
	for size/g > 32<<20 && g < 1<<26 {
		g *= 2
	}
	return uint32(g)
}

// recordingLeftover tells whether a newer bitmap of ours records on d: a
// cycle killed after its instant froze cur and started it, so merged into
// cur they still cover every write.
func recordingLeftover(machine, cur string, d live.MachineDisk) bool {
	for _, b := range d.Bitmaps {
		if b.Name != cur && strings.HasPrefix(b.Name, BitmapPrefix+machine+"-") && b.Recording && !b.Inconsistent {
			return true
		}
	}
	return false
}

// writeBatch reads the cut's view of every disk and writes the batch.
func (r *Runner) writeBatch(ctx context.Context, sess *qmp.FleeceSession, h replica.Header, w io.Writer) error {
	bw, err := replica.NewBatchWriter(w, h)
	if err != nil {
		return err
	}
	var total, done int64
	if h.Full {
		for _, d := range sess.Disks {
			total += d.Size
		}
	}
	buf := make([]byte, replica.MaxRecord)
	for i, fd := range sess.Disks {
		var opts []nbd.Option
		if !h.Full {
			opts = append(opts, nbd.WithMetaContexts(nbd.DirtyBitmapContext(fd.PrevBitmap)))
		}
		nd, err := nbd.OpenDisk(ctx, fd.URI, opts...)
		if err != nil {
			return fmt.Errorf("disk %s: reading the cut's view: %w", fd.Node, err)
		}
		defer nd.Close()
		var exts []source.Extent
		if h.Full {
			var ok bool
			exts, ok, err = nd.DataExtents(ctx)
			if err == nil && !ok {
				exts = []source.Extent{{Offset: 0, Length: nd.Size()}}
			}
		} else {
			exts, err = nd.DirtyExtents(ctx, fd.PrevBitmap)
		}
		if err != nil {
			return err
		}
		var end int64
		for _, e := range exts {
			if h.Full && e.Offset > end {
				if err := bw.Zero(i, end, e.Offset-end); err != nil {
					return err
				}
			}
			for off := e.Offset; off < e.Offset+e.Length; {
				n := min(int64(len(buf)), e.Offset+e.Length-off)
				if _, err := nd.ReadAtContext(ctx, buf[:n], off); err != nil {
					return fmt.Errorf("disk %s: reading %d bytes at %d: %w", fd.Node, n, off, err)
				}
				if err := bw.Data(i, off, buf[:n]); err != nil {
					return err
				}
				off += n
				if h.Full {
					done += n
					r.progress(done, total)
				}
			}
			end = e.Offset + e.Length
		}
		if h.Full && end < nd.Size() {
			if err := bw.Zero(i, end, nd.Size()-end); err != nil {
				return err
			}
		}
	}
	// The view must have shown the cut throughout: else the batch is
	// never completed and the target discards it.
	if err := sess.Check(ctx); err != nil {
		return err
	}
	return bw.Close()
}

// progress records a full sync's progress in the status, once a second.
func (r *Runner) progress(done, total int64) {
	now := r.Clock.Now()
	if now.Sub(r.lastProg) < time.Second {
		return
	}
	r.lastProg = now
	r.status.Progress = &Progress{Done: done, Total: total}
	r.saveStatus()
}

func (r *Runner) saveStatus() {
	r.status.Updated = r.Clock.Now()
	st := r.status
	if r.starving != "" && st.State == StateProtected {
		// Cuts of the machine alone may ship; the group's do not.
		st.State, st.Error = StateError, r.starving
	}
	if err := r.Config.put("status", r.Machine.Name, st); err != nil {
		r.Log.Error("writing the replication status", "machine", r.Machine.Name, "err", err)
	}
}

type countWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// ErrStalled: a cut's shipping made no progress for a while (a link
// cut without a reset, a target that stopped reading). The cycle is
// abandoned and retried; nothing is lost.
var ErrStalled = errors.New("shipping stalled")

func (r *Runner) stallTimeout() time.Duration {
	if r.StallTimeout > 0 {
		return r.StallTimeout
	}
	return DefaultStallTimeout
}

// DefaultStallTimeout is how long shipping a cut may make no progress
// (Runner.StallTimeout).
const DefaultStallTimeout = time.Minute

// watchStall cancels the send when no byte of the batch moved for
// timeout, or when the target has not answered timeout × 10 after the
// whole batch was sent (it checks and fsyncs it).
func watchStall(ctx context.Context, cancel context.CancelCauseFunc, timeout time.Duration, sent *countWriter, written <-chan error) {
	tick := time.NewTicker(timeout / 12)
	defer tick.Stop()
	last, since := int64(-1), time.Now()
	limit := timeout
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if len(written) > 0 {
			limit = 10 * timeout
		}
		if n := sent.n.Load(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > limit {
			cancel(fmt.Errorf("%w: no progress for %s", ErrStalled, limit))
			return
		}
	}
}

func randomHex() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// pausedNow reads whether the machine's replication is paused (replicate
// pause), from its settings as they are now.
func (r *Runner) pausedNow() bool {
	if r.Config == nil {
		return false
	}
	m, err := r.Config.Machine(r.Machine.Name)
	return err == nil && m.Paused
}

// holdPaused keeps a paused machine paused for one cycle: its mirror is
// stopped (stopMirror, when the runner owns it), no cut is taken, and
// status says paused. The dirty bitmap under the mirror keeps recording,
// so the first cycle after resume sends what was written meanwhile.
func (r *Runner) holdPaused(ctx context.Context, stopMirror bool) {
	if stopMirror {
		r.stopMirror(ctx)
	}
	if r.status.State != StatePaused {
		r.Log.Info("replication paused", "machine", r.Machine.Name)
	}
	r.status.State, r.status.Error = StatePaused, ""
	r.saveStatus()
}

// leavePause notes a resume: the next cycle's outcome sets the state.
func (r *Runner) leavePause() {
	if r.status.State == StatePaused {
		r.Log.Info("replication resumed", "machine", r.Machine.Name)
		r.status.State = StateStarting
		r.saveStatus()
	}
}
