package replicate

import (
	"context"
	"strings"
	"time"

	"lifeboat/internal/live"
	"lifeboat/internal/quiesce"
	"lifeboat/internal/recovery"
)

// quiesceForCut makes the guest ready for an app-consistent cut, the way a
// live backup does (live.Quiesce): the operator's pre-hook (Machine.PreHook:
// flush and lock the application), then the guest's filesystems frozen
// through its agent. It returns whether the cut taken now is
// app-consistent — the freeze worked and, when hooks are set, the pre-hook
// succeeded: a failing pre-hook leaves a crash-consistent cut — and undo,
// which thaws the guest and then runs the post-hook; the post-hook runs
// whatever happened before (it undoes what the pre-hook may have half
// done). Why a cut fell short goes in the status (last_app_error) and the
// log.
func (r *Runner) quiesceForCut(ctx context.Context) (bool, func() error) {
	m := r.Machine
	want := recovery.File // the guest frozen
	if m.PreHook != "" || m.PostHook != "" {
		want = recovery.App // and the hooks run around it
	}
	env := []string{"LIFEBOAT_MACHINE=" + m.Name, "LIFEBOAT_QMP=" + m.QMP}
	got, notes, undo := live.Quiesce(ctx, live.Options{Consistency: want, GuestAgent: m.GuestAgent, QMP: m.QMP,
		FreezeTimeout: 10 * time.Second, Executable: r.Executable,
		PreHook:  quiesce.Hook{Command: m.PreHook, Timeout: m.HookTimeout, Env: env},
		PostHook: quiesce.Hook{Command: m.PostHook, Timeout: m.HookTimeout, Env: env}})
	for _, n := range notes {
		r.Log.Warn("app-consistent cut fell short: it is crash-consistent", "machine", m.Name, "note", n)
	}
	app := got == want
	r.status.LastAppError = ""
	if !app {
		r.status.LastAppError = strings.Join(notes, "; ")
	}
	return app, undo
}
