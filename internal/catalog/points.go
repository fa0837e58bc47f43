package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Point is a recovery point as the catalog indexes it.
type Point struct {
	Vault        string    `json:"vault"`
	ID           string    `json:"id"`
	Machine      string    `json:"machine"`
	Time         time.Time `json:"time"`
	Consistency  string    `json:"consistency"`
	ChangeSource string    `json:"change_source,omitempty"`
	Size         int64     `json:"size"`
	Notes        string    `json:"notes,omitempty"`
	Job          string    `json:"job,omitempty"`
}

// RecordPoint indexes a point; recording it again changes nothing.
func (c *Catalog) RecordPoint(ctx context.Context, p Point) error {
	if p.Vault == "" || p.ID == "" || p.Machine == "" || p.Time.IsZero() {
		return fmt.Errorf("%w: a point needs a vault, an ID, a machine and a time", ErrInvalid)
	}
	return c.RecordPoints(ctx, []Point{p})
}

// newestSQL moves a machine's newest-point time forward.
const newestSQL = `UPDATE machines SET last_point_ms = ? WHERE name = ? AND (last_point_ms IS NULL OR last_point_ms < ?)`

// RecordPoints indexes many points in one transaction (a vault's points
// read at once); points already recorded are left as they are.
func (c *Catalog) RecordPoints(ctx context.Context, ps []Point) error {
	for _, p := range ps {
		if p.Vault == "" || p.ID == "" || p.Machine == "" || p.Time.IsZero() {
			return fmt.Errorf("%w: a point needs a vault, an ID, a machine and a time", ErrInvalid)
		}
	}
	return c.tx(ctx, func(tx *sql.Tx) error { return c.recordPoints(ctx, tx, ps, "") })
}

// recordPoints inserts points in tx (made by job, when not empty) and
// moves their machines' newest-point times.
func (c *Catalog) recordPoints(ctx context.Context, tx *sql.Tx, ps []Point, job string) error {
	if len(ps) == 0 {
		return nil
	}
	{
		stmt, err := tx.PrepareContext(ctx, c.q(`INSERT INTO points (vault, id, machine, time_ms, consistency, change_source, size_bytes, notes, job_id)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (vault, id) DO NOTHING`))
		if err != nil {
			return err
		}
		defer stmt.Close()
		newest := map[string]time.Time{}
		for _, p := range ps {
			if job != "" {
				p.Job = job
			}
			if p.Vault == "" || p.ID == "" || p.Machine == "" || p.Time.IsZero() {
				return fmt.Errorf("%w: a point needs a vault, an ID, a machine and a time", ErrInvalid)
			}
			if _, err := stmt.ExecContext(ctx, p.Vault, p.ID, p.Machine, ms(p.Time), p.Consistency, p.ChangeSource, p.Size, p.Notes, p.Job); err != nil {
				return fmt.Errorf("catalog: recording point %s of %s: %w", p.ID, p.Machine, err)
			}
			if p.Time.After(newest[p.Machine]) {
				newest[p.Machine] = p.Time
			}
		}
		for m, t := range newest {
			if _, err := tx.ExecContext(ctx, c.q(newestSQL), ms(t), m, ms(t)); err != nil {
				return fmt.Errorf("catalog: recording the newest point of %s: %w", m, err)
			}
		}
		return nil
	}
}

// ForgetPoint drops a point from the index (after forget).
func (c *Catalog) ForgetPoint(ctx context.Context, vault, id string) error {
	err := c.tx(ctx, func(tx *sql.Tx) error {
		var machine string
		err := tx.QueryRowContext(ctx, c.q(`SELECT machine FROM points WHERE vault = ? AND id = ?`), vault, id).Scan(&machine)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, c.q(`DELETE FROM points WHERE vault = ? AND id = ?`), vault, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, c.q(`UPDATE machines SET last_point_ms = (SELECT MAX(time_ms) FROM points WHERE points.machine = machines.name) WHERE name = ?`), machine)
		return err
	})
	if err != nil {
		return fmt.Errorf("catalog: forgetting point %s: %w", id, err)
	}
	return nil
}

// ForgetPoints drops points of machine in vault from the index (a forget
// job removed them); IDs of other machines' points are ignored.
func (c *Catalog) ForgetPoints(ctx context.Context, vault, machine string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	err := c.tx(ctx, func(tx *sql.Tx) error {
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, c.q(`DELETE FROM points WHERE vault = ? AND machine = ? AND id = ?`), vault, machine, id); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, c.q(`UPDATE machines SET last_point_ms = (SELECT MAX(time_ms) FROM points WHERE points.machine = machines.name) WHERE name = ?`), machine)
		return err
	})
	if err != nil {
		return fmt.Errorf("catalog: forgetting points of %s: %w", machine, err)
	}
	return nil
}

// Points lists a machine's points, newest first, at most limit (0: 1000).
func (c *Catalog) Points(ctx context.Context, machine string, limit int) ([]Point, error) {
	if limit <= 0 || limit > MaxList {
		limit = MaxList
	}
	rows, err := c.db.QueryContext(ctx, c.q(`SELECT vault, id, machine, time_ms, consistency, change_source, size_bytes, notes, job_id
		FROM points WHERE machine = ? ORDER BY time_ms DESC, id LIMIT `+fmt.Sprint(limit)), machine)
	if err != nil {
		return nil, fmt.Errorf("catalog: listing points of %s: %w", machine, err)
	}
	defer rows.Close()
	var out []Point
	for rows.Next() {
		var p Point
		var t int64
		if err := rows.Scan(&p.Vault, &p.ID, &p.Machine, &t, &p.Consistency, &p.ChangeSource, &p.Size, &p.Notes, &p.Job); err != nil {
			return nil, fmt.Errorf("catalog: reading points: %w", err)
		}
		p.Time = fromMS(t)
		out = append(out, p)
	}
	return out, rows.Err()
}

// NewestPoints returns the time of each known machine's newest point, in
// one query: what RPO status is computed from.
func (c *Catalog) NewestPoints(ctx context.Context) (map[string]time.Time, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT name, last_point_ms FROM machines WHERE last_point_ms IS NOT NULL`)
	if err != nil {
		return nil, fmt.Errorf("catalog: newest points: %w", err)
	}
	defer rows.Close()
	out := map[string]time.Time{}
	for rows.Next() {
		var m string
		var t int64
		if err := rows.Scan(&m, &t); err != nil {
			return nil, err
		}
		out[m] = fromMS(t)
	}
	return out, rows.Err()
}
