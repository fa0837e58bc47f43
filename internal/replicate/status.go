package replicate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"lifeboat/internal/replica"
)

// Replication states, as status reports them.
const (
	StateStarting    = "starting"     // the runner has not finished a cycle yet
	StateInitialSync = "initial-sync" // the first full copy is being sent (Progress)
	StateProtected   = "protected"    // cuts are shipped every few seconds
	StateResyncing   = "resyncing"    // change tracking was lost: a full copy is being sent
	StateError       = "error"        // the last cycle failed (Error); retried every cycle
	StateFailedOver  = "failed-over"  // the machine runs at the target: nothing is shipped
	StatePaused      = "paused"       // replicate pause: nothing is shipped until replicate resume
	StateStopped     = "stopped"      // no runner is running (replicate run is not running)
)

// Progress is a full sync's progress.
type Progress struct {
	Done  int64 `json:"done_bytes"`
	Total int64 `json:"total_bytes"`
}

// Status is a machine's replication status (status/NAME.json, written by
// its runner; LagSeconds and a stopped runner are worked out on reading).
type Status struct {
	Machine    string     `json:"machine"`
	Target     string     `json:"target"`
	Group      string     `json:"group,omitempty"`
	State      string     `json:"state"`
	Progress   *Progress  `json:"progress,omitempty"`
	LastSeq    uint64     `json:"last_seq"`
	LastCut    *time.Time `json:"last_cut,omitempty"`
	LastAppCut *time.Time `json:"last_app_cut,omitempty"`
	// LastAppError says why the last app-consistent cut tried fell short
	// (a pre-hook failed, the guest agent did not freeze): that cut is
	// crash-consistent. Empty once one succeeds.
	LastAppError     string  `json:"last_app_error,omitempty"`
	LagSeconds       float64 `json:"lag_seconds"`
	LastBatchBytes   int64   `json:"last_batch_bytes"`
	LastCycleSeconds float64 `json:"last_cycle_seconds"`
	JournalBytes     int64   `json:"journal_bytes"` // the target's history
	Points           int     `json:"points"`
	Resyncs          int     `json:"resyncs"`
	LastResyncBytes  int64   `json:"last_resync_bytes,omitempty"` // what the last resync sent
	Error            string  `json:"error,omitempty"`
	// Capture is how writes are captured right now: "mirror" (QEMU's
	// write-blocking mirror into the source journal) or "bitmap" (dirty
	// bitmap cuts, also the fallback while the mirror is down).
	Capture string `json:"capture,omitempty"`
	// SourceJournalBytes is the source journal's unshipped part, of
	// SourceJournalLimit (mirror capture).
	SourceJournalBytes int64 `json:"source_journal_bytes,omitempty"`
	SourceJournalLimit int64 `json:"source_journal_limit,omitempty"`
	// JournalShippedBytes is what the journal shipped since the mirror
	// last started.
	JournalShippedBytes int64 `json:"journal_shipped_bytes,omitempty"`
	// Fallbacks counts the mirror's falls back to bitmap cuts;
	// LastFallback says why the last one happened, and when.
	Fallbacks      int        `json:"fallbacks,omitempty"`
	LastFallback   string     `json:"last_fallback,omitempty"`
	LastFallbackAt *time.Time `json:"last_fallback_at,omitempty"`
	// A group member's share of the group's cuts: LastGroupCut is the
	// last group cut the target acknowledged (the lag of a group member
	// is its age: what failover --group would lose). GroupCutMode is how
	// the group takes its cuts: "marker" (mirror capture: the members'
	// writes held while a marker goes in every journal, for
	// GroupCutHoldSeconds, the most GroupCutHoldMaxSeconds),
	// "optimistic" (bitmap cuts in turn, dropped when a member wrote
	// meanwhile: GroupCutsDropped in a row) or "paused" (after a few
	// drops: the guests paused around the cut, for GroupPauseSeconds).
	// CannotPause says why this member cannot be paused.
	LastGroupCut           *time.Time `json:"last_group_cut,omitempty"`
	GroupCutMode           string     `json:"group_cut_mode,omitempty"`
	GroupCutsDropped       int        `json:"group_cuts_dropped,omitempty"`
	GroupCutHoldSeconds    float64    `json:"group_cut_hold_seconds,omitempty"`
	GroupCutHoldMaxSeconds float64    `json:"group_cut_hold_max_seconds,omitempty"`
	GroupPauseSeconds      float64    `json:"group_pause_seconds,omitempty"`
	GroupPauseMaxSeconds   float64    `json:"group_pause_max_seconds,omitempty"`
	CannotPause            string     `json:"cannot_pause,omitempty"`
	// FailoverExports are the disks of the machine's failovers the target
	// serves over NBD (failover --export-nbd), as the runner last saw the
	// target.
	FailoverExports []FailoverExport `json:"failover_exports,omitempty"`
	Updated         time.Time        `json:"updated"`
	PID             int              `json:"pid,omitempty"`
}

// FailoverExport is one disk of a failover served over NBD at the target.
type FailoverExport struct {
	Failover string `json:"failover"` // the failed-over machine's name (NAME-dr, NAME-dr-test)
	Test     bool   `json:"test,omitempty"`
	Disk     string `json:"disk"`
	URI      string `json:"uri"`
}

// failoverExports lists the NBD exports of the target's failovers.
func failoverExports(fos []replica.Failover) []FailoverExport {
	var out []FailoverExport
	for _, fo := range fos {
		for _, d := range fo.Disks {
			if d.NBD != "" {
				out = append(out, FailoverExport{Failover: fo.Name, Test: fo.Test, Disk: d.Name, URI: d.NBD})
			}
		}
	}
	return out
}

// MachineStatus reads a machine's status as of now: the lag is the age of
// the last acknowledged cut (what a failover to "latest" would lose), and
// a runner that is no longer alive shows as stopped.
func (c *Config) MachineStatus(ctx context.Context, name string, now time.Time) (Status, error) {
	m, err := c.Machine(name)
	if err != nil {
		return Status{}, err
	}
	st := Status{Machine: name, Target: m.Target, State: StateStopped}
	if err := c.get("status", name, &st); err != nil && !errors.Is(err, ErrNotFound) {
		return Status{}, err
	}
	switch {
	case st.State == StateFailedOver:
	case m.Paused:
		// Paused whether a runner runs or not: nothing ships until resumed.
		st.State, st.Error = StatePaused, ""
	case !alive(st.PID):
		st.State = StateStopped
		if st.Error == "" {
			st.Error = "no replication runner is running for this machine (lifeboat replicate run)"
		}
	}
	switch {
	case st.Group != "" && st.LastGroupCut != nil:
		// Cuts of the member alone (mirror capture) do not count: a
		// group fails over to a group cut.
		st.LagSeconds = now.Sub(*st.LastGroupCut).Seconds()
	case st.LastCut != nil:
		st.LagSeconds = now.Sub(*st.LastCut).Seconds()
	}
	return st, nil
}

// alive tells whether the process pid still runs.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// DisableRemote removes the machine's replica at its target site; the
// local settings are kept until Disable.
func (c *Config) DisableRemote(ctx context.Context, name string) error {
	m, err := c.Machine(name)
	if err != nil {
		return err
	}
	site, err := c.Site(m.Target)
	if err != nil {
		return err
	}
	cl, err := Dial(site)
	if err != nil {
		return err
	}
	if err := cl.Remove(ctx, name); err != nil && siteCode(err) != "not_found" {
		return fmt.Errorf("removing the replica of %s at %s: %w", name, m.Target, err)
	}
	return nil
}

// ClientFor returns a client of the site a machine replicates to, or of
// site when given.
func (c *Config) ClientFor(machine, site string) (*Client, error) {
	if site == "" {
		m, err := c.Machine(machine)
		if err != nil {
			return nil, fmt.Errorf("%w (or name the site with --site)", err)
		}
		site = m.Target
	}
	s, err := c.Site(site)
	if err != nil {
		return nil, err
	}
	return Dial(s)
}

// CaptureText is the capture as a table shows it: "mirror 3%" (the source
// journal's use of its limit), "bitmap", "bitmap (fell back 2x)".
func (s Status) CaptureText() string {
	switch {
	case s.Capture == CaptureMirror && s.SourceJournalLimit > 0:
		return fmt.Sprintf("mirror %d%%", s.SourceJournalBytes*100/s.SourceJournalLimit)
	case s.Capture == CaptureBitmap && s.Fallbacks > 0:
		return fmt.Sprintf("bitmap (fell back %dx)", s.Fallbacks)
	case s.Capture == "":
		return CaptureBitmap
	}
	return s.Capture
}

// NoteText is the note a table shows: the error, then the NBD exports of
// the target's failovers.
func (s Status) NoteText() string {
	notes := []string{}
	if s.Error != "" {
		notes = append(notes, s.Error)
	}
	if s.LastAppError != "" {
		notes = append(notes, "last app-consistent cut fell short: "+s.LastAppError)
	}
	for _, e := range s.FailoverExports {
		notes = append(notes, fmt.Sprintf("%s %s served at %s", e.Failover, e.Disk, e.URI))
	}
	return strings.Join(notes, "; ")
}
