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
// hashed tokens, so that agents keep working with the tokens they hold.
// What the control plane learns as it runs (points, jobs, alerts, agents'
// heartbeats, schedule slots) is not in it: points are read back from the
// vault itself, and the rest starts afresh.
type Snapshot struct {
	Version  int             `json:"version"`
	Tiers    []schedule.Tier `json:"tiers"`
	Vaults   []Vault         `json:"vaults"`
	Policies []Policy        `json:"policies"`
	Machines []SnapMachine   `json:"machines"`
	Tokens   []SnapToken     `json:"tokens"`
	// BuiltinAgent names the server's built-in agent, whose token is not
	// restored: the rebuilt server makes its own.
	BuiltinAgent string `json:"builtin_agent,omitempty"`
}

// SnapshotVersion is the version of the snapshot document this lifeboat
// writes and reads.
const SnapshotVersion = 1

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
	return s, rows.Err()
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
	if s.Version != SnapshotVersion {
		return s, fmt.Errorf("%w: catalog snapshot version %d: this lifeboat reads version %d", ErrInvalid, s.Version, SnapshotVersion)
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
		return nil
	})
}
