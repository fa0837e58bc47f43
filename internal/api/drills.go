package api

import (
	"cmp"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"lifeboat/internal/catalog"
	"lifeboat/internal/drill"
	"lifeboat/internal/schedule"
)

// DrillsJSON is a machine's drills as GET /v1/drills lists them: its
// latest drill (whatever its outcome) and its latest successful one, whose
// measured recovery time is held against the tier's RTO objective as the
// scheduler holds it (drill-rto-missed).
type DrillsJSON struct {
	Machine string `json:"machine"`
	Tier    string `json:"tier,omitempty"`
	// RTO is the tier's recovery time objective; DrillEvery the tier's
	// own drill interval (absent: the server's --drill-every).
	RTO        Duration `json:"rto,omitempty"`
	DrillEvery Duration `json:"drill_every,omitempty"`
	// Last is the machine's newest drill job, LastOK its newest
	// successful one; absent when there is none.
	Last   *DrillRunJSON `json:"last,omitempty"`
	LastOK *DrillRunJSON `json:"last_ok,omitempty"`
	// RTOState is "met" or "missed": LastOK's measured recovery time
	// against RTO. Absent when nothing was measured or the tier has no
	// RTO.
	RTOState string `json:"rto_state,omitempty"`
}

// DrillRunJSON is one drill job and what it found.
type DrillRunJSON struct {
	Job      string    `json:"job"`
	State    string    `json:"state"`
	Created  time.Time `json:"created"`
	Finished time.Time `json:"finished,omitzero"`
	// Point is the full ID of the point drilled; OK whether the guest
	// answered the probe, RTOSeconds after how long (from the decision to
	// drill).
	Point      string  `json:"point,omitempty"`
	OK         bool    `json:"ok"`
	RTOSeconds float64 `json:"rto_seconds,omitempty"`
	Error      string  `json:"error,omitempty"`
}

// RTO states (DrillsJSON.RTOState).
const (
	RTOMet    = "met"
	RTOMissed = "missed"
)

func drillRun(j catalog.Job) (*DrillRunJSON, drill.Result) {
	var res drill.Result
	if len(j.Result) > 0 {
		json.Unmarshal(j.Result, &res) // a result that does not read shows as no result
	}
	return &DrillRunJSON{Job: j.ID, State: j.State, Created: j.Created, Finished: j.Finished, Point: res.Point,
		OK: res.OK && j.State == catalog.Succeeded, RTOSeconds: float64(res.RTOMS) / 1000, Error: cmp.Or(res.Error, j.Error)}, res
}

// listDrills answers every machine's drills: four queries whatever the
// number of machines.
func (s *Server) listDrills(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	ms, err := s.Catalog.Machines(ctx)
	if err != nil {
		return err
	}
	tiers, err := s.tiers(ctx)
	if err != nil {
		return err
	}
	last, err := s.Catalog.LatestJobs(ctx, "drill", "")
	if err != nil {
		return err
	}
	proven, err := s.Catalog.LatestJobs(ctx, "drill", catalog.Succeeded)
	if err != nil {
		return err
	}
	if only := r.URL.Query().Get("machine"); only != "" {
		ms = slices.DeleteFunc(ms, func(m catalog.Machine) bool { return m.Name != only })
	}
	return listed(w, convert(ms, func(m catalog.Machine) DrillsJSON {
		t := tiers[m.Tier]
		out := DrillsJSON{Machine: m.Name, Tier: t.Name, RTO: Duration(t.RTO), DrillEvery: Duration(t.DrillEvery)}
		if j, ok := last[m.Name]; ok {
			out.Last, _ = drillRun(j)
		}
		if j, ok := proven[m.Name]; ok {
			var res drill.Result
			out.LastOK, res = drillRun(j)
			if res.RTOMS > 0 && t.RTO > 0 && !t.None {
				out.RTOState = RTOMet
				if schedule.RTOMissed(t, time.Duration(res.RTOMS)*time.Millisecond) {
					out.RTOState = RTOMissed
				}
			}
		}
		return out
	}), nil)
}
