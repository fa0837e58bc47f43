package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// Replication is the latest status of a machine's continuous replication,
// as reported by the agent that runs it.
type Replication struct {
	Machine string
	Agent   string
	State   string
	// LastCut is when the last cut the target acknowledged was taken
	// (zero: none yet): the lag is worked out from it on reading.
	LastCut time.Time
	// Status is the agent's report (replicate status --json), kept as is.
	Status   json.RawMessage
	Reported time.Time
}

// ReportReplications replaces what the agent reported before with reps:
// machines it no longer reports are forgotten. A machine reported by
// another agent before moves to this one.
func (c *Catalog) ReportReplications(ctx context.Context, agent string, reps []Replication, now time.Time) error {
	if err := validName("agent", agent); err != nil {
		return err
	}
	for _, r := range reps {
		if err := validName("machine", r.Machine); err != nil {
			return err
		}
		if !json.Valid(r.Status) {
			return fmt.Errorf("%w: replication of %q: status is not JSON", ErrInvalid, r.Machine)
		}
	}
	err := c.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, c.q(`DELETE FROM replications WHERE agent = ?`), agent); err != nil {
			return err
		}
		for _, r := range reps {
			_, err := tx.ExecContext(ctx, c.q(`INSERT INTO replications (machine, agent, state, last_cut_ms, status, reported_ms) VALUES (?, ?, ?, ?, ?, ?)
				ON CONFLICT (machine) DO UPDATE SET agent = excluded.agent, state = excluded.state, last_cut_ms = excluded.last_cut_ms,
				status = excluded.status, reported_ms = excluded.reported_ms`),
				r.Machine, agent, r.State, optMS(r.LastCut), string(r.Status), ms(now))
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("catalog: replications reported by agent %q: %w", agent, err)
	}
	return nil
}

// Replications lists the latest replication status of each machine, by
// machine name.
func (c *Catalog) Replications(ctx context.Context) ([]Replication, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT machine, agent, state, last_cut_ms, status, reported_ms FROM replications ORDER BY machine`)
	if err != nil {
		return nil, fmt.Errorf("catalog: listing replications: %w", err)
	}
	defer rows.Close()
	var out []Replication
	for rows.Next() {
		var r Replication
		var cut sql.NullInt64
		var status string
		var reported int64
		if err := rows.Scan(&r.Machine, &r.Agent, &r.State, &cut, &status, &reported); err != nil {
			return nil, fmt.Errorf("catalog: listing replications: %w", err)
		}
		r.LastCut, r.Status, r.Reported = nullMS(cut), json.RawMessage(status), fromMS(reported)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: listing replications: %w", err)
	}
	return out, nil
}

// ReplicationSpec is a replication enabled through the server: the agent
// named runs it on its host.
type ReplicationSpec struct {
	Machine string          `json:"machine"`
	Agent   string          `json:"agent"`
	Spec    json.RawMessage `json:"spec"` // a replicate.Machine
	Updated time.Time       `json:"updated"`
}

// PutReplicationSpec records (or replaces) a machine's replication spec.
func (c *Catalog) PutReplicationSpec(ctx context.Context, s ReplicationSpec, now time.Time) error {
	if err := validName("machine", s.Machine); err != nil {
		return err
	}
	if err := validName("agent", s.Agent); err != nil {
		return err
	}
	if !json.Valid(s.Spec) {
		return fmt.Errorf("%w: replication of %q: spec is not JSON", ErrInvalid, s.Machine)
	}
	_, err := c.db.ExecContext(ctx, c.q(`INSERT INTO replication_specs (machine, agent, spec, updated_ms) VALUES (?, ?, ?, ?)
		ON CONFLICT (machine) DO UPDATE SET agent = excluded.agent, spec = excluded.spec, updated_ms = excluded.updated_ms`),
		s.Machine, s.Agent, string(s.Spec), ms(now))
	if err != nil {
		return fmt.Errorf("catalog: enabling the replication of %q: %w", s.Machine, err)
	}
	return nil
}

// DeleteReplicationSpec forgets a machine's replication spec.
func (c *Catalog) DeleteReplicationSpec(ctx context.Context, machine string) error {
	res, err := c.db.ExecContext(ctx, c.q(`DELETE FROM replication_specs WHERE machine = ?`), machine)
	if err != nil {
		return fmt.Errorf("catalog: disabling the replication of %q: %w", machine, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: no replication of %q is enabled through the server", ErrNotFound, machine)
	}
	return nil
}

// ReplicationSpecs lists the replication specs of agent (all when empty),
// by machine.
func (c *Catalog) ReplicationSpecs(ctx context.Context, agent string) ([]ReplicationSpec, error) {
	rows, err := c.db.QueryContext(ctx, c.q(`SELECT machine, agent, spec, updated_ms FROM replication_specs WHERE agent = ? OR ? = '' ORDER BY machine`), agent, agent)
	if err != nil {
		return nil, fmt.Errorf("catalog: listing replication specs: %w", err)
	}
	defer rows.Close()
	var out []ReplicationSpec
	for rows.Next() {
		var s ReplicationSpec
		var spec string
		var updated int64
		if err := rows.Scan(&s.Machine, &s.Agent, &spec, &updated); err != nil {
			return nil, fmt.Errorf("catalog: listing replication specs: %w", err)
		}
		s.Spec, s.Updated = json.RawMessage(spec), fromMS(updated)
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: listing replication specs: %w", err)
	}
	return out, nil
}
