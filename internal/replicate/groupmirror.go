package replicate

import (
	"context"
	"fmt"
	"sync"
	"time"

	"lifeboat/internal/journal"
	"lifeboat/internal/replica"
)

// Group cuts under mirror capture (every member's Machine.Capture is
// "mirror"). With the write-blocking mirror, a guest write completes only
// once the member's receiver journaled it, so the group cut is one instant
// across all members' journals, taken without any retry:
//
//  1. Hold: every member's receiver stops taking new writes (they wait,
//     so the guests' writes wait), and the writes already in flight finish
//     their journal appends.
//  2. A group marker (its id in the record's Off) is appended to every
//     member's journal, and the instant is read.
//  3. Release.
//
// A write some guest saw complete before the hold is in its journal before
// the marker; one completing after the hold began is after it. So no write
// after the cut can be in the cut of one member while a write it depended
// on, on another member, is missing: no causal link crosses the cut. Each
// member's shipper ends a batch at the marker, carrying the group's name
// and the instant (replica.Header Group, GroupCut), as bitmap group cuts
// do, so the site's group points and failover --group are the same.
//
// The hold is bounded (groupHoldTimeout): a journal append that does not
// finish in time (a stalled disk) releases the hold, the cut is dropped
// (its markers, if written later, are passed over by the shippers) and
// the status says why. The hold's length is recorded in the status.

// groupHoldTimeout bounds how long a group cut holds the members' writes.
const groupHoldTimeout = 500 * time.Millisecond

// markGroup in a marker's Disk field tells a group cut's marker from an
// app-consistent one (Disk 0).
const markGroup = 1

// groupStarveAfter is how many group cuts in a row may fail before the
// members' status reports the group's cuts as starving (state error: the
// replication-lag alert fires).
const groupStarveAfter = 3

// writeGate holds a receiver's writes while a group cut is taken.
type writeGate struct {
	mu       sync.Mutex
	held     bool
	inflight int
	open     chan struct{} // closed when the hold ends
	idle     chan struct{} // closed when the last write in flight ends
}

// enter waits while the gate is held, then counts a write in flight.
func (g *writeGate) enter() {
	g.mu.Lock()
	for g.held {
		ch := g.open
		g.mu.Unlock()
		<-ch
		g.mu.Lock()
	}
	g.inflight++
	g.mu.Unlock()
}

// leave ends a write in flight.
func (g *writeGate) leave() {
	g.mu.Lock()
	g.inflight--
	if g.inflight == 0 && g.idle != nil {
		close(g.idle)
		g.idle = nil
	}
	g.mu.Unlock()
}

// hold stops new writes and returns a channel closed once no write is in
// flight.
func (g *writeGate) hold() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	idle := make(chan struct{})
	if !g.held {
		g.held, g.open = true, make(chan struct{})
	}
	if g.inflight == 0 {
		close(idle)
	} else {
		g.idle = idle
	}
	return idle
}

// release lets the held writes go on (a gate not held is left as is).
func (g *writeGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held {
		g.held = false
		close(g.open)
		g.idle = nil
	}
}

// groupMarks are a group's verdicts on its cut markers: kept (with the
// group's instant) or dropped. A member's shipper waits for the verdict of
// a marker it reads before it ends a batch there.
type groupMarks struct {
	mu      sync.Mutex
	next    int64
	kept    map[int64]markVerdict // decided
	decided chan struct{}         // closed (and replaced) at each decision
}

// markVerdict is the verdict on a group cut's marker: its instant (zero
// when the cut was dropped), and whether every guest was frozen for it.
type markVerdict struct {
	cut time.Time
	app bool
}

// newGroupMarks numbers markers from start on: the runner's start time in
// Unix nanoseconds, so a marker a previous runner left in a journal has a
// lower id than any of this runner's, and counts as dropped.
func newGroupMarks(start int64) *groupMarks {
	return &groupMarks{next: start, kept: map[int64]markVerdict{}, decided: make(chan struct{})}
}

func (gm *groupMarks) newID() int64 {
	gm.mu.Lock()
	defer gm.mu.Unlock()
	gm.next++
	return gm.next
}

// decide records the verdict on marker id (v.cut zero: dropped).
func (gm *groupMarks) decide(id int64, v markVerdict) {
	gm.mu.Lock()
	defer gm.mu.Unlock()
	gm.kept[id] = v
	// The shippers ask in journal order: old verdicts are not asked again.
	delete(gm.kept, id-1024)
	close(gm.decided)
	gm.decided = make(chan struct{})
}

// verdict waits for the verdict on marker id, at most timeout (then it is
// taken as dropped: the site keeps only group cuts every member holds).
func (gm *groupMarks) verdict(ctx context.Context, id int64, timeout time.Duration) (markVerdict, bool, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		gm.mu.Lock()
		v, ok := gm.kept[id]
		ch := gm.decided
		gm.mu.Unlock()
		if ok || id <= gm.floor() {
			return v, !v.cut.IsZero(), nil
		}
		select {
		case <-ch:
		case <-t.C:
			return markVerdict{}, false, nil
		case <-ctx.Done():
			return markVerdict{}, false, ctx.Err()
		}
	}
}

// floor is the highest id whose verdict was forgotten.
func (gm *groupMarks) floor() int64 {
	gm.mu.Lock()
	defer gm.mu.Unlock()
	return gm.next - 1024
}

// stopAt says whether a journal batch ends at the marker rec, and sets h
// for the point it makes: an app-consistent marker, or a group cut the
// group kept (its instant, the same for every member). A group cut that
// was dropped, or whose group no longer runs here, is passed over.
func (r *Runner) stopAt(ctx context.Context, h *replica.Header, rec journal.Record) (bool, error) {
	if rec.Disk != markGroup {
		h.Consistency, h.Cut = "app", rec.Time
		return true, nil
	}
	if r.marks == nil {
		return false, nil
	}
	v, kept, err := r.marks.verdict(ctx, rec.Off, 4*groupHoldTimeout)
	if err != nil || !kept {
		return false, err
	}
	h.Cut, h.Group, h.GroupCut = v.cut, r.Machine.Group, v.cut.UnixNano()
	if v.app {
		h.Consistency = "app"
	}
	return true, nil
}

// mirrored tells whether the group runs under mirror capture: every
// member asks for it (a group mixing captures uses bitmap cuts: a member
// that mirrors cannot take a bitmap cut).
func (g *GroupRunner) mirrored() bool {
	for _, r := range g.Members {
		if r.Machine.capture() != CaptureMirror {
			return false
		}
	}
	return true
}

// mirrorPeriod is one period of a mirrored group: with every member's
// mirror running, one group cut across their journals, then each member
// ships its journal for the period and checks its mirror. Otherwise the
// mirrors that run are stopped, a bitmap group cut is taken, and every
// member's mirror starts again. It reports whether a bitmap cut was
// dropped because a member wrote while it was taken.
func (g *GroupRunner) mirrorPeriod(ctx context.Context) (moved bool) {
	for _, r := range g.Members {
		if r.mirror == nil {
			return g.startMirrors(ctx)
		}
	}
	// An app-consistent group cut: every guest frozen around the hold.
	app, thaw := g.freezeForCut(ctx)
	cut, hold, err := g.markCut(ctx, app)
	thaw()
	if ctx.Err() != nil {
		return false
	}
	if err == nil && app {
		g.lastApp = cut
	}
	g.noteMarkCut(cut, hold, err)
	var wg sync.WaitGroup
	for _, r := range g.Members {
		r.group = nil // step ships the journal (mirrorCycle)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.step(ctx)
		}()
	}
	wg.Wait()
	return false
}

// startMirrors takes a bitmap group cut with every mirror stopped, then
// starts every member's mirror (each from its member's acknowledged cut,
// as a lone machine's does; when the group cut was dropped, from a cut
// of the member alone).
func (g *GroupRunner) startMirrors(ctx context.Context) (moved bool) {
	for _, r := range g.Members {
		r.stopMirror(ctx)
		r.status.Capture = CaptureBitmap
	}
	// Each member's Cycle removes a mirror a killed runner left behind
	// (settleStaleMirror) before it takes its share of the cut.
	moved = g.cycle(ctx)
	now := g.Clock.Now()
	for _, r := range g.Members {
		if now.Before(r.mirrorRetryAt) {
			return moved // a member's mirror keeps failing: bitmap cuts meanwhile
		}
	}
	if moved {
		// A member wrote while the group cut was taken. A mirror needs
		// its member's own cut acknowledged, not a group one: each member
		// takes one alone and starts its mirror, so members that write
		// without pause get the group cuts that never starve.
		for _, r := range g.Members {
			r.group = nil
			r.step(ctx) // mirrorCycle: a bitmap cut, then the mirror
		}
		return moved
	}
	for _, r := range g.Members {
		if r.status.State != StateProtected || r.status.Error != "" {
			return moved
		}
	}
	for _, r := range g.Members {
		if r.mirror != nil {
			continue
		}
		if err := r.startMirror(ctx); err != nil {
			r.fallback(ctx, fmt.Sprintf("starting the mirror: %v", err))
			for _, o := range g.Members {
				o.stopMirror(ctx)
			}
			return moved
		}
	}
	return moved
}

// stopMirrors ends every member's mirror (the group runner's end).
func (g *GroupRunner) stopMirrors(ctx context.Context) {
	for _, r := range g.Members {
		r.stopMirror(ctx)
	}
}

// markCut takes one group cut across the members' journals (see the
// recipe above) and returns its instant and how long the writes were held;
// app: every guest is frozen (the cut is app-consistent).
func (g *GroupRunner) markCut(ctx context.Context, app bool) (time.Time, time.Duration, error) {
	if g.marks == nil {
		g.marks = newGroupMarks(g.Clock.Now().UnixNano())
	}
	id := g.marks.newID()
	timer := time.NewTimer(groupHoldTimeout)
	defer timer.Stop()
	start := g.Clock.Now()
	var held []*Runner
	release := func() {
		for _, r := range held {
			r.mirror.rc.gate.release()
		}
	}
	fail := func(err error) (time.Time, time.Duration, error) {
		release()
		hold := g.Clock.Now().Sub(start)
		g.marks.decide(id, markVerdict{})
		return time.Time{}, hold, fmt.Errorf("group %s: cut dropped after holding the writes for %s: %w", g.Group, hold.Round(time.Millisecond), err)
	}
	var idle []<-chan struct{}
	for _, r := range g.Members {
		idle = append(idle, r.mirror.rc.gate.hold())
		held = append(held, r)
	}
	for i, ch := range idle {
		select {
		case <-ch:
		case <-timer.C:
			return fail(fmt.Errorf("member %s: a write to its journal did not finish within %s", g.Members[i].Machine.Name, groupHoldTimeout))
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
	// No write is in flight and none starts: the appends are quick unless
	// the journal's disk stalls, so they are bounded too.
	done := make(chan error, 1)
	go func() {
		for _, r := range g.Members {
			if _, err := r.mirror.j.Append(journal.KindMarker, markGroup, id, 0, nil); err != nil {
				done <- fmt.Errorf("member %s: appending the cut's marker: %w", r.Machine.Name, err)
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			return fail(err)
		}
	case <-timer.C:
		return fail(fmt.Errorf("the cut's markers were not appended within %s", groupHoldTimeout))
	}
	// A member whose mirror QEMU dropped (a live backup took its disks
	// over, QEMU stopped) journals none of its writes since: its share
	// would be older than the others', and a write of another member
	// that depended on one of them would be in the group cut without it.
	for _, r := range g.Members {
		if r.mirror.rc.Dropped() {
			return fail(fmt.Errorf("member %s: QEMU dropped its mirror (a live backup took the disks over, or QEMU stopped): its journal lacks its latest writes", r.Machine.Name))
		}
	}
	cut := g.Clock.Now()
	release()
	hold := g.Clock.Now().Sub(start)
	g.marks.decide(id, markVerdict{cut: cut, app: app})
	return cut, hold, nil
}

// noteMarkCut records a group cut's outcome in the members' status; after
// groupStarveAfter failures in a row the group's cuts are starving.
func (g *GroupRunner) noteMarkCut(cut time.Time, hold time.Duration, err error) {
	if err == nil {
		g.failedCuts = 0
	} else {
		g.failedCuts++
		g.Members[0].Log.Warn("group cut failed", "group", g.Group, "err", err, "in_a_row", g.failedCuts)
	}
	starving := ""
	if g.failedCuts >= groupStarveAfter {
		starving = fmt.Sprintf("group %s: no group cut for %d tries: %v", g.Group, g.failedCuts, err)
	}
	for _, r := range g.Members {
		r.status.GroupCutHoldSeconds = hold.Seconds()
		r.status.GroupCutHoldMaxSeconds = max(r.status.GroupCutHoldMaxSeconds, hold.Seconds())
		r.status.GroupCutMode = groupCutMarker
		r.starving = starving
	}
}

// freezeForCut freezes every member's guest through its agent when an
// app-consistent point is due (the first member's --app-interval, as the
// group's points follow its policy), and returns whether all are frozen
// and what thaws them. Each member's own app-consistent markers wait as
// long (its lastAppTry), so guests are not frozen twice.
func (g *GroupRunner) freezeForCut(ctx context.Context) (bool, func()) {
	p := g.Members[0].Machine.Policy
	now := g.Clock.Now()
	if p.AppInterval <= 0 || now.Sub(g.lastApp) < p.AppInterval || now.Sub(g.lastAppTry) < p.AppInterval {
		return false, func() {}
	}
	g.lastAppTry = now
	all := true
	var undos []func() error
	thaw := func() {
		for i, undo := range undos {
			if err := undo(); err != nil {
				g.Members[i].Log.Warn("thawing the guest", "machine", g.Members[i].Machine.Name, "err", err)
			}
		}
	}
	for _, r := range g.Members {
		r.lastAppTry = now
		app, undo := r.quiesceForCut(ctx)
		undos = append(undos, undo)
		if !app {
			all = false
		}
	}
	return all, thaw
}
