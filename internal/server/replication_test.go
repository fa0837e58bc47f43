package server

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"lifeboat/internal/catalog"
	"lifeboat/internal/replicate"
	"lifeboat/internal/schedule"
)

func TestReplicationLag(t *testing.T) {
	cut := t0
	for _, c := range []struct {
		name string
		st   replicate.Status
		rpo  time.Duration
		want bool
	}{
		{"within the RPO", replicate.Status{State: replicate.StateProtected, LastCut: &cut, LagSeconds: 30}, time.Minute, false},
		{"beyond the RPO", replicate.Status{State: replicate.StateProtected, LastCut: &cut, LagSeconds: 61}, time.Minute, true},
		{"resyncing beyond the RPO", replicate.Status{State: replicate.StateResyncing, LastCut: &cut, LagSeconds: 600}, time.Minute, true},
		{"no tier: lag alone does not alert", replicate.Status{State: replicate.StateProtected, LastCut: &cut, LagSeconds: 1e6}, 0, false},
		{"initial sync, no cut yet", replicate.Status{State: replicate.StateInitialSync}, time.Minute, false},
		{"error", replicate.Status{State: replicate.StateError, Error: "site unreachable"}, 0, true},
		{"stopped", replicate.Status{State: replicate.StateStopped}, time.Hour, true},
		{"failed over", replicate.Status{State: replicate.StateFailedOver, LastCut: &cut, LagSeconds: 1e6}, time.Minute, false},
	} {
		if got, msg := ReplicationLag(c.st, c.rpo); got != c.want || got != (msg != "") {
			t.Errorf("%s: %v %q, want %v", c.name, got, msg, c.want)
		}
	}
}

// Agents report replications; the tick raises replication-lag when a
// machine lags beyond its tier's RPO, fails, or its agent stops
// reporting, tells the webhook, and clears it when the lag is back within
// the RPO or the replication is no longer reported.
func TestSchedulerReplicationLag(t *testing.T) { engines(t, testSchedulerReplicationLag) }

func testSchedulerReplicationLag(t *testing.T, cat *catalog.Catalog) {
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cat.PutTier(ctx, schedule.Tier{Name: "gold", RPO: time.Minute}, t0))
	must(cat.PutVault(ctx, catalog.Vault{Name: "local", URL: "/srv/vault"}, t0))
	must(cat.PutPolicy(ctx, catalog.Policy{Name: "daily", Schedule: schedule.Spec{Every: 24 * time.Hour}, Consistency: "crash", Vault: "local"}, t0))
	must(cat.AddMachine(ctx, catalog.Machine{Name: "web1", Agent: "hv1", Spec: json.RawMessage(`{"disks":[{"name":"root","path":"/img/x.raw"}]}`)}, t0))
	must(cat.Protect(ctx, "web1", "daily", "gold", t0))
	hook := &webhook{}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	sched := &Scheduler{Catalog: cat, Webhooks: []string{srv.URL}, Started: t0.Add(-time.Hour), AgentTimeout: time.Hour}
	defer sched.Close()

	report := func(now time.Time, sts ...replicate.Status) {
		t.Helper()
		var reps []catalog.Replication
		for _, st := range sts {
			raw, _ := json.Marshal(st)
			r := catalog.Replication{Machine: st.Machine, State: st.State, Status: raw}
			if st.LastCut != nil {
				r.LastCut = *st.LastCut
			}
			reps = append(reps, r)
		}
		must(cat.ReportReplications(ctx, "hv1", reps, now))
	}
	tick := func(now time.Time) TickReport {
		t.Helper()
		rep, err := sched.Tick(ctx, now)
		must(err)
		return rep
	}
	has := func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	}
	at := func(d time.Duration) *time.Time { c := t0.Add(d); return &c }
	web := func(cut time.Duration) replicate.Status {
		return replicate.Status{Machine: "web1", Target: "dr", State: replicate.StateProtected, LastCut: at(cut)}
	}
	lag := AlertReplicationLag + " web1"

	report(t0, web(-5*time.Second))
	if rep := tick(t0); has(rep.Raised, lag) {
		t.Fatalf("raised with a 5 s lag: %+v", rep)
	}
	// No cut for two minutes, reports still coming: beyond the 1 min RPO.
	report(t0.Add(2*time.Minute), web(0))
	if rep := tick(t0.Add(2 * time.Minute)); !has(rep.Raised, lag) {
		t.Fatalf("not raised with a 2 min lag: %+v", rep)
	}
	if !waitFor(func() bool { return hook.got("raised", AlertReplicationLag, "web1") }) {
		t.Fatal("the webhook did not hear replication-lag raised")
	}
	report(t0.Add(3*time.Minute), web(3*time.Minute-time.Second))
	if rep := tick(t0.Add(3 * time.Minute)); !has(rep.Cleared, lag) {
		t.Fatalf("not cleared with the lag back to 1 s: %+v", rep)
	}
	if !waitFor(func() bool { return hook.got("cleared", AlertReplicationLag, "web1") }) {
		t.Fatal("the webhook did not hear replication-lag cleared")
	}
	// A machine of no tier alerts when its replication fails, not for lag.
	db := replicate.Status{Machine: "db1", Target: "dr", State: replicate.StateProtected, LastCut: at(-time.Hour)}
	report(t0.Add(4*time.Minute), web(4*time.Minute), db)
	if rep := tick(t0.Add(4 * time.Minute)); len(rep.Raised) != 0 {
		t.Fatalf("raised: %+v", rep)
	}
	db.State, db.Error = replicate.StateError, "site dr unreachable"
	report(t0.Add(5*time.Minute), web(5*time.Minute), db)
	if rep := tick(t0.Add(5 * time.Minute)); !has(rep.Raised, AlertReplicationLag+" db1") || has(rep.Raised, lag) {
		t.Fatalf("the failed replication of db1: %+v", rep)
	}
	// The agent goes quiet: its reports grow stale and show stopped.
	if rep := tick(t0.Add(10 * time.Minute)); !has(rep.Raised, lag) {
		t.Fatalf("not raised when the agent stopped reporting: %+v", rep)
	}
	open, err := cat.Alerts(ctx, false, 100)
	must(err)
	n := 0
	for _, a := range open {
		if a.Kind == AlertReplicationLag {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("open alerts: %+v", open)
	}
	// Replication disabled (no longer reported): its alerts clear.
	report(t0.Add(11 * time.Minute))
	if rep := tick(t0.Add(11 * time.Minute)); !has(rep.Cleared, lag) || !has(rep.Cleared, AlertReplicationLag+" db1") {
		t.Fatalf("not cleared when no longer replicated: %+v", rep)
	}
}
