package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/clock"
	"lifeboat/internal/job"
	"lifeboat/internal/schedule"
)

// A machine backed up every five minutes into one vault and copied to a
// second after each backup, under a fake clock: healthy, nothing fires;
// then the copies start failing while the backups go on: the failures
// raise job-failing, and once the copy has lacked a point for longer than
// the tier's RPO, copy-lag — both delivered to the webhook; the copies
// succeed again: both clear.
func TestSchedulerCopyLag(t *testing.T) { engines(t, testSchedulerCopyLag) }

func testSchedulerCopyLag(t *testing.T, cat *catalog.Catalog) {
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	const rpo = 20 * time.Minute
	must(cat.PutTier(ctx, schedule.Tier{Name: "gold", RPO: rpo}, t0))
	must(cat.PutVault(ctx, catalog.Vault{Name: "local", URL: "/srv/vault"}, t0))
	must(cat.PutVault(ctx, catalog.Vault{Name: "dr", URL: "s3://dr/vault"}, t0))
	must(cat.PutPolicy(ctx, catalog.Policy{Name: "often", Schedule: schedule.Spec{Every: 5 * time.Minute}, Consistency: "crash",
		Vault: "local", CopyTo: "dr"}, t0))
	must(cat.AddMachine(ctx, catalog.Machine{Name: "web1", Agent: "hv1", Spec: json.RawMessage(`{"disks":[{"name":"root","path":"/img/web1.raw"}]}`)}, t0))
	must(cat.Protect(ctx, "web1", "often", "gold", t0))
	hook := &webhook{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	sched := &Scheduler{Catalog: cat, Webhooks: []string{hs.URL}, Started: t0.Add(-time.Hour), AgentTimeout: time.Hour}
	defer sched.Close()

	copyBroken := false
	var newest time.Time // the newest point in the primary vault
	// agent runs every claimable job at now, as an agent would through the
	// API's routes: a backup records its point, and its success queues a
	// copy (api.Server.queueAfterBackup); a copy reports the newest point
	// it copied, or its error.
	agent := func(now time.Time) {
		must(cat.Heartbeat(ctx, "hv1", nil, now))
		for {
			j, err := cat.Claim(ctx, "hv1", "hv1", catalog.Limits{}, time.Minute, now)
			must(err)
			if j == nil {
				return
			}
			switch j.Kind {
			case "backup":
				newest = now
				must(cat.RecordPoint(ctx, catalog.Point{Vault: "local", ID: j.ID, Machine: j.Machine, Time: now, Consistency: "crash"}))
				must(cat.Finish(ctx, j.ID, "hv1", nil, nil, nil, now))
				spec, _ := json.Marshal(job.Copy{Machine: j.Machine, From: "/srv/vault", To: "s3://dr/vault"})
				_, err := cat.Enqueue(ctx, catalog.Job{Kind: "copy", Machine: j.Machine, Agent: "hv1", Vault: "dr", Spec: spec, MaxAttempts: api.BackupAttempts}, now)
				must(err)
			case "copy":
				if copyBroken {
					must(cat.FinishCopy(ctx, j.ID, "hv1", nil, catalog.CopyRun{Source: "local"}, errors.New("s3://dr/vault: connection refused"), now))
				} else {
					must(cat.FinishCopy(ctx, j.ID, "hv1", nil, catalog.CopyRun{Source: "local", Newest: newest}, nil, now))
				}
			default:
				must(cat.Finish(ctx, j.ID, "hv1", nil, nil, nil, now))
			}
		}
	}
	fc := clock.NewFake(t0)
	var raised, cleared []string
	step := func() {
		rep, err := sched.Tick(ctx, fc.Now())
		must(err)
		raised, cleared = append(raised, rep.Raised...), append(cleared, rep.Cleared...)
		agent(fc.Now())
		fc.Advance(30 * time.Second)
	}
	open := func(kind string) bool {
		as, err := cat.Alerts(ctx, false, 0)
		must(err)
		for _, a := range as {
			if a.Kind == kind && a.Subject == "web1" {
				return true
			}
		}
		return false
	}
	state := func() catalog.CopyState {
		ss, err := cat.CopyStates(ctx)
		must(err)
		if len(ss) != 1 {
			t.Fatalf("copy states %+v, want one", ss)
		}
		return ss[0]
	}

	for fc.Now().Before(t0.Add(time.Hour)) {
		step()
	}
	if len(raised) != 0 {
		t.Fatalf("alerts raised in a healthy hour: %v", raised)
	}
	st := state()
	if st.Source != "local" || st.Target != "dr" || !st.Newest.Equal(newest) || !st.Pending.IsZero() || st.Failures != 0 {
		t.Fatalf("healthy copy state %+v (newest point %s)", st, newest)
	}

	// The second site goes away: backups go on, copies fail.
	copyBroken = true
	broke := fc.Now()
	for i := 0; i < 200 && !(open(AlertCopyLag) && open(AlertJobFailing)); i++ {
		step()
	}
	if !open(AlertCopyLag) || !open(AlertJobFailing) {
		t.Fatalf("alerts open after copies failed for %s: copy-lag %v, job-failing %v", fc.Now().Sub(broke), open(AlertCopyLag), open(AlertJobFailing))
	}
	st = state()
	if lag := schedule.CopyLag(st.Pending, st.Expected, fc.Now()); lag <= rpo || st.Pending.Before(broke) || st.Failures < 3 {
		t.Fatalf("copy state %+v: lag %s, failures %d", st, lag, st.Failures)
	}
	// Raised no earlier than the RPO after the first point the copy lacks.
	if fc.Now().Sub(st.Pending) > rpo+2*time.Minute {
		t.Fatalf("copy-lag raised %s after the oldest missing point, RPO %s", fc.Now().Sub(st.Pending), rpo)
	}
	if !waitFor(func() bool {
		return hook.got("raised", AlertCopyLag, "web1") && hook.got("raised", AlertJobFailing, "web1")
	}) {
		t.Fatalf("the webhook did not hear copy-lag and job-failing raised: %+v", hook.events)
	}
	as, _ := cat.Alerts(ctx, false, 0)
	for _, a := range as {
		if a.Kind == AlertJobFailing && !strings.Contains(a.Message, "copy web1 to vault dr") {
			t.Fatalf("job-failing does not name the copy: %q", a.Message)
		}
		if a.Kind == AlertCopyLag && !strings.Contains(a.Message, "connection refused") {
			t.Fatalf("copy-lag does not say why: %q", a.Message)
		}
	}
	if open(AlertRPO) {
		t.Fatal("the primary's RPO is met, yet rpo-missed is open")
	}

	// The second site is back: the next copy catches up, both clear.
	copyBroken = false
	for i := 0; i < 100 && (open(AlertCopyLag) || open(AlertJobFailing)); i++ {
		step()
	}
	if !waitFor(func() bool {
		return hook.got("cleared", AlertCopyLag, "web1") && hook.got("cleared", AlertJobFailing, "web1")
	}) {
		t.Fatalf("the webhook did not hear copy-lag and job-failing cleared: %+v", hook.events)
	}
	if st := state(); !st.Pending.IsZero() || st.Failures != 0 || !st.Newest.Equal(newest) {
		t.Fatalf("copy state after catching up %+v", st)
	}
}
