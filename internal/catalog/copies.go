package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// CopyState is where a machine's copy to a second vault stands: what the
// copy-lag alert, the machine's copy status and the copy-lag metric read.
type CopyState struct {
	Machine string
	Target  string // the copy's vault
	Source  string // the vault copied from
	// Expected is when the server began to expect copies of the machine
	// to Target (ExpectCopies, or the first copy job to end).
	Expected time.Time
	// Newest is the time of the newest point of the machine that a copy
	// job reported copied to Target (zero: none yet). Copies go oldest
	// first, so every older point of the source is there too.
	Newest time.Time
	// Copied is when a copy job last succeeded.
	Copied time.Time
	// Failures counts the failed copy attempts since the last success;
	// LastError is the newest one's error.
	Failures  int
	LastError string
	// Pending is the time of the oldest point of the machine the catalog
	// knows in Source that is newer than Newest: the oldest point the copy
	// lacks (zero: none).
	Pending time.Time
}

// CopyKey names a copy the server expects: a machine's points from Source
// to Target.
type CopyKey struct {
	Machine, Source, Target string
}

// ExpectCopies records that copies of each machine to its target are
// expected from now on (the scheduler, for machines whose policy copies):
// a key already recorded keeps its state, its source updated.
func (c *Catalog) ExpectCopies(ctx context.Context, keys []CopyKey, now time.Time) error {
	err := c.tx(ctx, func(tx *sql.Tx) error {
		for _, k := range keys {
			if err := c.expectCopy(ctx, tx, k, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("catalog: recording expected copies: %w", err)
	}
	return nil
}

func (c *Catalog) expectCopy(ctx context.Context, tx *sql.Tx, k CopyKey, now time.Time) error {
	_, err := tx.ExecContext(ctx, c.q(`INSERT INTO copies (machine, target, source, expected_ms) VALUES (?, ?, ?, ?)
		ON CONFLICT (machine, target) DO UPDATE SET source = excluded.source`), k.Machine, k.Target, k.Source, ms(now))
	return err
}

// CopyRun is what a copy job's run reports beside its result.
type CopyRun struct {
	// Source is the name of the vault copied from.
	Source string
	// Newest is the time of the newest point of the job's machine the run
	// copied (zero: it copied none, the target had them all).
	Newest time.Time
}

// FinishCopy is Finish for a copy job of one machine (its Vault the copy
// target): in the same transaction it records where the machine's copy
// stands — on success the newest point copied (the later of run.Newest
// and the newest point of the source whose backup job ended before this
// run began) and no failures; on a failed attempt (retried or not) one
// failure more, which the job-failing alert counts as it counts failed
// backups.
func (c *Catalog) FinishCopy(ctx context.Context, id, owner string, result json.RawMessage, run CopyRun, runErr error, now time.Time) error {
	return c.finish(ctx, id, owner, result, nil, runErr, now, func(tx *sql.Tx, e ended) error {
		if e.kind != "copy" || e.machine == "" || e.vault == "" || run.Source == "" || e.state == Cancelled {
			return nil
		}
		if err := c.expectCopy(ctx, tx, CopyKey{Machine: e.machine, Source: run.Source, Target: e.vault}, now); err != nil {
			return err
		}
		if e.state != Succeeded {
			_, err := tx.ExecContext(ctx, c.q(`UPDATE copies SET failures = failures + 1, last_error = ? WHERE machine = ? AND target = ?`),
				e.msg, e.machine, e.vault)
			return err
		}
		// A run that succeeded copied every point of the source there was
		// when it began: at least those whose backup had ended by then
		// (this also covers a run that found its points already copied
		// by one whose report was lost).
		var had sql.NullInt64
		err := tx.QueryRowContext(ctx, c.q(`SELECT MAX(p.time_ms) FROM points p JOIN jobs b ON b.id = p.job_id
			WHERE p.machine = ? AND p.vault = ? AND b.finished_ms <= (SELECT started_ms FROM jobs WHERE id = ?)`),
			e.machine, run.Source, id).Scan(&had)
		if err != nil {
			return err
		}
		newest := run.Newest
		if had.Valid && fromMS(had.Int64).After(newest) {
			newest = fromMS(had.Int64)
		}
		if _, err := tx.ExecContext(ctx, c.q(`UPDATE copies SET failures = 0, last_error = '', copied_ms = ? WHERE machine = ? AND target = ?`),
			ms(now), e.machine, e.vault); err != nil || newest.IsZero() {
			return err
		}
		_, err = tx.ExecContext(ctx, c.q(`UPDATE copies SET newest_ms = ? WHERE machine = ? AND target = ? AND (newest_ms IS NULL OR newest_ms < ?)`),
			ms(newest), e.machine, e.vault, ms(newest))
		return err
	})
}

// CopyStates lists where every recorded copy stands, by machine and
// target, in one query.
func (c *Catalog) CopyStates(ctx context.Context) ([]CopyState, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT c.machine, c.target, c.source, c.expected_ms, c.newest_ms, c.copied_ms, c.failures, c.last_error,
		(SELECT MIN(p.time_ms) FROM points p WHERE p.machine = c.machine AND p.vault = c.source AND p.time_ms > COALESCE(c.newest_ms, -1))
		FROM copies c ORDER BY c.machine, c.target`)
	if err != nil {
		return nil, fmt.Errorf("catalog: listing copies: %w", err)
	}
	defer rows.Close()
	var out []CopyState
	for rows.Next() {
		var s CopyState
		var expected int64
		var newest, copied, pending sql.NullInt64
		if err := rows.Scan(&s.Machine, &s.Target, &s.Source, &expected, &newest, &copied, &s.Failures, &s.LastError, &pending); err != nil {
			return nil, fmt.Errorf("catalog: reading copies: %w", err)
		}
		s.Expected, s.Newest, s.Copied, s.Pending = fromMS(expected), nullMS(newest), nullMS(copied), nullMS(pending)
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: listing copies: %w", err)
	}
	return out, nil
}
