package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"time"

	"lifeboat/internal/catalog"
	"lifeboat/internal/replicate"
	"lifeboat/internal/schedule"
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
	// Tier and RPO are the machine's protection tier and its RPO
	// objective, and RPOState holds the lag (the age of the last cut)
	// against it as a machine's rpo_state holds its newest backup: green,
	// warning or missed, unprotected for a tier of no protection. Absent
	// for a machine the catalog gives no tier, and for one failed over
	// (it is not replicating, on purpose).
	Tier     string   `json:"tier,omitempty"`
	RPO      Duration `json:"rpo,omitempty"`
	RPOState string   `json:"rpo_state,omitempty"`
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
	if only := r.URL.Query().Get("machine"); only != "" {
		items = slices.DeleteFunc(items, func(c catalog.Replication) bool { return c.Machine != only })
	}
	ms, err := s.Catalog.Machines(r.Context())
	if err != nil {
		return err
	}
	tiers, err := s.tiers(r.Context())
	if err != nil {
		return err
	}
	tierOf := map[string]string{}
	for _, m := range ms {
		tierOf[m.Name] = m.Tier
	}
	now := s.Clock.Now()
	return listed(w, convert(items, func(c catalog.Replication) ReplicationJSON {
		out := Replication(c, now)
		if t, ok := tiers[tierOf[c.Machine]]; ok && out.State != replicate.StateFailedOver {
			out.Tier, out.RPO, out.RPOState = t.Name, Duration(t.RPO), string(ReplicationRPO(t, c, now).State)
		}
		return out
	}), nil)
}

// ReplicationRPO holds a replication's lag against tier's RPO by the rule
// of backups (schedule.Assess), its last cut standing for the newest
// point: one with no cut yet (initial sync) is as a machine protected
// when it was last reported, so it turns missed once its agent has been
// quiet for longer than the RPO.
func ReplicationRPO(tier schedule.Tier, c catalog.Replication, now time.Time) schedule.RPOStatus {
	return schedule.Assess(tier, c.LastCut, c.Reported, now)
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

// ReplicationSpecJSON is the body of PUT /v1/replications/{name}: the
// agent whose host runs the machine, and its replication (what
// replicate enable records: a replicate.Machine, with absolute paths on
// the agent's host; its target site must be named on that host).
type ReplicationSpecJSON struct {
	Agent string          `json:"agent"`
	Spec  json.RawMessage `json:"spec"`
}

func (s *Server) putReplication(w http.ResponseWriter, r *http.Request) error {
	var body ReplicationSpecJSON
	if err := decode(r, &body); err != nil {
		return err
	}
	m, err := ReplicationMachine(body.Spec)
	if err != nil {
		return err
	}
	name, err := nameMatches(r, m.Name)
	if err != nil {
		return err
	}
	m.Name = name
	spec, err := json.Marshal(m)
	if err != nil {
		return err
	}
	rs := catalog.ReplicationSpec{Machine: name, Agent: body.Agent, Spec: spec}
	if err := s.Catalog.PutReplicationSpec(r.Context(), rs, s.Clock.Now()); err != nil {
		return err
	}
	rs.Updated = s.Clock.Now()
	writeJSON(w, http.StatusOK, rs)
	return nil
}

// ReplicationMachine reads a replication spec, refusing what its agent
// could not run: an invalid machine, or paths not absolute (they are on
// the agent's host, not the caller's).
func ReplicationMachine(spec json.RawMessage) (replicate.Machine, error) {
	var m replicate.Machine
	if len(spec) == 0 {
		return m, invalid("spec: missing")
	}
	dec := json.NewDecoder(bytes.NewReader(spec))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, invalid("spec: %v", err)
	}
	if err := m.Validate(); err != nil {
		return m, invalid("spec: %v", err)
	}
	for what, p := range map[string]string{"qmp": m.QMP, "guest_agent": m.GuestAgent} {
		if p != "" && !filepath.IsAbs(p) {
			return m, invalid("spec: %s: %q is not an absolute path (it is a path on the agent's host)", what, p)
		}
	}
	return m, nil
}

func (s *Server) deleteReplication(w http.ResponseWriter, r *http.Request) error {
	return deleted(w, s.Catalog.DeleteReplicationSpec(r.Context(), r.PathValue("name")))
}

// agentReplicationSpecs answers the replications the calling agent is to
// run.
func (s *Server) agentReplicationSpecs(w http.ResponseWriter, r *http.Request) error {
	items, err := s.Catalog.ReplicationSpecs(r.Context(), agentName(r))
	return listed(w, items, err)
}

// Replications lists the replications the server knows of (none is an
// empty list), or only machine's; a machine the server has no report of
// is replicate.ErrNotFound.
func (c *Client) Replications(ctx context.Context, machine string) ([]ReplicationJSON, error) {
	var all []ReplicationJSON
	if err := c.Do(ctx, "GET", "/v1/replications", nil, &all); err != nil {
		return nil, err
	}
	out := []ReplicationJSON{}
	for _, st := range all {
		if machine == "" || st.Machine == machine {
			out = append(out, st)
		}
	}
	if machine != "" && len(out) == 0 {
		return nil, fmt.Errorf("%w: the server has no replication report of machine %q (is lifeboat agent --replicate running on its host?)", replicate.ErrNotFound, machine)
	}
	return out, nil
}

// EnableReplication records m's replication in the server's catalog for
// agent to run.
func (c *Client) EnableReplication(ctx context.Context, agent string, m replicate.Machine) (catalog.ReplicationSpec, error) {
	var out catalog.ReplicationSpec
	spec, err := json.Marshal(m)
	if err != nil {
		return out, err
	}
	err = c.Do(ctx, "PUT", "/v1/replications/"+url.PathEscape(m.Name), ReplicationSpecJSON{Agent: agent, Spec: spec}, &out)
	return out, err
}

// DisableReplication forgets machine's replication; its agent stops it
// when it next asks.
func (c *Client) DisableReplication(ctx context.Context, machine string) error {
	return c.Do(ctx, "DELETE", "/v1/replications/"+url.PathEscape(machine), nil, nil)
}
