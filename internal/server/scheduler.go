package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/drill"
	"lifeboat/internal/job"
	"lifeboat/internal/schedule"
)

// Alert kinds.
const (
	AlertRPO        = "rpo-missed"
	AlertJobFailing = "job-failing"
	AlertAgentDown  = "agent-down"
	// AlertNotQueued: a machine's slot came but its backup could not be
	// queued (its policy's vault is unknown, its spec invalid, the
	// catalog failing); it is tried again at each tick.
	AlertNotQueued = "backup-not-queued"
	// AlertDrillRTO: a machine's latest successful drill took longer than
	// its tier's RTO (cleared by a drill within it, or a laxer RTO).
	AlertDrillRTO = "drill-rto-missed"
)

// Scheduler is the control plane's clockwork: each Tick reaps expired
// leases, queues the backups whose slot has come, and raises or clears
// alerts. Everything it decides comes from the catalog and the time it is
// given, so several servers on one catalog tick safely side by side (a
// slot is queued by whichever records it first) and tests drive it with a
// fake clock.
type Scheduler struct {
	Catalog *catalog.Catalog
	Log     *slog.Logger
	// Webhooks receive every alert raised and cleared, as JSON POSTs,
	// sent off the tick with retries (see Webhooks).
	Webhooks []string
	// HTTP sends the webhooks; nil means a client with a 10 s timeout.
	HTTP *http.Client
	// AgentTimeout is how long an agent may go without a heartbeat before
	// it is reported down (default 2 minutes).
	AgentTimeout time.Duration
	// FailuresToAlert is how many failed attempts in a row of one
	// machine's jobs raise an alert (default 3).
	FailuresToAlert int
	// Agent runs the vault-wide jobs (prune); empty: any agent.
	Agent string
	// DrillEvery, if not zero, is how often the latest point of each
	// protected machine is drilled (lifeboat drill, on the machine's
	// agent) when its tier sets no interval of its own (DrillEvery of
	// schedule.Tier): a drill that fails raises drill-failed.
	DrillEvery time.Duration
	// Started is when this server started. For a lease's length after it,
	// expired leases are not reaped and silent agents not reported: after
	// a restart, agents need one renewal to show they still run their jobs.
	Started time.Time

	hooksOnce sync.Once
	hooks     *Webhooks
}

// TickReport says what one tick did.
type TickReport struct {
	Queued  []string `json:"queued"` // job IDs
	Reaped  []string `json:"reaped"`
	Raised  []string `json:"raised"` // "kind subject"
	Cleared []string `json:"cleared"`

	open map[string]bool // alerts open when the tick began
}

// Event is what a webhook receives.
type Event struct {
	Event   string    `json:"event"` // "raised" or "cleared"
	Kind    string    `json:"kind"`
	Subject string    `json:"subject"`
	Message string    `json:"message,omitempty"`
	Time    time.Time `json:"time"`
}

func (s *Scheduler) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// Tick runs one round at now.
func (s *Scheduler) Tick(ctx context.Context, now time.Time) (TickReport, error) {
	var rep TickReport
	settled := now.Sub(s.Started) >= api.Lease
	if settled {
		reaped, err := s.Catalog.Reap(ctx, now)
		if err != nil {
			return rep, err
		}
		rep.Reaped = reaped
	}
	reaped := rep.Reaped
	for _, id := range reaped {
		s.log().Warn("job interrupted: its runner stopped renewing the lease; queued again if attempts remain", "job", id)
	}

	machines, err := s.Catalog.Machines(ctx)
	if err != nil {
		return rep, err
	}
	policies := map[string]catalog.Policy{}
	ps, err := s.Catalog.Policies(ctx)
	if err != nil {
		return rep, err
	}
	for _, p := range ps {
		policies[p.Name] = p
	}
	tiers := map[string]schedule.Tier{}
	ts, err := s.Catalog.Tiers(ctx)
	if err != nil {
		return rep, err
	}
	for _, t := range ts {
		tiers[t.Name] = t
	}
	newest, err := s.Catalog.NewestPoints(ctx)
	if err != nil {
		return rep, err
	}
	vaults, err := s.Catalog.Vaults(ctx)
	if err != nil {
		return rep, err
	}
	urls := api.VaultURLs(vaults)
	// What is open now, so that a tick writes only the alerts that change.
	open, err := s.Catalog.Alerts(ctx, false, 1_000_000)
	if err != nil {
		return rep, err
	}
	rep.open = map[string]bool{}
	for _, a := range open {
		rep.open[a.Kind+" "+a.Subject] = true
	}
	failuresToAlert := s.FailuresToAlert
	if failuresToAlert <= 0 {
		failuresToAlert = 3
	}
	copies, err := s.copies(ctx, machines, policies, now)
	if err != nil {
		return rep, err
	}

	for _, m := range machines {
		if p, ok := policies[m.Policy]; ok && !tiers[m.Tier].None {
			last := m.LastSlot
			if last.IsZero() {
				last = m.Protected
			}
			slot, due, err := p.Schedule.Due(p.Name+"/"+m.Name, last, now)
			if err == nil && due {
				var id string
				id, err = s.queue(ctx, m, p, urls, slot, now)
				if id != "" {
					rep.Queued = append(rep.Queued, id)
				}
			}
			msg := ""
			if err != nil {
				msg = fmt.Sprintf("the backup of %s under policy %s could not be queued: %v", m.Name, p.Name, err)
			}
			s.alert(ctx, &rep, err != nil, AlertNotQueued, m.Name, msg, now)
		}
		if tier, ok := tiers[m.Tier]; ok {
			st := schedule.Assess(tier, newest[m.Name], m.Protected, now)
			msg := fmt.Sprintf("newest point of %s is %s old, beyond its RPO of %s (tier %s)", m.Name, st.Age.Round(time.Second), tier.RPO, tier.Name)
			if newest[m.Name].IsZero() {
				msg = fmt.Sprintf("%s has no recovery point %s after it was protected; its RPO is %s (tier %s)", m.Name, now.Sub(m.Protected).Round(time.Second), tier.RPO, tier.Name)
			}
			s.alert(ctx, &rep, st.State == schedule.Missed, AlertRPO, m.Name, msg, now)
		}
		c, copied := copies[m.Name]
		s.copyLag(ctx, &rep, m, tiers[m.Tier], c, copied, now)
		on, msg := failing(m, c, failuresToAlert)
		s.alert(ctx, &rep, on, AlertJobFailing, m.Name, msg, now)
	}

	if err := s.prunes(ctx, &rep, ps, urls, now); err != nil {
		return rep, err
	}
	if err := s.drills(ctx, &rep, machines, policies, tiers, newest, urls, now); err != nil {
		return rep, err
	}

	if settled { // after a restart, agents need a moment to report again
		if err := s.replicationAlerts(ctx, &rep, machines, tiers, now); err != nil {
			return rep, err
		}
	}

	agents, err := s.Catalog.Agents(ctx)
	if err != nil {
		return rep, err
	}
	timeout := s.AgentTimeout
	if timeout <= 0 {
		timeout = api.AgentTimeout
	}
	for _, a := range agents {
		if !settled {
			break
		}
		quiet := now.Sub(a.Heartbeat)
		s.alert(ctx, &rep, quiet > timeout, AlertAgentDown, a.Name,
			fmt.Sprintf("agent %s sent no heartbeat for %s (last %s)", a.Name, quiet.Round(time.Second), a.Heartbeat.Format(time.RFC3339)), now)
	}
	return rep, nil
}

// PruneEvery is how often a vault whose policies forget points is pruned.
const PruneEvery = 24 * time.Hour

// prunes queues a prune of each vault that a policy with a retention
// writes to, once every PruneEvery: forget jobs (queued after each
// backup) remove points, prune frees the data no point needs.
func (s *Scheduler) prunes(ctx context.Context, rep *TickReport, policies []catalog.Policy, urls map[string]string, now time.Time) error {
	seen := map[string]bool{}
	for _, p := range policies {
		if p.Keep.Empty() || seen[p.Vault] || urls[p.Vault] == "" {
			continue
		}
		seen[p.Vault] = true
		last, err := s.Catalog.Jobs(ctx, catalog.JobFilter{Kind: "prune", Vault: p.Vault, Limit: 1})
		if err != nil {
			return err
		}
		if len(last) > 0 && now.Sub(last[0].Created) < PruneEvery {
			continue
		}
		spec, _ := json.Marshal(job.Prune{Vault: urls[p.Vault]})
		id, err := s.Catalog.Enqueue(ctx, catalog.Job{Kind: "prune", Agent: s.Agent, Vault: p.Vault, Spec: spec, MaxAttempts: 2}, now)
		if err != nil {
			return err
		}
		rep.Queued = append(rep.Queued, id)
		s.log().Info("prune queued", "vault", p.Vault, "job", id)
	}
	return nil
}

// drills queues a drill of the latest point of each protected machine
// that has one, as often as its tier says (or DrillEvery), and holds the
// latest successful drill of each machine against its tier's RTO. Two
// queries for all machines, none per machine.
func (s *Scheduler) drills(ctx context.Context, rep *TickReport, machines []catalog.Machine, policies map[string]catalog.Policy,
	tiers map[string]schedule.Tier, newest map[string]time.Time, urls map[string]string, now time.Time) error {
	last, err := s.Catalog.LatestJobs(ctx, "drill", "")
	if err != nil {
		return err
	}
	proven, err := s.Catalog.LatestJobs(ctx, "drill", catalog.Succeeded)
	if err != nil {
		return err
	}
	for _, m := range machines {
		tier := tiers[m.Tier] // the zero tier if none: the server's interval, no RTO
		s.drillRTO(ctx, rep, m, tier, proven[m.Name], now)
		p, ok := policies[m.Policy]
		if !ok || urls[p.Vault] == "" || !schedule.DrillDue(tier, s.DrillEvery, !newest[m.Name].IsZero(), last[m.Name].Created, now) {
			continue
		}
		spec, _ := json.Marshal(job.Drill{Machine: m.Name, Point: "latest", Vault: urls[p.Vault]})
		id, err := s.Catalog.Enqueue(ctx, catalog.Job{Kind: "drill", Machine: m.Name, Agent: m.Agent, Vault: p.Vault, Spec: spec, MaxAttempts: 1}, now)
		if err != nil {
			return err
		}
		rep.Queued = append(rep.Queued, id)
		s.log().Info("drill queued", "machine", m.Name, "tier", tier.Name, "job", id)
	}
	return nil
}

// drillRTO raises drill-rto-missed on m while its latest successful drill
// (proven; zero: none) measured a recovery time beyond its tier's RTO,
// and clears it otherwise.
func (s *Scheduler) drillRTO(ctx context.Context, rep *TickReport, m catalog.Machine, tier schedule.Tier, proven catalog.Job, now time.Time) {
	var res drill.Result
	if tier.RTO > 0 && (proven.ID == "" || json.Unmarshal(proven.Result, &res) != nil || res.RTOMS <= 0) {
		return // nothing measured: nothing to hold against the RTO
	}
	rto := time.Duration(res.RTOMS) * time.Millisecond
	s.alert(ctx, rep, schedule.RTOMissed(tier, rto), AlertDrillRTO, m.Name,
		fmt.Sprintf("the latest drill of %s (point %.12s, %s) took %s to answer, beyond its RTO of %s (tier %s)",
			m.Name, res.Point, proven.Finished.Format(time.RFC3339), rto.Round(100*time.Millisecond), tier.RTO, tier.Name), now)
}

// queue moves the machine's slot and queues its backup in one catalog
// transaction: only the server that moves the slot queues, a slot is never
// used up without its backup, and a machine whose backup is still queued
// or running gets no second one.
func (s *Scheduler) queue(ctx context.Context, m catalog.Machine, p catalog.Policy, urls map[string]string, slot, now time.Time) (string, error) {
	j, err := api.BackupJob(m, p, urls, "scheduled")
	if err != nil {
		return "", err
	}
	id, moved, err := s.Catalog.QueueSlot(ctx, m.Name, slot, j, now)
	if err != nil {
		return "", err
	}
	switch {
	case id != "":
		s.log().Info("scheduled backup queued", "machine", m.Name, "policy", m.Policy, "slot", slot, "job", id)
	case moved:
		s.log().Info("slot joins the backup already queued or running", "machine", m.Name, "slot", slot)
	}
	return id, nil
}

// alert raises (when on) or clears the alert, notifying on each change.
func (s *Scheduler) alert(ctx context.Context, rep *TickReport, on bool, kind, subject, msg string, now time.Time) {
	if on == rep.open[kind+" "+subject] {
		return // no change
	}
	if on {
		opened, err := s.Catalog.Raise(ctx, kind, subject, msg, now)
		if err != nil {
			s.log().Error("raising an alert failed", "kind", kind, "subject", subject, "err", err)
			return
		}
		if opened {
			rep.Raised = append(rep.Raised, kind+" "+subject)
			s.log().Warn("alert raised", "kind", kind, "subject", subject, "message", msg)
			s.notify(Event{Event: "raised", Kind: kind, Subject: subject, Message: msg, Time: now})
		}
		return
	}
	cleared, err := s.Catalog.Resolve(ctx, kind, subject, now)
	if err != nil {
		s.log().Error("clearing an alert failed", "kind", kind, "subject", subject, "err", err)
		return
	}
	if cleared {
		rep.Cleared = append(rep.Cleared, kind+" "+subject)
		s.log().Info("alert cleared", "kind", kind, "subject", subject)
		s.notify(Event{Event: "cleared", Kind: kind, Subject: subject, Time: now})
	}
}

// Alerted sends the webhooks an alert raised or cleared outside the tick
// (by the API, when a verify or a drill job finishes): api.Server.Alerted.
func (s *Scheduler) Alerted(raised bool, kind, subject, message string, at time.Time) {
	ev := Event{Event: "cleared", Kind: kind, Subject: subject, Message: message, Time: at}
	if raised {
		ev.Event = "raised"
	}
	s.notify(ev)
}

// notify queues ev for every webhook (Webhooks): it never waits for one.
func (s *Scheduler) notify(ev Event) {
	if len(s.Webhooks) == 0 {
		return
	}
	s.hooksOnce.Do(func() { s.hooks = &Webhooks{URLs: s.Webhooks, HTTP: s.HTTP, Log: s.log()} })
	s.hooks.Send(ev)
}

// Close stops the webhook senders (events still queued are dropped).
func (s *Scheduler) Close() {
	s.hooksOnce.Do(func() {})
	if s.hooks != nil {
		s.hooks.Close()
	}
}
