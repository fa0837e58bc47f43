package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Job states.
const (
	Queued    = "queued"
	Running   = "running"
	Succeeded = "succeeded"
	Failed    = "failed"
	Cancelled = "cancelled"
)

// Job is one unit of work (backup, restore, verify, prune, copy) for one
// agent. Spec is the job layer's JSON spec, kept as given.
type Job struct {
	ID          string          `json:"id"`
	Kind        string          `json:"kind"`
	Machine     string          `json:"machine,omitempty"`
	Agent       string          `json:"agent,omitempty"`
	Vault       string          `json:"vault,omitempty"`
	Spec        json.RawMessage `json:"spec"`
	State       string          `json:"state"`
	Attempt     int             `json:"attempt"`
	MaxAttempts int             `json:"max_attempts"`
	NotBefore   time.Time       `json:"not_before"`
	LeaseOwner  string          `json:"lease_owner,omitempty"`
	LeaseUntil  time.Time       `json:"lease_until,omitzero"`
	Cancel      bool            `json:"cancel_requested,omitempty"`
	Progress    json.RawMessage `json:"progress,omitempty"`
	Result      json.RawMessage `json:"result,omitempty"`
	Error       string          `json:"error,omitempty"`
	Created     time.Time       `json:"created"`
	Started     time.Time       `json:"started,omitzero"`
	Finished    time.Time       `json:"finished,omitzero"`
}

// Backoff is how long a failed job waits before its next attempt:
// 30 s doubled per attempt, at most an hour. Pure, for tests and docs.
func Backoff(attempt int) time.Duration {
	d := 30 * time.Second
	for i := 1; i < attempt && d < time.Hour; i++ {
		d *= 2
	}
	return min(d, time.Hour)
}

// Enqueue adds a job, queued to run from j.NotBefore (or now). It returns
// the job's ID.
func (c *Catalog) Enqueue(ctx context.Context, j Job, now time.Time) (string, error) {
	var id string
	err := c.tx(ctx, func(tx *sql.Tx) error {
		var err error
		id, err = c.insertJob(ctx, tx, j, now)
		return err
	})
	return id, err
}

func (c *Catalog) insertJob(ctx context.Context, tx *sql.Tx, j Job, now time.Time) (string, error) {
	if j.Kind == "" {
		return "", fmt.Errorf("%w: a job needs a kind", ErrInvalid)
	}
	if len(j.Spec) == 0 {
		j.Spec = json.RawMessage(`{}`)
	}
	if !json.Valid(j.Spec) {
		return "", fmt.Errorf("%w: %s job: spec is not JSON", ErrInvalid, j.Kind)
	}
	if j.MaxAttempts <= 0 {
		j.MaxAttempts = 1
	}
	if j.NotBefore.IsZero() {
		j.NotBefore = now
	}
	id := newID()
	_, err := tx.ExecContext(ctx, c.q(`INSERT INTO jobs (id, kind, machine, agent, vault, spec, state, max_attempts, not_before_ms, created_ms)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		id, j.Kind, j.Machine, j.Agent, j.Vault, string(j.Spec), Queued, j.MaxAttempts, ms(j.NotBefore), ms(now))
	if err != nil {
		return "", fmt.Errorf("catalog: queueing %s job: %w", j.Kind, err)
	}
	return id, nil
}

// QueueSlot is the scheduler's step for one machine whose slot has come:
// in one transaction it moves the machine's last slot forward to slot and
// queues j — unless a job of the same kind for the machine is already
// queued or running, which this slot then joins (a machine whose agent was
// away does not find a day of backups waiting). It returns the new job's
// ID ("" when none was queued) and whether the slot moved (false: another
// server recorded it first, and queued nothing here).
func (c *Catalog) QueueSlot(ctx context.Context, machine string, slot time.Time, j Job, now time.Time) (id string, moved bool, err error) {
	err = c.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, c.q(`UPDATE machines SET last_slot_ms = ? WHERE name = ? AND (last_slot_ms IS NULL OR last_slot_ms < ?)`),
			ms(slot), machine, ms(slot))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		moved = true
		var pending int
		if err := tx.QueryRowContext(ctx, c.q(`SELECT COUNT(*) FROM jobs WHERE machine = ? AND kind = ? AND state IN (?, ?)`),
			machine, j.Kind, Queued, Running).Scan(&pending); err != nil {
			return err
		}
		if pending > 0 {
			return nil
		}
		j.Machine = machine
		id, err = c.insertJob(ctx, tx, j, now)
		return err
	})
	if err != nil {
		return "", false, fmt.Errorf("catalog: queueing the slot %s of %s: %w", slot.Format(time.RFC3339), machine, err)
	}
	return id, moved, nil
}

// JobCounts counts the jobs in each state.
func (c *Catalog) JobCounts(ctx context.Context) (map[string]int, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT state, COUNT(*) FROM jobs GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("catalog: counting jobs: %w", err)
	}
	defer rows.Close()
	out := map[string]int{Queued: 0, Running: 0, Succeeded: 0, Failed: 0, Cancelled: 0}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[st] = n
	}
	return out, rows.Err()
}

// Limits bound what one Claim may start.
type Limits struct {
	// PerAgent is how many jobs may run at once on the claiming agent;
	// PerVault how many at once on one vault (all agents). Zero: no limit.
	PerAgent, PerVault int
}

// Claim takes the oldest runnable job for agent (jobs for that agent, or
// for any agent when the job names none) and leases it to owner until
// now+lease. It returns nil, nil when nothing can run now. A machine never
// has two jobs running; the limits are honoured.
func (c *Catalog) Claim(ctx context.Context, agent, owner string, lim Limits, lease time.Duration, now time.Time) (*Job, error) {
	lock := ""
	if c.engine == Postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	// Most claims find nothing: look first without the write lock (on
	// SQLite a write transaction serialises every claimer).
	var found int
	if err := c.db.QueryRowContext(ctx, c.q(`SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE state = ? AND cancel = 0 AND not_before_ms <= ?
		AND (agent = ? OR agent = '') LIMIT 1) q`), Queued, ms(now), agent).Scan(&found); err != nil {
		return nil, fmt.Errorf("catalog: looking for jobs for agent %q: %w", agent, err)
	}
	if found == 0 {
		return nil, nil
	}
	var claimed *Job
	err := c.tx(ctx, func(tx *sql.Tx) error {
		if c.engine == Postgres {
			// Claims count running jobs before starting one: one claim at
			// a time, or two could each see room for one more.
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7485602)`); err != nil {
				return err
			}
		}
		if lim.PerAgent > 0 {
			var n int
			if err := tx.QueryRowContext(ctx, c.q(`SELECT COUNT(*) FROM jobs WHERE state = ? AND agent = ?`), Running, agent).Scan(&n); err != nil {
				return err
			}
			if n >= lim.PerAgent {
				return nil
			}
		}
		vaultCap := ""
		args := []any{Queued, ms(now), agent, Running}
		if lim.PerVault > 0 {
			vaultCap = ` AND (j.vault = '' OR (SELECT COUNT(*) FROM jobs v WHERE v.state = ? AND v.vault = j.vault) < ?)`
			args = append(args, Running, lim.PerVault)
		}
		var id string
		err := tx.QueryRowContext(ctx, c.q(`SELECT j.id FROM jobs j
			WHERE j.state = ? AND j.cancel = 0 AND j.not_before_ms <= ? AND (j.agent = ? OR j.agent = '')
			AND (j.machine = '' OR NOT EXISTS (SELECT 1 FROM jobs r WHERE r.state = ? AND r.machine = j.machine))`+vaultCap+`
			ORDER BY j.not_before_ms, j.created_ms, j.id LIMIT 1`+lock), args...).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, c.q(`UPDATE jobs SET state = ?, agent = ?, lease_owner = ?, lease_until_ms = ?, attempt = attempt + 1,
			started_ms = ? WHERE id = ? AND state = ?`), Running, agent, owner, ms(now.Add(lease)), ms(now), id, Queued)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			claimed = &Job{ID: id}
		}
		return nil
	})
	if isUniqueViolation(err) {
		// Another server started a job of the same machine between our
		// read and our write: nothing to run for now.
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: claiming a job for agent %q: %w", agent, err)
	}
	if claimed == nil {
		return nil, nil
	}
	j, err := c.Job(ctx, claimed.ID)
	if err != nil {
		return nil, err
	}
	return &j, nil
}

// Renew extends owner's lease on a running job to now+lease and records
// progress (when not nil). It returns ErrLeaseLost when the job is no
// longer owner's, and reports whether a cancel was asked for.
func (c *Catalog) Renew(ctx context.Context, id, owner string, progress json.RawMessage, lease time.Duration, now time.Time) (cancel bool, err error) {
	set, args := `lease_until_ms = ?`, []any{ms(now.Add(lease))}
	if progress != nil {
		if !json.Valid(progress) {
			return false, fmt.Errorf("%w: job %s: progress is not JSON", ErrInvalid, id)
		}
		set += `, progress = ?`
		args = append(args, string(progress))
	}
	args = append(args, id, owner, Running)
	res, err := c.db.ExecContext(ctx, c.q(`UPDATE jobs SET `+set+` WHERE id = ? AND lease_owner = ? AND state = ?`), args...)
	if err != nil {
		return false, fmt.Errorf("catalog: renewing lease on job %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return false, fmt.Errorf("catalog: job %s: %w", id, ErrLeaseLost)
	}
	var cflag int
	if err := c.db.QueryRowContext(ctx, c.q(`SELECT cancel FROM jobs WHERE id = ?`), id).Scan(&cflag); err != nil {
		return false, fmt.Errorf("catalog: reading job %s: %w", id, err)
	}
	return cflag != 0, nil
}

// Finish ends owner's run of a job, recording the points it made (which
// must be of the job's machine and vault) in the same transaction. With
// runErr nil the job succeeded; otherwise it is queued again after Backoff
// when attempts remain and no cancel was asked, failed (or cancelled)
// otherwise. A run whose lease was lost (reaped, finished, cancelled
// meanwhile) gets ErrLeaseLost and changes nothing.
func (c *Catalog) Finish(ctx context.Context, id, owner string, result json.RawMessage, points []Point, runErr error, now time.Time) error {
	return c.finish(ctx, id, owner, result, points, runErr, now, nil)
}

// ended is what finish tells its caller's hook about the run that ended,
// inside finish's transaction.
type ended struct {
	machine, vault, kind, state, msg string
}

func (c *Catalog) finish(ctx context.Context, id, owner string, result json.RawMessage, points []Point, runErr error, now time.Time,
	after func(tx *sql.Tx, e ended) error) error {
	if len(result) == 0 {
		result = json.RawMessage(`{}`)
	}
	return c.tx(ctx, func(tx *sql.Tx) error {
		var attempt, maxAttempts, cancel int
		var machine, vault, kind string
		err := tx.QueryRowContext(ctx, c.q(`SELECT attempt, max_attempts, cancel, machine, vault, kind FROM jobs WHERE id = ? AND lease_owner = ? AND state = ?`+c.forUpdate()),
			id, owner, Running).Scan(&attempt, &maxAttempts, &cancel, &machine, &vault, &kind)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("catalog: finishing job %s: %w", id, ErrLeaseLost)
		}
		if err != nil {
			return fmt.Errorf("catalog: finishing job %s: %w", id, err)
		}
		for _, p := range points {
			if p.Machine != machine || (vault != "" && p.Vault != vault) {
				return fmt.Errorf("%w: job %s of machine %q in vault %q cannot report point %s of %q in %q", ErrInvalid, id, machine, vault, p.ID, p.Machine, p.Vault)
			}
			p.Job = id
		}
		state, notBefore, msg := Succeeded, int64(0), ""
		switch {
		case runErr == nil:
		case cancel != 0:
			state, msg = Cancelled, runErr.Error()
		case attempt < maxAttempts && errors.Is(runErr, ErrInterrupted):
			state, msg, notBefore = Queued, runErr.Error(), ms(now)
		case attempt < maxAttempts:
			state, msg, notBefore = Queued, runErr.Error(), ms(now.Add(Backoff(attempt)))
		default:
			state, msg = Failed, runErr.Error()
		}
		q := `UPDATE jobs SET state = ?, result = ?, error = ?, lease_owner = '', lease_until_ms = 0, finished_ms = ? WHERE id = ? AND lease_owner = ? AND state = ?`
		args := []any{state, string(result), msg, ms(now), id, owner, Running}
		if state == Queued {
			q = `UPDATE jobs SET state = ?, result = ?, error = ?, lease_owner = '', lease_until_ms = 0, not_before_ms = ? WHERE id = ? AND lease_owner = ? AND state = ?`
			args = []any{state, string(result), msg, notBefore, id, owner, Running}
		}
		res, err := tx.ExecContext(ctx, c.q(q), args...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("catalog: finishing job %s: %w", id, ErrLeaseLost)
		}
		if err := c.recordPoints(ctx, tx, points, id); err != nil {
			return err
		}
		switch {
		case machine == "" || state == Cancelled || kind != "backup":
			// Only backups count towards a machine's failures.
		case runErr == nil:
			_, err = tx.ExecContext(ctx, c.q(`UPDATE machines SET failures = 0, last_error = '' WHERE name = ?`), machine)
		default:
			_, err = tx.ExecContext(ctx, c.q(`UPDATE machines SET failures = failures + 1, last_error = ? WHERE name = ?`), msg, machine)
		}
		if err == nil && after != nil {
			err = after(tx, ended{machine: machine, vault: vault, kind: kind, state: state, msg: msg})
		}
		return err
	})
}

// forUpdate locks the rows a read in a write transaction goes on to
// change, on PostgreSQL (under READ COMMITTED a concurrent writer would
// otherwise read the same state); SQLite's write transaction already holds
// the whole database.
func (c *Catalog) forUpdate() string {
	if c.engine == Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// Reap ends the runs whose lease expired before now (their server or agent
// died): each is queued again when attempts remain, failed otherwise, with
// the reason in its log. It returns the IDs it reaped.
func (c *Catalog) Reap(ctx context.Context, now time.Time) ([]string, error) {
	return c.endRuns(ctx, `lease_until_ms < ?`, []any{ms(now)}, nil, func(owner string) (string, error) {
		return fmt.Sprintf("interrupted: lease of %s expired", owner), fmt.Errorf("interrupted: %s stopped renewing its lease", owner)
	}, now)
}

// Interrupt ends the runs of agent's jobs whose lease is not one of the
// running instance's (lease owners starting with instancePrefix): the
// agent restarted, so those runs died with its previous process. Each is
// queued again at once when attempts remain (ErrInterrupted), failed
// otherwise, with the reason in its log. It returns the IDs it ended.
func (c *Catalog) Interrupt(ctx context.Context, agent, instancePrefix string, now time.Time) ([]string, error) {
	keep := func(owner string) bool { return !strings.HasPrefix(owner, instancePrefix) }
	return c.endRuns(ctx, `agent = ?`, []any{agent}, keep, func(owner string) (string, error) {
		why := fmt.Errorf("%w: agent %s restarted while running it (run %s)", ErrInterrupted, agent, owner)
		return why.Error(), why
	}, now)
}

// endRuns finishes the running jobs matching where (and keep, when not
// nil, on their lease owner) with the error reason gives, logging the
// line it gives; runs renewed or finished meanwhile are left alone.
func (c *Catalog) endRuns(ctx context.Context, where string, args []any, keep func(owner string) bool,
	reason func(owner string) (line string, why error), now time.Time) ([]string, error) {
	rows, err := c.db.QueryContext(ctx, c.q(`SELECT id, lease_owner FROM jobs WHERE state = ? AND `+where), append([]any{Running}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("catalog: looking for runs to end: %w", err)
	}
	type run struct{ id, owner string }
	var found []run
	for rows.Next() {
		var r run
		if err := rows.Scan(&r.id, &r.owner); err != nil {
			rows.Close()
			return nil, err
		}
		if keep == nil || keep(r.owner) {
			found = append(found, r)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var ended []string
	for _, r := range found {
		line, why := reason(r.owner)
		err := c.Finish(ctx, r.id, r.owner, nil, nil, why, now)
		if errors.Is(err, ErrLeaseLost) {
			continue // renewed or finished meanwhile
		}
		if err != nil {
			return ended, err
		}
		if err := c.Log(ctx, r.id, "warn", line, now); err != nil {
			return ended, err
		}
		ended = append(ended, r.id)
	}
	return ended, nil
}

// CancelJob asks a job to stop: a queued job is cancelled at once, a
// running one is told through Renew. Ended jobs are left as they are.
// Each step is one conditional update, so a claim racing the cancel wins
// or loses cleanly.
func (c *Catalog) CancelJob(ctx context.Context, id string, now time.Time) error {
	res, err := c.db.ExecContext(ctx, c.q(`UPDATE jobs SET state = ?, cancel = 1, finished_ms = ?, error = 'cancelled before it started'
		WHERE id = ? AND state = ?`), Cancelled, ms(now), id, Queued)
	if err != nil {
		return fmt.Errorf("catalog: cancelling job %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	if _, err := c.db.ExecContext(ctx, c.q(`UPDATE jobs SET cancel = 1 WHERE id = ? AND state = ?`), id, Running); err != nil {
		return fmt.Errorf("catalog: cancelling job %s: %w", id, err)
	}
	if _, err := c.Job(ctx, id); err != nil {
		return err
	}
	return nil
}

// Job returns one job.
//
// id may also be a prefix of at least MinJobPrefix hex digits, as job
// lists print them, naming a single job.
func (c *Catalog) Job(ctx context.Context, id string) (Job, error) {
	js, err := c.jobs(ctx, `WHERE id = ?`, id)
	if err != nil {
		return Job{}, err
	}
	if len(js) == 0 && len(id) >= MinJobPrefix && isHex(id) {
		if js, err = c.jobs(ctx, `WHERE id LIKE ?`, id+"%"); err != nil {
			return Job{}, err
		}
		if len(js) > 1 {
			return Job{}, fmt.Errorf("catalog: job %s: %w: the prefix names %d jobs, give more of the ID", id, ErrInvalid, len(js))
		}
	}
	if len(js) == 0 {
		return Job{}, fmt.Errorf("catalog: job %s: %w", id, ErrNotFound)
	}
	return js[0], nil
}

// MinJobPrefix is the shortest ID prefix Job accepts.
const MinJobPrefix = 8

func isHex(s string) bool {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

// JobFilter selects jobs to list; zero fields select everything.
type JobFilter struct {
	Machine, Agent, State, Kind, Vault string
	Limit                              int // newest first; 0 means 100
}

// Jobs lists jobs, newest first.
func (c *Catalog) Jobs(ctx context.Context, f JobFilter) ([]Job, error) {
	where, args := `WHERE 1 = 1`, []any{}
	for _, w := range []struct{ col, v string }{{"machine", f.Machine}, {"agent", f.Agent}, {"state", f.State}, {"kind", f.Kind}, {"vault", f.Vault}} {
		if w.v != "" {
			where += ` AND ` + w.col + ` = ?`
			args = append(args, w.v)
		}
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, MaxList)
	return c.jobs(ctx, where+fmt.Sprintf(` ORDER BY created_ms DESC, id DESC LIMIT %d`, limit), args...)
}

// LatestJobs returns, for each machine that has one, its newest job of
// kind (in state, if not ""), in one query: what a scheduler tick needs
// of every machine without a query per machine.
func (c *Catalog) LatestJobs(ctx context.Context, kind, state string) (map[string]Job, error) {
	where, args := `WHERE kind = ? AND machine <> ''`, []any{kind}
	newest := `SELECT MAX(k.created_ms) FROM jobs k WHERE k.kind = jobs.kind AND k.machine = jobs.machine`
	if state != "" {
		where += ` AND state = ?`
		newest += ` AND k.state = jobs.state`
		args = append(args, state)
	}
	js, err := c.jobs(ctx, where+` AND created_ms = (`+newest+`) ORDER BY created_ms DESC, id DESC`, args...)
	if err != nil {
		return nil, err
	}
	out := map[string]Job{}
	for _, j := range js {
		if _, seen := out[j.Machine]; !seen { // two in one millisecond: the one Jobs lists first
			out[j.Machine] = j
		}
	}
	return out, nil
}

func (c *Catalog) jobs(ctx context.Context, tail string, args ...any) ([]Job, error) {
	rows, err := c.db.QueryContext(ctx, c.q(`SELECT id, kind, machine, agent, vault, spec, state, attempt, max_attempts, not_before_ms,
		lease_owner, lease_until_ms, cancel, progress, result, error, created_ms, started_ms, finished_ms FROM jobs `+tail), args...)
	if err != nil {
		return nil, fmt.Errorf("catalog: listing jobs: %w", err)
	}
	defer rows.Close()
	var out []Job
	for rows.Next() {
		var j Job
		var spec, progress, result string
		var notBefore, leaseUntil, created int64
		var cancel int
		var started, finished sql.NullInt64
		if err := rows.Scan(&j.ID, &j.Kind, &j.Machine, &j.Agent, &j.Vault, &spec, &j.State, &j.Attempt, &j.MaxAttempts, &notBefore,
			&j.LeaseOwner, &leaseUntil, &cancel, &progress, &result, &j.Error, &created, &started, &finished); err != nil {
			return nil, fmt.Errorf("catalog: reading jobs: %w", err)
		}
		j.Spec, j.Progress, j.Result = json.RawMessage(spec), json.RawMessage(progress), json.RawMessage(result)
		j.NotBefore, j.LeaseUntil, j.Created = fromMS(notBefore), fromMS(leaseUntil), fromMS(created)
		j.Started, j.Finished, j.Cancel = nullMS(started), nullMS(finished), cancel != 0
		out = append(out, j)
	}
	return out, rows.Err()
}

// LogLine is one line of a job's log.
type LogLine struct {
	Seq     int64     `json:"seq"`
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Message string    `json:"message"`
}

// MaxLogLine is the longest log message kept; a longer one is cut.
const MaxLogLine = 8 << 10

// Log appends a line to a job's log. Appends to one job are serialised
// on the job's row (a row lock on PostgreSQL, the write transaction on
// SQLite), so sequence numbers never collide.
func (c *Catalog) Log(ctx context.Context, id, level, message string, now time.Time) error {
	if len(message) > MaxLogLine {
		message = strings.ToValidUTF8(message[:MaxLogLine], "") + " …(cut)"
	}
	err := c.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, c.q(`UPDATE jobs SET id = id WHERE id = ?`), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		_, err = tx.ExecContext(ctx, c.q(`INSERT INTO job_logs (job_id, seq, time_ms, level, message)
			SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ? FROM job_logs WHERE job_id = ?`), id, ms(now), level, message, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("catalog: logging to job %s: %w", id, err)
	}
	return nil
}

// Logs returns a job's log lines after seq `after`, in order, at most
// MaxList of them: page with the last seq seen.
func (c *Catalog) Logs(ctx context.Context, id string, after int64) ([]LogLine, error) {
	rows, err := c.db.QueryContext(ctx, c.q(`SELECT seq, time_ms, level, message FROM job_logs WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT `+fmt.Sprint(MaxList)), id, after)
	if err != nil {
		return nil, fmt.Errorf("catalog: reading log of job %s: %w", id, err)
	}
	defer rows.Close()
	var out []LogLine
	for rows.Next() {
		var l LogLine
		var t int64
		if err := rows.Scan(&l.Seq, &t, &l.Level, &l.Message); err != nil {
			return nil, err
		}
		l.Time = fromMS(t)
		out = append(out, l)
	}
	return out, rows.Err()
}
