package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"lifeboat/internal/catalog"
	"lifeboat/internal/catalog/pgtest"
	"lifeboat/internal/clock"
	"lifeboat/internal/job"
	"lifeboat/internal/policy"
	"lifeboat/internal/schedule"
)

var t0 = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)

// webhook is a real HTTP endpoint on loopback that records what it gets.
type webhook struct {
	mu     sync.Mutex
	events []Event
}

func (w *webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	var ev Event
	json.NewDecoder(r.Body).Decode(&ev)
	w.mu.Lock()
	w.events = append(w.events, ev)
	w.mu.Unlock()
}

func (w *webhook) got(event, kind, subject string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.events {
		if e.Event == event && e.Kind == kind && e.Subject == subject {
			return true
		}
	}
	return false
}

// An hour of fake time: three machines on a one-minute policy, staggered;
// an agent (driven by the test through the catalog, as the API's agent
// routes do) runs each queued backup. Then one machine's disk fails: its
// jobs fail and retry, the RPO and failure alerts fire and reach the
// webhook; the disk comes back and the alerts clear.
func TestSchedulerHour(t *testing.T) { engines(t, testSchedulerHour) }

// engines runs a scheduler test on a catalog on SQLite and on PostgreSQL.
func engines(t *testing.T, fn func(t *testing.T, cat *catalog.Catalog)) {
	for _, e := range []catalog.Engine{catalog.SQLite, catalog.Postgres} {
		t.Run(string(e), func(t *testing.T) {
			dsn := filepath.Join(t.TempDir(), "catalog.db")
			if e == catalog.Postgres {
				dsn = pgtest.Database(t)
			}
			cat, err := catalog.Open(context.Background(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer cat.Close()
			fn(t, cat)
		})
	}
}

// waitFor waits (in real time: webhooks are sent off the tick) until
// cond holds, for at most 10 s.
func waitFor(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

func testSchedulerHour(t *testing.T, cat *catalog.Catalog) {
	ctx := context.Background()
	hook := &webhook{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	sched := &Scheduler{Catalog: cat, Webhooks: []string{hs.URL}, AgentTimeout: 5 * time.Minute}
	defer sched.Close()

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cat.PutTier(ctx, schedule.Tier{Name: "gold", RPO: 5 * time.Minute}, t0))
	must(cat.PutVault(ctx, catalog.Vault{Name: "local", URL: "/srv/vault"}, t0))
	must(cat.PutPolicy(ctx, catalog.Policy{Name: "minutely", Schedule: schedule.Spec{Every: time.Minute, Stagger: 40 * time.Second},
		Keep: policy.Retention{KeepLast: 10}, Consistency: "crash", Vault: "local"}, t0))
	machines := []string{"web1", "web2", "db1"}
	for _, m := range machines {
		spec := fmt.Sprintf(`{"disks":[{"name":"root","path":"/img/%s.raw"}]}`, m)
		must(cat.AddMachine(ctx, catalog.Machine{Name: m, Agent: "hv1", Spec: json.RawMessage(spec)}, t0))
		must(cat.Protect(ctx, m, "minutely", "gold", t0))
	}

	broken := map[string]bool{}
	offsets := map[time.Duration]bool{}
	runs := map[string][]time.Time{}
	kinds := map[string]int{}
	fc := clock.NewFake(t0)
	// agent runs every claimable job at now, as an agent would.
	agent := func(now time.Time) {
		must(cat.Heartbeat(ctx, "hv1", nil, now))
		for {
			j, err := cat.Claim(ctx, "hv1", "hv1", catalog.Limits{}, time.Minute, now)
			must(err)
			if j == nil {
				return
			}
			if j.Kind != "backup" {
				kinds[j.Kind]++
				must(cat.Finish(ctx, j.ID, "hv1", nil, nil, nil, now))
				continue
			}
			if broken[j.Machine] {
				must(cat.Finish(ctx, j.ID, "hv1", nil, nil, errors.New("reading disk root: input/output error"), now))
				continue
			}
			runs[j.Machine] = append(runs[j.Machine], now)
			must(cat.RecordPoint(ctx, catalog.Point{Vault: "local", ID: j.ID, Machine: j.Machine, Time: now, Consistency: "crash"}))
			must(cat.Finish(ctx, j.ID, "hv1", nil, nil, nil, now))
		}
	}
	tick := func() TickReport {
		rep, err := sched.Tick(ctx, fc.Now())
		must(err)
		agent(fc.Now())
		return rep
	}
	var raised []string
	for fc.Now().Before(t0.Add(time.Hour)) {
		rep := tick()
		raised = append(raised, rep.Raised...)
		fc.Advance(10 * time.Second)
	}
	if len(raised) != 0 {
		t.Fatalf("alerts raised in a healthy hour: %v", raised)
	}
	for _, m := range machines {
		if n := len(runs[m]); n < 58 || n > 60 {
			t.Fatalf("%s backed up %d times in an hour of one-minute slots", m, n)
		}
		// Each run starts at the machine's own offset in the stagger
		// window, within one 10 s tick.
		want := (schedule.Spec{Every: time.Minute, Stagger: 40 * time.Second}).Offset("minutely/" + m)
		for _, r := range runs[m] {
			if off := r.Sub(r.Truncate(time.Minute)); off < want || off >= want+10*time.Second {
				t.Fatalf("%s ran %v after its slot; its offset is %v", m, off, want)
			}
		}
		offsets[want] = true
	}
	if len(offsets) < 2 {
		t.Fatal("the three machines start at one offset: nothing staggered")
	}
	// The vault its retention writes to is pruned once a day: once here.
	if kinds["prune"] != 1 {
		t.Fatalf("%d prunes in an hour, want 1", kinds["prune"])
	}
	ms, _ := cat.Machines(ctx)
	newest, _ := cat.NewestPoints(ctx)
	for _, m := range ms {
		if st := schedule.Assess(schedule.Tier{Name: "gold", RPO: 5 * time.Minute}, newest[m.Name], m.Protected, fc.Now()); st.State != schedule.Green {
			t.Fatalf("%s is %s after a healthy hour", m.Name, st.State)
		}
	}

	// db1's disk dies: attempts fail, retry with backoff, alerts fire.
	broken["db1"] = true
	open := func() map[string]bool {
		as, err := cat.Alerts(ctx, false, 0)
		must(err)
		m := map[string]bool{}
		for _, a := range as {
			m[a.Kind+" "+a.Subject] = true
		}
		return m
	}
	for i := 0; i < 90 && !(open()[AlertRPO+" db1"] && open()[AlertJobFailing+" db1"]); i++ {
		tick()
		fc.Advance(10 * time.Second)
	}
	if !waitFor(func() bool { return hook.got("raised", AlertRPO, "db1") && hook.got("raised", AlertJobFailing, "db1") }) {
		t.Fatalf("alerts not delivered for db1 within 15 minutes: %+v", hook.events)
	}
	if hook.got("raised", AlertRPO, "web1") {
		t.Fatal("healthy web1 alerted")
	}
	jobs, _ := cat.Jobs(ctx, catalog.JobFilter{Machine: "db1", Limit: 5})
	if jobs[0].Error == "" || jobs[0].Attempt == 0 {
		t.Fatalf("db1's newest job shows no failed attempt: %+v", jobs[0])
	}
	if o := open(); len(o) != 2 {
		t.Fatalf("open alerts %v", o)
	}

	// The disk comes back: the next backup succeeds and both alerts clear.
	broken["db1"] = false
	for i := 0; i < 90 && (open()[AlertRPO+" db1"] || open()[AlertJobFailing+" db1"]); i++ {
		tick()
		fc.Advance(10 * time.Second)
	}
	if !waitFor(func() bool {
		return hook.got("cleared", AlertRPO, "db1") && hook.got("cleared", AlertJobFailing, "db1")
	}) {
		t.Fatalf("alerts not cleared: %+v", hook.events)
	}

	// The agent goes quiet: it is reported down, and back when it returns.
	for i := 0; i < 40 && !open()[AlertAgentDown+" hv1"]; i++ {
		_, err := sched.Tick(ctx, fc.Now())
		must(err)
		fc.Advance(10 * time.Second)
	}
	if !waitFor(func() bool { return hook.got("raised", AlertAgentDown, "hv1") }) {
		t.Fatal("silent agent not reported")
	}
	tick()
	tick()
	if !waitFor(func() bool { return hook.got("cleared", AlertAgentDown, "hv1") }) {
		t.Fatal("returning agent's alert not cleared")
	}
}

// Slots missed while no server ran are made up once, not once each.
func TestSchedulerMissedSlotsRunOnce(t *testing.T) { engines(t, testSchedulerMissedSlotsRunOnce) }

func testSchedulerMissedSlotsRunOnce(t *testing.T, cat *catalog.Catalog) {
	ctx := context.Background()
	cat.PutTier(ctx, schedule.Tier{Name: "gold", RPO: time.Hour}, t0)
	cat.PutVault(ctx, catalog.Vault{Name: "local", URL: "/v"}, t0)
	cat.PutPolicy(ctx, catalog.Policy{Name: "hourly", Schedule: schedule.Spec{Every: time.Hour}, Consistency: "crash", Vault: "local"}, t0)
	cat.AddMachine(ctx, catalog.Machine{Name: "web1", Spec: json.RawMessage(`{"disks":[{"name":"root","path":"/r.raw"}]}`)}, t0)
	if err := cat.Protect(ctx, "web1", "hourly", "gold", t0); err != nil {
		t.Fatal(err)
	}
	// Two servers tick the same moment after five hours down.
	a, b := &Scheduler{Catalog: cat}, &Scheduler{Catalog: cat}
	now := t0.Add(5*time.Hour + 30*time.Minute)
	ra, err := a.Tick(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := b.Tick(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(ra.Queued)+len(rb.Queued) != 1 {
		t.Fatalf("queued %v and %v; want one backup in all", ra.Queued, rb.Queued)
	}
	if r, _ := a.Tick(ctx, now.Add(20*time.Minute)); len(r.Queued) != 0 {
		t.Fatalf("queued again before the next slot: %v", r.Queued)
	}
	// The next slot comes while that backup still waits: it joins it.
	if r, _ := a.Tick(ctx, t0.Add(6*time.Hour)); len(r.Queued) != 0 {
		t.Fatalf("a second backup queued beside a waiting one: %v", r.Queued)
	}
	j, err := cat.Claim(ctx, "hv1", "hv1/x", catalog.Limits{}, time.Minute, t0.Add(6*time.Hour))
	if err != nil || j == nil {
		t.Fatalf("claim: %v %v", j, err)
	}
	if err := cat.Finish(ctx, j.ID, "hv1/x", nil, nil, nil, t0.Add(6*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if r, _ := a.Tick(ctx, t0.Add(7*time.Hour)); len(r.Queued) != 1 {
		t.Fatalf("next slot not queued once the backup ran: %v", r.Queued)
	}
}

func TestRunFirstStartAndListen(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var out strings.Builder
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{DataDir: dir, Listen: "127.0.0.1:0", Out: &out, Ready: func(a string) { addrc <- a }, Tick: time.Hour})
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("server stopped: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(dir, AdminTokenFile))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file mode %v", fi.Mode().Perm())
	}
	token := strings.TrimSpace(string(raw))
	if !strings.Contains(out.String(), token) {
		t.Fatalf("first start did not show the token: %q", out.String())
	}
	// The default vault: made, its passphrase kept (0600) and shown once.
	pass, ok := DefaultVaultPassphrase(dir, filepath.Join(dir, "vault"))
	if !ok || !strings.Contains(out.String(), string(pass)) {
		t.Fatalf("default vault passphrase %q not kept or not shown: %q", pass, out.String())
	}
	if fi, _ := os.Stat(filepath.Join(dir, DefaultPassphraseFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("passphrase file mode %v", fi.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(dir, "vault", "config")); err != nil {
		t.Fatalf("no vault made: %v", err)
	}
	get := func(tok string) int {
		req, _ := http.NewRequest("GET", "http://"+addr+"/v1/machines", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(token); code != 200 {
		t.Fatalf("admin token refused: %d", code)
	}
	if code := get("lbt_nope"); code != 401 {
		t.Fatalf("bad token: %d", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// A second start keeps the catalog and makes no new token.
	ctx2, cancel2 := context.WithCancel(context.Background())
	out.Reset()
	go func() {
		done <- Run(ctx2, Config{DataDir: dir, Listen: "127.0.0.1:0", Out: &out, Ready: func(a string) { addrc <- a }, Tick: time.Hour})
	}()
	addr = <-addrc
	if strings.Contains(out.String(), "first start") {
		t.Fatalf("second start made a token or a vault: %q", out.String())
	}
	if code := get(token); code != 200 {
		t.Fatalf("token lost across restarts: %d", code)
	}
	cancel2()
	<-done

	for _, tc := range []Config{
		{DataDir: dir, Listen: "0.0.0.0:0"},
		{DataDir: dir, Listen: "192.0.2.1:8080"},
		{DataDir: dir, Listen: "127.0.0.1:0", TLSCert: "/x.pem"},
	} {
		if err := Run(context.Background(), tc); err == nil {
			t.Fatalf("%+v accepted", tc)
		}
	}
}

// With a certificate the API is served over HTTPS, on any address, and
// the built-in agent reaches it; without one, only loopback is allowed.
func TestRunTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lifeboat-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)

	addr, out := serve(t, Config{DataDir: filepath.Join(dir, "data"), Listen: "0.0.0.0:0", TLSCert: certFile, TLSKey: keyFile,
		Tick: time.Hour, NoDefaultVault: true})
	_, port, _ := net.SplitHostPort(addr)
	pool := x509.NewCertPool()
	pool.AddCert(mustParse(t, der))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get("https://127.0.0.1:" + port + "/healthz")
	if err != nil {
		t.Fatalf("HTTPS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(out.String(), "https://") {
		t.Fatalf("HTTPS healthz %d; output %q", resp.StatusCode, out.String())
	}
	// A plain request to the TLS port is refused by the TLS layer (Go's
	// "client sent an HTTP request to an HTTPS server"), never the API.
	if r, err := http.Get("http://127.0.0.1:" + port + "/v1/machines"); err == nil {
		r.Body.Close()
		if r.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP answered %d on the TLS port", r.StatusCode)
		}
	}
	// The dashboard shares the listener, so HTTPS too.
	resp, err = client.Get("https://127.0.0.1:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("dashboard over HTTPS: %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Drills follow the tiers, under a fake clock, on SQLite and PostgreSQL:
// a machine of a tier with its own interval is drilled that often, one of
// a tier without one as often as the server's DrillEvery, one without a
// point or of a tier with no protection never. A successful drill that
// took longer than the tier's RTO raises drill-rto-missed (and a webhook
// hears it); a later drill within the RTO clears it.
func TestSchedulerDrills(t *testing.T) { engines(t, testSchedulerDrills) }

func testSchedulerDrills(t *testing.T, cat *catalog.Catalog) {
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cat.PutTier(ctx, schedule.Tier{Name: "gold", RPO: 24 * time.Hour, RTO: time.Minute, DrillEvery: time.Hour}, t0))
	must(cat.PutTier(ctx, schedule.Tier{Name: "silver", RPO: 24 * time.Hour}, t0))
	must(cat.PutTier(ctx, schedule.Tier{Name: "none", None: true}, t0))
	must(cat.PutVault(ctx, catalog.Vault{Name: "local", URL: "/srv/vault"}, t0))
	must(cat.PutPolicy(ctx, catalog.Policy{Name: "daily", Schedule: schedule.Spec{Every: 24 * time.Hour}, Consistency: "crash", Vault: "local"}, t0))
	for _, m := range []struct{ name, tier string }{{"web1", "gold"}, {"db1", "silver"}, {"new1", "gold"}, {"off1", "none"}} {
		must(cat.AddMachine(ctx, catalog.Machine{Name: m.name, Agent: "hv1", Spec: json.RawMessage(`{"disks":[{"name":"root","path":"/img/x.raw"}]}`)}, t0))
		must(cat.Protect(ctx, m.name, "daily", m.tier, t0))
	}
	for _, m := range []string{"web1", "db1", "off1"} {
		must(cat.RecordPoint(ctx, catalog.Point{Vault: "local", ID: "p-" + m, Machine: m, Time: t0, Consistency: "crash"}))
	}
	hook := &webhook{}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	sched := &Scheduler{Catalog: cat, DrillEvery: 2 * time.Hour, Webhooks: []string{srv.URL}}
	defer sched.Close()
	// The RTO each of web1's drills measures, in order: within, beyond
	// (alert), within again (cleared).
	rtos := []int64{30_000, 90_000, 20_000}
	drills := map[string]int{}
	var raisedAt, clearedAt time.Time
	for now := t0; now.Before(t0.Add(150 * time.Minute)); now = now.Add(time.Minute) {
		rep, err := sched.Tick(ctx, now)
		must(err)
		for _, a := range rep.Raised {
			if a == AlertDrillRTO+" web1" {
				raisedAt = now
			}
		}
		for _, a := range rep.Cleared {
			if a == AlertDrillRTO+" web1" {
				clearedAt = now
			}
		}
		for {
			j, err := cat.Claim(ctx, "hv1", "hv1", catalog.Limits{}, time.Minute, now)
			must(err)
			if j == nil {
				break
			}
			var result json.RawMessage
			if j.Kind == "drill" {
				var spec job.Drill
				must(json.Unmarshal(j.Spec, &spec))
				if spec.Point != "latest" || spec.Vault != "/srv/vault" || spec.Validate() != nil {
					t.Fatalf("drill spec %+v", spec)
				}
				if j.Machine == "web1" && drills["web1"] < len(rtos) {
					result = json.RawMessage(fmt.Sprintf(`{"ok":true,"point":"p-web1","rto_ms":%d}`, rtos[drills["web1"]]))
				}
				drills[j.Machine]++
			}
			must(cat.Finish(ctx, j.ID, "hv1", result, nil, nil, now))
		}
	}
	if drills["web1"] != 3 || drills["db1"] != 2 || drills["new1"] != 0 || drills["off1"] != 0 {
		t.Fatalf("drills in 150 minutes: %v (want web1 3 (its tier: hourly), db1 2 (the server's 2h), none for new1 and off1)", drills)
	}
	// The second drill finished at t0+60m, the third at t0+120m; each is
	// judged at the next tick.
	if !raisedAt.Equal(t0.Add(61*time.Minute)) || !clearedAt.Equal(t0.Add(121*time.Minute)) {
		t.Fatalf("drill-rto-missed on web1 raised at %s and cleared at %s, want +61m and +121m", raisedAt.Sub(t0), clearedAt.Sub(t0))
	}
	if !waitFor(func() bool {
		return hook.got("raised", AlertDrillRTO, "web1") && hook.got("cleared", AlertDrillRTO, "web1")
	}) {
		t.Fatalf("the webhook did not hear drill-rto-missed raised and cleared: %+v", hook.events)
	}
	as, err := cat.Alerts(ctx, true, 100)
	must(err)
	for _, a := range as {
		if a.Kind == AlertDrillRTO && (a.Subject != "web1" || !strings.Contains(a.Message, "1m30s") || !strings.Contains(a.Message, "RTO of 1m0s")) {
			t.Errorf("alert %+v", a)
		}
	}
}

// A webhook that stalls never delays a tick: the alert is raised in the
// catalog at once, another webhook gets it at once, and the stalled one
// gets it when it answers again; a webhook that fails is retried.
func TestWebhookStallDoesNotDelayTick(t *testing.T) {
	ctx := context.Background()
	cat, err := catalog.Open(ctx, filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	release := make(chan struct{})
	var unstall sync.Once
	stalled := &webhook{}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		stalled.ServeHTTP(w, r)
	}))
	defer slow.Close()
	defer unstall.Do(func() { close(release) })
	good := &webhook{}
	fast := httptest.NewServer(good)
	defer fast.Close()
	var failures int
	var mu sync.Mutex
	flaky := &webhook{}
	flakySrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		failures++
		n := failures
		mu.Unlock()
		if n <= 2 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		flaky.ServeHTTP(w, r)
	}))
	defer flakySrv.Close()

	sched := &Scheduler{Catalog: cat, Webhooks: []string{slow.URL, fast.URL}, AgentTimeout: time.Minute,
		HTTP: &http.Client{Timeout: time.Minute}}
	defer sched.Close()
	if err := cat.Heartbeat(ctx, "hv1", nil, t0); err != nil {
		t.Fatal(err)
	}
	// Each tick raises or clears hv1's agent-down alert: five events wait
	// behind the stalled webhook, none delays its tick.
	for i := range 5 {
		now := t0.Add(time.Duration(i+1) * 2 * time.Minute)
		if i%2 == 1 {
			cat.Heartbeat(ctx, "hv1", nil, now)
		}
		start := time.Now()
		rep, err := sched.Tick(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("tick %d took %v behind a stalled webhook", i, took)
		}
		if len(rep.Raised)+len(rep.Cleared) != 1 {
			t.Fatalf("tick %d: raised %v cleared %v", i, rep.Raised, rep.Cleared)
		}
	}
	if !waitFor(func() bool { good.mu.Lock(); defer good.mu.Unlock(); return len(good.events) == 5 }) {
		t.Fatalf("the webhook that answers got %d events while another stalled", len(good.events))
	}
	unstall.Do(func() { close(release) })
	if !waitFor(func() bool { stalled.mu.Lock(); defer stalled.mu.Unlock(); return len(stalled.events) == 5 }) {
		t.Fatalf("the stalled webhook got %d of 5 events once it answered", len(stalled.events))
	}

	// Retries: two refusals, then delivered once.
	w := &Webhooks{URLs: []string{flakySrv.URL}, Backoff: 10 * time.Millisecond, Attempts: 3}
	defer w.Close()
	w.Send(Event{Event: "raised", Kind: AlertRPO, Subject: "web1", Time: t0})
	if !waitFor(func() bool { return flaky.got("raised", AlertRPO, "web1") }) {
		t.Fatal("a webhook that refused twice never got the event")
	}
	mu.Lock()
	defer mu.Unlock()
	if failures != 3 {
		t.Fatalf("%d requests for one event refused twice", failures)
	}
}

// A catalog whose history would make its snapshot too large is saved
// with less history, never not at all: the logs go first, then the jobs
// and alerts; what the operators said stays.
func TestFitSnapshot(t *testing.T) {
	line := catalog.LogLine{Seq: 1, Level: "info", Message: strings.Repeat("x", catalog.MaxSnapshot/4)}
	snap := catalog.Snapshot{Version: catalog.SnapshotVersion, Vaults: []catalog.Vault{{Name: "default", URL: "/v"}},
		Jobs:   []catalog.SnapJob{{Job: catalog.Job{ID: "j1", Kind: "backup", Spec: json.RawMessage(`{}`), State: catalog.Succeeded}, Logs: []catalog.LogLine{line}}},
		Alerts: []catalog.Alert{{ID: "a1", Kind: "rpo", Subject: "web1"}}}
	for _, tc := range []struct {
		logs, jobs int
	}{{1, 1}, {5, 1}} {
		snap.Jobs[0].Logs = slices.Repeat([]catalog.LogLine{line}, tc.logs)
		doc, err := fitSnapshot(snap)
		if err != nil || len(doc) > catalog.MaxSnapshot {
			t.Fatalf("%d log lines: %d bytes, %v", tc.logs, len(doc), err)
		}
		got, err := catalog.ParseSnapshot(doc)
		if err != nil || len(got.Jobs) != tc.jobs || len(got.Vaults) != 1 {
			t.Fatalf("%d log lines: %+v %v", tc.logs, got, err)
		}
		if keptLogs := len(got.Jobs[0].Logs) > 0; keptLogs != (tc.logs == 1) {
			t.Errorf("%d log lines: logs kept %v", tc.logs, keptLogs)
		}
	}
	snap.Jobs = slices.Repeat(snap.Jobs, 5)
	for i := range snap.Jobs {
		snap.Jobs[i].ID = fmt.Sprint("j", i)
		snap.Jobs[i].Error = strings.Repeat("e", catalog.MaxSnapshot/4)
	}
	doc, err := fitSnapshot(snap)
	if got, perr := catalog.ParseSnapshot(doc); err != nil || perr != nil || len(got.Jobs) != 0 || len(got.Alerts) != 0 || len(got.Vaults) != 1 {
		t.Fatalf("huge history: %d bytes, %v %v", len(doc), err, perr)
	}
}
