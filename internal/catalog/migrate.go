package catalog

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// migrations are applied in order, each once, each in its own transaction,
// and recorded in schema_migrations. They are append-only: a released
// migration is never edited; a change is a new one. The SQL is the common
// subset of SQLite and PostgreSQL (BIGINT, TEXT, partial indexes).
var migrations = []string{
	1: `
CREATE TABLE tiers (
	name       TEXT PRIMARY KEY,
	rpo_ms     BIGINT NOT NULL,
	rto_ms     BIGINT NOT NULL,
	none_tier  INTEGER NOT NULL DEFAULT 0,
	created_ms BIGINT NOT NULL
);
CREATE TABLE vaults (
	name       TEXT PRIMARY KEY,
	url        TEXT NOT NULL,
	copy_to    TEXT NOT NULL DEFAULT '',
	created_ms BIGINT NOT NULL
);
CREATE TABLE policies (
	name       TEXT PRIMARY KEY,
	spec       TEXT NOT NULL,
	created_ms BIGINT NOT NULL,
	updated_ms BIGINT NOT NULL
);
CREATE TABLE agents (
	name         TEXT PRIMARY KEY,
	info         TEXT NOT NULL DEFAULT '{}',
	heartbeat_ms BIGINT,
	created_ms   BIGINT NOT NULL
);
CREATE TABLE machines (
	name         TEXT PRIMARY KEY,
	agent        TEXT NOT NULL DEFAULT '',
	spec         TEXT NOT NULL,
	policy       TEXT REFERENCES policies(name),
	tier         TEXT REFERENCES tiers(name),
	protected_ms BIGINT,
	last_slot_ms BIGINT,
	created_ms   BIGINT NOT NULL,
	updated_ms   BIGINT NOT NULL
);
CREATE TABLE tokens (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL UNIQUE,
	role       TEXT NOT NULL,
	hash       TEXT NOT NULL UNIQUE,
	created_ms BIGINT NOT NULL,
	revoked_ms BIGINT
);
CREATE TABLE jobs (
	id             TEXT PRIMARY KEY,
	kind           TEXT NOT NULL,
	machine        TEXT NOT NULL DEFAULT '',
	agent          TEXT NOT NULL DEFAULT '',
	vault          TEXT NOT NULL DEFAULT '',
	spec           TEXT NOT NULL,
	state          TEXT NOT NULL,
	attempt        INTEGER NOT NULL DEFAULT 0,
	max_attempts   INTEGER NOT NULL,
	not_before_ms  BIGINT NOT NULL,
	lease_owner    TEXT NOT NULL DEFAULT '',
	lease_until_ms BIGINT NOT NULL DEFAULT 0,
	cancel         INTEGER NOT NULL DEFAULT 0,
	progress       TEXT NOT NULL DEFAULT '{}',
	result         TEXT NOT NULL DEFAULT '{}',
	error          TEXT NOT NULL DEFAULT '',
	created_ms     BIGINT NOT NULL,
	started_ms     BIGINT,
	finished_ms    BIGINT
);
CREATE INDEX jobs_claim ON jobs (state, not_before_ms, created_ms);
CREATE INDEX jobs_machine ON jobs (machine, created_ms);
-- One running job per machine, whatever races two servers' claims.
CREATE UNIQUE INDEX jobs_one_running_per_machine ON jobs (machine) WHERE state = 'running' AND machine <> '';
CREATE TABLE job_logs (
	job_id  TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
	seq     BIGINT NOT NULL,
	time_ms BIGINT NOT NULL,
	level   TEXT NOT NULL,
	message TEXT NOT NULL,
	PRIMARY KEY (job_id, seq)
);
CREATE TABLE alerts (
	id         TEXT PRIMARY KEY,
	kind       TEXT NOT NULL,
	subject    TEXT NOT NULL,
	message    TEXT NOT NULL,
	opened_ms  BIGINT NOT NULL,
	cleared_ms BIGINT
);
-- At most one open alert per kind and subject: raising it again is a no-op.
CREATE UNIQUE INDEX alerts_open ON alerts (kind, subject) WHERE cleared_ms IS NULL;
`,
	2: `
-- Recovery points the server knows of (from its jobs, or read from the
-- vaults): what RPO status and the points listing are computed from. The
-- vault stays the truth; this is an index of it.
CREATE TABLE points (
	vault         TEXT NOT NULL,
	id            TEXT NOT NULL,
	machine       TEXT NOT NULL,
	time_ms       BIGINT NOT NULL,
	consistency   TEXT NOT NULL,
	change_source TEXT NOT NULL DEFAULT '',
	size_bytes    BIGINT NOT NULL DEFAULT 0,
	notes         TEXT NOT NULL DEFAULT '',
	job_id        TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (vault, id)
);
CREATE INDEX points_machine ON points (machine, time_ms);
`,
	3: `
-- Failed attempts in a row per machine, kept by Finish: what the failing
-- alert reads, without a query per machine.
ALTER TABLE machines ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE machines ADD COLUMN last_error TEXT NOT NULL DEFAULT '';
-- The newest point's time per machine, kept as points are recorded and
-- forgotten: listing machines with their RPO state reads no points.
ALTER TABLE machines ADD COLUMN last_point_ms BIGINT;
UPDATE machines SET last_point_ms = (SELECT MAX(time_ms) FROM points WHERE points.machine = machines.name);
`,
	4: `
-- How often the scheduler drills the machines of a tier (0: the server's
-- default).
ALTER TABLE tiers ADD COLUMN drill_every_ms BIGINT NOT NULL DEFAULT 0;
-- Each machine's newest job of a kind (LatestJobs: the scheduler's drills).
CREATE INDEX jobs_kind_machine ON jobs (kind, machine, created_ms);
`,
	5: `
-- The latest replication status of each machine, as reported by the agent
-- that runs its replication (with its heartbeats): what GET
-- /v1/replications lists and the replication-lag alert reads.
CREATE TABLE replications (
	machine     TEXT PRIMARY KEY,
	agent       TEXT NOT NULL,
	state       TEXT NOT NULL,
	last_cut_ms BIGINT,
	status      TEXT NOT NULL,
	reported_ms BIGINT NOT NULL
);
CREATE INDEX replications_agent ON replications (agent);
-- Replications enabled through the server (replicate enable --server): the
-- agent named runs each (lifeboat agent --replicate).
CREATE TABLE replication_specs (
	machine    TEXT PRIMARY KEY,
	agent      TEXT NOT NULL,
	spec       TEXT NOT NULL,
	updated_ms BIGINT NOT NULL
);
`,
	6: `
-- Who acknowledged an open alert, and when (POST /v1/alerts/ID/ack):
-- someone is on it. It stays open until its cause is gone.
ALTER TABLE alerts ADD COLUMN acked_ms BIGINT;
ALTER TABLE alerts ADD COLUMN acked_by TEXT NOT NULL DEFAULT '';
`,
	7: `
-- Where each machine's copy to its policy's second vault stands: the
-- newest point a copy job reported copied, and the copy jobs' failures
-- in a row (FinishCopy). Expected is when the server began to expect
-- copies of the machine there (ExpectCopies): copy lag counts from it
-- for points older than that. What the copy-lag alert and the machine's
-- copy status read.
CREATE TABLE copies (
	machine     TEXT NOT NULL,
	target      TEXT NOT NULL,
	source      TEXT NOT NULL,
	expected_ms BIGINT NOT NULL,
	newest_ms   BIGINT,
	copied_ms   BIGINT,
	failures    INTEGER NOT NULL DEFAULT 0,
	last_error  TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (machine, target)
);
`,
}

// migrate brings the schema to the newest version. Several servers
// starting at once on one PostgreSQL serialise on an advisory lock; on
// SQLite the write transaction is the lock.
func (c *Catalog) migrate(ctx context.Context) error {
	create := `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)`
	if _, err := c.db.ExecContext(ctx, create); err != nil {
		return fmt.Errorf("catalog: creating schema_migrations: %w", err)
	}
	for v := 1; v < len(migrations); v++ {
		err := c.tx(ctx, func(tx *sql.Tx) error {
			if c.engine == Postgres {
				if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7485601)`); err != nil {
					return err
				}
			}
			var n int
			if err := tx.QueryRowContext(ctx, c.q(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`), v).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			for _, stmt := range splitSQL(migrations[v]) {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("%.60s…: %w", stmt, err)
				}
			}
			_, err := tx.ExecContext(ctx, c.q(`INSERT INTO schema_migrations (version, applied_ms) VALUES (?, ?)`), v, time.Now().UnixMilli()) // a record for people, not a decision
			return err
		})
		if err != nil {
			return fmt.Errorf("catalog: migration %d on %s: %w", v, c.engine, err)
		}
	}
	var newest int
	if err := c.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&newest); err != nil {
		return fmt.Errorf("catalog: reading schema version: %w", err)
	}
	if newest > len(migrations)-1 {
		return fmt.Errorf("catalog: the database is at schema version %d, newer than this lifeboat knows (%d): upgrade lifeboat", newest, len(migrations)-1)
	}
	return nil
}

// SchemaVersion returns the newest migration applied.
func (c *Catalog) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := c.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

// splitSQL cuts a migration into statements (the drivers run one at a
// time), dropping comments.
func splitSQL(s string) []string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "--") {
			continue
		}
		lines = append(lines, l)
	}
	var out []string
	for _, stmt := range strings.Split(strings.Join(lines, "\n"), ";") {
		if strings.TrimSpace(stmt) != "" {
			out = append(out, strings.TrimSpace(stmt))
		}
	}
	return out
}
