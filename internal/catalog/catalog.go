// Package catalog is the control plane's memory: protection tiers, backup
// policies, machines, agents, API tokens, jobs with their leases and logs,
// and alerts. It runs on an embedded SQLite file (one server) or on
// PostgreSQL (several servers sharing the work), with the same schema and
// the same versioned migrations on both.
//
// Rules the rest of the control plane relies on:
//
//   - Times are stored as Unix milliseconds (UTC) and durations as
//     milliseconds, so both engines compare them alike; every time comes
//     from the caller (an injectable clock), never from the database.
//   - A job is run by at most one server at a time: Claim takes a lease
//     atomically (FOR UPDATE SKIP LOCKED on PostgreSQL, a write
//     transaction on SQLite), and a partial unique index refuses a second
//     running job of the same machine even if two claims race.
//   - A server that dies mid-job loses its lease when it expires; Reap
//     requeues the job (or fails it when its attempts are spent).
//   - Every write of one object is one transaction: nothing half-applied.
//
// Errors: ErrNotFound, ErrExists and ErrInvalid are wrapped with what was
// asked, for the API to map to 404, 409 and 400.
package catalog

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"lifeboat/internal/recovery"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	_ "modernc.org/sqlite"             // registers "sqlite"
)

// Sentinel errors, wrapped with the object concerned.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrInvalid  = errors.New("invalid")
	// ErrLeaseLost is returned to a runner whose lease on a job was taken
	// over (it expired) or whose job was finished by someone else.
	ErrLeaseLost = errors.New("lease lost")
	// ErrInUse: the object is still used by others (a tier by machines).
	ErrInUse = errors.New("in use")
	// ErrInterrupted ends a run whose runner is known to be gone (its
	// agent restarted): the job is queued again at once, without the
	// backoff of a failure, when attempts remain.
	ErrInterrupted = errors.New("interrupted")
)

// MaxList bounds every listing: jobs, points, log lines.
const MaxList = 1000

// Engine names which database a Catalog runs on.
type Engine string

const (
	SQLite   Engine = "sqlite"
	Postgres Engine = "postgres"
)

// Catalog is an open catalog. Safe for concurrent use.
type Catalog struct {
	db     *sql.DB
	engine Engine
}

// Open opens (and migrates) the catalog named by dsn: a postgres:// or
// postgresql:// URL for PostgreSQL, anything else a path to a SQLite file
// (created when missing, with its directory).
func Open(ctx context.Context, dsn string) (*Catalog, error) {
	c := &Catalog{}
	var err error
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		c.engine = Postgres
		c.db, err = sql.Open("pgx", dsn)
		if err == nil {
			// Keep connections: opening one costs more than most queries.
			c.db.SetMaxOpenConns(32)
			c.db.SetMaxIdleConns(32)
		}
	default:
		c.engine = SQLite
		path := strings.TrimPrefix(dsn, "sqlite:")
		if path == "" {
			return nil, fmt.Errorf("catalog: %w: empty database path", ErrInvalid)
		}
		// One writer at a time (SQLite's rule), waiting up to 10 s for it;
		// write transactions take the lock when they begin, so two claims
		// never both read "free" and then both write.
		c.db, err = sql.Open("sqlite", "file:"+path+"?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)")
		if err == nil {
			c.db.SetMaxOpenConns(4)
			c.db.SetMaxIdleConns(4)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: opening %s: %w", c.engine, err)
	}
	if err := c.db.PingContext(ctx); err != nil {
		c.db.Close()
		return nil, fmt.Errorf("catalog: connecting to %s: %w", c.engine, err)
	}
	if err := c.migrate(ctx); err != nil {
		c.db.Close()
		return nil, err
	}
	return c, nil
}

// Engine tells which database the catalog runs on.
func (c *Catalog) Engine() Engine { return c.engine }

// Close closes the database.
func (c *Catalog) Close() error { return c.db.Close() }

// q rewrites a query written with ? placeholders for the engine.
func (c *Catalog) q(query string) string {
	if c.engine != Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// tx runs fn in a transaction, committed when fn returns nil.
func (c *Catalog) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// isUniqueViolation tells a duplicate key from other failures, on both
// engines (SQLite: "UNIQUE constraint failed"; PostgreSQL: SQLSTATE 23505).
func isUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "UNIQUE constraint failed") || strings.Contains(s, "SQLSTATE 23505")
}

// isForeignKeyViolation: SQLite "FOREIGN KEY constraint failed"; PostgreSQL 23503.
func isForeignKeyViolation(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "FOREIGN KEY constraint failed") || strings.Contains(s, "SQLSTATE 23503")
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

func nullMS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMS(v.Int64)
}

func optMS(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

// newID returns 16 random bytes in hex: IDs are made here, not by the
// database, so that both engines hand out the same kind.
func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b[:])
}

// validName applies the one rule for names (recovery.ValidName: what a
// machine or disk may be called) to tiers, policies, machines, agents,
// tokens and vaults alike: each can stand in a URL path and a file name.
func validName(kind, name string) error {
	if err := recovery.ValidName(kind, name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}
