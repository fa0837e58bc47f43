package replicate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"lifeboat/internal/qmp"
)

// Paused group cuts (bitmap capture). A group cut taken member after
// member is dropped when an earlier member wrote before the last member's
// instant; members that write without pause would never keep one. After
// escalateAfter dropped cuts in a row the group pauses its guests for the
// cut: every member that has vCPUs is paused (QMP stop) once all members
// are ready, takes its instant, and is resumed (cont) once the last member
// took its own and it checked its new bitmap is still empty — a paused
// guest writes nothing, so its cut stays clean (the check still runs: an
// NBD export or a job may write a paused machine's disk). The pause lasts
// the members' transactions and that check, and never more than
// groupPauseLimit (then the guest is resumed whatever happens, and the cut
// is likely dropped). A qemu-storage-daemon has no vCPUs (stop is
// CommandNotFound): it keeps the optimistic cut, and when such members
// keep the cuts from being kept, the status says the group starves.

// escalateAfter is how many dropped cuts in a row make the next one paused.
const escalateAfter = 3

// groupPauseLimit bounds how long a paused cut keeps a guest paused.
const groupPauseLimit = 2 * time.Second

// Group cut modes, as status reports them (Status.GroupCutMode).
const (
	groupCutOptimistic = "optimistic" // members cut in turn; dropped when one wrote
	groupCutPaused     = "paused"     // the guests paused around the members' instants
	groupCutMarker     = "marker"     // mirror capture: writes held, a marker in every journal
)

// cutPlan is how a group takes its next bitmap cut.
type cutPlan struct {
	Pause    bool // pause the members that can be
	Starving bool // the group's cuts starve: status and the log say why
}

// planGroupCut chooses the next bitmap cut from the cuts dropped in a row
// and how many of the group's members are known not to pause: optimistic
// first, paused after escalateAfter drops while any member can pause, and
// starving once nothing is left to try — every member unpausable, or
// still dropped after as many paused cuts.
func planGroupCut(dropped, members, unpausable int) cutPlan {
	switch {
	case dropped < escalateAfter:
		return cutPlan{}
	case unpausable >= members:
		return cutPlan{Starving: true}
	}
	return cutPlan{Pause: true, Starving: dropped >= 2*escalateAfter}
}

// plan chooses how the next bitmap cut is taken, records it in the
// members' status, and reports whether the guests are paused for it.
func (g *GroupRunner) plan() bool {
	var cannot []string
	for _, r := range g.Members {
		if r.cannotPause != "" {
			cannot = append(cannot, r.Machine.Name+" ("+r.cannotPause+")")
		}
	}
	p := planGroupCut(g.dropped, len(g.Members), len(cannot))
	starving := ""
	if p.Starving {
		starving = fmt.Sprintf("group %s starves: its last %d cuts were dropped, members writing while they were taken", g.Group, g.dropped)
		if len(cannot) > 0 {
			starving += "; cannot be paused for a cut: " + strings.Join(cannot, ", ")
		}
		g.Members[0].Log.Warn("group cuts starve", "group", g.Group, "why", starving)
	}
	mode := groupCutOptimistic
	if p.Pause {
		mode = groupCutPaused
	}
	for _, r := range g.Members {
		r.starving = starving
		r.status.GroupCutMode = mode
		r.status.GroupCutsDropped = g.dropped
		r.status.CannotPause = r.cannotPause
	}
	return p.Pause
}

// pauseForCut pauses the guest for a paused group cut and returns what
// resumes it (nil when it was not paused: no vCPUs, or paused by someone
// else, who resumes it). Whatever happens, it is resumed after
// groupPauseLimit; the pause's length goes in the status.
func (r *Runner) pauseForCut(ctx context.Context, mon *qmp.Monitor) func() {
	if r.cannotPause != "" {
		return nil
	}
	st, err := mon.QueryStatus(ctx)
	if err == nil && !st.Running {
		return nil // paused by its owner (or a planned failover): left so
	}
	stopped := false
	if err == nil {
		// Recorded before the stop: a runner killed while the guest is
		// paused leaves it for the next one to resume (resumeLeftPaused).
		if err = r.markPaused(true); err == nil {
			stopped = true
			err = mon.Stop(ctx)
		}
	}
	if err != nil {
		if qmp.IsClass(err, "CommandNotFound") {
			r.cannotPause = "no vCPUs to stop: a qemu-storage-daemon"
			r.Log.Warn("a paused group cut cannot pause this machine: it keeps the optimistic cut", "machine", r.Machine.Name, "err", err)
		} else {
			r.Log.Warn("pausing the guest for a group cut", "machine", r.Machine.Name, "err", err)
		}
		if stopped {
			// A stop that failed on our side (a cancelled context, a
			// lost answer) may still have paused the guest: it was
			// running a moment ago, so a guest paused now is ours.
			r.resumeIfPaused(ctx, mon, "after a failed pause for a group cut")
		}
		return nil
	}
	start := r.Clock.Now()
	var once sync.Once
	var paused time.Duration
	resume := func() {
		once.Do(func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := mon.Cont(cctx); err != nil {
				r.Log.Error("resuming the guest after a paused group cut", "machine", r.Machine.Name, "err", err)
			} else {
				r.markPaused(false)
			}
			paused = r.Clock.Now().Sub(start)
		})
	}
	limit := time.AfterFunc(groupPauseLimit, resume)
	return func() {
		limit.Stop()
		resume()
		r.status.GroupPauseSeconds = paused.Seconds()
		r.status.GroupPauseMaxSeconds = max(r.status.GroupPauseMaxSeconds, paused.Seconds())
		r.Log.Debug("paused group cut", "machine", r.Machine.Name, "paused", paused)
	}
}

// pausedRecord says that a runner paused the guest for a group cut and
// has not yet resumed it (paused/NAME.json in the replication state).
type pausedRecord struct {
	Machine string    `json:"machine"`
	Since   time.Time `json:"since"`
}

// markPaused records (or, with on false, forgets) that this runner
// paused the guest. Without a Config nothing is recorded.
func (r *Runner) markPaused(on bool) error {
	if r.Config == nil {
		return nil
	}
	if on {
		if err := r.Config.put("paused", r.Machine.Name, pausedRecord{Machine: r.Machine.Name, Since: r.Clock.Now()}); err != nil {
			return fmt.Errorf("recording the pause for a group cut: %w", err)
		}
		return nil
	}
	if err := os.Remove(r.Config.path("paused", r.Machine.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		r.Log.Warn("forgetting the pause for a group cut", "machine", r.Machine.Name, "err", err)
	}
	return nil
}

// resumeLeftPaused resumes a guest that a runner paused for a group cut
// and did not resume (killed, or its resume failed): the record says so.
// A guest paused by anyone else has no record and is left paused.
func (r *Runner) resumeLeftPaused(ctx context.Context, mon *qmp.Monitor) {
	if r.Config == nil {
		return
	}
	var rec pausedRecord
	if err := r.Config.get("paused", r.Machine.Name, &rec); err != nil {
		if !errors.Is(err, ErrNotFound) {
			r.Log.Warn("reading the pause record of a group cut", "machine", r.Machine.Name, "err", err)
		}
		return
	}
	r.resumeIfPaused(ctx, mon, fmt.Sprintf("a runner paused it for a group cut at %s and did not resume it", rec.Since.Format(time.RFC3339)))
}

// resumeIfPaused resumes the guest when it is paused (QEMU's status is
// read with a context of its own, so a cancelled caller still resumes),
// then forgets the pause record.
func (r *Runner) resumeIfPaused(ctx context.Context, mon *qmp.Monitor, why string) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	st, err := mon.QueryStatus(cctx)
	if err != nil {
		r.Log.Warn("reading the guest's status to resume it", "machine", r.Machine.Name, "why", why, "err", err)
		return
	}
	if !st.Running {
		if err := mon.Cont(cctx); err != nil {
			r.Log.Error("resuming the guest", "machine", r.Machine.Name, "why", why, "err", err)
			return
		}
		r.Log.Warn("resumed the guest", "machine", r.Machine.Name, "why", why)
	}
	r.markPaused(false)
}
