package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"lifeboat/internal/catalog/pgtest"
	"lifeboat/internal/policy"
	"lifeboat/internal/schedule"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

var t0 = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)

// engines runs a test on SQLite and on PostgreSQL: the same catalog
// contract on both. open returns another connection to the same database,
// as a second server would have.
func engines(t *testing.T, fn func(t *testing.T, c *Catalog, open func() *Catalog)) {
	for _, e := range []Engine{SQLite, Postgres} {
		t.Run(string(e), func(t *testing.T) {
			var dsn string
			if e == SQLite {
				dsn = filepath.Join(t.TempDir(), "catalog.db")
			} else {
				dsn = pgtest.Database(t)
			}
			ctx := context.Background()
			open := func() *Catalog {
				c, err := Open(ctx, dsn)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}
			c := open()
			if c.Engine() != e {
				t.Fatalf("engine %s, want %s", c.Engine(), e)
			}
			fn(t, c, open)
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestMigrations(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, open func() *Catalog) {
		ctx := context.Background()
		v, err := c.SchemaVersion(ctx)
		must(t, err)
		if v != len(migrations)-1 {
			t.Fatalf("schema version %d, want %d", v, len(migrations)-1)
		}
		// Opening again applies nothing twice.
		c2 := open()
		v2, err := c2.SchemaVersion(ctx)
		must(t, err)
		if v2 != v {
			t.Fatalf("reopened at version %d", v2)
		}
		// A database from a newer lifeboat is refused, not misread.
		_, err = c.db.ExecContext(ctx, c.q(`INSERT INTO schema_migrations (version, applied_ms) VALUES (?, ?)`), 99, 0)
		must(t, err)
		if err := c.migrate(ctx); err == nil || !strings.Contains(err.Error(), "newer than this lifeboat") {
			t.Fatalf("migrate on a newer schema: %v", err)
		}
	})
}

func TestMigrationsConcurrentStart(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, open func() *Catalog) {
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() { defer wg.Done(); open() }()
		}
		wg.Wait()
	})
}

func TestObjects(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, _ func() *Catalog) {
		ctx := context.Background()
		gold := schedule.Tier{Name: "gold", RPO: time.Hour, RTO: 15 * time.Minute, DrillEvery: 24 * time.Hour}
		must(t, c.PutTier(ctx, gold, t0))
		must(t, c.PutTier(ctx, schedule.Tier{Name: "none", None: true}, t0))
		if err := c.PutTier(ctx, schedule.Tier{Name: "bad"}, t0); !errors.Is(err, ErrInvalid) {
			t.Fatalf("tier without RPO: %v", err)
		}
		if err := c.PutTier(ctx, schedule.Tier{Name: "../x", RPO: time.Hour}, t0); !errors.Is(err, ErrInvalid) {
			t.Fatalf("tier with a bad name: %v", err)
		}
		got, err := c.Tier(ctx, "gold")
		must(t, err)
		if got != gold {
			t.Fatalf("tier %+v, want %+v", got, gold)
		}
		// Replacing a tier replaces its drill interval too.
		silver := schedule.Tier{Name: "silver", RPO: time.Hour, DrillEvery: time.Hour}
		must(t, c.PutTier(ctx, silver, t0))
		silver.DrillEvery = 0
		must(t, c.PutTier(ctx, silver, t0))
		if got, err := c.Tier(ctx, "silver"); err != nil || got != silver {
			t.Fatalf("replaced tier %+v (%v), want %+v", got, err, silver)
		}
		must(t, c.DeleteTier(ctx, "silver"))
		if _, err := c.Tier(ctx, "silver"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing tier: %v", err)
		}

		must(t, c.PutVault(ctx, Vault{Name: "local", URL: "/srv/vault"}, t0))
		must(t, c.PutVault(ctx, Vault{Name: "dr", URL: "s3://dr/vault"}, t0))
		nightly := Policy{Name: "nightly", Schedule: schedule.Spec{Cron: "30 2 * * *", Stagger: time.Hour},
			Keep: policy.Retention{KeepDaily: 7, KeepWeekly: 4}, Consistency: "file", Vault: "local", CopyTo: "dr"}
		must(t, c.PutPolicy(ctx, nightly, t0))
		for name, p := range map[string]Policy{
			"unknown vault":     {Name: "p1", Schedule: schedule.Spec{Every: time.Hour}, Consistency: "crash", Vault: "nowhere"},
			"bad schedule":      {Name: "p2", Schedule: schedule.Spec{Cron: "every day"}, Consistency: "crash", Vault: "local"},
			"bad consistency":   {Name: "p3", Schedule: schedule.Spec{Every: time.Hour}, Consistency: "perfect", Vault: "local"},
			"app without hooks": {Name: "p6", Schedule: schedule.Spec{Every: time.Hour}, Consistency: "app", Vault: "local"},
			"copy to itself":    {Name: "p4", Schedule: schedule.Spec{Every: time.Hour}, Consistency: "crash", Vault: "local", CopyTo: "local"},
			"bad retention":     {Name: "p5", Schedule: schedule.Spec{Every: time.Hour}, Consistency: "crash", Vault: "local", Keep: policy.Retention{KeepLast: -5}},
		} {
			if err := c.PutPolicy(ctx, p, t0); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: %v, want ErrInvalid", name, err)
			}
		}
		gotP, err := c.Policy(ctx, "nightly")
		must(t, err)
		if gotP.Schedule != nightly.Schedule || gotP.Keep != nightly.Keep || gotP.CopyTo != "dr" || !gotP.Created.Equal(t0) {
			t.Fatalf("policy read back as %+v", gotP)
		}

		spec := json.RawMessage(`{"disks":[{"name":"root","path":"/img/web1.raw"}]}`)
		must(t, c.AddMachine(ctx, Machine{Name: "web1", Agent: "hv1", Spec: spec}, t0))
		if err := c.AddMachine(ctx, Machine{Name: "web1", Spec: spec}, t0); !errors.Is(err, ErrExists) {
			t.Fatalf("second web1: %v", err)
		}
		if err := c.AddMachine(ctx, Machine{Name: "web2", Spec: json.RawMessage(`{`)}, t0); !errors.Is(err, ErrInvalid) {
			t.Fatalf("machine with a broken spec: %v", err)
		}
		if err := c.Protect(ctx, "web1", "nightly", "platinum", t0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("protect with an unknown tier: %v", err)
		}
		if err := c.Protect(ctx, "web9", "nightly", "gold", t0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("protect an unknown machine: %v", err)
		}
		must(t, c.Protect(ctx, "web1", "nightly", "gold", t0.Add(time.Minute)))
		m, err := c.Machine(ctx, "web1")
		must(t, err)
		if m.Policy != "nightly" || m.Tier != "gold" || !m.Protected.Equal(t0.Add(time.Minute)) || string(m.Spec) != string(spec) {
			t.Fatalf("machine read back as %+v", m)
		}
		// The scheduler's slot only moves forward.
		moved, err := c.SetLastSlot(ctx, "web1", t0.Add(2*time.Hour))
		must(t, err)
		again, err := c.SetLastSlot(ctx, "web1", t0.Add(time.Hour))
		must(t, err)
		if !moved || again {
			t.Fatalf("slot moved %v then back %v", moved, again)
		}
		m, _ = c.Machine(ctx, "web1")
		if !m.LastSlot.Equal(t0.Add(2 * time.Hour)) {
			t.Fatalf("last slot %v", m.LastSlot)
		}
		// In-use tiers and policies cannot be deleted.
		if err := c.DeleteTier(ctx, "gold"); !errors.Is(err, ErrInUse) {
			t.Fatalf("deleting a tier in use: %v", err)
		}
		if err := c.DeletePolicy(ctx, "nightly"); !errors.Is(err, ErrInUse) {
			t.Fatalf("deleting a policy in use: %v", err)
		}
		// A vault's name keeps its URL.
		if err := c.PutVault(ctx, Vault{Name: "local", URL: "/elsewhere"}, t0); !errors.Is(err, ErrExists) {
			t.Fatalf("moving vault local: %v", err)
		}
		must(t, c.PutVault(ctx, Vault{Name: "local", URL: "/srv/vault", CopyTo: "dr"}, t0))
		// Removing a machine cancels its queued jobs and clears its alerts.
		q, _ := c.Enqueue(ctx, Job{Kind: "backup", Machine: "web1"}, t0)
		c.Raise(ctx, "rpo-missed", "web1", "missed", t0)
		must(t, c.DeleteMachine(ctx, "web1", t0))
		if j, _ := c.Job(ctx, q); j.State != Cancelled {
			t.Fatalf("queued job of a removed machine is %s", j.State)
		}
		if open, _ := c.Alerts(ctx, false, 0); len(open) != 0 {
			t.Fatalf("alerts of a removed machine still open: %+v", open)
		}
		must(t, c.DeletePolicy(ctx, "nightly"))
		must(t, c.DeleteTier(ctx, "gold"))
		if err := c.DeleteTier(ctx, "gold"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleting a deleted tier: %v", err)
		}

		must(t, c.Heartbeat(ctx, "hv1", json.RawMessage(`{"version":"dev"}`), t0))
		must(t, c.Heartbeat(ctx, "hv1", nil, t0.Add(time.Minute)))
		agents, err := c.Agents(ctx)
		must(t, err)
		if len(agents) != 1 || !agents[0].Heartbeat.Equal(t0.Add(time.Minute)) || !agents[0].Created.Equal(t0) {
			t.Fatalf("agents %+v", agents)
		}
	})
}

// LatestJobs gives each machine's newest job of a kind, in a state or in
// any, as Jobs would list it first.
func TestLatestJobs(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, _ func() *Catalog) {
		ctx := context.Background()
		for _, m := range []string{"web1", "db1", "idle1"} {
			must(t, c.AddMachine(ctx, Machine{Name: m, Spec: json.RawMessage(`{}`)}, t0))
		}
		enqueue := func(kind, machine string, at time.Time) string {
			id, err := c.Enqueue(ctx, Job{Kind: kind, Machine: machine, MaxAttempts: 1, Spec: json.RawMessage(`{}`)}, at)
			must(t, err)
			return id
		}
		run := func(agent string, result string, fail bool, at time.Time) string {
			j, err := c.Claim(ctx, agent, agent, Limits{}, time.Minute, at)
			must(t, err)
			var runErr error
			if fail {
				runErr = errors.New("no answer")
			}
			must(t, c.Finish(ctx, j.ID, agent, json.RawMessage(result), nil, runErr, at))
			return j.ID
		}
		enqueue("drill", "web1", t0)
		okWeb := run("", `{"rto_ms":1}`, false, t0)
		enqueue("drill", "web1", t0.Add(time.Minute))
		run("", `{}`, true, t0.Add(time.Minute))
		queuedWeb := enqueue("drill", "web1", t0.Add(2*time.Minute))
		enqueue("drill", "db1", t0)
		okDB := run("", `{"rto_ms":2}`, false, t0)
		enqueue("backup", "idle1", t0)

		latest, err := c.LatestJobs(ctx, "drill", "")
		must(t, err)
		if len(latest) != 2 || latest["web1"].ID != queuedWeb || latest["db1"].ID != okDB {
			t.Fatalf("latest drills: %+v", latest)
		}
		ok, err := c.LatestJobs(ctx, "drill", Succeeded)
		must(t, err)
		if len(ok) != 2 || ok["web1"].ID != okWeb || string(ok["web1"].Result) != `{"rto_ms":1}` || ok["db1"].ID != okDB {
			t.Fatalf("latest successful drills: %+v", ok)
		}
	})
}

func TestJobLifecycle(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, _ func() *Catalog) {
		ctx := context.Background()
		must(t, c.AddMachine(ctx, Machine{Name: "web1", Spec: json.RawMessage(`{}`)}, t0))
		failures := func(want int, wantErr string) {
			t.Helper()
			m, err := c.Machine(ctx, "web1")
			must(t, err)
			if m.Failures != want || m.LastError != wantErr {
				t.Fatalf("web1 failures %d (%q), want %d (%q)", m.Failures, m.LastError, want, wantErr)
			}
		}
		id, err := c.Enqueue(ctx, Job{Kind: "backup", Machine: "web1", Vault: "local", MaxAttempts: 2, Spec: json.RawMessage(`{"machine":"web1"}`)}, t0)
		must(t, err)
		j, err := c.Claim(ctx, "hv1", "server-a", Limits{}, time.Minute, t0)
		must(t, err)
		if j == nil || j.ID != id || j.State != Running || j.Attempt != 1 || j.Agent != "hv1" || j.LeaseOwner != "server-a" {
			t.Fatalf("claimed %+v", j)
		}
		if none, err := c.Claim(ctx, "hv1", "server-b", Limits{}, time.Minute, t0); err != nil || none != nil {
			t.Fatalf("claimed a running job again: %+v, %v", none, err)
		}
		cancel, err := c.Renew(ctx, id, "server-a", json.RawMessage(`{"bytes":100}`), time.Minute, t0.Add(30*time.Second))
		must(t, err)
		if cancel {
			t.Fatal("cancel reported though none asked")
		}
		if _, err := c.Renew(ctx, id, "server-b", nil, time.Minute, t0); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("renew by a stranger: %v", err)
		}
		// First attempt fails: queued again after the backoff, not before.
		must(t, c.Finish(ctx, id, "server-a", nil, nil, errors.New("disk unreadable"), t0.Add(time.Minute)))
		j2, _ := c.Job(ctx, id)
		if j2.State != Queued || j2.Error != "disk unreadable" || !j2.NotBefore.Equal(t0.Add(time.Minute+Backoff(1))) || string(j2.Progress) != `{"bytes":100}` {
			t.Fatalf("after a failed attempt: %+v", j2)
		}
		if early, _ := c.Claim(ctx, "hv1", "server-a", Limits{}, time.Minute, t0.Add(time.Minute)); early != nil {
			t.Fatal("retried before its backoff")
		}
		j, err = c.Claim(ctx, "hv1", "server-a", Limits{}, time.Minute, t0.Add(time.Minute+Backoff(1)))
		must(t, err)
		if j == nil || j.Attempt != 2 {
			t.Fatalf("second attempt %+v", j)
		}
		must(t, c.Finish(ctx, id, "server-a", nil, nil, errors.New("disk unreadable"), t0.Add(5*time.Minute)))
		j2, _ = c.Job(ctx, id)
		if j2.State != Failed || j2.Finished.IsZero() {
			t.Fatalf("attempts spent: %+v", j2)
		}
		failures(2, "disk unreadable")
		if err := c.Finish(ctx, id, "server-a", nil, nil, nil, t0); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("finishing a finished job: %v", err)
		}

		// Success with a result.
		id2, _ := c.Enqueue(ctx, Job{Kind: "verify"}, t0)
		j, _ = c.Claim(ctx, "hv2", "server-a", Limits{}, time.Minute, t0)
		if j == nil || j.ID != id2 {
			t.Fatalf("claim of an agent-less job by hv2: %+v", j)
		}
		must(t, c.Finish(ctx, id2, "server-a", json.RawMessage(`{"point":"abc"}`), nil, nil, t0.Add(time.Second)))
		j2, _ = c.Job(ctx, id2)
		if j2.State != Succeeded || string(j2.Result) != `{"point":"abc"}` {
			t.Fatalf("succeeded job %+v", j2)
		}
		id3, _ := c.Enqueue(ctx, Job{Kind: "backup", Machine: "web1"}, t0)
		if j, _ := c.Claim(ctx, "hv1", "server-a", Limits{}, time.Minute, t0.Add(time.Hour)); j == nil || j.ID != id3 {
			t.Fatalf("claimed %+v", j)
		}
		must(t, c.Finish(ctx, id3, "server-a", nil, nil, nil, t0.Add(time.Hour)))
		failures(0, "")

		// Jobs for another agent are not claimed.
		_, _ = c.Enqueue(ctx, Job{Kind: "backup", Machine: "db1", Agent: "hv9"}, t0)
		if j, _ := c.Claim(ctx, "hv1", "server-a", Limits{}, time.Minute, t0.Add(time.Hour)); j != nil {
			t.Fatalf("hv1 claimed hv9's job %+v", j)
		}

		if _, err := c.Enqueue(ctx, Job{}, t0); !errors.Is(err, ErrInvalid) {
			t.Fatalf("job without kind: %v", err)
		}
		list, err := c.Jobs(ctx, JobFilter{State: Failed})
		must(t, err)
		if len(list) != 1 || list[0].ID != id {
			t.Fatalf("failed jobs %+v", list)
		}
	})
}

// The scheduler's slot step: the slot moves once, and a machine with a
// backup still queued or running gets no second one.
func TestQueueSlot(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, open func() *Catalog) {
		ctx := context.Background()
		must(t, c.AddMachine(ctx, Machine{Name: "web1", Spec: json.RawMessage(`{}`)}, t0))
		id, moved, err := c.QueueSlot(ctx, "web1", t0.Add(time.Hour), Job{Kind: "backup"}, t0)
		must(t, err)
		if id == "" || !moved {
			t.Fatalf("first slot: %q %v", id, moved)
		}
		again, moved2, err := open().QueueSlot(ctx, "web1", t0.Add(time.Hour), Job{Kind: "backup"}, t0)
		must(t, err)
		if again != "" || moved2 {
			t.Fatalf("the same slot queued twice: %q %v", again, moved2)
		}
		next, moved3, err := c.QueueSlot(ctx, "web1", t0.Add(2*time.Hour), Job{Kind: "backup"}, t0)
		must(t, err)
		if next != "" || !moved3 {
			t.Fatalf("a second backup queued beside a queued one: %q %v", next, moved3)
		}
		j, _ := c.Claim(ctx, "hv1", "s", Limits{}, time.Minute, t0)
		must(t, c.Finish(ctx, j.ID, "s", nil, nil, nil, t0))
		if id, _, _ := c.QueueSlot(ctx, "web1", t0.Add(3*time.Hour), Job{Kind: "backup"}, t0); id == "" {
			t.Fatal("nothing queued once the earlier backup ended")
		}
	})
}

// A run reports only its own machine's points.
func TestFinishPoints(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, _ func() *Catalog) {
		ctx := context.Background()
		must(t, c.AddMachine(ctx, Machine{Name: "web1", Spec: json.RawMessage(`{}`)}, t0))
		id, _ := c.Enqueue(ctx, Job{Kind: "backup", Machine: "web1", Vault: "local"}, t0)
		c.Claim(ctx, "hv1", "s", Limits{}, time.Minute, t0)
		other := []Point{{Vault: "local", ID: "x", Machine: "db1", Time: t0, Consistency: "crash"}}
		if err := c.Finish(ctx, id, "s", nil, other, nil, t0); !errors.Is(err, ErrInvalid) {
			t.Fatalf("a point of another machine: %v", err)
		}
		mine := []Point{{Vault: "local", ID: "p", Machine: "web1", Time: t0, Consistency: "crash"}}
		must(t, c.Finish(ctx, id, "s", nil, mine, nil, t0))
		ps, _ := c.Points(ctx, "web1", 0)
		if len(ps) != 1 || ps[0].Job != id {
			t.Fatalf("points %+v", ps)
		}
		if err := c.Finish(ctx, id, "s", nil, mine, nil, t0); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("a second finish: %v", err)
		}
	})
}

func TestJobCancel(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, _ func() *Catalog) {
		ctx := context.Background()
		q, _ := c.Enqueue(ctx, Job{Kind: "backup", Machine: "a"}, t0)
		must(t, c.CancelJob(ctx, q, t0))
		if j, _ := c.Job(ctx, q); j.State != Cancelled {
			t.Fatalf("cancelled queued job is %s", j.State)
		}
		r, _ := c.Enqueue(ctx, Job{Kind: "backup", Machine: "b", MaxAttempts: 5}, t0)
		if j, _ := c.Claim(ctx, "hv1", "s", Limits{}, time.Minute, t0); j == nil || j.ID != r {
			t.Fatalf("claimed %+v", j)
		}
		must(t, c.CancelJob(ctx, r, t0))
		cancel, err := c.Renew(ctx, r, "s", nil, time.Minute, t0)
		must(t, err)
		if !cancel {
			t.Fatal("runner not told of the cancel")
		}
		// A cancelled run that ends in error is not retried.
		must(t, c.Finish(ctx, r, "s", nil, nil, context.Canceled, t0))
		if j, _ := c.Job(ctx, r); j.State != Cancelled {
			t.Fatalf("cancelled running job ended %s", j.State)
		}
		if err := c.CancelJob(ctx, "nope", t0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("cancel of an unknown job: %v", err)
		}
		// A job is found by the prefix lists print (12 digits), not by a
		// prefix shorter than MinJobPrefix or one naming two jobs.
		if j, err := c.Job(ctx, r[:12]); err != nil || j.ID != r {
			t.Fatalf("job by its 12-digit prefix: %+v, %v", j, err)
		}
		if _, err := c.Job(ctx, r[:MinJobPrefix-1]); !errors.Is(err, ErrNotFound) {
			t.Fatalf("job by a %d-digit prefix: %v, want not found", MinJobPrefix-1, err)
		}
		if _, err := c.Job(ctx, r[:12]+"%"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a prefix with a wildcard: %v, want not found", err)
		}
		// Two jobs whose IDs share their first 8 digits: their prefix is
		// ambiguous, a longer one is not.
		a, _ := c.Enqueue(ctx, Job{Kind: "verify"}, t0)
		b, _ := c.Enqueue(ctx, Job{Kind: "verify"}, t0)
		a2, b2 := "deadbeef0000"+a[12:], "deadbeef1111"+b[12:]
		for old, id := range map[string]string{a: a2, b: b2} {
			if _, err := c.db.ExecContext(ctx, c.q(`UPDATE jobs SET id = ? WHERE id = ?`), id, old); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Job(ctx, "deadbeef"); !errors.Is(err, ErrInvalid) {
			t.Fatalf("an ambiguous prefix: %v, want invalid", err)
		}
		if j, err := c.Job(ctx, "deadbeef1111"); err != nil || j.ID != b2 {
			t.Fatalf("a longer prefix: %+v, %v", j, err)
		}
	})
}

// A server dies mid-job: its lease runs out, Reap requeues the job, and
// another server runs it; the dead one's late report is refused.
func TestJobLeaseTakeover(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, open func() *Catalog) {
		ctx := context.Background()
		other := open()
		id, _ := c.Enqueue(ctx, Job{Kind: "backup", Machine: "web1", MaxAttempts: 3}, t0)
		if j, _ := c.Claim(ctx, "hv1", "server-a", Limits{}, time.Minute, t0); j == nil {
			t.Fatal("nothing claimed")
		}
		reaped, err := other.Reap(ctx, t0.Add(30*time.Second))
		must(t, err)
		if len(reaped) != 0 {
			t.Fatalf("reaped a live lease: %v", reaped)
		}
		reaped, err = other.Reap(ctx, t0.Add(2*time.Minute))
		must(t, err)
		if len(reaped) != 1 || reaped[0] != id {
			t.Fatalf("reaped %v", reaped)
		}
		j, _ := other.Job(ctx, id)
		if j.State != Queued || !strings.Contains(j.Error, "interrupted") {
			t.Fatalf("after reaping: %+v", j)
		}
		logs, err := other.Logs(ctx, id, 0)
		must(t, err)
		if len(logs) != 1 || !strings.Contains(logs[0].Message, "lease of server-a expired") {
			t.Fatalf("logs %+v", logs)
		}
		j2, err := other.Claim(ctx, "hv1", "server-b", Limits{}, time.Minute, j.NotBefore)
		must(t, err)
		if j2 == nil || j2.ID != id || j2.Attempt != 2 {
			t.Fatalf("takeover claimed %+v", j2)
		}
		if err := c.Finish(ctx, id, "server-a", nil, nil, nil, j.NotBefore); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("the dead server's report was accepted: %v", err)
		}
		if _, err := c.Renew(ctx, id, "server-a", nil, time.Minute, j.NotBefore); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("the dead server renewed: %v", err)
		}
	})
}

func TestClaimLimits(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, _ func() *Catalog) {
		ctx := context.Background()
		// Two policies queued backups of one machine: they never run at once.
		a, _ := c.Enqueue(ctx, Job{Kind: "backup", Machine: "web1", Vault: "v1"}, t0)
		b, _ := c.Enqueue(ctx, Job{Kind: "backup", Machine: "web1", Vault: "v2"}, t0.Add(time.Second))
		j1, _ := c.Claim(ctx, "hv1", "s", Limits{}, time.Minute, t0.Add(time.Minute))
		j2, _ := c.Claim(ctx, "hv1", "s", Limits{}, time.Minute, t0.Add(time.Minute))
		if j1 == nil || j1.ID != a || j2 != nil {
			t.Fatalf("claims %+v %+v", j1, j2)
		}
		must(t, c.Finish(ctx, a, "s", nil, nil, nil, t0.Add(2*time.Minute)))
		if j, _ := c.Claim(ctx, "hv1", "s", Limits{}, time.Minute, t0.Add(2*time.Minute)); j == nil || j.ID != b {
			t.Fatalf("second backup of web1 not claimed after the first ended: %+v", j)
		}
		// Per-agent and per-vault limits.
		for i := range 4 {
			c.Enqueue(ctx, Job{Kind: "backup", Machine: fmt.Sprintf("m%d", i), Vault: "v1"}, t0)
		}
		got := 0
		for range 4 {
			if j, _ := c.Claim(ctx, "hv1", "s", Limits{PerAgent: 3}, time.Minute, t0.Add(3*time.Minute)); j != nil {
				got++
			}
		}
		if got != 2 { // web1's second backup is running: 1 + 2 = 3
			t.Fatalf("per-agent limit 3 let %d more start beside one running", got)
		}
		if j, _ := c.Claim(ctx, "hv2", "s", Limits{PerVault: 2}, time.Minute, t0.Add(3*time.Minute)); j != nil {
			t.Fatalf("per-vault limit 2 let a third job on v1 start: %+v", j)
		}
		if j, _ := c.Claim(ctx, "hv2", "s", Limits{PerVault: 3}, time.Minute, t0.Add(3*time.Minute)); j == nil {
			t.Fatal("per-vault limit 3 refused a third job on v1")
		}
	})
}

// Many servers claim at once: every job runs exactly once.
func TestClaimRace(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, open func() *Catalog) {
		ctx := context.Background()
		const jobs = 30
		for i := range jobs {
			// Three jobs per machine: at most one of each machine at a time.
			_, err := c.Enqueue(ctx, Job{Kind: "backup", Machine: fmt.Sprintf("m%d", i%10)}, t0)
			must(t, err)
		}
		servers := []*Catalog{c, open(), open()}
		var mu sync.Mutex
		claimed := map[string]string{}
		var wg sync.WaitGroup
		for w := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cat := servers[w%len(servers)]
				owner := fmt.Sprintf("server-%d", w)
				idle := 0
				for idle < 50 {
					j, err := cat.Claim(ctx, "hv1", owner, Limits{}, time.Minute, t0)
					if err != nil {
						t.Error(err)
						return
					}
					if j == nil {
						idle++
						time.Sleep(time.Millisecond)
						continue
					}
					idle = 0
					mu.Lock()
					if prev, dup := claimed[j.ID]; dup {
						t.Errorf("job %s claimed by %s and %s", j.ID, prev, owner)
					}
					claimed[j.ID] = owner
					mu.Unlock()
					if err := cat.Finish(ctx, j.ID, owner, nil, nil, nil, t0); err != nil {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		if len(claimed) != jobs {
			t.Fatalf("%d of %d jobs ran", len(claimed), jobs)
		}
	})
}

func TestLogsAndAlertsAndTokens(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, _ func() *Catalog) {
		ctx := context.Background()
		id, _ := c.Enqueue(ctx, Job{Kind: "backup"}, t0)
		var wg sync.WaitGroup
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := c.Log(ctx, id, "info", fmt.Sprintf("line %d", i), t0); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		logs, err := c.Logs(ctx, id, 0)
		must(t, err)
		if len(logs) != 10 || logs[9].Seq != 10 {
			t.Fatalf("%d log lines, last seq %d", len(logs), logs[len(logs)-1].Seq)
		}
		if tail, _ := c.Logs(ctx, id, 8); len(tail) != 2 {
			t.Fatalf("lines after 8: %d", len(tail))
		}
		if err := c.Log(ctx, "nope", "info", "x", t0); err == nil {
			t.Fatal("log to an unknown job accepted")
		}

		opened, err := c.Raise(ctx, "rpo", "web1", "RPO missed", t0)
		must(t, err)
		again, err := c.Raise(ctx, "rpo", "web1", "RPO still missed", t0.Add(time.Minute))
		must(t, err)
		if !opened || again {
			t.Fatalf("raise opened=%v again=%v", opened, again)
		}
		open, _ := c.Alerts(ctx, false, 0)
		if len(open) != 1 || open[0].Message != "RPO missed" {
			t.Fatalf("open alerts %+v", open)
		}
		cleared, err := c.Resolve(ctx, "rpo", "web1", t0.Add(time.Hour))
		must(t, err)
		if !cleared {
			t.Fatal("nothing cleared")
		}
		if open, _ := c.Alerts(ctx, false, 0); len(open) != 0 {
			t.Fatalf("still open: %+v", open)
		}
		if reopened, _ := c.Raise(ctx, "rpo", "web1", "missed again", t0.Add(2*time.Hour)); !reopened {
			t.Fatal("a cleared alert could not fire again")
		}
		if all, _ := c.Alerts(ctx, true, 0); len(all) != 2 {
			t.Fatalf("alert history %+v", all)
		}

		tok, err := c.AddToken(ctx, "ops", RoleOperator, "hash-1", t0)
		must(t, err)
		if _, err := c.AddToken(ctx, "ops", RoleViewer, "hash-2", t0); !errors.Is(err, ErrExists) {
			t.Fatalf("duplicate token name: %v", err)
		}
		if _, err := c.AddToken(ctx, "root", "god", "hash-3", t0); !errors.Is(err, ErrInvalid) {
			t.Fatalf("unknown role: %v", err)
		}
		got, err := c.TokenByHash(ctx, "hash-1")
		must(t, err)
		if got.ID != tok.ID || got.Role != RoleOperator {
			t.Fatalf("token %+v", got)
		}
		must(t, c.RevokeToken(ctx, "ops", t0.Add(time.Hour)))
		if _, err := c.TokenByHash(ctx, "hash-1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("revoked token still valid: %v", err)
		}
		list, _ := c.Tokens(ctx)
		if len(list) != 1 || list[0].Revoked.IsZero() {
			t.Fatalf("tokens %+v", list)
		}
	})
}

func TestBackoff(t *testing.T) {
	// 30 s doubled per attempt; attempt 8 would be 64 min and is capped.
	for attempt, want := range map[int]time.Duration{1: 30 * time.Second, 2: time.Minute, 3: 2 * time.Minute, 7: 32 * time.Minute, 8: time.Hour, 20: time.Hour} {
		if got := Backoff(attempt); got != want {
			t.Errorf("Backoff(%d) = %v, want %v", attempt, got, want)
		}
	}
}

func TestPoints(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, _ func() *Catalog) {
		ctx := context.Background()
		// web1 is known before its points, db1 only after: both count.
		must(t, c.AddMachine(ctx, Machine{Name: "web1", Spec: json.RawMessage(`{}`)}, t0))
		defer func() {
			newest, _ := c.NewestPoints(ctx)
			if !newest["web1"].Equal(t0) {
				t.Errorf("after forgetting web1's newest point, its newest is %v", newest["web1"])
			}
		}()
		for i, m := range []string{"web1", "web1", "db1"} {
			must(t, c.RecordPoint(ctx, Point{Vault: "local", ID: fmt.Sprintf("p%d", i), Machine: m, Time: t0.Add(time.Duration(i) * time.Hour), Consistency: "crash"}))
		}
		must(t, c.RecordPoint(ctx, Point{Vault: "local", ID: "p0", Machine: "web1", Time: t0, Consistency: "crash"}))
		must(t, c.RecordPoints(ctx, []Point{{Vault: "local", ID: "p0", Machine: "web1", Time: t0, Consistency: "crash"},
			{Vault: "local", ID: "p9", Machine: "db1", Time: t0, Consistency: "crash"}}))
		if err := c.RecordPoints(ctx, []Point{{Vault: "local", ID: "p8", Machine: "db1", Time: t0}, {ID: "bad"}}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("batch with a bad point: %v", err)
		}
		if err := c.RecordPoint(ctx, Point{ID: "x"}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("point without vault: %v", err)
		}
		must(t, c.AddMachine(ctx, Machine{Name: "db1", Spec: json.RawMessage(`{}`)}, t0))
		newest, err := c.NewestPoints(ctx)
		must(t, err)
		if !newest["web1"].Equal(t0.Add(time.Hour)) || !newest["db1"].Equal(t0.Add(2*time.Hour)) || len(newest) != 2 {
			t.Fatalf("newest %v", newest)
		}
		ps, err := c.Points(ctx, "web1", 0)
		must(t, err)
		if len(ps) != 2 || ps[0].ID != "p1" {
			t.Fatalf("points %+v", ps)
		}
		must(t, c.ForgetPoint(ctx, "local", "p1"))
		if ps, _ := c.Points(ctx, "web1", 0); len(ps) != 1 {
			t.Fatalf("after forget %+v", ps)
		}
	})
}

// An agent restarts: its first heartbeat ends the runs of its previous
// process (other lease prefixes) as interrupted, queued again at once;
// the runs of the live process and of other agents are left alone.
func TestInterruptRestartedAgent(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, open func() *Catalog) {
		ctx := context.Background()
		c.Enqueue(ctx, Job{Kind: "backup", Machine: "web1", Agent: "hv1", MaxAttempts: 3}, t0)
		c.Enqueue(ctx, Job{Kind: "backup", Machine: "web2", Agent: "hv1", MaxAttempts: 3}, t0)
		c.Enqueue(ctx, Job{Kind: "backup", Machine: "web3", Agent: "hv2", MaxAttempts: 3}, t0)
		var ids []string
		for _, claim := range []struct{ agent, owner string }{{"hv1", "hv1/a/1"}, {"hv1", "hv1/b/2"}, {"hv2", "hv2/a/3"}} {
			j, err := c.Claim(ctx, claim.agent, claim.owner, Limits{}, time.Minute, t0)
			if err != nil || j == nil {
				t.Fatalf("claim %v: %v %v", claim, j, err)
			}
			ids = append(ids, j.ID)
		}
		old, live, other := ids[0], ids[1], ids[2]
		now := t0.Add(5 * time.Second)
		ended, err := c.Interrupt(ctx, "hv1", "hv1/b/", now)
		must(t, err)
		if len(ended) != 1 || ended[0] != old {
			t.Fatalf("interrupted %v, want [%s]", ended, old)
		}
		j, _ := c.Job(ctx, old)
		if j.State != Queued || !j.NotBefore.Equal(now) || !strings.Contains(j.Error, "agent hv1 restarted") {
			t.Fatalf("the interrupted job: %+v", j)
		}
		for _, id := range []string{live, other} {
			if j, _ := c.Job(ctx, id); j.State != Running {
				t.Fatalf("job %s of a live run: %+v", id, j)
			}
		}
		if again, _ := c.Claim(ctx, "hv1", "hv1/b/4", Limits{}, time.Minute, now); again == nil || again.ID != old || again.Attempt != 2 {
			t.Fatalf("the interrupted job is not run again at once: %+v", again)
		}
	})
}

// A snapshot of a catalog restored into an empty one gives the same
// snapshot (tokens by hash, the skipped one left out); a catalog that is
// not empty refuses it, and a damaged document is refused by its parser.
func TestSnapshotRoundTrip(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, open func() *Catalog) {
		ctx := context.Background()
		must(t, c.PutTier(ctx, schedule.Tier{Name: "gold", RPO: time.Hour, RTO: 15 * time.Minute}, t0))
		must(t, c.PutTier(ctx, schedule.Tier{Name: "none", None: true}, t0))
		must(t, c.PutVault(ctx, Vault{Name: "default", URL: "/srv/vault"}, t0))
		must(t, c.PutVault(ctx, Vault{Name: "site-b", URL: "s3://b/v"}, t0))
		must(t, c.PutPolicy(ctx, Policy{Name: "daily", Schedule: schedule.Spec{Cron: "@daily", Stagger: time.Minute},
			Keep: policy.Retention{KeepLast: 3}, Consistency: "crash", Vault: "default", CopyTo: "site-b"}, t0))
		must(t, c.AddMachine(ctx, Machine{Name: "web1", Agent: "hv2", Spec: json.RawMessage(`{"disks":[{"name":"root","path":"/img"}]}`)}, t0))
		must(t, c.AddMachine(ctx, Machine{Name: "scratch", Spec: json.RawMessage(`{}`)}, t0))
		must(t, c.Protect(ctx, "web1", "daily", "gold", t0.Add(time.Minute)))
		must(t, c.Protect(ctx, "scratch", "", "none", t0))
		_, err := c.AddToken(ctx, "hv2", RoleAgent, "hash-hv2", t0)
		must(t, err)
		_, err = c.AddToken(ctx, "builtin", RoleAgent, "hash-builtin", t0)
		must(t, err)
		// History: a job that succeeded with a log, one that failed, one
		// still queued (not history: it is left out); an alert cleared and
		// one open.
		ok, err := c.Enqueue(ctx, Job{Kind: "backup", Machine: "web1", Agent: "hv2", Vault: "default"}, t0)
		must(t, err)
		if j, err := c.Claim(ctx, "hv2", "hv2/r/1", Limits{}, time.Minute, t0); err != nil || j == nil || j.ID != ok {
			t.Fatalf("claim: %+v %v", j, err)
		}
		must(t, c.Log(ctx, ok, "info", "backing up web1", t0))
		must(t, c.Log(ctx, ok, "info", "point 1234 committed", t0.Add(time.Second)))
		must(t, c.Finish(ctx, ok, "hv2/r/1", json.RawMessage(`{"point":"1234"}`), nil, nil, t0.Add(2*time.Second)))
		bad, err := c.Enqueue(ctx, Job{Kind: "verify", Vault: "default", Agent: "hv2"}, t0.Add(3*time.Second))
		must(t, err)
		if _, err := c.Claim(ctx, "hv2", "hv2/r/1", Limits{}, time.Minute, t0.Add(3*time.Second)); err != nil {
			t.Fatal(err)
		}
		must(t, c.Finish(ctx, bad, "hv2/r/1", nil, nil, errors.New("pack 99 damaged"), t0.Add(4*time.Second)))
		queued, err := c.Enqueue(ctx, Job{Kind: "backup", Machine: "web1", Agent: "hv2"}, t0.Add(5*time.Second))
		must(t, err)
		_, err = c.Raise(ctx, "rpo", "web1", "web1 missed its RPO", t0)
		must(t, err)
		_, err = c.Resolve(ctx, "rpo", "web1", t0.Add(time.Minute))
		must(t, err)
		_, err = c.Raise(ctx, "agent", "hv2", "hv2 stopped heartbeating", t0.Add(2*time.Minute))
		must(t, err)
		snap, err := c.Snapshot(ctx)
		must(t, err)
		if len(snap.Jobs) != 2 || snap.Jobs[0].ID != bad || snap.Jobs[1].ID != ok || len(snap.Jobs[1].Logs) != 2 ||
			snap.Jobs[1].Logs[1].Message != "point 1234 committed" || snap.Jobs[0].Error != "pack 99 damaged" {
			t.Fatalf("job history in the snapshot (not job %s): %+v", queued, snap.Jobs)
		}
		if len(snap.Alerts) != 2 || snap.Alerts[0].Kind != "agent" || !snap.Alerts[0].Cleared.IsZero() || snap.Alerts[1].Cleared.IsZero() {
			t.Fatalf("alerts in the snapshot: %+v", snap.Alerts)
		}
		doc, _ := json.Marshal(snap)
		parsed, err := ParseSnapshot(doc)
		must(t, err)
		if err := c.RestoreSnapshot(ctx, parsed, nil, t0); !errors.Is(err, ErrNotEmpty) {
			t.Fatalf("restoring into a catalog in use: %v", err)
		}

		var fresh *Catalog
		if c.Engine() == SQLite {
			fresh, err = Open(ctx, filepath.Join(t.TempDir(), "fresh.db"))
		} else {
			fresh, err = Open(ctx, pgtest.Database(t))
		}
		must(t, err)
		defer fresh.Close()
		must(t, fresh.RestoreSnapshot(ctx, parsed, map[string]bool{"builtin": true}, t0.Add(time.Hour)))
		again, err := fresh.Snapshot(ctx)
		must(t, err)
		want := snap
		want.Tokens = nil
		for _, tk := range snap.Tokens {
			if tk.Name != "builtin" {
				want.Tokens = append(want.Tokens, tk)
			}
		}
		for i := range want.Policies {
			want.Policies[i].Updated, again.Policies[i].Updated = time.Time{}, time.Time{}
		}
		a, _ := json.Marshal(want)
		b, _ := json.Marshal(again)
		if string(a) != string(b) {
			t.Fatalf("restored snapshot differs:\n%s\n%s", a, b)
		}
		if tk, err := fresh.TokenByHash(ctx, "hash-hv2"); err != nil || tk.Name != "hv2" {
			t.Fatalf("hv2's token after restoring: %+v %v", tk, err)
		}
		if logs, err := fresh.Logs(ctx, ok, 0); err != nil || len(logs) != 2 || logs[0].Message != "backing up web1" {
			t.Fatalf("job %s's log after restoring: %+v %v", ok, logs, err)
		}
		if js, err := fresh.Jobs(ctx, JobFilter{Machine: "web1"}); err != nil || len(js) != 1 || js[0].State != Succeeded {
			t.Fatalf("web1's jobs after restoring: %+v %v", js, err)
		}
		// The open alert is still open: raising it again notifies no one.
		if opened, err := fresh.Raise(ctx, "agent", "hv2", "again", t0.Add(time.Hour)); err != nil || opened {
			t.Fatalf("raising the restored open alert again: %v %v", opened, err)
		}
		// A version 1 snapshot (no history) still restores.
		v1 := parsed
		v1.Version, v1.Jobs, v1.Alerts = 1, nil, nil
		doc1, _ := json.Marshal(v1)
		if _, err := ParseSnapshot(doc1); err != nil {
			t.Fatalf("a version 1 snapshot: %v", err)
		}

		for _, bad := range []string{
			`{"version":3}`,
			`{"version":2,"jobs":[{"id":"j","kind":"backup","spec":{},"state":"running"}]}`,
			`{"version":2,"jobs":[{"id":"j","kind":"backup","spec":{},"state":"failed"},{"id":"j","kind":"backup","spec":{},"state":"failed"}]}`,
			`{"version":2,"alerts":[{"id":"a","kind":"rpo","subject":"m"},{"id":"b","kind":"rpo","subject":"m"}]}`,
			`{"version":1,"machines":[{"name":"m","spec":{},"policy":"p","tier":"gold"}]}`,
			`{"version":1,"tokens":[{"name":"t","role":"root","hash":"x"}]}`,
			`{"version":1,"vaults":[{"name":"../x","url":"/v"}]}`,
			`{"version":1,"extra":true}`,
		} {
			if _, err := ParseSnapshot([]byte(bad)); !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseSnapshot(%s): %v", bad, err)
			}
		}
	})
}

// FuzzSnapshot: ParseSnapshot refuses a document or returns one whose
// every object the catalog accepts.
func FuzzSnapshot(f *testing.F) {
	f.Add([]byte(`{"version":1,"tiers":[{"name":"gold","rpo":3600000000000}],"vaults":[{"name":"default","url":"/v","created":"2026-12-07T00:00:00Z"}],` +
		`"policies":[{"name":"d","schedule":{"cron":"@daily"},"keep":{"keep_last":3},"consistency":"crash","vault":"default","created":"2026-12-07T00:00:00Z","updated":"2026-12-07T00:00:00Z"}],` +
		`"machines":[{"name":"web1","spec":{},"policy":"d","tier":"gold","created":"2026-12-07T00:00:00Z"}],"tokens":[{"name":"a","role":"agent","hash":"h","created":"2026-12-07T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":2,"jobs":[{"id":"j1","kind":"backup","spec":{},"state":"succeeded","attempt":1,"max_attempts":3,` +
		`"not_before":"2026-12-07T00:00:00Z","created":"2026-12-07T00:00:00Z","logs":[{"seq":1,"time":"2026-12-07T00:00:00Z","level":"info","message":"m"}]}],` +
		`"alerts":[{"id":"a1","kind":"rpo","subject":"web1","message":"m","opened":"2026-12-07T00:00:00Z"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSnapshot(data)
		if err != nil {
			return
		}
		for _, p := range s.Policies {
			if err := p.Validate(); err != nil {
				t.Fatalf("policy accepted by ParseSnapshot fails Validate: %v", err)
			}
		}
		for _, j := range s.Jobs {
			if j.State != Succeeded && j.State != Failed && j.State != Cancelled {
				t.Fatalf("job %s accepted in state %q", j.ID, j.State)
			}
		}
	})
}

// An open alert is acknowledged with who and when, and stays open; a
// cleared one cannot be, an unknown one is not found; a catalog snapshot
// keeps no acknowledgement.
func TestAckAlert(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, _ func() *Catalog) {
		ctx := context.Background()
		_, err := c.Raise(ctx, "rpo-missed", "web1", "RPO missed", t0)
		must(t, err)
		open, err := c.Alerts(ctx, false, 0)
		must(t, err)
		if len(open) != 1 || !open[0].Acked.IsZero() || open[0].AckedBy != "" {
			t.Fatalf("a new alert: %+v", open)
		}
		a, err := c.Ack(ctx, open[0].ID, "alice", t0.Add(time.Minute))
		must(t, err)
		if !a.Acked.Equal(t0.Add(time.Minute)) || a.AckedBy != "alice" || !a.Cleared.IsZero() {
			t.Fatalf("acknowledged: %+v", a)
		}
		if open, _ = c.Alerts(ctx, false, 0); len(open) != 1 || open[0].AckedBy != "alice" || !open[0].Acked.Equal(t0.Add(time.Minute)) {
			t.Fatalf("open after the acknowledgement: %+v", open)
		}
		snap, err := c.Snapshot(ctx)
		must(t, err)
		if len(snap.Alerts) != 1 || snap.Alerts[0].AckedBy != "" || !snap.Alerts[0].Acked.IsZero() {
			t.Fatalf("the snapshot keeps the acknowledgement: %+v", snap.Alerts)
		}
		if _, err := c.Ack(ctx, "nope", "alice", t0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("acknowledging an unknown alert: %v", err)
		}
		_, err = c.Resolve(ctx, "rpo-missed", "web1", t0.Add(time.Hour))
		must(t, err)
		if _, err := c.Ack(ctx, a.ID, "bob", t0.Add(2*time.Hour)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("acknowledging a cleared alert: %v", err)
		}
		all, _ := c.Alerts(ctx, true, 0)
		if len(all) != 1 || all[0].AckedBy != "alice" {
			t.Fatalf("a refused acknowledgement changed the alert: %+v", all)
		}
	})
}
