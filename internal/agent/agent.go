// Package agent is the loop that runs jobs on a hypervisor host for a
// lifeboat server: it heartbeats, claims the jobs queued for its host,
// runs each through a Runner (the same library code the CLI calls), and
// reports back — progress and a renewed lease while it runs, log lines as
// they come, and the outcome at the end.
//
// It is built to outlive the server's bad moments: a server that is down
// or restarting is retried with backoff (1 s doubling to 30 s), a job in
// flight keeps running and its outcome is delivered once the server is
// back, and a lease lost meanwhile (the server gave the job to someone
// else) cancels the local run instead of reporting over the new owner.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/clock"
	"lifeboat/internal/replicate"
	"lifeboat/internal/secrets"
)

// Outcome is what a finished run reports.
type Outcome struct {
	Result json.RawMessage
	Points []catalog.Point
	// Forgotten are the IDs of points a forget removed.
	Forgotten []string
}

// Reporter lets a running job say how far it is and what happened.
type Reporter interface {
	// Progress replaces the job's progress document (sent with the next
	// lease renewal).
	Progress(v any)
	// Log adds a line to the job's log: level is debug, info, warn or error.
	Log(level, msg string)
}

// Runner runs one job. It must return when ctx is cancelled.
type Runner interface {
	Run(ctx context.Context, j catalog.Job, r Reporter) (Outcome, error)
}

// CredentialUser is a Runner that opens vaults with the credentials the
// server keeps for them, received with each job (by vault URL).
type CredentialUser interface {
	UseCredentials(map[string]secrets.Credential)
}

// Agent is one host's job loop.
type Agent struct {
	Client *api.Client
	Runner Runner
	// Info is sent with each heartbeat (version, capabilities).
	Info json.RawMessage
	// Offers, if set, adds to each heartbeat's Info what this host offers
	// to protect now, under the key "offers" (libvirt.Offers: the
	// libvirt domains).
	Offers func(ctx context.Context) any
	// Concurrency is how many jobs run at once (default 1; the server
	// also limits per agent).
	Concurrency int
	// Poll is the wait after the server had nothing to run (default 2 s).
	Poll time.Duration
	// Heartbeat is the interval of heartbeats (default 30 s).
	Heartbeat time.Duration
	// Renew is the interval of lease renewals (default a third of the
	// server's lease, api.Lease).
	Renew time.Duration
	Log   *slog.Logger
	// Replications, if set, is the status of the replications this host
	// runs (replicate.Config.Statuses), reported to the server every
	// ReportEvery (default 5 s) at POST /v1/agent/replications.
	Replications func(ctx context.Context) ([]replicate.Status, error)
	ReportEvery  time.Duration
	// Enable, if set, is given the replications the server enabled for
	// this agent (GET /v1/agent/replications) before each report: it
	// makes the host run them (replicate.Config.Apply).
	Enable func(ctx context.Context, specs []replicate.Machine) error
	// Replicate, if set, is the runner of this host's continuous
	// replications (as replicate run makes it): Run runs them
	// (replicate.Supervise) beside the jobs, and ReplicateWith reports them
	// and runs those the server enables.
	Replicate *replicate.Runner

	instance string // this process's name for the server, set by Run
}

func (a *Agent) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.Default()
}

// backoff waits the n-th retry's delay (1 s doubling to 30 s) or until ctx
// ends; it reports whether to go on.
func backoff(ctx context.Context, n int) bool {
	d := time.Second << min(n, 5)
	d = min(d, 30*time.Second)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// Run heartbeats and runs jobs until ctx is cancelled. Jobs in flight are
// cancelled with ctx and report their cancellation.
//
// Each Run is a new instance for the server: its first heartbeat ends the
// runs a previous process of this agent left behind (killed mid-job), so
// they are retried at once instead of after their lease expires.
func (a *Agent) Run(ctx context.Context) error {
	var id [8]byte
	rand.Read(id[:])
	a.instance = hex.EncodeToString(id[:])
	workers := max(a.Concurrency, 1)
	var wg sync.WaitGroup
	if r := a.Replicate; r != nil {
		clk := r.Clock
		if clk == nil {
			clk = clock.Real{}
		}
		a.ReplicateWith(r.Config, clk)
		wg.Add(1)
		go func() { defer wg.Done(); replicate.Supervise(ctx, r.Config, *r) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); a.heartbeats(ctx) }()
	if a.Replications != nil {
		wg.Add(1)
		go func() { defer wg.Done(); a.reportReplications(ctx) }()
	}
	for range workers {
		wg.Add(1)
		go func() { defer wg.Done(); a.work(ctx) }()
	}
	wg.Wait()
	return ctx.Err()
}

func (a *Agent) heartbeats(ctx context.Context) {
	every := a.Heartbeat
	if every <= 0 {
		every = 30 * time.Second
	}
	for {
		err := a.Client.Do(ctx, "POST", "/v1/agent/heartbeat", api.HeartbeatJSON{Info: a.info(ctx), Instance: a.instance}, nil)
		if err != nil && ctx.Err() == nil {
			a.log().Warn("heartbeat failed; the server will report this agent down if it goes on", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// reportReplications sends the status of this host's replications every
// ReportEvery; the server keeps the latest (GET /v1/replications) and
// alerts on lag beyond a machine's RPO.
func (a *Agent) reportReplications(ctx context.Context) {
	every := a.ReportEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	failing := false
	for {
		err := a.reportReplicationsOnce(ctx)
		if err != nil && ctx.Err() == nil && !failing {
			a.log().Warn("cannot report the replications' status to the server; retrying", "err", err)
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

func (a *Agent) reportReplicationsOnce(ctx context.Context) error {
	if a.Enable != nil {
		// A spec this host cannot run (its site not named here, say) is
		// logged; the others run, and the status is reported all the same.
		if err := a.enableReplications(ctx); err != nil && ctx.Err() == nil {
			a.log().Warn("cannot run the replications the server enabled for this agent", "err", err)
		}
	}
	sts, err := a.Replications(ctx)
	if err != nil {
		return fmt.Errorf("reading the replications' status: %w", err)
	}
	body := api.ReplicationsReportJSON{Replications: []json.RawMessage{}}
	for _, st := range sts {
		raw, err := json.Marshal(st)
		if err != nil {
			return err
		}
		body.Replications = append(body.Replications, raw)
	}
	return a.Client.Do(ctx, "POST", "/v1/agent/replications", body, nil)
}

// enableReplications hands Enable what the server enabled for this agent.
func (a *Agent) enableReplications(ctx context.Context) error {
	var specs []catalog.ReplicationSpec
	if err := a.Client.Do(ctx, "GET", "/v1/agent/replications", nil, &specs); err != nil {
		return fmt.Errorf("reading the replications enabled for this agent: %w", err)
	}
	ms := make([]replicate.Machine, 0, len(specs))
	var errs []error
	for _, s := range specs {
		m, err := api.ReplicationMachine(s.Spec)
		if err != nil {
			errs = append(errs, fmt.Errorf("the replication of %s the server enabled: %w", s.Machine, err))
			continue
		}
		ms = append(ms, m)
	}
	return errors.Join(append(errs, a.Enable(ctx, ms))...)
}

// HostInfo is the Info of an agent on host, the host name when empty
// (with builtin, the server's own agent), and the name it used.
func HostInfo(host string, builtin bool) (string, json.RawMessage) {
	if host == "" {
		host, _ = os.Hostname()
	}
	info, _ := json.Marshal(struct {
		Builtin bool   `json:"builtin,omitempty"`
		Host    string `json:"host"`
	}{builtin, host})
	return host, info
}

// info is Info with the host's offers added.
func (a *Agent) info(ctx context.Context) json.RawMessage {
	if a.Offers == nil {
		return a.Info
	}
	doc := map[string]any{}
	if len(a.Info) > 0 {
		if err := json.Unmarshal(a.Info, &doc); err != nil {
			return a.Info
		}
	}
	doc["offers"] = a.Offers(ctx)
	out, err := json.Marshal(doc)
	if err != nil {
		return a.Info
	}
	return out
}

func (a *Agent) work(ctx context.Context) {
	poll := a.Poll
	if poll <= 0 {
		poll = 2 * time.Second
	}
	failures := 0
	for ctx.Err() == nil {
		var claimed api.ClaimedJob
		err := a.Client.Do(ctx, "POST", "/v1/agent/claim", api.ClaimJSON{Instance: a.instance}, &claimed)
		j := claimed.Job
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if failures == 0 {
				a.log().Warn("cannot claim jobs; retrying with backoff", "err", err)
			}
			if !backoff(ctx, failures) {
				return
			}
			failures++
			continue
		case j.ID == "": // 204: nothing to run
			failures = 0
			select {
			case <-ctx.Done():
				return
			case <-time.After(poll):
			}
			continue
		}
		failures = 0
		if cu, ok := a.Runner.(CredentialUser); ok && len(claimed.Credentials) > 0 {
			cu.UseCredentials(claimed.Credentials)
		}
		a.runOne(ctx, j)
	}
}

// run is one job in flight.
type run struct {
	a        *Agent
	job      catalog.Job
	mu       sync.Mutex
	progress json.RawMessage
	logs     chan api.LogJSON
}

func (r *run) Progress(v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		return
	}
	r.mu.Lock()
	r.progress = raw
	r.mu.Unlock()
}

func (r *run) Log(level, msg string) {
	select {
	case r.logs <- api.LogJSON{Level: level, Message: msg}:
	default:
		r.a.log().Warn("job log backlog full; line kept locally only", "job", r.job.ID, "message", msg)
	}
}

// leaseLost tells a 409 (the job is someone else's now) from a server
// that could not be reached.
func leaseLost(err error) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Status == http.StatusConflict
}

func (a *Agent) runOne(ctx context.Context, j catalog.Job) {
	a.log().Info("job started", "job", j.ID, "kind", j.Kind, "machine", j.Machine, "attempt", j.Attempt)
	r := &run{a: a, job: j, logs: make(chan api.LogJSON, 1024)}
	jobCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// Logs go out in order, by one goroutine.
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		for l := range r.logs {
			l.Lease = j.LeaseOwner
			if err := a.Client.Do(context.WithoutCancel(ctx), "POST", "/v1/agent/jobs/"+j.ID+"/log", l, nil); err != nil {
				a.log().Warn("job log line not delivered", "job", j.ID, "message", l.Message, "err", err)
			}
		}
	}()

	// The lease is renewed every third of its length; a cancel asked for
	// or a lost lease cancels the run.
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		every := a.Renew
		if every <= 0 {
			every = api.Lease / 3
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-jobCtx.Done():
				return
			case <-t.C:
			}
			r.mu.Lock()
			body := api.RenewJSON{Lease: j.LeaseOwner, Progress: r.progress}
			r.mu.Unlock()
			var ans map[string]bool
			err := a.Client.Do(jobCtx, "POST", "/v1/agent/jobs/"+j.ID+"/renew", body, &ans)
			switch {
			case leaseLost(err):
				cancel(fmt.Errorf("the server gave job %s to another runner (lease lost)", j.ID))
				return
			case err != nil:
				a.log().Warn("lease renewal failed; the job goes on", "job", j.ID, "err", err)
			case ans["cancel"]:
				cancel(errors.New("cancelled through the server"))
				return
			}
		}
	}()

	out, runErr := a.Runner.Run(jobCtx, j, r)
	cause := context.Cause(jobCtx)
	cancel(nil)
	<-renewDone
	close(r.logs)
	<-logsDone
	if cause != nil && runErr != nil {
		runErr = fmt.Errorf("%w (%v)", runErr, cause)
	}
	a.finish(ctx, j, out, runErr)
}

// finish delivers the outcome, retrying while the server is unreachable;
// it gives up when the lease was lost (the job is someone else's) or the
// agent stops.
func (a *Agent) finish(ctx context.Context, j catalog.Job, out Outcome, runErr error) {
	body := api.FinishJSON{Lease: j.LeaseOwner, Result: out.Result, Points: out.Points, Forgotten: out.Forgotten}
	if runErr != nil {
		body.Error = runErr.Error()
	}
	// Delivering the outcome outlives the agent's own cancellation for a
	// short while: a finished backup's points are worth reporting.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
	defer cancel()
	for n := 0; ; n++ {
		err := a.Client.Do(dctx, "POST", "/v1/agent/jobs/"+j.ID+"/finish", body, nil)
		switch {
		case err == nil:
			a.log().Info("job finished", "job", j.ID, "error", body.Error)
			return
		case leaseLost(err):
			a.log().Warn("job outcome refused: the lease was lost meanwhile", "job", j.ID, "err", err)
			return
		}
		a.log().Warn("cannot report the job's outcome yet; retrying", "job", j.ID, "err", err)
		if ctx.Err() != nil && n >= 3 {
			return
		}
		if !backoff(dctx, n) {
			return
		}
	}
}
