package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"lifeboat/internal/catalog"
	"lifeboat/internal/job"
	"lifeboat/internal/secrets"
)

// Agent routes: an agent token speaks for the agent of the same name only.

// Lease is how long a claimed job is an agent's without a renewal; agents
// renew every Lease/3 and stop when a renewal says the lease was lost.
const Lease = 60 * time.Second

// AlertVerify is raised on a vault whose verification failed.
const AlertVerify = "verify-failed"

// AlertDrill is raised on a machine whose latest drill failed.
const AlertDrill = "drill-failed"

// DefaultVault is the vault a server makes at its first start, used by
// policies that name none.
const DefaultVault = "default"

// AgentLimits bound what one agent runs at once.
var AgentLimits = catalog.Limits{PerAgent: 2, PerVault: 4}

// HeartbeatJSON is the body of POST /v1/agent/heartbeat.
type HeartbeatJSON struct {
	Info json.RawMessage `json:"info,omitempty"`
	// Instance names the agent's process (random, new at each start).
	// A heartbeat with an instance ends the runs of the agent's jobs
	// claimed by any other instance: they died with its previous process,
	// and are queued again at once instead of after their lease expires.
	Instance string `json:"instance,omitempty"`
}

// ClaimJSON is the (optional) body of POST /v1/agent/claim.
type ClaimJSON struct {
	// Instance, as in HeartbeatJSON, goes into the lease token.
	Instance string `json:"instance,omitempty"`
}

// instancePrefix is the start of the lease tokens of one agent process.
func instancePrefix(agent, instance string) string { return agent + "/" + instance + "/" }

// validInstance keeps an instance name to what a lease token can hold.
func validInstance(s string) error {
	if len(s) > 64 {
		return invalid("instance: longer than 64 characters")
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return invalid("instance: %q: only letters, digits, - and _", s)
		}
	}
	return nil
}

func agentName(r *http.Request) string { return callerOf(r).token.Name }

func (s *Server) agentHeartbeat(w http.ResponseWriter, r *http.Request) error {
	var body HeartbeatJSON
	if r.ContentLength != 0 {
		if err := decode(r, &body); err != nil {
			return err
		}
	}
	if err := validInstance(body.Instance); err != nil {
		return err
	}
	name := agentName(r)
	if err := s.Catalog.Heartbeat(r.Context(), name, body.Info, s.Clock.Now()); err != nil {
		return err
	}
	if body.Instance != "" {
		ended, err := s.Catalog.Interrupt(r.Context(), name, instancePrefix(name, body.Instance), s.Clock.Now())
		if err != nil {
			return err
		}
		for _, id := range ended {
			s.log().Warn("job interrupted: its agent restarted; queued again if attempts remain", "job", id, "agent", name)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"lease": Duration(Lease)})
	return nil
}

// agentClaim answers 200 with a job, or 204 when there is nothing to run.
//
// Each claim has a lease token of its own (the job's lease_owner: the
// agent's name and a random claim ID), which renew, log and finish must
// present: a run whose job was reaped and claimed again — by the same
// agent too — can neither renew nor report over the new run.
func (s *Server) agentClaim(w http.ResponseWriter, r *http.Request) error {
	var body ClaimJSON
	if r.ContentLength != 0 {
		if err := decode(r, &body); err != nil {
			return err
		}
	}
	if err := validInstance(body.Instance); err != nil {
		return err
	}
	name := agentName(r)
	secret, err := NewSecret()
	if err != nil {
		return err
	}
	owner := name + "/" + secret[len(secret)-16:]
	if body.Instance != "" {
		owner = instancePrefix(name, body.Instance) + secret[len(secret)-16:]
	}
	j, err := s.Catalog.Claim(r.Context(), name, owner, AgentLimits, Lease, s.Clock.Now())
	if err != nil {
		return err
	}
	if j == nil {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	creds, err := s.credentials(r.Context(), *j)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ClaimedJob{Job: *j, Credentials: creds})
	return nil
}

// ClaimedJob is the answer to a claim: the job and the credentials of the
// vaults its spec names that the server keeps (by vault URL). They go to
// the claiming agent only; the catalog's copy of the job has none.
type ClaimedJob struct {
	catalog.Job
	Credentials map[string]secrets.Credential `json:"credentials,omitempty"`
}

// credentials picks the kept credentials of the vaults j's spec names.
func (s *Server) credentials(ctx context.Context, j catalog.Job) (map[string]secrets.Credential, error) {
	if s.Secrets == nil {
		return nil, nil
	}
	var spec map[string]any
	if err := json.Unmarshal(j.Spec, &spec); err != nil {
		return nil, nil
	}
	named := map[string]bool{}
	for _, v := range spec {
		if str, ok := v.(string); ok {
			named[str] = true
		}
	}
	vaults, err := s.Catalog.Vaults(ctx)
	if err != nil {
		return nil, err
	}
	var out map[string]secrets.Credential
	for _, v := range vaults {
		if !named[v.URL] && v.Name != j.Vault {
			continue
		}
		c, ok, err := s.Secrets.Get(v.Name)
		if err != nil {
			return nil, err
		}
		if ok {
			if out == nil {
				out = map[string]secrets.Credential{}
			}
			out[v.URL] = c
		}
	}
	return out, nil
}

// lease checks that a lease token given by the calling agent is one of
// its own.
func lease(r *http.Request, token string) (string, error) {
	if token == "" {
		return "", invalid("lease: required: the lease_owner of the claimed job")
	}
	if !strings.HasPrefix(token, agentName(r)+"/") {
		return "", catalog.ErrLeaseLost
	}
	return token, nil
}

// RenewJSON is the body of POST /v1/agent/jobs/{id}/renew.
type RenewJSON struct {
	Lease    string          `json:"lease"`
	Progress json.RawMessage `json:"progress,omitempty"`
}

func (s *Server) agentRenew(w http.ResponseWriter, r *http.Request) error {
	var body RenewJSON
	if err := decode(r, &body); err != nil {
		return err
	}
	owner, err := lease(r, body.Lease)
	if err != nil {
		return err
	}
	cancel, err := s.Catalog.Renew(r.Context(), r.PathValue("id"), owner, body.Progress, Lease, s.Clock.Now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"cancel": cancel})
	return nil
}

// FinishJSON is the body of POST /v1/agent/jobs/{id}/finish: Error empty
// means the job succeeded. Points lists the recovery points it made.
type FinishJSON struct {
	Lease  string          `json:"lease"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	Points []catalog.Point `json:"points,omitempty"`
	// Forgotten: IDs of the points a forget job removed.
	Forgotten []string `json:"forgotten,omitempty"`
}

func (s *Server) agentFinish(w http.ResponseWriter, r *http.Request) error {
	var body FinishJSON
	if err := decode(r, &body); err != nil {
		return err
	}
	id := r.PathValue("id")
	owner, err := lease(r, body.Lease)
	if err != nil {
		return err
	}
	var runErr error
	if body.Error != "" {
		runErr = errors.New(body.Error)
	}
	if err := s.finish(r.Context(), id, owner, body, runErr); err != nil {
		return err
	}
	j, err := s.Catalog.Job(r.Context(), id)
	if err != nil {
		return err
	}
	if j.Kind == "forget" && j.Machine != "" {
		if err := s.Catalog.ForgetPoints(r.Context(), j.Vault, j.Machine, body.Forgotten); err != nil {
			return err
		}
	}
	switch j.Kind {
	case "verify":
		// A vault that fails verification is an alert until one passes.
		if err := s.alertOn(r.Context(), j, AlertVerify, j.Vault, fmt.Sprintf("verify of vault %s: %s", j.Vault, j.Error)); err != nil {
			return err
		}
	case "drill":
		// A machine whose point did not boot is an alert until a drill passes.
		if err := s.alertOn(r.Context(), j, AlertDrill, j.Machine, fmt.Sprintf("drill of %s: %s", j.Machine, j.Error)); err != nil {
			return err
		}
	}
	if j.Kind == "backup" && j.State == catalog.Succeeded {
		if err := s.queueAfterBackup(r.Context(), j); err != nil {
			s.log().Error("queueing the copy and retention after a backup failed", "machine", j.Machine, "err", err)
		}
	}
	s.metrics().finished(j, body.Points, body.Result)
	writeJSON(w, http.StatusOK, j)
	return nil
}

// finish ends a run as the agent reported it. A copy job of a machine
// also records where the machine's copy stands (catalog.FinishCopy): the
// newest point the run copied, from its result (vaultcopy.Stats), and
// the vault it copied from, named by the spec's URL.
func (s *Server) finish(ctx context.Context, id, owner string, body FinishJSON, runErr error) error {
	now := s.Clock.Now()
	j, err := s.Catalog.Job(ctx, id)
	if err != nil || j.Kind != "copy" || j.Machine == "" {
		return s.Catalog.Finish(ctx, id, owner, body.Result, body.Points, runErr, now)
	}
	var spec job.Copy
	var res struct {
		Newest map[string]time.Time `json:"newest"`
	}
	json.Unmarshal(j.Spec, &spec)
	json.Unmarshal(body.Result, &res)
	vaults, err := s.Catalog.Vaults(ctx)
	if err != nil {
		return err
	}
	run := catalog.CopyRun{Newest: res.Newest[j.Machine]}
	for _, v := range vaults {
		if v.URL == spec.From {
			run.Source = v.Name
		}
	}
	return s.Catalog.FinishCopy(ctx, id, owner, body.Result, run, runErr, now)
}

// alertOn raises the alert kind on subject when job j failed, and clears
// it when j succeeded.
func (s *Server) alertOn(ctx context.Context, j catalog.Job, kind, subject, msg string) error {
	var err error
	changed, raised, now := false, j.State == catalog.Failed, s.Clock.Now()
	switch j.State {
	case catalog.Failed:
		changed, err = s.Catalog.Raise(ctx, kind, subject, msg, now)
	case catalog.Succeeded:
		changed, err = s.Catalog.Resolve(ctx, kind, subject, now)
		msg = ""
	}
	if err == nil && changed && s.Alerted != nil {
		s.Alerted(raised, kind, subject, msg, now)
	}
	return err
}

// LogJSON is the body of POST /v1/agent/jobs/{id}/log.
type LogJSON struct {
	Lease   string `json:"lease"`
	Level   string `json:"level"`
	Message string `json:"message"`
}

func (s *Server) agentLog(w http.ResponseWriter, r *http.Request) error {
	var body LogJSON
	if err := decode(r, &body); err != nil {
		return err
	}
	switch body.Level {
	case "debug", "info", "warn", "error":
	default:
		return invalid("level: %q: want debug, info, warn or error", body.Level)
	}
	id := r.PathValue("id")
	owner, err := lease(r, body.Lease)
	if err != nil {
		return err
	}
	j, err := s.Catalog.Job(r.Context(), id)
	if err != nil {
		return err
	}
	if j.LeaseOwner != owner {
		return catalog.ErrLeaseLost
	}
	if err := s.Catalog.Log(r.Context(), id, body.Level, body.Message, s.Clock.Now()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// queueAfterBackup queues what a machine's policy asks after one of its
// backups succeeded: a copy to the policy's second vault, and a forget of
// the points its retention does not keep. The copy goes first, so that
// the second site receives the new point before anything is forgotten.
func (s *Server) queueAfterBackup(ctx context.Context, backupJob catalog.Job) error {
	m, err := s.Catalog.Machine(ctx, backupJob.Machine)
	if err != nil || m.Policy == "" {
		return err
	}
	p, err := s.Catalog.Policy(ctx, m.Policy)
	if err != nil || p.Vault != backupJob.Vault {
		return err
	}
	vaults, err := s.Catalog.Vaults(ctx)
	if err != nil {
		return err
	}
	urls := VaultURLs(vaults)
	now := s.Clock.Now()
	if p.CopyTo != "" && urls[p.CopyTo] != "" {
		spec, _ := json.Marshal(job.Copy{Machine: m.Name, From: urls[p.Vault], To: urls[p.CopyTo]})
		if _, err := s.Catalog.Enqueue(ctx, catalog.Job{Kind: "copy", Machine: m.Name, Agent: backupJob.Agent, Vault: p.CopyTo, Spec: spec, MaxAttempts: BackupAttempts}, now); err != nil {
			return err
		}
	}
	if p.Keep.Empty() {
		return nil
	}
	spec, err := json.Marshal(job.Forget{Machine: m.Name, Vault: urls[p.Vault], Keep: p.Keep})
	if err != nil {
		return err
	}
	_, err = s.Catalog.Enqueue(ctx, catalog.Job{Kind: "forget", Machine: m.Name, Agent: backupJob.Agent, Vault: p.Vault, Spec: spec, MaxAttempts: 2}, now)
	return err
}
