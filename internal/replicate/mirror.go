package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"lifeboat/internal/journal"
	"lifeboat/internal/live"
	"lifeboat/internal/nbd"
	"lifeboat/internal/qmp"
	"lifeboat/internal/replica"
)

// Mirror capture (Machine.Capture "mirror"). QEMU's blockdev-mirror in
// write-blocking mode copies every guest write, before the guest sees it
// complete, to the receiver (an NBD server in this process), which appends
// it to the source journal; the shipper streams the journal to the target
// in order. The dirty bitmaps of bitmap capture stay underneath as the
// safety net: one always records every write the target does not hold
// yet, so when the mirror fails (its receiver gone — QEMU 7.2's mirror
// does not reconnect —, the journal full, a discard), the runner falls
// back to a bitmap cut that sends exactly those blocks, then starts the
// mirror again. Nothing is lost silently; status says which capture runs.
//
// Starting (startMirror), after a bitmap cut the target acknowledged:
//
//  1. The receiver and an empty journal; an NBD node per disk pointing
//     at it; blockdev-mirror (sync none, write-blocking), waited to READY
//     and never completed. From here every write is journaled.
//  2. One transaction adds a new bitmap and freezes the state's, which
//     holds the writes since the acknowledged cut up to now — some of
//     them made before the mirror started, so in no journal.
//  3. Catch-up: those blocks are read from QEMU (an NBD export of the disk
//     with the frozen bitmap) and appended to the journal, each read and
//     append under the journal's lock, so no guest write to the block can
//     be journaled between them: applied in journal order, the block ends
//     with its newest contents.
//
// The journal from position 0 turns the acknowledged cut into the disk's
// current state once it is applied past the catch-up's end, so the first
// batch reaches at least that far; every later batch boundary is a
// crash-consistent point (write-blocking: a write the guest saw complete
// is journaled before any write issued after it).
//
// Bitmap rotation: every few periods a new bitmap is added; the journal's
// end just after that transaction (which drains every write in flight,
// journal append included) bounds every write the new bitmap misses. Once
// the target acknowledged up to there, the state names the new bitmap and
// the old one is removed. A fleecing view cannot be taken while the mirror
// runs (QEMU blocks the disk node's other jobs), so no bitmap cut runs
// beside it, and a live backup of the machine ends the mirror
// (live.handOverMirrors): the next check finds the job gone and falls
// back, as when the receiver dies.

// mirrorSession is a running mirror capture.
type mirrorSession struct {
	j       *journal.Journal
	rc      *receiver
	disks   []live.MachineDisk
	jobs    []string
	nodes   []string
	started time.Time
	minEnd  int64 // the first batch reaches at least this (the catch-up's end)
	shipped int64 // journal position the target acknowledged
	bytes   int64 // journal bytes shipped
	periods int
	// rotBitmap, when set, is a newer bitmap that replaces the state's
	// once the target acknowledged rotPos.
	rotBitmap string
	rotPos    int64
	lastBatch time.Time
	// retry is a batch whose sending failed: it is sent again exactly
	// (the site may hold it already and acknowledge it unread).
	retry *journalBatch
}

// journalBatch is what a journal batch covers: the journal up to end
// (or to where a marker or the size cap stops it), as seq, cut at cut
// (or at its last record when dropped: see shipBatch).
type journalBatch struct {
	seq     uint64
	end     int64
	cut     time.Time
	dropped bool
	// chosen, once the batch's records were chosen (a send that failed
	// may have reached the site, which acknowledges a batch it holds
	// unread): the header they made, and end is where they end. A retry
	// sends those records again, whatever a marker's verdict reads now.
	chosen *replica.Header
}

// errCapture marks a failure of the mirror capture itself (not of the
// link or the site): the runner falls back to bitmap cuts.
type errCapture struct{ err error }

func (e errCapture) Error() string { return e.err.Error() }
func (e errCapture) Unwrap() error { return e.err }

// journalBatchGap is the least time between two journal batches: writes
// arriving meanwhile go in one batch (one file and fsync at the site).
const journalBatchGap = 100 * time.Millisecond

// journalBatchBytes caps a journal batch (past the first one's minimum).
const journalBatchBytes = 64 << 20

// rotateEvery is how many mirror periods pass between bitmap rotations.
const rotateEvery = 5

func (r *Runner) mirrorJobID(i int) string {
	return fmt.Sprintf("%s%s-%d", live.MirrorJobPrefix, r.Machine.Name, i)
}

func (r *Runner) mirrorNode(i int) string {
	return fmt.Sprintf("%smirror-%s-%d", qmp.FleeceNodePrefix, r.Machine.Name, i)
}

// mirrorCycle is one period of mirror capture: without a running mirror, a
// bitmap cut and then the mirror's start; with one, the journal shipped
// for a period, then the mirror's health checked and the bitmaps rotated.
func (r *Runner) mirrorCycle(ctx context.Context) error {
	if r.mirror == nil {
		r.status.Capture = CaptureBitmap
		if err := r.Cycle(ctx); err != nil {
			return err
		}
		if r.status.State == StateFailedOver || r.Clock.Now().Before(r.mirrorRetryAt) {
			return nil
		}
		if err := r.startMirror(ctx); err != nil {
			r.fallback(ctx, fmt.Sprintf("starting the mirror: %v", err))
		}
		return nil
	}
	err := r.shipJournal(ctx)
	// The journal's use whatever came of it: while the site is out of
	// reach, it is what absorbs the guest's writes, and status says how
	// far it has filled.
	r.status.SourceJournalBytes = r.mirror.j.Stats().Used()
	if err == nil {
		err = r.checkMirror(ctx)
	}
	if err == nil && r.mirror != nil && r.mirror.periods%rotateEvery == 1 {
		// Bitmap cuts read the target's failovers every cycle; the mirror
		// ships without asking, so it looks now and then.
		if target, serr := r.client.Status(ctx, r.Machine.Name); serr == nil {
			r.status.FailoverExports = failoverExports(target.FailedOver)
		}
	}
	var ce errCapture
	switch {
	case errors.As(err, &ce):
		r.fallback(ctx, err.Error())
		return nil
	case siteCode(err) == "failed_over":
		r.stopMirror(ctx)
	}
	return err
}

// fallback stops the mirror and records why; the next cycles are bitmap
// cuts until the mirror starts again (after a back-off when it keeps
// failing).
func (r *Runner) fallback(ctx context.Context, why string) {
	// A mirror that ran a while, or that QEMU dropped (a live backup took
	// the disks over), did not fail to start: no back-off.
	ran := r.mirror != nil && (r.Clock.Now().Sub(r.mirror.started) > time.Minute || r.mirror.rc.Dropped())
	r.stopMirror(ctx)
	r.Log.Warn("mirror capture fell back to bitmap cuts", "machine", r.Machine.Name, "why", why)
	if ran {
		r.mirrorFails = 0
	}
	r.mirrorFails++
	r.mirrorRetryAt = r.Clock.Now().Add(mirrorBackoff(r.mirrorFails, r.Machine.every()))
	now := r.Clock.Now()
	r.status.Capture, r.status.Fallbacks, r.status.LastFallback, r.status.LastFallbackAt = CaptureBitmap, r.status.Fallbacks+1, why, &now
	r.status.SourceJournalBytes = 0
	r.saveStatus()
}

// mirrorBackoff is how long to wait before starting the mirror again after
// its fails-th failure in a row: at once the first time, then doubling
// from every up to five minutes.
func mirrorBackoff(fails int, every time.Duration) time.Duration {
	if fails <= 1 {
		return 0
	}
	d := every
	for i := 2; i < fails && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

// settleStaleMirror, at the start of a bitmap cut (Cycle: no mirror of
// this runner runs), removes a mirror a killed runner left in QEMU (its
// receiver died with it, so the job failed or fails at the next write);
// the bitmaps cover what it did not ship. The mirror of another runner
// still alive (a planned failover draining beside the running runner) is
// left alone, and the cut refused: that runner's journal batches are the
// machine's cuts.
func (r *Runner) settleStaleMirror(ctx context.Context, mon *qmp.Monitor) error {
	if r.mirror != nil {
		return nil // this runner's own
	}
	jobs, err := mon.QueryJobs(ctx)
	if err != nil {
		return err
	}
	var found []string
	for _, jb := range jobs {
		if strings.HasPrefix(jb.ID, fmt.Sprintf("%s%s-", live.MirrorJobPrefix, r.Machine.Name)) {
			found = append(found, fmt.Sprintf("%s %s %s", jb.ID, jb.Status, jb.Error))
		}
	}
	if len(found) == 0 {
		return nil
	}
	var st Status
	if r.Config.get("status", r.Machine.Name, &st) == nil && st.PID != os.Getpid() && alive(st.PID) {
		return fmt.Errorf("the mirror capture of replicate run (pid %d) captures %s's writes: its journal batches are the cuts", st.PID, r.Machine.Name)
	}
	if err := r.removeMirror(ctx, mon, nil); err != nil {
		return err
	}
	r.fallbackNote("the mirror of a previous runner was left behind: " + strings.Join(found, "; "))
	return nil
}

func (r *Runner) fallbackNote(why string) {
	now := r.Clock.Now()
	r.status.Fallbacks++
	r.status.LastFallback, r.status.LastFallbackAt = why, &now
}

// errQMPBusy: QEMU did not greet within the dial timeout. It serves one
// QMP client at a time, so another holds it (a live backup of the machine
// does for its whole run): the cycle waits, it did not fail, and the lag
// tells how long.
var errQMPBusy = errors.New("QEMU's monitor is busy (a live backup of the machine holds it while it runs)")

func (r *Runner) dialQMP(ctx context.Context) (*qmp.Monitor, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	mon, err := qmp.Dial(dctx, r.Machine.QMP)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return nil, fmt.Errorf("connecting to QEMU at %s: %w: %w", r.Machine.QMP, errQMPBusy, err)
	}
	if err != nil {
		return nil, fmt.Errorf("connecting to QEMU at %s: %w", r.Machine.QMP, err)
	}
	r.resumeLeftPaused(ctx, mon)
	return mon, nil
}

// removeMirror cancels the machine's mirror jobs and deletes their target
// nodes, whatever state they are in; m, when set, is closed too.
func (r *Runner) removeMirror(ctx context.Context, mon *qmp.Monitor, m *mirrorSession) error {
	var errs []error
	jobs, err := mon.QueryJobs(ctx)
	if err != nil {
		return fmt.Errorf("removing the mirror: %w", err)
	}
	prefix := fmt.Sprintf("%s%s-", live.MirrorJobPrefix, r.Machine.Name)
	for _, jb := range jobs {
		if !strings.HasPrefix(jb.ID, prefix) {
			continue
		}
		if jb.Status != "concluded" {
			// A job already failing refuses the cancel: it concludes by
			// itself, and is waited for either way.
			if err := mon.BlockJobCancel(ctx, jb.ID, true); err != nil {
				r.Log.Debug("cancelling the mirror job", "job", jb.ID, "err", err)
			}
		}
		if err := qmp.WaitJobConcluded(ctx, mon, jb.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := mon.JobDismiss(ctx, jb.ID); err != nil && !qmp.IsClass(err, "GenericError") {
			errs = append(errs, err)
		}
	}
	nodes, err := mon.QueryNamedBlockNodes(ctx)
	if err != nil {
		return fmt.Errorf("removing the mirror: %w", err)
	}
	for _, n := range nodes {
		if strings.HasPrefix(n.NodeName, fmt.Sprintf("%smirror-%s-", qmp.FleeceNodePrefix, r.Machine.Name)) {
			if err := mon.BlockdevDel(ctx, n.NodeName); err != nil {
				errs = append(errs, fmt.Errorf("removing the mirror's node %s: %w", n.NodeName, err))
			}
		}
	}
	if m != nil {
		m.rc.Close()
		m.j.Remove()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing the mirror: %w", err)
	}
	return nil
}

// stopMirror ends the running mirror, if any; the bitmaps carry on.
func (r *Runner) stopMirror(ctx context.Context) {
	m := r.mirror
	if m == nil {
		return
	}
	r.mirror = nil
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), qmp.TeardownTimeout)
	defer cancel()
	// The receiver goes first: a write the mirror is blocked on fails
	// rather than waits, and the job fails if the cancel cannot run.
	m.rc.Close()
	mon, err := r.dialQMP(ctx)
	if err == nil {
		err = r.removeMirror(ctx, mon, nil)
		mon.Close()
	}
	m.j.Remove()
	if err != nil {
		r.Log.Warn("stopping the mirror", "machine", r.Machine.Name, "err", err)
	}
}

// startMirror starts the mirror capture (see the recipe above) after a
// bitmap cut the target acknowledged.
func (r *Runner) startMirror(ctx context.Context) (err error) {
	name := r.Machine.Name
	var st State
	if err := r.Config.get("state", name, &st); err != nil {
		return err
	}
	mon, err := r.dialQMP(ctx)
	if err != nil {
		return err
	}
	defer mon.Close()
	disks, err := live.MachineDisks(ctx, mon)
	if err != nil {
		return err
	}
	specs := make([]replica.DiskSpec, len(disks))
	sizes := make([]int64, len(disks))
	for i, d := range disks {
		specs[i] = replica.DiskSpec{Name: d.Name, Size: d.Size}
		sizes[i] = d.Size
	}
	if ok, why := judge(name, st, st.Acked, specs, disks); !ok {
		return fmt.Errorf("the change tracking under the mirror is not usable: %s", why)
	}
	limit := r.Machine.JournalLimit
	if limit <= 0 {
		limit = DefaultJournalLimit
	}
	j, err := journal.Create(filepath.Join(r.Dir, "journal"), limit, r.Clock.Now)
	if err != nil {
		return err
	}
	rc, err := startReceiver(j, filepath.Join(r.Dir, "mirror.sock"), sizes)
	if err != nil {
		j.Remove()
		return err
	}
	m := &mirrorSession{j: j, rc: rc, disks: disks, started: r.Clock.Now()}
	defer func() {
		if err != nil {
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), qmp.TeardownTimeout)
			defer cancel()
			if rerr := r.removeMirror(tctx, mon, m); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
	}()
	sub := mon.Events("JOB_STATUS_CHANGE")
	defer sub.Close()
	for i, d := range disks {
		node, job := r.mirrorNode(i), r.mirrorJobID(i)
		if err := mon.BlockdevAdd(ctx, map[string]any{"node-name": node, "driver": "nbd",
			"server": map[string]any{"type": "unix", "path": rc.sock}, "export": strconv.Itoa(i)}); err != nil {
			return fmt.Errorf("disk %s: adding the receiver's node: %w", d.Name, err)
		}
		m.nodes = append(m.nodes, node)
		if err := mon.Execute(ctx, "blockdev-mirror", map[string]any{"job-id": job, "device": d.Node, "target": node,
			"sync": "none", "copy-mode": "write-blocking", "auto-dismiss": false}, nil); err != nil {
			return fmt.Errorf("disk %s: starting the mirror: %w", d.Name, err)
		}
		m.jobs = append(m.jobs, job)
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		var status string
		_, err := qmp.WaitEvent(wctx, sub, func(ev qmp.Event) bool {
			var c qmp.JobStatusChange
			if ev.Decode(&c) != nil || c.ID != job {
				return false
			}
			status = c.Status
			return status == "ready" || status == "concluded" || status == "null"
		})
		cancel()
		if err != nil || status != "ready" {
			return fmt.Errorf("disk %s: the mirror did not become ready (%s): %v", d.Name, status, err)
		}
	}
	// From here every write is journaled. The state's bitmap is frozen,
	// holding the writes since the acknowledged cut; a new one records on.
	next := fmt.Sprintf("%s%s-%d-%s", BitmapPrefix, name, st.Acked+1, randomHex())
	var actions []qmp.Action
	for _, d := range disks {
		actions = append(actions, qmp.BitmapAdd(d.Node, next, qmp.BitmapAddOptions{Persistent: d.Driver == "qcow2", Granularity: granularity(d.Size)}),
			qmp.BitmapDisable(d.Node, st.Bitmap))
	}
	if err := mon.Transaction(ctx, actions...); err != nil {
		return fmt.Errorf("starting the mirror's bitmap: %w", err)
	}
	m.rotBitmap, m.rotPos = next, j.Stats().End
	if err := r.catchUp(ctx, mon, m, st.Bitmap); err != nil {
		return err
	}
	m.minEnd = j.Stats().End
	r.mirror = m
	r.status.Capture, r.status.SourceJournalLimit, r.status.JournalShippedBytes = CaptureMirror, limit, 0
	r.Log.Info("mirror capture started", "machine", name, "catch_up_bytes", m.minEnd)
	r.saveStatus()
	return nil
}

// catchUp appends to the journal the blocks bitmap holds (frozen), read
// from QEMU while the mirror runs, each under the journal's lock.
func (r *Runner) catchUp(ctx context.Context, mon *qmp.Monitor, m *mirrorSession, bitmap string) error {
	server, start, err := r.nbdServer(ctx, mon)
	if err != nil {
		return err
	}
	if start {
		if err := mon.NBDServerStart(ctx, server); err != nil {
			return err
		}
		defer mon.NBDServerStop(context.WithoutCancel(ctx))
	}
	buf := make([]byte, replica.MaxRecord)
	for i, d := range m.disks {
		id := fmt.Sprintf("%scatchup-%s-%d", qmp.FleeceNodePrefix, r.Machine.Name, i)
		if err := mon.BlockExportAdd(ctx, qmp.ExportOptions{ID: id, NodeName: d.Node, Name: id, Bitmaps: []string{bitmap}}); err != nil {
			return err
		}
		err := func() error {
			nd, err := nbd.OpenDisk(ctx, server.URI(id), nbd.WithMetaContexts(nbd.DirtyBitmapContext(bitmap)))
			if err != nil {
				return fmt.Errorf("disk %s: reading its changes for the mirror: %w", d.Name, err)
			}
			defer nd.Close()
			exts, err := nd.DirtyExtents(ctx, bitmap)
			if err != nil {
				return err
			}
			for _, e := range exts {
				for off := e.Offset; off < e.Offset+e.Length; {
					n := min(int64(len(buf)), e.Offset+e.Length-off)
					m.j.Lock()
					_, err := nd.ReadAtContext(ctx, buf[:n], off)
					if err == nil {
						_, err = m.j.AppendLocked(journal.KindData, i, off, 0, buf[:n])
					}
					m.j.Unlock()
					if err != nil {
						return fmt.Errorf("disk %s: catching up %d bytes at %d: %w", d.Name, n, off, err)
					}
					off += n
				}
			}
			return nil
		}()
		if derr := mon.BlockExportDel(context.WithoutCancel(ctx), id, true); err == nil && derr != nil {
			err = derr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// shipJournal ships the journal for one period: a batch as soon as writes
// arrive (journalBatchGap apart), and an empty one when a period passes
// without any, so the lag stays the age of the latest cut.
func (r *Runner) shipJournal(ctx context.Context) error {
	m := r.mirror
	deadline := time.Now().Add(r.Machine.every())
	shippedAny := false
	for {
		if err := m.j.Err(); err != nil {
			return errCapture{fmt.Errorf("the source journal failed: %w", err)}
		}
		if wait := journalBatchGap - time.Since(m.lastBatch); wait > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
		// Read before the journal's end: once QEMU dropped the receiver,
		// no write is journaled, so what the journal holds is shipped
		// (its cut no later than its last record) and the mirror ends.
		dropped := m.rc.Dropped()
		if st := m.j.Stats(); st.End > m.shipped || !dropped && !shippedAny && time.Now().After(deadline) {
			if err := r.shipBatch(ctx, dropped); err != nil {
				return err
			}
			shippedAny = true
		}
		if dropped && m.j.Stats().End <= m.shipped {
			return errCapture{errors.New("QEMU dropped the mirror's connection to the receiver (a live backup took the disks over, or QEMU stopped): the journal is shipped")}
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		m.j.Wait(m.shipped, left)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// shipBatch sends the journal from the acknowledged position on as the
// next batch, up to its end (or a size cap, or an app-consistent marker).
// When dropped (QEMU no longer writes to the receiver, since some unknown
// moment) the cut is its last record's time, not now: writes after that
// may be in no journal.
func (r *Runner) shipBatch(ctx context.Context, dropped bool) error {
	m := r.mirror
	name := r.Machine.Name
	var st State
	if err := r.Config.get("state", name, &st); err != nil {
		return err
	}
	// The cut's time is read before the journal's end: the batch holds
	// every write journaled before it.
	b := journalBatch{seq: st.Acked + 1, cut: r.Clock.Now(), end: m.j.Stats().End, dropped: dropped}
	if m.retry != nil && m.retry.seq == b.seq {
		b = *m.retry
	}
	m.retry = &b
	seq, end := b.seq, b.end
	h := replica.Header{Seq: seq, Cut: b.cut, Consistency: "crash"}
	if b.chosen != nil {
		h = *b.chosen
	}
	var pos int64
	var chosen *replica.Header
	n, err := r.send(ctx, seq, func(ctx context.Context, w io.Writer) error {
		rd := m.j.NewReader(m.shipped)
		defer rd.Close()
		var recs []journal.Record
		var size int64
		// The header's cut and consistency depend on where the batch
		// stops, so the records are chosen first (headers only), then
		// coalesced (the site applies a batch's records in any order) and
		// their newest bytes read again to be written.
		for {
			rec, err := rd.Next(end)
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			rec.Data = nil
			recs = append(recs, rec)
			size += rec.End() - rec.Pos
			if b.chosen != nil {
				continue // a retry: the same records, up to the same end
			}
			if rec.Kind == journal.KindMarker {
				// An app-consistent point, or a group cut (groupmirror.go).
				if stop, err := r.stopAt(ctx, &h, rec); err != nil || stop {
					if err != nil {
						return err
					}
					break
				}
			}
			if rec.End() >= m.minEnd && size >= journalBatchBytes {
				h.Cut = rec.Time
				break
			}
		}
		if b.chosen == nil && b.dropped && len(recs) > 0 && recs[len(recs)-1].Time.Before(h.Cut) {
			h.Cut = recs[len(recs)-1].Time
		}
		pos = m.shipped
		if len(recs) > 0 {
			pos = recs[len(recs)-1].End()
		}
		hc := h
		chosen = &hc
		bw, err := replica.NewBatchWriter(w, h)
		if err != nil {
			return err
		}
		buf := make([]byte, replica.MaxRecord)
		for _, p := range coalesce(recs) {
			if p.Zero {
				if err := bw.Zero(p.Disk, p.Off, p.Len); err != nil {
					return err
				}
				continue
			}
			for k := int64(0); k < p.Len; k += replica.MaxRecord {
				n := min(replica.MaxRecord, p.Len-k)
				if err := rd.ReadAt(buf[:n], p.Src+k); err != nil {
					return err
				}
				if err := bw.Data(p.Disk, p.Off+k, buf[:n]); err != nil {
					return err
				}
			}
		}
		return bw.Close()
	})
	if err != nil {
		if chosen != nil && b.chosen == nil {
			// The site may hold the batch as it was built: a retry sends
			// exactly it (send returns once the writer has ended).
			m.retry.end, m.retry.chosen = pos, chosen
		}
		return fmt.Errorf("shipping journal batch %d of %s: %w", seq, name, err)
	}
	m.lastBatch, m.retry = time.Now(), nil
	st.Acked, st.Cut = seq, h.Cut
	if h.Consistency == "app" {
		st.AppCut = h.Cut
		c := h.Cut
		r.status.LastAppCut = &c
	}
	if err := r.Config.put("state", name, st); err != nil {
		return err
	}
	if err := m.j.Ack(pos); err != nil {
		return errCapture{err}
	}
	m.bytes += pos - m.shipped
	m.shipped = pos
	c := h.Cut
	js := m.j.Stats()
	r.status.State, r.status.Error, r.status.Progress = StateProtected, "", nil
	r.status.LastSeq, r.status.LastCut, r.status.LastBatchBytes = seq, &c, n
	if h.GroupCut != 0 {
		r.status.LastGroupCut = &c
	}
	r.status.SourceJournalBytes, r.status.JournalShippedBytes = js.Used(), m.bytes
	r.saveStatus()
	return nil
}

// checkMirror makes sure every mirror job still runs, rotates the bitmaps,
// and drops an app-consistent marker into the journal when one is due.
func (r *Runner) checkMirror(ctx context.Context) error {
	m := r.mirror
	m.periods++
	mon, err := r.dialQMP(ctx)
	if err != nil {
		return err
	}
	defer mon.Close()
	jobs, err := mon.QueryJobs(ctx)
	if err != nil {
		return err
	}
	status := map[string]qmp.JobInfo{}
	for _, jb := range jobs {
		status[jb.ID] = jb
	}
	for _, id := range m.jobs {
		jb, ok := status[id]
		switch {
		case !ok:
			return errCapture{fmt.Errorf("the mirror job %s is gone (a live backup of the machine takes the disks over from it)", id)}
		case jb.Error != "" || (jb.Status != "ready" && jb.Status != "standby" && jb.Status != "running"):
			return errCapture{fmt.Errorf("the mirror job %s is %s: %s", id, jb.Status, jb.Error)}
		}
	}
	var st State
	if err := r.Config.get("state", r.Machine.Name, &st); err != nil {
		return err
	}
	switch {
	case m.rotBitmap != "" && m.shipped >= m.rotPos:
		// The target holds every write the newer bitmap missed: it is
		// the state's from now on (recorded first: a crash before the
		// removal leaves a leftover that is merged, which is harmless).
		old := st.Bitmap
		st.Bitmap = m.rotBitmap
		if err := r.Config.put("state", r.Machine.Name, st); err != nil {
			return err
		}
		m.rotBitmap = ""
		var actions []qmp.Action
		for _, d := range m.disks {
			actions = append(actions, qmp.BitmapRemove(d.Node, old))
		}
		if err := mon.Transaction(ctx, actions...); err != nil {
			r.Log.Warn("removing a replaced bitmap", "machine", r.Machine.Name, "err", err)
		}
	case m.rotBitmap == "" && m.periods%rotateEvery == 0:
		next := fmt.Sprintf("%s%s-%d-%s", BitmapPrefix, r.Machine.Name, st.Acked+1, randomHex())
		var actions []qmp.Action
		for _, d := range m.disks {
			actions = append(actions, qmp.BitmapAdd(d.Node, next, qmp.BitmapAddOptions{Persistent: d.Driver == "qcow2", Granularity: granularity(d.Size)}))
		}
		if err := mon.Transaction(ctx, actions...); err != nil {
			return errCapture{fmt.Errorf("rotating the change-tracking bitmap: %w", err)}
		}
		m.rotBitmap, m.rotPos = next, m.j.Stats().End
	}
	return r.appMarker(ctx, st)
}

// appMarker freezes the guest's filesystems when an app-consistent point
// is due and appends a marker to the journal while they are frozen: every
// write the guest made before the freeze is journaled before it.
func (r *Runner) appMarker(ctx context.Context, st State) error {
	now := r.Clock.Now()
	p := r.Machine.Policy
	if p.AppInterval <= 0 || now.Sub(st.AppCut) < p.AppInterval || now.Sub(r.lastAppTry) < p.AppInterval {
		return nil
	}
	r.lastAppTry = now
	app, undo := r.quiesceForCut(ctx)
	var err error
	if app {
		_, err = r.mirror.j.Append(journal.KindMarker, 0, 0, 0, nil)
	}
	if uerr := undo(); uerr != nil {
		r.Log.Warn("thawing the guest", "machine", r.Machine.Name, "err", uerr)
	}
	if err != nil {
		return errCapture{err}
	}
	return nil
}
