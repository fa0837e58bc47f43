package server

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"lifeboat/internal/agent"
	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/crypto"
	"lifeboat/internal/dashboard/browsertest"
	"lifeboat/internal/job"
	"lifeboat/internal/vault"
)

// The dashboard in a real browser against a real server whose built-in
// agent backs up a real disk image into the default vault: log in with
// the admin token (a wrong one is refused on the login form), see the
// machine green with its point, click "Back up now" and see the job
// appear and succeed — through the same API scripts use. The pages report
// no exception, console error or security-policy violation.
func TestDashboardInBrowser(t *testing.T) {
	br := browsertest.Start(t)

	dir := t.TempDir()
	ctx := context.Background()
	base, c := dashboardServer(t, dir, Config{Tick: time.Hour})

	// A machine with a 4 MiB disk, protected, with one point.
	img := filepath.Join(dir, "web1.raw")
	disk := make([]byte, 4<<20)
	rand.Read(disk[:1<<20])
	if err := os.WriteFile(img, disk, 0o600); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Do(ctx, "PUT", "/v1/tiers/gold", api.TierJSON{RPO: api.Duration(time.Hour)}, nil))
	must(c.Do(ctx, "PUT", "/v1/policies/daily", api.PolicyJSON{Every: api.Duration(24 * time.Hour), Keep: api.KeepJSON{Last: 5}, Consistency: "crash"}, nil))
	must(c.Do(ctx, "POST", "/v1/machines", api.AddMachineJSON{Name: "web1", Source: job.Source{Disks: []job.Disk{{Name: "root", Path: img}}}}, nil))
	must(c.Do(ctx, "POST", "/v1/machines/web1/protect", api.ProtectJSON{Policy: "daily", Tier: "gold"}, nil))
	var first catalog.Job
	must(c.Do(ctx, "POST", "/v1/machines/web1/backup", nil, &first))
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var j catalog.Job
		must(c.Do(ctx, "GET", "/v1/jobs/"+first.ID, nil, &j))
		if j.State == catalog.Succeeded {
			break
		}
		if j.State == catalog.Failed || time.Now().After(deadline) {
			t.Fatalf("first backup: %s %s", j.State, j.Error)
		}
	}

	bctx, bcancel := context.WithTimeout(br.Ctx, 50*time.Second)
	defer bcancel()
	text := func(sel string) string { t.Helper(); return browsertest.Text(t, bctx, sel) }
	wait := func(what, expr string) { t.Helper(); browsertest.Wait(t, bctx, what, expr) }

	// No token: the login form. A wrong token is refused, with the API's reason.
	must(chromedp.Do(bctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
	))
	loggedOut := func() string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Evaluate[string](`JSON.stringify([document.querySelector("#nav").hidden, document.querySelector("#view").hidden, sessionStorage.length])`))
		must(err)
		return s
	}
	if s := loggedOut(); s != "[true,true,0]" {
		t.Fatalf("without a token the page shows more than the login form, or keeps a token: %s", s)
	}
	must(chromedp.Do(bctx,
		chromedp.SendKeys(chromedp.CSS("#token"), "lbt_wrong"),
		chromedp.Click(chromedp.CSS("#login-form button")),
	))
	wait("the refusal", `document.querySelector('#login-error').textContent.includes('unknown or revoked token')`)
	if !strings.Contains(text("#login-error"), "unknown or revoked token") {
		t.Fatalf("login error: %q", text("#login-error"))
	}
	if s := loggedOut(); s != "[true,true,0]" { // a refused token is not kept
		t.Fatalf("after a refused token: %s", s)
	}

	// The browser logs the refused requests; nothing else may be wrong.
	refused := br.Problems()
	for _, p := range refused {
		if !strings.Contains(p, "401 (Unauthorized)") {
			t.Fatalf("the login page reported %q", p)
		}
	}

	// The admin token: the overview counts the green machine.
	must(chromedp.Do(bctx,
		chromedp.SendKeys(chromedp.CSS("#token"), c.Token),
		chromedp.Click(chromedp.CSS("#login-form button")),
		chromedp.WaitVisible(chromedp.CSS(`[data-count="green"]`)),
	))
	if n := text(`[data-count="green"]`); n != "1" {
		t.Fatalf("overview counts %s green machines, want 1", n)
	}
	if who := text("#me"); who != "Logged in as admin (admin)" {
		t.Fatalf("the header says %q", who)
	}

	// The machines page: web1, green, with its tier and policy.
	must(chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`nav a[href="#/machines"]`)),
		chromedp.Poll[chromedp.Void](`document.querySelector('#view h1')?.textContent === 'Machines'`),
		chromedp.WaitVisible(chromedp.CSS(`a[href="#/machines/web1"]`)),
	))
	row := text(`tbody tr:has(a[href="#/machines/web1"])`)
	if !strings.Contains(row, "gold") || !strings.Contains(row, "daily") {
		t.Fatalf("machine row: %q", row)
	}
	if st := text(`tbody tr:has(a[href="#/machines/web1"]) [data-rpo]`); st != "green" {
		t.Fatalf("web1's RPO state shows %q, want green", st)
	}
	if cp := text(`tbody tr:has(a[href="#/machines/web1"]) [data-copy]`); cp != "no copy" {
		t.Fatalf("web1's copy shows %q; its policy copies nowhere", cp)
	}

	// The machine's page: its point, its job; back up now.
	browsertest.Click(t, bctx, `a[href="#/machines/web1"]`)
	must(chromedp.Do(bctx, chromedp.WaitVisible(chromedp.CSS("#backup-now"))))
	if pts := text("main table caption"); !strings.Contains(pts, "Recovery points of web1") {
		t.Fatalf("no point table on the machine page: %q", pts)
	}
	// Each backup is followed by a forget (the policy's retention): count
	// the backups.
	backups := func(state string) string {
		return `[...document.querySelectorAll('#machine-jobs tbody tr')].filter((r) => r.cells[1].textContent === 'backup'` +
			` && r.querySelector('[data-state="` + state + `"]')).length`
	}
	wait("the first backup listed", backups("succeeded")+` === 1`)
	must(chromedp.Do(bctx, chromedp.Click(chromedp.CSS("#backup-now"))))
	wait("the queued status", `document.querySelector('#status').textContent.includes('Backup of web1 queued')`)
	wait("the second backup to succeed", backups("succeeded")+` === 2`)

	// The API agrees: two successful backups, two points.
	var jobs []catalog.Job
	must(c.Do(ctx, "GET", "/v1/jobs?machine=web1&kind=backup", nil, &jobs))
	if len(jobs) != 2 || jobs[0].State != catalog.Succeeded || jobs[0].ID == first.ID {
		t.Fatalf("jobs after the click: %+v", jobs)
	}
	var points []catalog.Point
	must(c.Do(ctx, "GET", "/v1/machines/web1/points", nil, &points))
	if len(points) != 2 {
		t.Fatalf("%d points after the click, want 2", len(points))
	}
	wait("the two points listed", `document.querySelectorAll('main table')[0].querySelectorAll('tbody tr').length === 2`)

	// The job's page shows its log.
	must(chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`#machine-jobs a[href="#/jobs/`+jobs[0].ID+`"]`)),
		chromedp.WaitVisible(chromedp.CSS("#job-log")),
	))

	// The jobs page, filtered by state through the API's own filter.
	must(chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`header nav a[href="#/jobs"]`)),
		chromedp.Click(chromedp.CSS(`a[href="#/jobs?state=failed"]`)),
		chromedp.WaitVisible(chromedp.CSS(`a[href="#/jobs?state=failed"][aria-current]`)),
	))
	if msg := text("main p.empty"); msg != "No failed job." {
		t.Fatalf("failed jobs: %q", msg)
	}
	must(chromedp.Do(bctx, chromedp.Click(chromedp.CSS(`a[href="#/jobs?state=succeeded"]`))))
	// Two backups and their forgets, and nothing that did not succeed.
	wait("the succeeded jobs", `document.querySelectorAll('main tbody [data-state="succeeded"]').length >= 4 &&
		document.querySelectorAll('main tbody [data-state]').length === document.querySelectorAll('main tbody [data-state="succeeded"]').length`)

	// A viewer sees the machine but may not back it up: the button is
	// disabled and says why.
	var viewer api.NewTokenJSON
	must(c.Do(ctx, "POST", "/v1/tokens", api.NewTokenJSON{Name: "watcher", Role: "viewer"}, &viewer))
	for i, step := range []chromedp.Action[chromedp.Void]{
		chromedp.Click(chromedp.CSS("#logout")),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.Poll[chromedp.Void](`sessionStorage.length === 0 && document.querySelector('#view').hidden`), // forgotten
		chromedp.SendKeys(chromedp.CSS("#token"), viewer.Secret),
		chromedp.Click(chromedp.CSS("#login-form button")),
		chromedp.WaitVisible(chromedp.CSS("#nav")), // back on the job's page
		chromedp.Click(chromedp.CSS(`nav a[href="#/machines"]`)),
		// The machines page drawn: the job's page links to web1 too.
		chromedp.Poll[chromedp.Void](`document.querySelector('#view h1')?.textContent === 'Machines'`),
	} {
		if _, err := chromedp.Run(bctx, step); err != nil {
			t.Fatalf("viewer step %d: %v", i, err)
		}
	}
	browsertest.Click(t, bctx, `a[href="#/machines/web1"]`)
	must(chromedp.Do(bctx, chromedp.WaitVisible(chromedp.CSS("#backup-now"))))
	disabled, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.querySelector('#backup-now').disabled`))
	must(err)
	if why := text("#backup-now-why"); !disabled || !strings.Contains(why, "operator role") {
		t.Fatalf("a viewer's Back up now: disabled %v, %q", disabled, why)
	}

	// The token lives in the tab's sessionStorage only: no cookie.
	cookies, err := chromedp.Run(bctx, chromedp.Evaluate[string]("document.cookie"))
	must(err)
	if cookies != "" {
		t.Fatalf("the dashboard set cookies: %q", cookies)
	}
	if p := br.Problems()[len(refused):]; len(p) > 0 {
		t.Fatalf("the pages reported problems:\n%s", strings.Join(p, "\n"))
	}
}

// dashboardServer runs a server with cfg completed: data in dir/data, on
// loopback, a built-in agent hv1 (with cheap vault options) that runs
// jobs; it returns the server's URL and a client with the admin token.
func dashboardServer(t *testing.T, dir string, cfg Config) (string, *api.Client) {
	t.Helper()
	cheap := vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, ChunkSize: 64 << 10, PackSize: 1 << 20}
	data := filepath.Join(dir, "data")
	cfg.Runner = &agent.Jobs{Options: cheap, Getenv: func(string) string { return "" },
		Passphrase: func(url string) ([]byte, error) {
			pw, _ := DefaultVaultPassphrase(data, url)
			return pw, nil
		}}
	cfg.DataDir, cfg.Listen, cfg.Host, cfg.VaultOptions = data, "127.0.0.1:0", "hv1", cheap
	addr, _ := serve(t, cfg)
	token, err := os.ReadFile(filepath.Join(data, AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr
	return base, &api.Client{URL: base, Token: strings.TrimSpace(string(token))}
}

// serve runs a server with cfg (its Ready and Out set here) until the test
// ends, and returns the address it serves and what it printed.
func serve(t *testing.T, cfg Config) (string, *strings.Builder) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	out := &strings.Builder{}
	cfg.Out, cfg.Ready = out, func(a string) { addrc <- a }
	go func() { done <- Run(ctx, cfg) }()
	select {
	case addr := <-addrc:
		t.Cleanup(func() { cancel(); <-done })
		return addr, out
	case err := <-done:
		cancel()
		t.Fatalf("server stopped: %v", err)
		return "", nil
	}
}
