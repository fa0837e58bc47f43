package catalog

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"lifeboat/internal/schedule"
)

// Snapshot is what the catalog saves into a vault so that a lost server
// can be rebuilt (lifeboat server --recover-from): what the operators
// said — tiers, vaults, policies, machines and their protection — and the
// hashed tokens, so that agents keep working with the tokens they hold —
// and what it did: the history of ended jobs with their logs, and the
// alerts (version 2). Points are not in it (they are read back from the
// vault itself); queued and running jobs, agents' heartbeats and schedule
// slots start afresh.
type Snapshot struct {
	Version  int             `json:"version"`
	Tiers    []schedule.Tier `json:"tiers"`
	Vaults   []Vault         `json:"vaults"`
	Policies []Policy        `json:"policies"`
	Machines []SnapMachine   `json:"machines"`
	Tokens   []SnapToken     `json:"tokens"`
	// Jobs are the newest ended jobs (at most SnapshotJobs), newest first,
	// each with the end of its log.
	Jobs []SnapJob `json:"jobs,omitempty"`
	// Alerts are the newest alerts, open and cleared (at most SnapshotAlerts).
	Alerts []Alert `json:"alerts,omitempty"`
	// BuiltinAgent names the server's built-in agent, whose token is not
	// restored: the rebuilt server makes its own.
	BuiltinAgent string `json:"builtin_agent,omitempty"`
}

// SnapshotVersion is the version of the snapshot document this lifeboat
// writes; it reads this one and version 1 (no jobs or alerts).
const SnapshotVersion = 2

// How much history a snapshot keeps: the newest SnapshotJobs ended jobs,
// the last SnapshotLogLines lines of each one's log while their messages
// total at most SnapshotLogBytes (older jobs beyond it are kept without
// their log), and the newest SnapshotAlerts alerts.
const (
	SnapshotJobs     = 1000
	SnapshotLogLines = 100
	SnapshotLogBytes = 16 << 20
	SnapshotAlerts   = 1000
)

// SnapJob is an ended job as a snapshot keeps it, with the end of its log.
type SnapJob struct {
	Job
	Logs []LogLine `json:"logs,omitempty"`
}

// SnapMachine is a machine as a snapshot keeps it.
type SnapMachine struct {
	Name      string          `json:"name"`
	Agent     string          `json:"agent,omitempty"`
	Spec      json.RawMessage `json:"spec"`
	Policy    string          `json:"policy,omitempty"`
	Tier      string          `json:"tier,omitempty"`
	Protected time.Time       `json:"protected,omitzero"`
	Created   time.Time       `json:"created"`
}

// SnapToken is a token as a snapshot keeps it: by the hash of its secret.
type SnapToken struct {
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Hash    string    `json:"hash"`
	Created time.Time `json:"created"`
	Revoked time.Time `json:"revoked,omitzero"`
}

// Snapshot reads what a snapshot keeps, in a stable order (by name), so
// that two snapshots of an unchanged catalog are equal byte for byte.
func (c *Catalog) Snapshot(ctx context.Context) (Snapshot, error) {
	s := Snapshot{Version: SnapshotVersion}
	var err error
	if s.Tiers, err = c.Tiers(ctx); err != nil {
		return s, err
	}
	if s.Vaults, err = c.Vaults(ctx); err != nil {
		return s, err
	}
	if s.Policies, err = c.Policies(ctx); err != nil {
		return s, err
	}
	ms, err := c.Machines(ctx)
	if err != nil {
		return s, err
	}
	for _, m := range ms {
		s.Machines = append(s.Machines, SnapMachine{Name: m.Name, Agent: m.Agent, Spec: m.Spec, Policy: m.Policy, Tier: m.Tier,
			Protected: m.Protected, Created: m.Created})
	}
	rows, err := c.db.QueryContext(ctx, `SELECT name, role, hash, created_ms, revoked_ms FROM tokens ORDER BY name`)
	if err != nil {
		return s, fmt.Errorf("catalog: reading tokens: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var t SnapToken
		var created int64
		var revoked sql.NullInt64
		if err := rows.Scan(&t.Name, &t.Role, &t.Hash, &created, &revoked); err != nil {
			return s, fmt.Errorf("catalog: reading tokens: %w", err)
		}
		t.Created, t.Revoked = fromMS(created), nullMS(revoked)
		s.Tokens = append(s.Tokens, t)
	}
	if err := rows.Err(); err != nil {
		return s, err
	}
	if s.Jobs, err = c.jobHistory(ctx); err != nil {
		return s, err
	}
	if s.Alerts, err = c.Alerts(ctx, true, SnapshotAlerts); err != nil {
		return s, err
	}
	// Acknowledgements are not saved: a recovered server shows its open
	// alerts unacknowledged (and the snapshot stays readable by servers
	// that know no acknowledgement).
	for i := range s.Alerts {
		s.Alerts[i].Acked, s.Alerts[i].AckedBy = time.Time{}, ""
	}
	return s, nil
}

// endedJobs selects the newest ended jobs a snapshot keeps.
var endedJobs = fmt.Sprintf(`WHERE state IN ('%s', '%s', '%s') ORDER BY finished_ms DESC, id DESC LIMIT %d`,
	Succeeded, Failed, Cancelled, SnapshotJobs)

// jobHistory reads the newest ended jobs with the end of their logs, in
// two queries whatever the number of jobs.
func (c *Catalog) jobHistory(ctx context.Context) ([]SnapJob, error) {
	js, err := c.jobs(ctx, endedJobs)
	if err != nil || len(js) == 0 {
		return nil, err
	}
	rows, err := c.db.QueryContext(ctx, c.q(`SELECT job_id, seq, time_ms, level, message FROM (
		SELECT l.job_id, l.seq, l.time_ms, l.level, l.message, ROW_NUMBER() OVER (PARTITION BY l.job_id ORDER BY l.seq DESC) AS rn
		FROM job_logs l JOIN (SELECT id FROM jobs `+endedJobs+`) j ON j.id = l.job_id) t
		WHERE rn <= ? ORDER BY job_id, seq`), SnapshotLogLines)
	if err != nil {
		return nil, fmt.Errorf("catalog: reading job logs: %w", err)
	}
	defer rows.Close()
	logs := map[string][]LogLine{}
	for rows.Next() {
		var id string
		var l LogLine
		var t int64
		if err := rows.Scan(&id, &l.Seq, &t, &l.Level, &l.Message); err != nil {
			return nil, fmt.Errorf("catalog: reading job logs: %w", err)
		}
		l.Time = fromMS(t)
		logs[id] = append(logs[id], l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: reading job logs: %w", err)
	}
	out := make([]SnapJob, len(js))
	budget := SnapshotLogBytes
	for i, j := range js {
		out[i].Job = j
		n := 0
		for _, l := range logs[j.ID] {
			n += len(l.Message)
		}
		if n <= budget {
			out[i].Logs, budget = logs[j.ID], budget-n
		}
	}
	return out, nil
}

// MaxSnapshot bounds a snapshot document (its JSON, before compression):
// a thousand machines with their definitions take a few MiB.
const MaxSnapshot = 48 << 20

// ParseSnapshot reads a snapshot document, refusing one of another
// version, with unknown fields, or holding an object the catalog would
// refuse (names, roles, policies, tiers), naming what is wrong.
func ParseSnapshot(raw []byte) (Snapshot, error) {
	var s Snapshot
	if len(raw) > MaxSnapshot {
		return s, fmt.Errorf("%w: catalog snapshot of %d bytes, more than %d", ErrInvalid, len(raw), MaxSnapshot)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("%w: catalog snapshot: %v", ErrInvalid, err)
	}
	if dec.More() {
		return s, fmt.Errorf("%w: catalog snapshot: data after the document", ErrInvalid)
	}
	if s.Version < 1 || s.Version > SnapshotVersion {
		return s, fmt.Errorf("%w: catalog snapshot version %d: this lifeboat reads versions 1 to %d", ErrInvalid, s.Version, SnapshotVersion)
	}
	tiers, vaults, policies, machines, tokens := map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, t := range s.Tiers {
		if err := validName("tier", t.Name); err != nil {
			return s, err
		}
		if err := t.Validate(); err != nil {
			return s, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if tiers[t.Name] {
			return s, fmt.Errorf("%w: tier %q twice", ErrInvalid, t.Name)
		}
		tiers[t.Name] = true
	}
	for _, v := range s.Vaults {
		if err := validName("vault", v.Name); err != nil {
			return s, err
		}
		if v.URL == "" || vaults[v.Name] {
			return s, fmt.Errorf("%w: vault %q has no URL or is given twice", ErrInvalid, v.Name)
		}
		vaults[v.Name] = true
	}
	for _, p := range s.Policies {
		if err := p.Validate(); err != nil {
			return s, err
		}
		if !vaults[p.Vault] || (p.CopyTo != "" && !vaults[p.CopyTo]) || policies[p.Name] {
			return s, fmt.Errorf("%w: policy %q names a vault the snapshot lacks, or is given twice", ErrInvalid, p.Name)
		}
		policies[p.Name] = true
	}
	for _, m := range s.Machines {
		if err := validName("machine", m.Name); err != nil {
			return s, err
		}
		if m.Agent != "" {
			if err := validName("agent", m.Agent); err != nil {
				return s, err
			}
		}
		if !json.Valid(m.Spec) || machines[m.Name] {
			return s, fmt.Errorf("%w: machine %q: spec is not JSON, or the machine is given twice", ErrInvalid, m.Name)
		}
		if (m.Tier != "" && !tiers[m.Tier]) || (m.Policy != "" && !policies[m.Policy]) || (m.Policy != "" && m.Tier == "") {
			return s, fmt.Errorf("%w: machine %q is protected under a tier or policy the snapshot lacks", ErrInvalid, m.Name)
		}
		machines[m.Name] = true
	}
	for _, t := range s.Tokens {
		if err := validName("token", t.Name); err != nil {
			return s, err
		}
		switch t.Role {
		case RoleAdmin, RoleOperator, RoleViewer, RoleAgent:
		default:
			return s, fmt.Errorf("%w: token %q: role %q", ErrInvalid, t.Name, t.Role)
		}
		if t.Hash == "" || tokens[t.Name] {
			return s, fmt.Errorf("%w: token %q has no hash, or is given twice", ErrInvalid, t.Name)
		}
		tokens[t.Name] = true
	}
	jobs := map[string]bool{}
	for _, j := range s.Jobs {
		switch {
		case j.ID == "" || jobs[j.ID]:
			return s, fmt.Errorf("%w: job %q has no ID, or is given twice", ErrInvalid, j.ID)
		case j.Kind == "" || !json.Valid(j.Spec):
			return s, fmt.Errorf("%w: job %s: no kind, or its spec is not JSON", ErrInvalid, j.ID)
		case j.State != Succeeded && j.State != Failed && j.State != Cancelled:
			return s, fmt.Errorf("%w: job %s: state %q (a snapshot keeps ended jobs only)", ErrInvalid, j.ID, j.State)
		case (len(j.Result) > 0 && !json.Valid(j.Result)) || (len(j.Progress) > 0 && !json.Valid(j.Progress)):
			return s, fmt.Errorf("%w: job %s: result or progress is not JSON", ErrInvalid, j.ID)
		}
		jobs[j.ID] = true
		seqs := map[int64]bool{}
		for _, l := range j.Logs {
			if seqs[l.Seq] {
				return s, fmt.Errorf("%w: job %s: log line %d twice", ErrInvalid, j.ID, l.Seq)
			}
			seqs[l.Seq] = true
		}
	}
	alerts, open := map[string]bool{}, map[[2]string]bool{}
	for _, a := range s.Alerts {
		if a.ID == "" || a.Kind == "" || a.Subject == "" || alerts[a.ID] {
			return s, fmt.Errorf("%w: alert %q has no ID, kind or subject, or is given twice", ErrInvalid, a.ID)
		}
		alerts[a.ID] = true
		if a.Cleared.IsZero() {
			if open[[2]string{a.Kind, a.Subject}] {
				return s, fmt.Errorf("%w: two open %s alerts on %s", ErrInvalid, a.Kind, a.Subject)
			}
			open[[2]string{a.Kind, a.Subject}] = true
		}
	}
	return s, nil
}

// ErrNotEmpty: a snapshot is restored only into a catalog that knows no
// machine, policy or tier yet.
var ErrNotEmpty = errors.New("the catalog is not empty")

// RestoreSnapshot fills an empty catalog from s in one transaction:
// nothing is half-restored. Tokens named in skipTokens are left out (the
// lost server's built-in agent, replaced by the new one's).
func (c *Catalog) RestoreSnapshot(ctx context.Context, s Snapshot, skipTokens map[string]bool, now time.Time) error {
	return c.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM machines) + (SELECT COUNT(*) FROM policies) + (SELECT COUNT(*) FROM tiers)`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("catalog: restoring a snapshot: %w (it holds %d machines, policies and tiers)", ErrNotEmpty, n)
		}
		exec := func(q string, args ...any) error {
			_, err := tx.ExecContext(ctx, c.q(q), args...)
			return err
		}
		for _, t := range s.Tiers {
			none := 0
			if t.None {
				none = 1
			}
			if err := exec(`INSERT INTO tiers (name, rpo_ms, rto_ms, none_tier, created_ms) VALUES (?, ?, ?, ?, ?)`,
				t.Name, t.RPO.Milliseconds(), t.RTO.Milliseconds(), none, ms(now)); err != nil {
				return fmt.Errorf("catalog: restoring tier %q: %w", t.Name, err)
			}
		}
		for _, v := range s.Vaults {
			// The server's own vault may already be known (by its new URL).
			if err := exec(`INSERT INTO vaults (name, url, copy_to, created_ms) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`,
				v.Name, v.URL, v.CopyTo, ms(v.Created)); err != nil {
				return fmt.Errorf("catalog: restoring vault %q: %w", v.Name, err)
			}
		}
		for _, p := range s.Policies {
			created := p.Created
			p.Created, p.Updated = time.Time{}, time.Time{}
			spec, err := json.Marshal(p)
			if err != nil {
				return err
			}
			if err := exec(`INSERT INTO policies (name, spec, created_ms, updated_ms) VALUES (?, ?, ?, ?)`, p.Name, string(spec), ms(created), ms(now)); err != nil {
				return fmt.Errorf("catalog: restoring policy %q: %w", p.Name, err)
			}
		}
		for _, m := range s.Machines {
			var pol, tier any
			if m.Policy != "" {
				pol = m.Policy
			}
			if m.Tier != "" {
				tier = m.Tier
			}
			if err := exec(`INSERT INTO machines (name, agent, spec, policy, tier, protected_ms, created_ms, updated_ms,
				last_point_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, (SELECT MAX(time_ms) FROM points WHERE machine = ?))`,
				m.Name, m.Agent, string(m.Spec), pol, tier, optMS(m.Protected), ms(m.Created), ms(now), m.Name); err != nil {
				return fmt.Errorf("catalog: restoring machine %q: %w", m.Name, err)
			}
		}
		for _, t := range s.Tokens {
			if skipTokens[t.Name] {
				continue
			}
			if err := exec(`INSERT INTO tokens (id, name, role, hash, created_ms, revoked_ms) VALUES (?, ?, ?, ?, ?, ?)
				ON CONFLICT DO NOTHING`, newID(), t.Name, t.Role, t.Hash, ms(t.Created), optMS(t.Revoked)); err != nil {
				return fmt.Errorf("catalog: restoring token %q: %w", t.Name, err)
			}
		}
		for _, j := range s.Jobs {
			progress, result := string(j.Progress), string(j.Result)
			if progress == "" {
				progress = "{}"
			}
			if result == "" {
				result = "{}"
			}
			cancel := 0
			if j.Cancel {
				cancel = 1
			}
			if err := exec(`INSERT INTO jobs (id, kind, machine, agent, vault, spec, state, attempt, max_attempts, not_before_ms,
				cancel, progress, result, error, created_ms, started_ms, finished_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT DO NOTHING`, j.ID, j.Kind, j.Machine, j.Agent, j.Vault, string(j.Spec), j.State, j.Attempt, max(j.MaxAttempts, 1),
				ms(j.NotBefore), cancel, progress, result, j.Error, ms(j.Created), optMS(j.Started), optMS(j.Finished)); err != nil {
				return fmt.Errorf("catalog: restoring job %s: %w", j.ID, err)
			}
			for _, l := range j.Logs {
				if err := exec(`INSERT INTO job_logs (job_id, seq, time_ms, level, message) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
					j.ID, l.Seq, ms(l.Time), l.Level, l.Message); err != nil {
					return fmt.Errorf("catalog: restoring the log of job %s: %w", j.ID, err)
				}
			}
		}
		for _, a := range s.Alerts {
			if err := exec(`INSERT INTO alerts (id, kind, subject, message, opened_ms, cleared_ms) VALUES (?, ?, ?, ?, ?, ?)
				ON CONFLICT DO NOTHING`, a.ID, a.Kind, a.Subject, a.Message, ms(a.Opened), optMS(a.Cleared)); err != nil {
				return fmt.Errorf("catalog: restoring alert %s: %w", a.ID, err)
			}
		}
		return nil
	})
}
