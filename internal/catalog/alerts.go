package catalog

import (
	"context"
	"database/sql"
	"errors"
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
	// Acked is when someone acknowledged the alert (Ack), AckedBy the
	// name of their token; the alert stays open until its cause is gone.
	Acked   time.Time `json:"acked,omitzero"`
	AckedBy string    `json:"acked_by,omitempty"`
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
	rows, err := c.db.QueryContext(ctx, `SELECT id, kind, subject, message, opened_ms, cleared_ms, acked_ms, acked_by FROM alerts `+where+
		fmt.Sprintf(` ORDER BY opened_ms DESC, id LIMIT %d`, limit))
	if err != nil {
		return nil, fmt.Errorf("catalog: listing alerts: %w", err)
	}
	defer rows.Close()
	var out []Alert
	for rows.Next() {
		var a Alert
		var opened int64
		var cleared, acked sql.NullInt64
		if err := rows.Scan(&a.ID, &a.Kind, &a.Subject, &a.Message, &opened, &cleared, &acked, &a.AckedBy); err != nil {
			return nil, fmt.Errorf("catalog: reading alerts: %w", err)
		}
		a.Opened, a.Cleared, a.Acked = fromMS(opened), nullMS(cleared), nullMS(acked)
		out = append(out, a)
	}
	return out, rows.Err()
}

// Ack records that by (a token's name) acknowledged the open alert id at
// now, and returns the alert. An alert that does not exist is ErrNotFound;
// one already cleared is ErrInvalid (there is nothing left to acknowledge).
func (c *Catalog) Ack(ctx context.Context, id, by string, now time.Time) (Alert, error) {
	if _, err := c.db.ExecContext(ctx, c.q(`UPDATE alerts SET acked_ms = ?, acked_by = ? WHERE id = ? AND cleared_ms IS NULL`), ms(now), by, id); err != nil {
		return Alert{}, fmt.Errorf("catalog: acknowledging alert %s: %w", id, err)
	}
	var a Alert
	var opened int64
	var cleared, acked sql.NullInt64
	err := c.db.QueryRowContext(ctx, c.q(`SELECT id, kind, subject, message, opened_ms, cleared_ms, acked_ms, acked_by FROM alerts WHERE id = ?`), id).
		Scan(&a.ID, &a.Kind, &a.Subject, &a.Message, &opened, &cleared, &acked, &a.AckedBy)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return Alert{}, fmt.Errorf("catalog: alert %s: %w", id, ErrNotFound)
	case err != nil:
		return Alert{}, fmt.Errorf("catalog: reading alert %s: %w", id, err)
	}
	a.Opened, a.Cleared, a.Acked = fromMS(opened), nullMS(cleared), nullMS(acked)
	if !a.Cleared.IsZero() {
		return a, fmt.Errorf("catalog: alert %s was cleared at %s: %w: nothing to acknowledge", id, a.Cleared.Format(time.RFC3339), ErrInvalid)
	}
	return a, nil
}
