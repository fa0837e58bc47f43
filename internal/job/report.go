package job

import (
	"context"
	"time"

	"lifeboat/internal/drill"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// The JSON shapes of what the vault commands report (lifeboat points,
// forget, vault settings --json), for every caller to print alike.

// PointJSON is a recovery point as reported.
type PointJSON struct {
	ID          string               `json:"id"`
	Short       string               `json:"short_id"`
	Machine     string               `json:"machine"`
	Time        time.Time            `json:"time"`
	Consistency recovery.Consistency `json:"consistency"`
	Host        string               `json:"host"`
	Parent      string               `json:"parent,omitempty"`
	Tags        []string             `json:"tags,omitempty"`
	Notes       []string             `json:"notes,omitempty"`
	Size        int64                `json:"size"`
	Disks       []recovery.Disk      `json:"disks"`
	Stats       recovery.Stats       `json:"stats"`
	// Drill is the point's latest drill (lifeboat drill), if any.
	Drill *drill.Result `json:"drill,omitempty"`
}

// PointOf is p as reported (without its drill).
func PointOf(p *recovery.Point) PointJSON {
	return PointJSON{ID: p.ID.String(), Short: p.ID.Short(), Machine: p.Machine, Time: p.Time, Consistency: p.Consistency,
		Host: p.Host, Parent: p.Parent, Tags: p.Tags, Notes: p.Notes, Size: p.Size(), Disks: p.Disks, Stats: p.Stats}
}

// NewBytes is what the point's backup stored that was not in the vault.
func (p PointJSON) NewBytes() int64 {
	var n int64
	for _, d := range p.Disks {
		n += d.Stats.NewBytes
	}
	return n
}

// DiskNames are the names of the point's disks, in order.
func (p PointJSON) DiskNames() []string {
	var names []string
	for _, d := range p.Disks {
		names = append(names, d.Name)
	}
	return names
}

// ListPoints lists the points of v, oldest first, of machine (every
// machine when empty), each with its latest drill; all are every point of
// the vault. An unreadable drill result is skipped with a warning.
func ListPoints(ctx context.Context, v *vault.Vault, machine string, env Env) (out []PointJSON, all []*recovery.Point, err error) {
	all, err = recovery.List(ctx, v)
	if err != nil {
		return nil, nil, err
	}
	drills := LatestDrills(ctx, v, env)
	out = []PointJSON{}
	for _, p := range all {
		if machine == "" || p.Machine == machine {
			po := PointOf(p)
			po.Drill = drills[po.ID]
			out = append(out, po)
		}
	}
	return out, all, nil
}

// LatestDrills returns the latest drill of each point of v by point ID; an
// unreadable drill result is skipped with a warning.
func LatestDrills(ctx context.Context, v *vault.Vault, env Env) map[string]*drill.Result {
	results, err := drill.List(ctx, v, env.warn)
	if err != nil {
		env.warn("drill results: " + err.Error())
	}
	return drill.Latest(results)
}

// DeletedJSON is a soft-deleted point as reported.
type DeletedJSON struct {
	PointJSON
	Deleted   time.Time `json:"deleted"`
	PurgeAt   time.Time `json:"purge_at"`
	DeletedBy string    `json:"deleted_by"`
}

// DeletedOf reports soft-deleted points.
func DeletedOf(deleted []maintenance.DeletedPoint) []DeletedJSON {
	res := []DeletedJSON{}
	for _, d := range deleted {
		res = append(res, DeletedJSON{PointOf(d.Point), d.Deleted, d.PurgeAt, d.Host})
	}
	return res
}

// SoftDeleteOf reports a vault's soft-delete window and its history.
func SoftDeleteOf(st *maintenance.SoftDelete) map[string]any {
	type setting struct {
		Time   time.Time `json:"time"`
		Host   string    `json:"host"`
		Window int64     `json:"soft_delete_seconds"`
	}
	history := []setting{}
	for _, s := range st.Settings {
		history = append(history, setting{s.At(), s.Host, s.SoftDelete})
	}
	out := map[string]any{"soft_delete_seconds": int64(st.Window / time.Second),
		"set_seconds": int64(st.Set / time.Second), "settings": history}
	if len(st.Settings) > 0 {
		out["effective"] = st.Effective
	}
	if len(st.Unreadable) > 0 || st.Lost {
		out["unreadable"], out["settings_lost"] = st.Unreadable, st.Lost
	}
	return out
}

// Removing counts the points the forget's retention does not keep
// (those a dry run would remove).
func (f *Forgotten) Removing() int {
	n := 0
	for _, d := range f.Decisions {
		if !d.Keep {
			n++
		}
	}
	return n
}

// Report is the forget as reported: each point's decision, how many were
// removed, and the prune's report when there was one.
func (f *Forgotten) Report(dryRun bool) map[string]any {
	type dec struct {
		ID      string   `json:"id"`
		Machine string   `json:"machine"`
		Time    string   `json:"time"`
		Keep    bool     `json:"keep"`
		Reasons []string `json:"reasons"`
	}
	out := []dec{}
	for _, d := range f.Decisions {
		out = append(out, dec{d.Point.ID, d.Point.Machine, d.Point.Time.Format("2006-01-02T15:04:05Z07:00"), d.Keep, d.Reasons})
	}
	return map[string]any{"decisions": out, "removed": len(f.Removed), "dry_run": dryRun, "prune": f.Prune,
		"soft_delete_seconds": int64(f.SoftDelete / time.Second),
		"locked":              f.Locked, "locks_extended": f.LocksExtended}
}
