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
