package job

import (
	"context"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
	"lifeboat/internal/vaultcopy"
)

// MachineStatus is one machine's line in a vault's status.
type MachineStatus struct {
	Machine    string    `json:"machine"`
	Points     int       `json:"points"`
	LatestID   string    `json:"latest_id"`
	LatestTime time.Time `json:"latest_time"`
}

// PendingPoint is a point not yet at a vault copy.
type PendingPoint struct {
	ID      string    `json:"id"`
	Machine string    `json:"machine"`
	Time    time.Time `json:"time"`
}

// CopyStatus says how far a vault copy is behind: the points it lacks and
// the age of the oldest of them (the second site's recovery point).
type CopyStatus struct {
	Vault         string         `json:"vault"`
	PendingPoints int            `json:"pending_points"`
	Pending       []PendingPoint `json:"pending"`
	LagSeconds    float64        `json:"lag_seconds"`
	UpToDate      bool           `json:"up_to_date"`
}

// Status summarises a vault: points per machine, packs, and optionally
// the lag of one of its copies.
type Status struct {
	Vault     string          `json:"vault"`
	ID        string          `json:"id"`
	Points    int             `json:"points"`
	Machines  []MachineStatus `json:"machines"`
	Packs     int             `json:"packs"`
	SizeBytes int64           `json:"size_bytes"`
	Copy      *CopyStatus     `json:"copy,omitempty"`
}

// VaultStatus summarises v, only machine's points when machine is not
// empty, and compares it with the copy in copyStore when that is not nil
// (read without its passphrase: only names and this vault's sealed
// markers). Markers that do not check out are passed to env.Warn.
func VaultStatus(ctx context.Context, v *vault.Vault, machine string, copyStore blob.Store, now time.Time, env Env) (*Status, error) {
	points, err := recovery.List(ctx, v)
	if err != nil {
		return nil, err
	}
	packs, err := v.ListPacks(ctx)
	if err != nil {
		return nil, err
	}
	out := &Status{Vault: v.Store().String(), ID: v.Config().ID, Packs: len(packs), Machines: []MachineStatus{}}
	for _, p := range packs {
		out.SizeBytes += p.Size
	}
	byName := map[string]int{}
	for _, p := range points { // oldest first: the last one seen is the latest
		if machine != "" && p.Machine != machine {
			continue
		}
		out.Points++
		i, ok := byName[p.Machine]
		if !ok {
			i = len(out.Machines)
			byName[p.Machine] = i
			out.Machines = append(out.Machines, MachineStatus{Machine: p.Machine})
		}
		m := &out.Machines[i]
		m.Points++
		m.LatestID, m.LatestTime = p.ID.String(), p.Time
	}
	if copyStore == nil {
		return out, nil
	}
	pending, warnings, err := vaultcopy.Pending(ctx, v, copyStore, machine)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		env.warn("copy " + copyStore.String() + ": " + w)
	}
	c := &CopyStatus{Vault: copyStore.String(), PendingPoints: len(pending), Pending: []PendingPoint{}, UpToDate: len(pending) == 0,
		LagSeconds: vaultcopy.Lag(pending, now).Seconds()}
	for _, p := range pending {
		c.Pending = append(c.Pending, PendingPoint{ID: p.ID.String(), Machine: p.Machine, Time: p.Time})
	}
	out.Copy = c
	return out, nil
}
