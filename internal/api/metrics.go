package api

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"lifeboat/internal/catalog"
	"lifeboat/internal/schedule"
)

// AgentTimeout is how long an agent may be silent before it counts as down
// (lifeboat_agent_up 0; the scheduler's agent-down alert uses the same).
const AgentTimeout = 2 * time.Minute

// metrics holds what this server counts as it serves (jobs it saw end)
// and reads the rest from the catalog at each scrape, so that every
// server on one catalog reports the same state.
type metrics struct {
	reg       *prometheus.Registry
	jobs      *prometheus.CounterVec
	durations *prometheus.HistogramVec
	points    *prometheus.CounterVec
	newBytes  *prometheus.CounterVec
	readBytes *prometheus.CounterVec
	stored    *prometheus.CounterVec
}

var (
	descRPOAge    = prometheus.NewDesc("lifeboat_rpo_age_seconds", "Age of the machine's newest recovery point.", []string{"machine", "tier"}, nil)
	descRPOObj    = prometheus.NewDesc("lifeboat_rpo_objective_seconds", "The RPO of the machine's tier.", []string{"machine", "tier"}, nil)
	descRPOState  = prometheus.NewDesc("lifeboat_rpo_state", "1 for the machine's RPO state (green, warning, missed, unprotected).", []string{"machine", "state"}, nil)
	descAgentUp   = prometheus.NewDesc("lifeboat_agent_up", "1 if the agent sent a heartbeat within the last 2 minutes.", []string{"agent"}, nil)
	descAgentBeat = prometheus.NewDesc("lifeboat_agent_last_heartbeat_timestamp_seconds", "When the agent last sent a heartbeat.", []string{"agent"}, nil)
	descJobsNow   = prometheus.NewDesc("lifeboat_jobs", "Jobs by state, now.", []string{"state"}, nil)
	descAlerts    = prometheus.NewDesc("lifeboat_alerts_open", "Open alerts by kind.", []string{"kind"}, nil)
	descMachines  = prometheus.NewDesc("lifeboat_machines", "Machines in the catalog.", nil, nil)
	descUp        = prometheus.NewDesc("lifeboat_catalog_up", "1 if the catalog answered this scrape.", nil, nil)
	descDedup     = prometheus.NewDesc("lifeboat_backup_dedup_ratio",
		"Share of the bytes the machine's newest successful backup read that it did not store as new chunks: 1 - new_bytes/read_bytes (0 when it read nothing).",
		[]string{"machine"}, nil)
	descVaultSize = prometheus.NewDesc("lifeboat_vault_pack_bytes",
		"Bytes of packs in the vault as its newest successful prune job counted them, before that prune deleted anything (the scheduler prunes daily); data stored since is not counted.",
		[]string{"vault"}, nil)
	descVaultSizeAt = prometheus.NewDesc("lifeboat_vault_pack_bytes_timestamp_seconds", "When the prune that counted lifeboat_vault_pack_bytes ended.", []string{"vault"}, nil)
	descCopyLag     = prometheus.NewDesc("lifeboat_copy_lag_seconds",
		"How long the machine's copy to its policy's second vault has lacked a point of the policy's vault (0: it has them all); the copy-lag alert fires beyond the tier's RPO.",
		[]string{"machine", "target"}, nil)
)

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_jobs_finished_total",
			Help: "Job runs reported to this server, by kind and result (succeeded, failed, retrying, cancelled)."}, []string{"kind", "result"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "lifeboat_job_duration_seconds",
			Help: "Duration of job runs reported to this server.", Buckets: prometheus.ExponentialBuckets(0.1, 2, 16)}, []string{"kind"}),
		points: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_points_total",
			Help: "Recovery points reported to this server, by consistency achieved."}, []string{"consistency"}),
		newBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_backup_new_bytes_total",
			Help: "Bytes of new chunks stored by backups reported to this server."}, []string{"machine"}),
		readBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_backup_read_bytes_total",
			Help: "Bytes read from the machine's disks by backups reported to this server."}, []string{"machine"}),
		stored: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_backup_stored_bytes_total",
			Help: "Bytes of packs uploaded to the vault (compressed, encrypted) by backups reported to this server."}, []string{"machine"}),
	}
	m.reg.MustRegister(m.jobs, m.durations, m.points, m.newBytes, m.readBytes, m.stored, &catalogCollector{s: s})
	return m
}

// backupResult is what the metrics read of a backup's result.
type backupResult struct {
	NewBytes    int64 `json:"new_bytes"`
	ReadBytes   int64 `json:"read_bytes"`
	StoredBytes int64 `json:"stored_bytes"`
}

// finished counts a run reported through the agent routes.
func (m *metrics) finished(j catalog.Job, points []catalog.Point, raw json.RawMessage) {
	var res backupResult
	json.Unmarshal(raw, &res)
	result := j.State
	if j.State == catalog.Queued {
		result = "retrying"
	}
	m.jobs.WithLabelValues(j.Kind, result).Inc()
	if !j.Started.IsZero() && !j.Finished.IsZero() {
		m.durations.WithLabelValues(j.Kind).Observe(j.Finished.Sub(j.Started).Seconds())
	}
	for _, p := range points {
		m.points.WithLabelValues(p.Consistency).Inc()
	}
	if j.Kind == "backup" && j.State == catalog.Succeeded && j.Machine != "" {
		m.newBytes.WithLabelValues(j.Machine).Add(float64(max(res.NewBytes, 0)))
		m.readBytes.WithLabelValues(j.Machine).Add(float64(max(res.ReadBytes, 0)))
		m.stored.WithLabelValues(j.Machine).Add(float64(max(res.StoredBytes, 0)))
	}
}

// catalogCollector reads the state of the world from the catalog.
type catalogCollector struct {
	s  *Server
	mu sync.Mutex
}

func (c *catalogCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRPOAge, descRPOObj, descRPOState, descAgentUp, descAgentBeat, descJobsNow, descAlerts, descMachines, descUp,
		descDedup, descVaultSize, descVaultSizeAt, descCopyLag} {
		ch <- d
	}
}

func (c *catalogCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.collect(ctx, ch); err != nil {
		c.s.log().Error("metrics: reading the catalog failed", "err", err)
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1)
}

func (c *catalogCollector) collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	cat, now := c.s.Catalog, c.s.Clock.Now()
	machines, err := cat.Machines(ctx)
	if err != nil {
		return err
	}
	tiers, err := cat.Tiers(ctx)
	if err != nil {
		return err
	}
	newest, err := cat.NewestPoints(ctx)
	if err != nil {
		return err
	}
	byName := map[string]schedule.Tier{}
	for _, t := range tiers {
		byName[t.Name] = t
	}
	ch <- prometheus.MustNewConstMetric(descMachines, prometheus.GaugeValue, float64(len(machines)))
	for _, m := range machines {
		t, ok := byName[m.Tier]
		if !ok {
			continue
		}
		st := schedule.Assess(t, newest[m.Name], m.Protected, now)
		for _, s := range []schedule.State{schedule.Green, schedule.Warning, schedule.Missed, schedule.Unprotected} {
			v := 0.0
			if st.State == s {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descRPOState, prometheus.GaugeValue, v, m.Name, string(s))
		}
		if t.None {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descRPOObj, prometheus.GaugeValue, t.RPO.Seconds(), m.Name, t.Name)
		if !newest[m.Name].IsZero() {
			ch <- prometheus.MustNewConstMetric(descRPOAge, prometheus.GaugeValue, st.Age.Seconds(), m.Name, t.Name)
		}
	}
	agents, err := cat.Agents(ctx)
	if err != nil {
		return err
	}
	for _, a := range agents {
		up := 0.0
		if now.Sub(a.Heartbeat) <= AgentTimeout {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descAgentUp, prometheus.GaugeValue, up, a.Name)
		ch <- prometheus.MustNewConstMetric(descAgentBeat, prometheus.GaugeValue, float64(a.Heartbeat.Unix()), a.Name)
	}
	counts, err := cat.JobCounts(ctx)
	if err != nil {
		return err
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(descJobsNow, prometheus.GaugeValue, float64(n), state)
	}
	alerts, err := cat.Alerts(ctx, false, 100000)
	if err != nil {
		return err
	}
	kinds := map[string]int{}
	for _, a := range alerts {
		kinds[a.Kind]++
	}
	for k, n := range kinds {
		ch <- prometheus.MustNewConstMetric(descAlerts, prometheus.GaugeValue, float64(n), k)
	}
	return c.collectData(ctx, ch, machines, byName, now)
}

// collectData reports what the catalog knows of the data: dedup of each
// machine's newest backup, vault sizes, copy lag.
func (c *catalogCollector) collectData(ctx context.Context, ch chan<- prometheus.Metric, machines []catalog.Machine, tiers map[string]schedule.Tier, now time.Time) error {
	cat := c.s.Catalog
	backups, err := cat.LatestJobs(ctx, "backup", catalog.Succeeded)
	if err != nil {
		return err
	}
	for machine, j := range backups {
		var res struct {
			NewBytes  int64  `json:"new_bytes"`
			ReadBytes *int64 `json:"read_bytes"`
		}
		if json.Unmarshal(j.Result, &res) != nil || res.ReadBytes == nil {
			continue // an older agent's result: nothing to say
		}
		ratio := 0.0
		if read := *res.ReadBytes; read > 0 {
			ratio = 1 - float64(min(res.NewBytes, read))/float64(read)
		}
		ch <- prometheus.MustNewConstMetric(descDedup, prometheus.GaugeValue, ratio, machine)
	}
	prunes, err := cat.Jobs(ctx, catalog.JobFilter{Kind: "prune", State: catalog.Succeeded, Limit: 200})
	if err != nil {
		return err
	}
	sized := map[string]bool{}
	for _, j := range prunes { // newest first
		var res struct {
			PackBytes *int64 `json:"pack_bytes"`
		}
		if sized[j.Vault] || j.Vault == "" || json.Unmarshal(j.Result, &res) != nil || res.PackBytes == nil {
			continue
		}
		sized[j.Vault] = true
		ch <- prometheus.MustNewConstMetric(descVaultSize, prometheus.GaugeValue, float64(*res.PackBytes), j.Vault)
		ch <- prometheus.MustNewConstMetric(descVaultSizeAt, prometheus.GaugeValue, float64(j.Finished.Unix()), j.Vault)
	}
	ps, err := cat.Policies(ctx)
	if err != nil {
		return err
	}
	policies := map[string]catalog.Policy{}
	for _, p := range ps {
		policies[p.Name] = p
	}
	states, err := cat.CopyStates(ctx)
	if err != nil {
		return err
	}
	current := CurrentCopies(states, machines, policies)
	for _, m := range machines {
		if st, ok := current[m.Name]; ok {
			cs := CopyStatus(st, tiers[m.Tier], now)
			ch <- prometheus.MustNewConstMetric(descCopyLag, prometheus.GaugeValue, time.Duration(cs.Lag).Seconds(), m.Name, cs.Target)
		}
	}
	return nil
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics().reg, promhttp.HandlerOpts{})
}

// metrics returns the server's metrics, made on first use.
func (s *Server) metrics() *metrics {
	s.metricsOnce.Do(func() { s.m = newMetrics(s) })
	return s.m
}
