package catalog

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Alert is a condition someone should know about: an objective missed, a
// job failing again and again, an agent gone quiet, a copy lagging. At
// most one alert per (Kind, Subject) is open at a time.
type Alert struct {
	ID      string    `json:"id"`
	Kind    string    `json:"kind"`
	Subject string    `json:"subject"`
	Message string    `json:"message"`
	Opened  time.Time `json:"opened"`
	Cleared time.Time `json:"cleared,omitzero"`
}

// Raise opens an alert unless one of the same kind and subject is open; it
// reports whether it opened one (the caller then notifies).
func (c *Catalog) Raise(ctx context.Context, kind, subject, message string, now time.Time) (opened bool, err error) {
	_, err = c.db.ExecContext(ctx, c.q(`INSERT INTO alerts (id, kind, subject, message, opened_ms) VALUES (?, ?, ?, ?, ?)`),
		newID(), kind, subject, message, ms(now))
	if isUniqueViolation(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("catalog: raising %s alert on %s: %w", kind, subject, err)
	}
	return true, nil
}

// Resolve clears the open alert of that kind and subject, if any; it
// reports whether one was cleared.
func (c *Catalog) Resolve(ctx context.Context, kind, subject string, now time.Time) (bool, error) {
	res, err := c.db.ExecContext(ctx, c.q(`UPDATE alerts SET cleared_ms = ? WHERE kind = ? AND subject = ? AND cleared_ms IS NULL`),
		ms(now), kind, subject)
	if err != nil {
		return false, fmt.Errorf("catalog: clearing %s alert on %s: %w", kind, subject, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// Alerts lists alerts, newest first: only the open ones unless all.
func (c *Catalog) Alerts(ctx context.Context, all bool, limit int) ([]Alert, error) {
	where := `WHERE cleared_ms IS NULL`
	if all {
		where = ``
	}
	if limit <= 0 {
		limit = 100
	}
	rows, err := c.db.QueryContext(ctx, `SELECT id, kind, subject, message, opened_ms, cleared_ms FROM alerts `+where+
		fmt.Sprintf(` ORDER BY opened_ms DESC, id LIMIT %d`, limit))
	if err != nil {
		return nil, fmt.Errorf("catalog: listing alerts: %w", err)
	}
	defer rows.Close()
	var out []Alert
	for rows.Next() {
		var a Alert
		var opened int64
		var cleared sql.NullInt64
		if err := rows.Scan(&a.ID, &a.Kind, &a.Subject, &a.Message, &opened, &cleared); err != nil {
			return nil, fmt.Errorf("catalog: reading alerts: %w", err)
		}
		a.Opened, a.Cleared = fromMS(opened), nullMS(cleared)
		out = append(out, a)
	}
	return out, rows.Err()
}
