package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"lifeboat/internal/policy"
	"lifeboat/internal/schedule"
)

// Policy is a backup policy: when, how consistent, how long kept, where.
type Policy struct {
	Name     string           `json:"name"`
	Schedule schedule.Spec    `json:"schedule"`
	Keep     policy.Retention `json:"keep"`
	// Consistency wanted: crash, file or app.
	Consistency string `json:"consistency"`
	// Vault is the name of the target vault; CopyTo, when set, the vault
	// each new point is copied to after the backup.
	Vault   string    `json:"vault"`
	CopyTo  string    `json:"copy_to,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// Validate reports what is wrong with p, wrapping ErrInvalid.
func (p Policy) Validate() error {
	if err := validName("policy", p.Name); err != nil {
		return err
	}
	if err := p.Schedule.Validate(); err != nil {
		return fmt.Errorf("%w: policy %q: %v", ErrInvalid, p.Name, err)
	}
	if err := p.Keep.Validate(); err != nil {
		return fmt.Errorf("%w: policy %q: %v", ErrInvalid, p.Name, err)
	}
	switch p.Consistency {
	case "crash", "file":
	case "app":
		return fmt.Errorf("%w: policy %q: app consistency needs application hooks, which policies cannot carry yet: use file (the filesystems frozen) or run app-consistent backups with lifeboat backup --pre-hook", ErrInvalid, p.Name)
	default:
		return fmt.Errorf("%w: policy %q: consistency %q: want crash, file or app", ErrInvalid, p.Name, p.Consistency)
	}
	if p.Vault == "" {
		return fmt.Errorf("%w: policy %q names no vault", ErrInvalid, p.Name)
	}
	if p.CopyTo == p.Vault {
		return fmt.Errorf("%w: policy %q copies vault %q to itself", ErrInvalid, p.Name, p.Vault)
	}
	return nil
}

// Machine is a protected (or merely known) machine. Spec is the job
// layer's description of its disks and definition, kept as given.
type Machine struct {
	Name  string          `json:"name"`
	Agent string          `json:"agent"`
	Spec  json.RawMessage `json:"spec"`
	// Policy and Tier are empty until the machine is protected.
	Policy string `json:"policy,omitempty"`
	Tier   string `json:"tier,omitempty"`
	// Protected is when the machine was put under its policy; LastSlot the
	// schedule slot of its newest scheduled backup (the scheduler's memory).
	Protected time.Time `json:"protected,omitzero"`
	LastSlot  time.Time `json:"last_slot,omitzero"`
	// Failures counts the machine's failed job attempts since its last
	// success; LastError is the newest one's error.
	Failures  int       `json:"failures,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
}

// Agent is a host that runs jobs.
type Agent struct {
	Name      string          `json:"name"`
	Info      json.RawMessage `json:"info,omitempty"`
	Heartbeat time.Time       `json:"heartbeat,omitzero"`
	Created   time.Time       `json:"created"`
}

// Vault is a vault the server knows by name.
type Vault struct {
	Name    string    `json:"name"`
	URL     string    `json:"url"`
	CopyTo  string    `json:"copy_to,omitempty"`
	Created time.Time `json:"created"`
}

// PutTier creates or replaces a tier.
func (c *Catalog) PutTier(ctx context.Context, t schedule.Tier, now time.Time) error {
	if err := validName("tier", t.Name); err != nil {
		return err
	}
	if err := t.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	none := 0
	if t.None {
		none = 1
	}
	_, err := c.db.ExecContext(ctx, c.q(`INSERT INTO tiers (name, rpo_ms, rto_ms, none_tier, drill_every_ms, created_ms) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET rpo_ms = excluded.rpo_ms, rto_ms = excluded.rto_ms, none_tier = excluded.none_tier,
		drill_every_ms = excluded.drill_every_ms`),
		t.Name, t.RPO.Milliseconds(), t.RTO.Milliseconds(), none, t.DrillEvery.Milliseconds(), ms(now))
	if err != nil {
		return fmt.Errorf("catalog: saving tier %q: %w", t.Name, err)
	}
	return nil
}

// Tier returns the tier named name.
func (c *Catalog) Tier(ctx context.Context, name string) (schedule.Tier, error) {
	ts, err := c.tiers(ctx, `WHERE name = ?`, name)
	if err != nil {
		return schedule.Tier{}, err
	}
	if len(ts) == 0 {
		return schedule.Tier{}, fmt.Errorf("catalog: tier %q: %w", name, ErrNotFound)
	}
	return ts[0], nil
}

// Tiers lists every tier by name.
func (c *Catalog) Tiers(ctx context.Context) ([]schedule.Tier, error) {
	return c.tiers(ctx, ``)
}

func (c *Catalog) tiers(ctx context.Context, where string, args ...any) ([]schedule.Tier, error) {
	rows, err := c.db.QueryContext(ctx, c.q(`SELECT name, rpo_ms, rto_ms, none_tier, drill_every_ms FROM tiers `+where+` ORDER BY name`), args...)
	if err != nil {
		return nil, fmt.Errorf("catalog: listing tiers: %w", err)
	}
	defer rows.Close()
	var out []schedule.Tier
	for rows.Next() {
		var t schedule.Tier
		var rpo, rto, drill int64
		var none int
		if err := rows.Scan(&t.Name, &rpo, &rto, &none, &drill); err != nil {
			return nil, fmt.Errorf("catalog: reading tiers: %w", err)
		}
		t.RPO, t.RTO, t.None = time.Duration(rpo)*time.Millisecond, time.Duration(rto)*time.Millisecond, none != 0
		t.DrillEvery = time.Duration(drill) * time.Millisecond
		out = append(out, t)
	}
	return out, rows.Err()
}

// DeleteTier removes a tier no machine uses.
func (c *Catalog) DeleteTier(ctx context.Context, name string) error {
	return c.deleteNamed(ctx, "tier", "tiers", name)
}

func (c *Catalog) deleteNamed(ctx context.Context, kind, table, name string) error {
	res, err := c.db.ExecContext(ctx, c.q(`DELETE FROM `+table+` WHERE name = ?`), name)
	if isForeignKeyViolation(err) {
		return fmt.Errorf("catalog: %s %q is used by machines: %w", kind, name, ErrInUse)
	}
	if err != nil {
		return fmt.Errorf("catalog: deleting %s %q: %w", kind, name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("catalog: %s %q: %w", kind, name, ErrNotFound)
	}
	return nil
}

// PutVault creates or replaces a vault entry.
func (c *Catalog) PutVault(ctx context.Context, v Vault, now time.Time) error {
	if err := validName("vault", v.Name); err != nil {
		return err
	}
	if v.URL == "" {
		return fmt.Errorf("%w: vault %q has no URL", ErrInvalid, v.Name)
	}
	// A name keeps its URL: moving it would silently send every policy
	// naming it to another vault.
	return c.tx(ctx, func(tx *sql.Tx) error {
		var url string
		err := tx.QueryRowContext(ctx, c.q(`SELECT url FROM vaults WHERE name = ?`+c.forUpdate()), v.Name).Scan(&url)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, c.q(`INSERT INTO vaults (name, url, copy_to, created_ms) VALUES (?, ?, ?, ?)`), v.Name, v.URL, v.CopyTo, ms(now))
		case err != nil:
		case url != v.URL:
			return fmt.Errorf("catalog: vault %q is %s, not %s: %w", v.Name, url, v.URL, ErrExists)
		default:
			_, err = tx.ExecContext(ctx, c.q(`UPDATE vaults SET copy_to = ? WHERE name = ?`), v.CopyTo, v.Name)
		}
		if isUniqueViolation(err) {
			return fmt.Errorf("catalog: vault %q: %w", v.Name, ErrExists)
		}
		if err != nil {
			return fmt.Errorf("catalog: saving vault %q: %w", v.Name, err)
		}
		return nil
	})
}

// Vaults lists the vaults by name.
func (c *Catalog) Vaults(ctx context.Context) ([]Vault, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT name, url, copy_to, created_ms FROM vaults ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("catalog: listing vaults: %w", err)
	}
	defer rows.Close()
	var out []Vault
	for rows.Next() {
		var v Vault
		var created int64
		if err := rows.Scan(&v.Name, &v.URL, &v.CopyTo, &created); err != nil {
			return nil, fmt.Errorf("catalog: reading vaults: %w", err)
		}
		v.Created = fromMS(created)
		out = append(out, v)
	}
	return out, rows.Err()
}

// PutPolicy creates or replaces a backup policy. Its vaults must be known.
func (c *Catalog) PutPolicy(ctx context.Context, p Policy, now time.Time) error {
	if err := p.Validate(); err != nil {
		return err
	}
	return c.tx(ctx, func(tx *sql.Tx) error {
		for _, v := range []string{p.Vault, p.CopyTo} {
			if v == "" {
				continue
			}
			var n int
			if err := tx.QueryRowContext(ctx, c.q(`SELECT COUNT(*) FROM vaults WHERE name = ?`), v).Scan(&n); err != nil {
				return fmt.Errorf("catalog: saving policy %q: %w", p.Name, err)
			}
			if n == 0 {
				return fmt.Errorf("%w: policy %q names vault %q, which the server does not know", ErrInvalid, p.Name, v)
			}
		}
		p.Created, p.Updated = time.Time{}, time.Time{}
		spec, err := json.Marshal(p)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, c.q(`INSERT INTO policies (name, spec, created_ms, updated_ms) VALUES (?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_ms = excluded.updated_ms`), p.Name, string(spec), ms(now), ms(now))
		if err != nil {
			return fmt.Errorf("catalog: saving policy %q: %w", p.Name, err)
		}
		return nil
	})
}

// Policy returns the policy named name.
func (c *Catalog) Policy(ctx context.Context, name string) (Policy, error) {
	ps, err := c.policies(ctx, `WHERE name = ?`, name)
	if err != nil {
		return Policy{}, err
	}
	if len(ps) == 0 {
		return Policy{}, fmt.Errorf("catalog: policy %q: %w", name, ErrNotFound)
	}
	return ps[0], nil
}

// Policies lists every policy by name.
func (c *Catalog) Policies(ctx context.Context) ([]Policy, error) { return c.policies(ctx, ``) }

func (c *Catalog) policies(ctx context.Context, where string, args ...any) ([]Policy, error) {
	rows, err := c.db.QueryContext(ctx, c.q(`SELECT spec, created_ms, updated_ms FROM policies `+where+` ORDER BY name`), args...)
	if err != nil {
		return nil, fmt.Errorf("catalog: listing policies: %w", err)
	}
	defer rows.Close()
	var out []Policy
	for rows.Next() {
		var spec string
		var created, updated int64
		if err := rows.Scan(&spec, &created, &updated); err != nil {
			return nil, fmt.Errorf("catalog: reading policies: %w", err)
		}
		var p Policy
		if err := json.Unmarshal([]byte(spec), &p); err != nil {
			return nil, fmt.Errorf("catalog: policy record damaged: %w", err)
		}
		p.Created, p.Updated = fromMS(created), fromMS(updated)
		out = append(out, p)
	}
	return out, rows.Err()
}

// DeletePolicy removes a policy no machine uses.
func (c *Catalog) DeletePolicy(ctx context.Context, name string) error {
	return c.deleteNamed(ctx, "policy", "policies", name)
}

// AddMachine registers a new machine (not yet protected).
func (c *Catalog) AddMachine(ctx context.Context, m Machine, now time.Time) error {
	if err := validName("machine", m.Name); err != nil {
		return err
	}
	if m.Agent != "" {
		if err := validName("agent", m.Agent); err != nil {
			return err
		}
	}
	if !json.Valid(m.Spec) {
		return fmt.Errorf("%w: machine %q: spec is not JSON", ErrInvalid, m.Name)
	}
	// Points recorded before the machine was added count at once.
	_, err := c.db.ExecContext(ctx, c.q(`INSERT INTO machines (name, agent, spec, created_ms, updated_ms, last_point_ms)
		VALUES (?, ?, ?, ?, ?, (SELECT MAX(time_ms) FROM points WHERE machine = ?))`),
		m.Name, m.Agent, string(m.Spec), ms(now), ms(now), m.Name)
	if isUniqueViolation(err) {
		return fmt.Errorf("catalog: machine %q: %w", m.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("catalog: adding machine %q: %w", m.Name, err)
	}
	return nil
}

// Protect puts a machine under a policy and a tier, from now. The tier
// "none" (any tier with None) is a valid choice; so is an empty policy
// with such a tier.
func (c *Catalog) Protect(ctx context.Context, machine, policyName, tierName string, now time.Time) error {
	return c.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, c.q(`SELECT COUNT(*) FROM tiers WHERE name = ?`), tierName).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("catalog: protecting %q: tier %q: %w", machine, tierName, ErrNotFound)
		}
		var pol any
		if policyName != "" {
			if err := tx.QueryRowContext(ctx, c.q(`SELECT COUNT(*) FROM policies WHERE name = ?`), policyName).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("catalog: protecting %q: policy %q: %w", machine, policyName, ErrNotFound)
			}
			pol = policyName
		}
		res, err := tx.ExecContext(ctx, c.q(`UPDATE machines SET policy = ?, tier = ?, protected_ms = ?, last_slot_ms = NULL, updated_ms = ? WHERE name = ?`),
			pol, tierName, ms(now), ms(now), machine)
		if err != nil {
			return fmt.Errorf("catalog: protecting %q: %w", machine, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("catalog: machine %q: %w", machine, ErrNotFound)
		}
		return nil
	})
}

// SetLastSlot records the schedule slot a machine's scheduled backup was
// queued for: the scheduler's memory across restarts and servers. It only
// moves forward, so two servers deciding the same slot record it once;
// it reports whether this call moved it.
func (c *Catalog) SetLastSlot(ctx context.Context, machine string, slot time.Time) (bool, error) {
	res, err := c.db.ExecContext(ctx, c.q(`UPDATE machines SET last_slot_ms = ? WHERE name = ? AND (last_slot_ms IS NULL OR last_slot_ms < ?)`),
		ms(slot), machine, ms(slot))
	if err != nil {
		return false, fmt.Errorf("catalog: recording slot of %q: %w", machine, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// Machine returns the machine named name.
func (c *Catalog) Machine(ctx context.Context, name string) (Machine, error) {
	ms, err := c.machines(ctx, `WHERE name = ?`, name)
	if err != nil {
		return Machine{}, err
	}
	if len(ms) == 0 {
		return Machine{}, fmt.Errorf("catalog: machine %q: %w", name, ErrNotFound)
	}
	return ms[0], nil
}

// Machines lists every machine by name.
func (c *Catalog) Machines(ctx context.Context) ([]Machine, error) { return c.machines(ctx, ``) }

func (c *Catalog) machines(ctx context.Context, where string, args ...any) ([]Machine, error) {
	rows, err := c.db.QueryContext(ctx, c.q(`SELECT name, agent, spec, COALESCE(policy, ''), COALESCE(tier, ''),
		protected_ms, last_slot_ms, failures, last_error, created_ms, updated_ms FROM machines `+where+` ORDER BY name`), args...)
	if err != nil {
		return nil, fmt.Errorf("catalog: listing machines: %w", err)
	}
	defer rows.Close()
	var out []Machine
	for rows.Next() {
		var m Machine
		var spec string
		var prot, slot sql.NullInt64
		var created, updated int64
		if err := rows.Scan(&m.Name, &m.Agent, &spec, &m.Policy, &m.Tier, &prot, &slot, &m.Failures, &m.LastError, &created, &updated); err != nil {
			return nil, fmt.Errorf("catalog: reading machines: %w", err)
		}
		m.Spec = json.RawMessage(spec)
		m.Protected, m.LastSlot = nullMS(prot), nullMS(slot)
		m.Created, m.Updated = fromMS(created), fromMS(updated)
		out = append(out, m)
	}
	return out, rows.Err()
}

// DeleteMachine removes a machine from the catalog (its points stay in
// the vault), cancels its queued jobs (a running one is told to stop) and
// clears its alerts, in one transaction.
func (c *Catalog) DeleteMachine(ctx context.Context, name string, now time.Time) error {
	return c.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, c.q(`DELETE FROM machines WHERE name = ?`), name)
		if err != nil {
			return fmt.Errorf("catalog: deleting machine %q: %w", name, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("catalog: machine %q: %w", name, ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, c.q(`UPDATE jobs SET state = ?, cancel = 1, finished_ms = ?, error = 'the machine was removed'
			WHERE machine = ? AND state = ?`), Cancelled, ms(now), name, Queued); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, c.q(`UPDATE jobs SET cancel = 1 WHERE machine = ? AND state = ?`), name, Running); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, c.q(`DELETE FROM copies WHERE machine = ?`), name); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, c.q(`UPDATE alerts SET cleared_ms = ? WHERE subject = ? AND cleared_ms IS NULL`), ms(now), name)
		return err
	})
}

// DeleteAgent forgets an agent (a retired host) and clears its alerts; its
// token is revoked separately.
func (c *Catalog) DeleteAgent(ctx context.Context, name string, now time.Time) error {
	return c.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, c.q(`DELETE FROM agents WHERE name = ?`), name)
		if err != nil {
			return fmt.Errorf("catalog: deleting agent %q: %w", name, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("catalog: agent %q: %w", name, ErrNotFound)
		}
		_, err = tx.ExecContext(ctx, c.q(`UPDATE alerts SET cleared_ms = ? WHERE kind = 'agent-down' AND subject = ? AND cleared_ms IS NULL`), ms(now), name)
		return err
	})
}

// Heartbeat records that an agent is alive (registering it the first time).
func (c *Catalog) Heartbeat(ctx context.Context, name string, info json.RawMessage, now time.Time) error {
	if err := validName("agent", name); err != nil {
		return err
	}
	if len(info) == 0 {
		info = json.RawMessage(`{}`)
	}
	if !json.Valid(info) {
		return fmt.Errorf("%w: agent %q: info is not JSON", ErrInvalid, name)
	}
	_, err := c.db.ExecContext(ctx, c.q(`INSERT INTO agents (name, info, heartbeat_ms, created_ms) VALUES (?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET info = excluded.info, heartbeat_ms = excluded.heartbeat_ms`), name, string(info), ms(now), ms(now))
	if err != nil {
		return fmt.Errorf("catalog: heartbeat of agent %q: %w", name, err)
	}
	return nil
}

// Agents lists the agents by name.
func (c *Catalog) Agents(ctx context.Context) ([]Agent, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT name, info, heartbeat_ms, created_ms FROM agents ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("catalog: listing agents: %w", err)
	}
	defer rows.Close()
	var out []Agent
	for rows.Next() {
		var a Agent
		var info string
		var hb sql.NullInt64
		var created int64
		if err := rows.Scan(&a.Name, &info, &hb, &created); err != nil {
			return nil, fmt.Errorf("catalog: reading agents: %w", err)
		}
		a.Info, a.Heartbeat, a.Created = json.RawMessage(info), nullMS(hb), fromMS(created)
		out = append(out, a)
	}
	return out, rows.Err()
}
