package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"lifeboat/internal/catalog"
	"lifeboat/internal/replicate"
)

// ReplicationsReportJSON is the body of POST /v1/agent/replications: the
// status of every replication the agent runs (replicate status --json),
// which replaces what it reported before.
type ReplicationsReportJSON struct {
	// Each a replicate.Status; decoded leniently, so that an agent newer
	// than its server may add fields.
	Replications []json.RawMessage `json:"replications"`
}

// ReplicationJSON is a machine's replication as GET /v1/replications
// lists it: the agent's last report, with the lag worked out as of now
// and the agent that reported it.
type ReplicationJSON struct {
	replicate.Status
	Agent    string    `json:"agent"`
	Reported time.Time `json:"reported"`
}

// ReportStale is how old an agent's replication report may be before the
// replication shows as stopped: the agent (or its host) is gone.
const ReportStale = AgentTimeout

func (s *Server) agentReplications(w http.ResponseWriter, r *http.Request) error {
	var body ReplicationsReportJSON
	if err := decode(r, &body); err != nil {
		return err
	}
	reps := make([]catalog.Replication, 0, len(body.Replications))
	for i, raw := range body.Replications {
		var st replicate.Status
		if err := json.Unmarshal(raw, &st); err != nil {
			return invalid("replications[%d]: %v", i, err)
		}
		rep := catalog.Replication{Machine: st.Machine, State: st.State, Status: raw}
		if st.LastCut != nil {
			rep.LastCut = *st.LastCut
		}
		reps = append(reps, rep)
	}
	if err := s.Catalog.ReportReplications(r.Context(), agentName(r), reps, s.Clock.Now()); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int{"reported": len(reps)})
	return nil
}

func (s *Server) listReplications(w http.ResponseWriter, r *http.Request) error {
	items, err := s.Catalog.Replications(r.Context())
	if err != nil {
		return err
	}
	now := s.Clock.Now()
	return listed(w, convert(items, func(c catalog.Replication) ReplicationJSON { return Replication(c, now) }), nil)
}

// Replication is a catalog replication as of now: the lag is the age of
// the last acknowledged cut (it grows while nothing is reported), and a
// report older than ReportStale shows as stopped.
func Replication(c catalog.Replication, now time.Time) ReplicationJSON {
	out := ReplicationJSON{Agent: c.Agent, Reported: c.Reported}
	json.Unmarshal(c.Status, &out.Status) // stored by agentReplications, which decoded it
	out.Machine, out.State = c.Machine, c.State
	out.LagSeconds = 0
	if !c.LastCut.IsZero() {
		out.LagSeconds = now.Sub(c.LastCut).Seconds()
	}
	if quiet := now.Sub(c.Reported); quiet > ReportStale && out.State != replicate.StateFailedOver {
		out.State = replicate.StateStopped
		out.Error = fmt.Sprintf("agent %s has not reported this replication for %s", c.Agent, quiet.Round(time.Second))
	}
	return out
}
