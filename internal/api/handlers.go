package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"lifeboat/internal/catalog"
	"lifeboat/internal/job"
	"lifeboat/internal/policy"
	"lifeboat/internal/schedule"
	"lifeboat/internal/secrets"
)

// Duration is a duration on the wire: "15m", "1h30m", "7d".
type Duration = job.Duration

// TierJSON is a protection tier on the wire.
type TierJSON struct {
	Name string   `json:"name"`
	RPO  Duration `json:"rpo,omitempty"`
	RTO  Duration `json:"rto,omitempty"`
	None bool     `json:"none,omitempty"`
	// DrillEvery: how often the scheduler drills the latest point of each
	// machine of the tier (absent: the server's --drill-every).
	DrillEvery Duration `json:"drill_every,omitempty"`
}

func tierToJSON(t schedule.Tier) TierJSON {
	return TierJSON{Name: t.Name, RPO: Duration(t.RPO), RTO: Duration(t.RTO), None: t.None, DrillEvery: Duration(t.DrillEvery)}
}

// KeepJSON is a retention on the wire.
type KeepJSON struct {
	Last    int      `json:"last,omitempty"`
	Hourly  int      `json:"hourly,omitempty"`
	Daily   int      `json:"daily,omitempty"`
	Weekly  int      `json:"weekly,omitempty"`
	Monthly int      `json:"monthly,omitempty"`
	Yearly  int      `json:"yearly,omitempty"`
	Within  Duration `json:"within,omitempty"`
}

// PolicyJSON is a backup policy on the wire.
type PolicyJSON struct {
	Name        string    `json:"name"`
	Every       Duration  `json:"every,omitempty"`
	Cron        string    `json:"cron,omitempty"`
	Stagger     Duration  `json:"stagger,omitempty"`
	Keep        KeepJSON  `json:"keep"`
	Consistency string    `json:"consistency"`
	Vault       string    `json:"vault"`
	CopyTo      string    `json:"copy_to,omitempty"`
	Created     time.Time `json:"created,omitzero"`
	Updated     time.Time `json:"updated,omitzero"`
}

func policyToJSON(p catalog.Policy) PolicyJSON {
	k := p.Keep
	return PolicyJSON{Name: p.Name, Every: Duration(p.Schedule.Every), Cron: p.Schedule.Cron, Stagger: Duration(p.Schedule.Stagger),
		Keep:        KeepJSON{k.KeepLast, k.KeepHourly, k.KeepDaily, k.KeepWeekly, k.KeepMonthly, k.KeepYearly, Duration(k.KeepWithin)},
		Consistency: p.Consistency, Vault: p.Vault, CopyTo: p.CopyTo, Created: p.Created, Updated: p.Updated}
}

func (p PolicyJSON) policy() catalog.Policy {
	k := p.Keep
	return catalog.Policy{Name: p.Name,
		Schedule:    schedule.Spec{Every: time.Duration(p.Every), Cron: p.Cron, Stagger: time.Duration(p.Stagger)},
		Keep:        policy.Retention{KeepLast: k.Last, KeepHourly: k.Hourly, KeepDaily: k.Daily, KeepWeekly: k.Weekly, KeepMonthly: k.Monthly, KeepYearly: k.Yearly, KeepWithin: time.Duration(k.Within)},
		Consistency: p.Consistency, Vault: p.Vault, CopyTo: p.CopyTo}
}

// MachineJSON is a machine on the wire, with where it stands.
type MachineJSON struct {
	Name  string `json:"name"`
	Agent string `json:"agent,omitempty"`
	// Source is the job.Source the machine was added with, as stored.
	Source    json.RawMessage `json:"source"`
	Policy    string          `json:"policy,omitempty"`
	Tier      string          `json:"tier,omitempty"`
	Protected time.Time       `json:"protected,omitzero"`
	// RPOState is green, warning, missed or unprotected; empty for a
	// machine not yet given a tier.
	RPOState  string    `json:"rpo_state,omitempty"`
	RPOAge    Duration  `json:"rpo_age,omitempty"`
	RPO       Duration  `json:"rpo,omitempty"`
	LastPoint time.Time `json:"last_point,omitzero"`
	NextRun   time.Time `json:"next_run,omitzero"`
	// Copy is where the machine's copy to its policy's second vault
	// stands; absent when the policy copies nowhere (or before the
	// scheduler's first tick since it began to).
	Copy *CopyJSON `json:"copy,omitempty"`
}

func (s *Server) listTiers(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.Catalog.Tiers(r.Context())
	return listed(w, convert(ts, tierToJSON), err)
}

// nameMatches refuses a body whose name differs from the path's.
func nameMatches(r *http.Request, body string) (string, error) {
	name := r.PathValue("name")
	if body != "" && body != name {
		return "", invalid("name: the body says %q, the path %q", body, name)
	}
	return name, nil
}

func (s *Server) putTier(w http.ResponseWriter, r *http.Request) error {
	var t TierJSON
	if err := decode(r, &t); err != nil {
		return err
	}
	name, err := nameMatches(r, t.Name)
	if err != nil {
		return err
	}
	t.Name = name
	tier := schedule.Tier{Name: name, RPO: time.Duration(t.RPO), RTO: time.Duration(t.RTO), None: t.None, DrillEvery: time.Duration(t.DrillEvery)}
	if err := s.Catalog.PutTier(r.Context(), tier, s.Clock.Now()); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, tierToJSON(tier))
	return nil
}

func (s *Server) deleteTier(w http.ResponseWriter, r *http.Request) error {
	return deleted(w, s.Catalog.DeleteTier(r.Context(), r.PathValue("name")))
}

func (s *Server) listVaults(w http.ResponseWriter, r *http.Request) error {
	items, err := s.Catalog.Vaults(r.Context())
	return listed(w, items, err)
}

// VaultJSON is the body of PUT /v1/vaults/{name}: the vault, and the
// credentials the server keeps for it (never answered back).
type VaultJSON struct {
	catalog.Vault
	Password string            `json:"password,omitempty"`
	S3       map[string]string `json:"s3,omitempty"`
}

func (s *Server) putVault(w http.ResponseWriter, r *http.Request) error {
	var body VaultJSON
	if err := decode(r, &body); err != nil {
		return err
	}
	v := body.Vault
	name, err := nameMatches(r, v.Name)
	if err != nil {
		return err
	}
	v.Name, v.Created = name, time.Time{}
	cred := secrets.Credential{Password: body.Password, S3: body.S3}
	keep := cred.Password != "" || len(cred.S3) > 0
	if keep {
		if s.Secrets == nil {
			return invalid("password, s3: this server keeps no vault credentials")
		}
		if err := cred.Validate(); err != nil {
			return invalid("s3: %v", err)
		}
	}
	if err := s.Catalog.PutVault(r.Context(), v, s.Clock.Now()); err != nil {
		return err
	}
	if keep {
		if err := s.Secrets.Put(name, cred); err != nil {
			return err
		}
		s.log().Info("vault credentials kept", "vault", name, "password", cred.Password != "", "s3_settings", len(cred.S3))
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// VerifyJSON is the body of POST /v1/vaults/{name}/verify.
type VerifyJSON struct {
	ReadData bool   `json:"read_data,omitempty"`
	Agent    string `json:"agent,omitempty"`
}

// verifyVault queues a verify of a vault, on the server's own agent unless
// another is named.
func (s *Server) verifyVault(w http.ResponseWriter, r *http.Request) error {
	var body VerifyJSON
	if r.ContentLength != 0 {
		if err := decode(r, &body); err != nil {
			return err
		}
	}
	name := r.PathValue("name")
	vaults, err := s.Catalog.Vaults(r.Context())
	if err != nil {
		return err
	}
	url := VaultURLs(vaults)[name]
	if url == "" {
		return fmt.Errorf("vault %q: %w", name, catalog.ErrNotFound)
	}
	agent := body.Agent
	if agent == "" {
		agent = s.DefaultAgent
	}
	spec, _ := json.Marshal(job.Verify{Vault: url, ReadData: body.ReadData})
	return s.queued(w, r, catalog.Job{Kind: "verify", Agent: agent, Vault: name, Spec: spec, MaxAttempts: 1})
}

func (s *Server) listPolicies(w http.ResponseWriter, r *http.Request) error {
	ps, err := s.Catalog.Policies(r.Context())
	return listed(w, convert(ps, policyToJSON), err)
}

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request) error {
	p, err := s.Catalog.Policy(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, policyToJSON(p))
	return nil
}

func (s *Server) putPolicy(w http.ResponseWriter, r *http.Request) error {
	var p PolicyJSON
	if err := decode(r, &p); err != nil {
		return err
	}
	name, err := nameMatches(r, p.Name)
	if err != nil {
		return err
	}
	p.Name = name
	if p.Vault == "" {
		p.Vault = DefaultVault
	}
	if err := s.Catalog.PutPolicy(r.Context(), p.policy(), s.Clock.Now()); err != nil {
		return err
	}
	return s.getPolicy(w, r)
}

func (s *Server) deletePolicy(w http.ResponseWriter, r *http.Request) error {
	return deleted(w, s.Catalog.DeletePolicy(r.Context(), r.PathValue("name")))
}

// machineJSON builds a machine's wire form with its RPO standing at now.
func (s *Server) machineJSON(m catalog.Machine, st standing, now time.Time) (MachineJSON, error) {
	newest := st.newest
	out := MachineJSON{Name: m.Name, Agent: m.Agent, Source: m.Spec, Policy: m.Policy, Tier: m.Tier, Protected: m.Protected, LastPoint: newest[m.Name]}
	tier, ok := st.tiers[m.Tier]
	if ok {
		st := schedule.Assess(tier, newest[m.Name], m.Protected, now)
		out.RPOState, out.RPOAge, out.RPO = string(st.State), Duration(st.Age), Duration(st.Objective)
	}
	if p, ok := st.policies[m.Policy]; ok {
		last := m.LastSlot
		if last.IsZero() {
			last = m.Protected
		}
		if _, at, err := p.Schedule.Next(p.Name+"/"+m.Name, last); err == nil {
			out.NextRun = at
		}
	}
	if c, ok := st.copies[m.Name]; ok {
		cj := CopyStatus(c, tier, now)
		out.Copy = &cj
	}
	return out, nil
}

// standing is what machineJSON needs for every machine.
type standing struct {
	tiers    map[string]schedule.Tier
	policies map[string]catalog.Policy
	newest   map[string]time.Time
	copies   map[string]catalog.CopyState
}

// standing loads what machineJSON needs for machines: four queries
// whatever the number of machines.
func (s *Server) standing(r *http.Request, machines []catalog.Machine) (standing, error) {
	ctx := r.Context()
	var st standing
	var err error
	if st.tiers, err = s.tiers(ctx); err != nil {
		return st, err
	}
	ps, err := s.Catalog.Policies(ctx)
	if err != nil {
		return st, err
	}
	if st.newest, err = s.Catalog.NewestPoints(ctx); err != nil {
		return st, err
	}
	st.policies = map[string]catalog.Policy{}
	for _, p := range ps {
		st.policies[p.Name] = p
	}
	copies, err := s.Catalog.CopyStates(ctx)
	if err != nil {
		return st, err
	}
	st.copies = CurrentCopies(copies, machines, st.policies)
	return st, nil
}

// tiers loads the protection tiers by name.
func (s *Server) tiers(ctx context.Context) (map[string]schedule.Tier, error) {
	ts, err := s.Catalog.Tiers(ctx)
	if err != nil {
		return nil, err
	}
	tiers := map[string]schedule.Tier{}
	for _, t := range ts {
		tiers[t.Name] = t
	}
	return tiers, nil
}

func (s *Server) listMachines(w http.ResponseWriter, r *http.Request) error {
	ms, err := s.Catalog.Machines(r.Context())
	if err != nil {
		return err
	}
	st, err := s.standing(r, ms)
	if err != nil {
		return err
	}
	now := s.Clock.Now()
	out := make([]MachineJSON, 0, len(ms))
	for _, m := range ms {
		mj, err := s.machineJSON(m, st, now)
		if err != nil {
			return err
		}
		out = append(out, mj)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getMachine(w http.ResponseWriter, r *http.Request) error {
	m, err := s.Catalog.Machine(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	st, err := s.standing(r, []catalog.Machine{m})
	if err != nil {
		return err
	}
	mj, err := s.machineJSON(m, st, s.Clock.Now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, mj)
	return nil
}

// AddMachineJSON is the body of POST /v1/machines.
type AddMachineJSON struct {
	Name   string     `json:"name"`
	Agent  string     `json:"agent,omitempty"`
	Source job.Source `json:"source"`
}

func (s *Server) addMachine(w http.ResponseWriter, r *http.Request) error {
	var body AddMachineJSON
	if err := decode(r, &body); err != nil {
		return err
	}
	if err := body.Source.Validate(); err != nil {
		return invalid("source.%v", err)
	}
	if body.Agent == "" {
		if s.DefaultAgent == "" {
			return invalid("agent: this server runs no agent of its own (--no-agent): name the agent whose host has the disks")
		}
		body.Agent = s.DefaultAgent
	}
	spec, err := json.Marshal(body.Source)
	if err != nil {
		return err
	}
	if err := s.Catalog.AddMachine(r.Context(), catalog.Machine{Name: body.Name, Agent: body.Agent, Spec: spec}, s.Clock.Now()); err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/machines/"+body.Name)
	r.SetPathValue("name", body.Name)
	m, err := s.Catalog.Machine(r.Context(), body.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, MachineJSON{Name: m.Name, Agent: m.Agent, Source: m.Spec})
	return nil
}

func (s *Server) deleteMachine(w http.ResponseWriter, r *http.Request) error {
	return deleted(w, s.Catalog.DeleteMachine(r.Context(), r.PathValue("name"), s.Clock.Now()))
}

// ProtectJSON is the body of POST /v1/machines/{name}/protect. Tier is
// required ("none" tiers included); Policy may be empty only with a tier
// that asks for no protection.
type ProtectJSON struct {
	Policy string `json:"policy,omitempty"`
	Tier   string `json:"tier"`
}

func (s *Server) protect(w http.ResponseWriter, r *http.Request) error {
	var body ProtectJSON
	if err := decode(r, &body); err != nil {
		return err
	}
	if body.Tier == "" {
		return invalid("tier: every protected machine has a tier (a tier with none: true says no protection)")
	}
	if body.Policy == "" {
		t, err := s.Catalog.Tier(r.Context(), body.Tier)
		if err != nil {
			return err
		}
		if !t.None {
			return invalid("policy: tier %q has objectives, so the machine needs a backup policy", body.Tier)
		}
	}
	if err := s.Catalog.Protect(r.Context(), r.PathValue("name"), body.Policy, body.Tier, s.Clock.Now()); err != nil {
		return err
	}
	return s.getMachine(w, r)
}

// backupNow queues a backup of the machine under its policy now.
func (s *Server) backupNow(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	m, err := s.Catalog.Machine(ctx, r.PathValue("name"))
	if err != nil {
		return err
	}
	id, err := EnqueueBackup(ctx, s.Catalog, m, "manual", s.Clock.Now())
	if err != nil {
		return err
	}
	j, err := s.Catalog.Job(ctx, id)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/jobs/"+id)
	writeJSON(w, http.StatusAccepted, j)
	return nil
}

// RestoreJSON is the body of POST /v1/machines/{name}/restore: which point
// goes where, on which agent's host. Vault is the vault's name (default:
// the machine's policy's vault); Agent the host that writes the disks
// (default: the machine's own agent).
type RestoreJSON struct {
	// Restore is the restore, its Vault a vault name the server knows
	// (default: the machine's policy's); the machine is the path's.
	job.Restore
	// Agent is the host that writes the disks (default: the machine's agent).
	Agent string `json:"agent,omitempty"`
}

// machineVault finds a machine and the vault a job of it reads: the one
// named, else its policy's; it returns the vault's name and URL.
func (s *Server) machineVault(ctx context.Context, machine, vaultName string) (catalog.Machine, string, string, error) {
	m, err := s.Catalog.Machine(ctx, machine)
	if err != nil {
		return m, "", "", err
	}
	if vaultName == "" {
		if m.Policy == "" {
			return m, "", "", invalid("vault: machine %q has no policy to take its vault from: name the vault", m.Name)
		}
		p, err := s.Catalog.Policy(ctx, m.Policy)
		if err != nil {
			return m, "", "", err
		}
		vaultName = p.Vault
	}
	vaults, err := s.Catalog.Vaults(ctx)
	if err != nil {
		return m, "", "", err
	}
	url := VaultURLs(vaults)[vaultName]
	if url == "" {
		return m, "", "", invalid("vault: %q is not a vault the server knows", vaultName)
	}
	return m, vaultName, url, nil
}

// restoreMachine queues a restore of one of the machine's points.
func (s *Server) restoreMachine(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var body RestoreJSON
	if err := decode(r, &body); err != nil {
		return err
	}
	m, vaultName, url, err := s.machineVault(ctx, r.PathValue("name"), body.Vault)
	if err != nil {
		return err
	}
	spec := body.Restore
	spec.Machine, spec.Vault = m.Name, url
	if err := spec.Validate(); err != nil {
		return err
	}
	agent := body.Agent
	if agent == "" {
		agent = m.Agent
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	return s.queued(w, r, catalog.Job{Kind: "restore", Machine: m.Name, Agent: agent, Vault: vaultName, Spec: raw, MaxAttempts: 1})
}

// queued enqueues j and answers 202 with the job and its Location.
func (s *Server) queued(w http.ResponseWriter, r *http.Request, j catalog.Job) error {
	id, err := s.Catalog.Enqueue(r.Context(), j, s.Clock.Now())
	if err != nil {
		return err
	}
	j, err = s.Catalog.Job(r.Context(), id)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/jobs/"+id)
	writeJSON(w, http.StatusAccepted, j)
	return nil
}

func (s *Server) listPoints(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if _, err := s.Catalog.Machine(r.Context(), name); err != nil {
		return err
	}
	limit, err := queryInt(r, "limit")
	if err != nil {
		return err
	}
	items, err := s.Catalog.Points(r.Context(), name, limit)
	return listed(w, items, err)
}

func queryInt(r *http.Request, name string) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, invalid("%s: %q is not a non-negative whole number", name, v)
	}
	return n, nil
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := queryInt(r, "limit")
	if err != nil {
		return err
	}
	items, err := s.Catalog.Jobs(r.Context(), catalog.JobFilter{Machine: q.Get("machine"), Agent: q.Get("agent"), State: q.Get("state"), Kind: q.Get("kind"), Limit: limit})
	return listed(w, items, err)
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) error {
	j, err := s.Catalog.Job(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, j)
	return nil
}

func (s *Server) jobLogs(w http.ResponseWriter, r *http.Request) error {
	after, err := queryInt(r, "after")
	if err != nil {
		return err
	}
	j, err := s.Catalog.Job(r.Context(), r.PathValue("id")) // the ID or a prefix of it
	if err != nil {
		return err
	}
	items, err := s.Catalog.Logs(r.Context(), j.ID, int64(after))
	return listed(w, items, err)
}

func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) error {
	j, err := s.Catalog.Job(r.Context(), r.PathValue("id")) // the ID or a prefix of it
	if err != nil {
		return err
	}
	if err := s.Catalog.CancelJob(r.Context(), j.ID, s.Clock.Now()); err != nil {
		return err
	}
	return s.getJob(w, r)
}

func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request) error {
	all := r.URL.Query().Get("all") == "true"
	items, err := s.Catalog.Alerts(r.Context(), all, 0)
	return listed(w, items, err)
}

// ackAlert records that the caller acknowledged an open alert: someone
// is on it. The alert stays open until its cause is gone.
func (s *Server) ackAlert(w http.ResponseWriter, r *http.Request) error {
	a, err := s.Catalog.Ack(r.Context(), r.PathValue("id"), callerOf(r).token.Name, s.Clock.Now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func (s *Server) listAgents(w http.ResponseWriter, r *http.Request) error {
	items, err := s.Catalog.Agents(r.Context())
	return listed(w, items, err)
}

func (s *Server) deleteAgent(w http.ResponseWriter, r *http.Request) error {
	return deleted(w, s.Catalog.DeleteAgent(r.Context(), r.PathValue("name"), s.Clock.Now()))
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	items, err := s.Catalog.Tokens(r.Context())
	return listed(w, items, err)
}

// NewTokenJSON is the body of POST /v1/tokens; the answer carries the
// secret, shown this once.
type NewTokenJSON struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	Secret string `json:"secret,omitempty"`
}

func (s *Server) addToken(w http.ResponseWriter, r *http.Request) error {
	var body NewTokenJSON
	if err := decode(r, &body); err != nil {
		return err
	}
	if body.Secret != "" {
		return invalid("secret: the server makes the secret; leave it out")
	}
	secret, err := NewSecret()
	if err != nil {
		return err
	}
	if _, err := s.Catalog.AddToken(r.Context(), body.Name, body.Role, HashToken(secret), s.Clock.Now()); err != nil {
		return err
	}
	body.Secret = secret
	writeJSON(w, http.StatusCreated, body)
	return nil
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if name == callerOf(r).token.Name {
		return invalid("name: a token cannot revoke itself; use another admin token")
	}
	if err := s.Catalog.RevokeToken(r.Context(), name, s.Clock.Now()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// CallerJSON is the answer of GET /v1/whoami.
type CallerJSON struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// whoami says whose the token is: the dashboard shows it and offers only
// the actions its role may take.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) error {
	tok := callerOf(r).token
	writeJSON(w, http.StatusOK, CallerJSON{Name: tok.Name, Role: tok.Role})
	return nil
}

var errNoPolicy = errors.New("has no backup policy: protect it first (lifeboat protect MACHINE --policy P --tier T)")

// listed writes a listing, [] rather than null when it is empty.
func listed[T any](w http.ResponseWriter, items []T, err error) error {
	if err != nil {
		return err
	}
	if items == nil {
		items = []T{}
	}
	writeJSON(w, http.StatusOK, items)
	return nil
}

// convert maps items to their wire form.
func convert[T, U any](items []T, f func(T) U) []U {
	out := make([]U, 0, len(items))
	for _, it := range items {
		out = append(out, f(it))
	}
	return out
}

// deleted answers 204 for a delete that succeeded.
func deleted(w http.ResponseWriter, err error) error {
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// DrillJSON is the body of POST /v1/machines/{name}/drill: which point to
// prove, how, on which agent's host (default: the machine's own agent).
type DrillJSON struct {
	Point       string       `json:"point"`
	Vault       string       `json:"vault,omitempty"`
	Agent       string       `json:"agent,omitempty"`
	Probe       string       `json:"probe,omitempty"`
	ProbeSerial string       `json:"probe_serial,omitempty"`
	Timeout     job.Duration `json:"timeout,omitempty"`
	Boot        job.Boot     `json:"boot"`
}

// drillMachine queues a drill of one of the machine's points; a failed
// drill raises a drill-failed alert on the machine until one succeeds.
func (s *Server) drillMachine(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var body DrillJSON
	if err := decode(r, &body); err != nil {
		return err
	}
	m, vaultName, url, err := s.machineVault(ctx, r.PathValue("name"), body.Vault)
	if err != nil {
		return err
	}
	spec := job.Drill{Machine: m.Name, Point: cmp.Or(body.Point, "latest"), Vault: url, Probe: body.Probe, ProbeSerial: body.ProbeSerial,
		Timeout: body.Timeout, Boot: body.Boot}
	if err := spec.Validate(); err != nil {
		return err
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	return s.queued(w, r, catalog.Job{Kind: "drill", Machine: m.Name, Agent: cmp.Or(body.Agent, m.Agent), Vault: vaultName,
		Spec: raw, MaxAttempts: 1})
}
