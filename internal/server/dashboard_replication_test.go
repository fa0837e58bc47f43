package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/clock"
	"lifeboat/internal/dashboard/browsertest"
	"lifeboat/internal/job"
	"lifeboat/internal/replica"
	"lifeboat/internal/replicate"
	"lifeboat/internal/testenv"
	"lifeboat/internal/vmtest"
)

// drillDefinition is the definition the drilled machine is backed up
// with: the test guest's kernel boots it (the drill's Boot), its disk
// beside.
const drillDefinition = `{"schema": "lifeboat.machine/v1", "name": "web1", "cpus": 1, "memory_mib": 256,
  "disks": [{"name": "root", "bus": "virtio", "format": "raw", "boot_order": 1}]}`

// The dashboard's Replication, Drills and Alerts pages in a real browser
// against a real server: its built-in agent replicates three live
// qemu-storage-daemons (over QMP), one alone and two as a group, to a
// target site served on loopback and reports them, as lifeboat agent
// --replicate does; and it drills a backed
// up machine by booting its point under TCG until the guest answers. The
// pages show the lone replication protected with its lag green against
// the tier's RPO, its last point, target site and agent, and the group's
// members together; the drill passed
// with the RTO it measured, red against an RTO of 1 s (a TCG boot takes
// seconds); the drill-rto-missed alert the scheduler raised, with its
// age — all to a viewer, who may not acknowledge the alert; an operator
// does, and it stays open, saying by whom.
func TestDashboardReplicationAndDrills(t *testing.T) {
	br := browsertest.Start(t)
	for _, tool := range []string{"qemu-storage-daemon", "qemu-img"} {
		vmtest.RequireBinary(t, tool)
	}
	kernel, initrd := vmtest.Assets(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	// The target site: a replica store on loopback, named "dr" in the
	// replication settings of the server's host.
	store, err := replica.Open(filepath.Join(dir, "replica"), clock.Real{})
	must(err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	go store.Serve(ctx, l, replica.ServeOptions{Token: "site-secret"})
	siteToken := filepath.Join(dir, "site.token")
	must(os.WriteFile(siteToken, []byte("site-secret\n"), 0o600))
	rcfg := replicate.OpenConfig(filepath.Join(dir, "state"))
	must(rcfg.AddSite(replicate.Site{Name: "dr", URL: "http://" + l.Addr().String(), TokenFile: siteToken}))
	qmpSock := testenv.StorageDaemon(t, "8M")
	// db1 and app1 replicate as group shop, cut together.
	groupSocks := map[string]string{"db1": testenv.StorageDaemon(t, "8M"), "app1": testenv.StorageDaemon(t, "8M")}

	// The runners' directories (NBD sockets, journals) are under TMPDIR,
	// named after their machines: this test's own, not another's.
	t.Setenv("TMPDIR", t.TempDir())

	base, c := dashboardServer(t, dir, Config{Tick: time.Second, Replicate: &replicate.Runner{Config: rcfg}})

	// vm1 is replicated, web1 backed up and drilled; both of tier gold.
	must(c.Do(ctx, "PUT", "/v1/tiers/gold", api.TierJSON{RPO: api.Duration(time.Hour), RTO: api.Duration(time.Second)}, nil))
	must(c.Do(ctx, "PUT", "/v1/policies/daily", api.PolicyJSON{Every: api.Duration(24 * time.Hour), Keep: api.KeepJSON{Last: 5}, Consistency: "crash"}, nil))
	img := filepath.Join(dir, "web1.raw")
	disk := make([]byte, 4<<20)
	rand.Read(disk[:1<<20])
	must(os.WriteFile(img, disk, 0o600))
	must(c.Do(ctx, "POST", "/v1/machines", api.AddMachineJSON{Name: "web1",
		Source: job.Source{Disks: []job.Disk{{Name: "root", Path: img}}, Definition: json.RawMessage(drillDefinition)}}, nil))
	must(c.Do(ctx, "POST", "/v1/machines", api.AddMachineJSON{Name: "vm1", Source: job.Source{QMP: qmpSock}}, nil))
	for _, m := range []string{"web1", "vm1"} {
		must(c.Do(ctx, "POST", "/v1/machines/"+m+"/protect", api.ProtectJSON{Policy: "daily", Tier: "gold"}, nil))
	}
	spec, _ := json.Marshal(replicate.Machine{Name: "vm1", QMP: qmpSock, Target: "dr", Every: 200 * time.Millisecond})
	must(c.Do(ctx, "PUT", "/v1/replications/vm1", api.ReplicationSpecJSON{Agent: "hv1", Spec: spec}, nil))
	for name, sock := range groupSocks {
		spec, _ := json.Marshal(replicate.Machine{Name: name, QMP: sock, Target: "dr", Group: "shop", Every: 500 * time.Millisecond})
		must(c.Do(ctx, "PUT", "/v1/replications/"+name, api.ReplicationSpecJSON{Agent: "hv1", Spec: spec}, nil))
	}

	waitJob := func(id string) catalog.Job {
		t.Helper()
		for deadline := time.Now().Add(50 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			var j catalog.Job
			must(c.Do(ctx, "GET", "/v1/jobs/"+id, nil, &j))
			if j.State == catalog.Succeeded {
				return j
			}
			if j.State == catalog.Failed || time.Now().After(deadline) {
				t.Fatalf("%s job %s: %s %s", j.Kind, id, j.State, j.Error)
			}
		}
	}
	var backup, drilled catalog.Job
	must(c.Do(ctx, "POST", "/v1/machines/web1/backup", nil, &backup))
	waitJob(backup.ID)
	must(c.Do(ctx, "POST", "/v1/machines/web1/drill", api.DrillJSON{Point: "latest", ProbeSerial: "^LB workload idle",
		Timeout: job.Duration(50 * time.Second),
		Boot:    job.Boot{Accel: "tcg", Kernel: kernel, Initrd: initrd, Append: "console=ttyS0 panic=-1 mitigations=off quiet lifeboat.workload=idle"}}, &drilled))
	drilled = waitJob(drilled.ID)

	// What the API says, which the pages must show.
	var drills []api.DrillsJSON
	must(c.Do(ctx, "GET", "/v1/drills", nil, &drills))
	var web1 api.DrillsJSON
	for _, d := range drills {
		if d.Machine == "web1" {
			web1 = d
		}
	}
	if web1.LastOK == nil || web1.LastOK.Job != drilled.ID || web1.LastOK.RTOSeconds <= 1 || web1.RTOState != api.RTOMissed {
		t.Fatalf("web1's drills: %+v (a TCG boot should take longer than the tier's RTO of 1 s)", web1)
	}

	bctx, bcancel := context.WithTimeout(br.Ctx, 60*time.Second)
	defer bcancel()
	text := func(sel string) string { t.Helper(); return browsertest.Text(t, bctx, sel) }
	wait := func(what, expr string) { t.Helper(); browsertest.Wait(t, bctx, what, expr) }
	var viewer api.NewTokenJSON
	must(c.Do(ctx, "POST", "/v1/tokens", api.NewTokenJSON{Name: "watcher", Role: "viewer"}, &viewer))
	must(chromedp.Do(bctx,
		chromedp.Navigate(base+"/#/replication"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#token"), viewer.Secret),
		chromedp.Click(chromedp.CSS("#login-form button")),
		chromedp.WaitVisible(chromedp.CSS(`nav a[href="#/replication"][aria-current="page"]`)),
	))

	// The agent enables vm1's replication, syncs it and reports it every
	// 5 s: the page shows it protected, within its RPO of 1h.
	row := `section[data-group=""] tbody tr`
	wait("vm1 protected", `[...document.querySelectorAll('`+row+`')].some((r) => r.cells[0].textContent === 'vm1' && r.querySelector('[data-state="protected"]'))`)
	cells := func() []string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`[...document.querySelector('`+row+`').cells].map((c) => c.textContent)`))
		must(err)
		return s
	}
	got := cells()
	// Machine, state, lag, last crash point, last app point, target, agent, journal, problem.
	if len(got) != 9 || got[0] != "vm1" || got[1] != "protected" || !strings.HasSuffix(got[2], "of 1h: green") || got[3] == "—" ||
		got[4] != "—" || got[5] != "dr" || got[6] != "hv1" || !strings.Contains(got[7], "target history") || got[8] != "" {
		t.Fatalf("vm1's replication shows %q", got)
	}
	if st := text(row + ` [data-rpo]`); !strings.Contains(st, "green") {
		t.Fatalf("vm1's lag badge: %q", st)
	}
	// The group's members are shown together, apart from vm1; they have
	// no tier, so their lag is held against no RPO.
	group := `section[data-group="shop"] tbody tr`
	wait("group shop protected", `[...document.querySelectorAll('`+group+`')].map((r) => r.cells[0].textContent + ' ' + r.cells[1].textContent).join() === 'app1 protected,db1 protected'`)
	if lag := text(group + ` [data-rpo]`); !strings.HasSuffix(lag, "(no tier)") {
		t.Fatalf("app1's lag shows %q", lag)
	}
	if h := text(`section[data-group="shop"] h2`); h != "Group shop" {
		t.Fatalf("the group's heading: %q", h)
	}
	var reps []api.ReplicationJSON
	must(c.Do(ctx, "GET", "/v1/replications", nil, &reps))
	if len(reps) != 3 {
		t.Fatalf("the API lists %+v", reps)
	}
	for _, r := range reps {
		if r.Machine == "vm1" && (r.RPOState != "green" || r.LastCut == nil) || r.Machine != "vm1" && (r.Group != "shop" || r.RPOState != "") {
			t.Fatalf("the API lists %+v", r)
		}
	}

	// The overview counts it within its RPO.
	must(chromedp.Do(bctx, chromedp.Click(chromedp.CSS(`nav a[href="#/"]`)), chromedp.WaitVisible(chromedp.CSS(`[data-count="rep-green"]`))))
	if n := text(`[data-count="rep-green"]`) + " " + text(`[data-count="rep-other"]`); n != "1 2" {
		t.Fatalf("the overview counts %s replications within their RPO and of no tier, want 1 2", n)
	}

	// The drills page: web1 passed, its RTO red against 1 s; vm1 never drilled.
	must(chromedp.Do(bctx, chromedp.Click(chromedp.CSS(`nav a[href="#/drills"]`)), chromedp.WaitVisible(chromedp.CSS(`tbody tr:has(a[href="#/machines/web1"])`))))
	web1Row := `tbody tr:has(a[href="#/machines/web1"])`
	if r := text(web1Row + ` [data-result]`); r != "passed" {
		t.Fatalf("web1's drill shows %q", r)
	}
	if rto := text(web1Row + ` [data-rto="missed"]`); !strings.HasSuffix(rto, "of 1s: missed") {
		t.Fatalf("web1's measured RTO shows %q", rto)
	}
	if !strings.Contains(text(web1Row), drilled.ID) || !strings.Contains(text(web1Row), web1.LastOK.Point[:12]) {
		t.Fatalf("web1's drill row lacks the job or the point: %q", text(web1Row))
	}
	if r := text(`tbody tr:has(a[href="#/machines/vm1"]) [data-result]`); r != "never drilled" {
		t.Fatalf("vm1's drill shows %q", r)
	}

	// The scheduler's tick raises drill-rto-missed: the alerts page lists
	// it with its kind and age.
	must(chromedp.Do(bctx, chromedp.Click(chromedp.CSS(`nav a[href="#/alerts"]`))))
	alert := `tbody tr:has([data-kind="drill-rto-missed"])`
	wait("the drill-rto-missed alert", `document.querySelector('`+alert+`') !== null`)
	if r := text(alert); !strings.Contains(r, "web1") || !strings.Contains(r, "beyond its RTO of 1s") {
		t.Fatalf("the alert shows %q", r)
	}
	// Its age, to the minute, as of when it was opened (a second either
	// way: the page and this test read their clocks apart).
	var raised []catalog.Alert
	must(c.Do(ctx, "GET", "/v1/alerts", nil, &raised))
	ageText := func(d time.Duration) string {
		if d < time.Minute {
			return "under a minute"
		}
		return fmt.Sprintf("%d min", int(d/time.Minute))
	}
	if len(raised) != 1 {
		t.Fatalf("open alerts: %+v", raised)
	}
	shown := text(alert + " .age")
	if since := time.Since(raised[0].Opened); shown != ageText(since-time.Second) && shown != ageText(since+time.Second) {
		t.Fatalf("the alert opened %s ago shows its age as %q", since, shown)
	}
	// A viewer may not acknowledge it: the button is disabled, and says why.
	disabled, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.querySelector('`+alert+` button.ack').disabled`))
	must(err)
	if why := text("#ack-why"); !disabled || !strings.Contains(why, "operator role") {
		t.Fatalf("a viewer's Acknowledge: disabled %v, %q", disabled, why)
	}
	// An operator acknowledges it: it stays open, saying by whom.
	var op api.NewTokenJSON
	must(c.Do(ctx, "POST", "/v1/tokens", api.NewTokenJSON{Name: "ops", Role: "operator"}, &op))
	must(chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS("#logout")),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#token"), op.Secret),
		chromedp.Click(chromedp.CSS("#login-form button")),
		chromedp.WaitVisible(chromedp.CSS(alert+` button.ack:not([disabled])`)),
		chromedp.Click(chromedp.CSS(alert+` button.ack`)),
	))
	wait("the acknowledgement", `(document.querySelector('`+alert+` .acked') || {}).textContent?.startsWith('by ops at ')`)
	var open []catalog.Alert
	must(c.Do(ctx, "GET", "/v1/alerts", nil, &open))
	if len(open) != 1 || open[0].Kind != AlertDrillRTO || open[0].AckedBy != "ops" || !open[0].Cleared.IsZero() {
		t.Fatalf("open alerts after the acknowledgement: %+v", open)
	}
	// The machines' pages: web1's drill, vm1's replication; an operator
	// may drill.
	must(chromedp.Do(bctx, chromedp.Navigate(base+"/#/machines/web1"), chromedp.WaitVisible(chromedp.CSS("#drill-now:not([disabled])"))))
	if d := text("#machine-drill"); !strings.HasPrefix(d, "passed") || !strings.Contains(d, drilled.ID) {
		t.Fatalf("web1's page shows its latest drill as %q", d)
	}
	must(chromedp.Do(bctx, chromedp.Navigate(base+"/#/machines/vm1"), chromedp.WaitVisible(chromedp.CSS("#machine-replication [data-state]"))))
	if r := text("#machine-replication"); !strings.HasPrefix(r, "protected") || !strings.Contains(r, "of 1h: green") || !strings.HasSuffix(r, "to dr (agent hv1)") {
		t.Fatalf("vm1's page shows its replication as %q", r)
	}
	if p := br.Problems(); len(p) > 0 {
		t.Fatalf("the pages reported problems:\n%s", strings.Join(p, "\n"))
	}
}
