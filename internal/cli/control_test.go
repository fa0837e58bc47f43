package cli_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/testenv"
	"lifeboat/internal/vmtest"
)

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	return freeAddrOn(t, "127.0.0.1")
}

// freeAddrOn is a free TCP address on host's ip.
func freeAddrOn(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// The server commands through a real `lifeboat server` process: first
// start's token, tiers, policies, machines, protection, RPO state, a
// queued backup, and refusals with their exit codes.
func TestServerCommands(t *testing.T) {
	serverURL, tokenFile, srv := startServer(t)
	data := filepath.Dir(tokenFile)
	addr := strings.TrimPrefix(serverURL, "http://")
	remote := []string{"--server", serverURL, "--token-file", tokenFile}
	cmd := func(args ...string) result {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return inProcEnv(ctx, nil, append(args, remote...)...)
	}
	ok := func(args ...string) result {
		t.Helper()
		r := cmd(args...)
		if r.code != 0 {
			t.Fatalf("lifeboat %v: %s", args, r)
		}
		return r
	}
	ok("tier", "add", "gold", "--rpo", "1h", "--rto", "15m", "--drill-every", "1d")
	ok("tier", "add", "none", "--none")
	if r := ok("tier", "list"); !strings.Contains(r.stdout, "DRILLS") || !strings.Contains(r.stdout, "every 1d") {
		t.Fatalf("tier list:\n%s", r.stdout)
	}
	img := filepath.Join(t.TempDir(), "web1.raw")
	os.WriteFile(img, make([]byte, 1<<20), 0o600)
	ok("policy", "add", "hourly", "--every", "1h", "--stagger", "10m", "--keep-daily", "7", "--keep-within", "2d", "--vault", filepath.Join(data, "vault"))
	ok("machine", "add", "web1", "--disk", "root="+img)
	ok("machine", "add", "scratch", "--disk", "root="+img)
	r := ok("protect", "web1", "--policy", "hourly", "--tier", "gold")
	if !strings.Contains(r.stdout, "web1 protected: tier gold, policy hourly") {
		t.Fatalf("protect said: %s", r.stdout)
	}
	ok("protect", "scratch", "--tier", "none")

	r = ok("machine", "list", "--json")
	var ms []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &ms); err != nil {
		t.Fatalf("machine list --json: %v\n%s", err, r.stdout)
	}
	if len(ms) != 2 || ms[1]["name"] != "web1" || ms[1]["tier"] != "gold" || ms[1]["policy"] != "hourly" || ms[1]["rpo_state"] != "warning" || ms[0]["rpo_state"] != "unprotected" {
		t.Fatalf("machine list: %s", r.stdout)
	}
	if _, has := ms[1]["last_point"]; has {
		t.Fatalf("last_point of a machine never backed up: %s", r.stdout)
	}
	r = ok("machine", "list")
	if !strings.Contains(r.stdout, "web1") || !strings.Contains(r.stdout, "RPO") || !strings.Contains(r.stdout, "COPY LAG") {
		t.Fatalf("machine list table:\n%s", r.stdout)
	}
	r = ok("backup-now", "web1")
	if !strings.Contains(r.stdout, "queued") {
		t.Fatalf("backup-now: %s", r.stdout)
	}
	r = ok("job", "list", "--json", "--machine", "web1")
	var jobs []map[string]any
	json.Unmarshal([]byte(r.stdout), &jobs)
	if len(jobs) != 1 || jobs[0]["kind"] != "backup" || jobs[0]["state"] != "queued" {
		t.Fatalf("job list: %s", r.stdout)
	}
	ok("job", "cancel", jobs[0]["id"].(string))
	ok("alert", "list")

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"tier", "add", "bad", "--rpo", "soon"}, 2, "rpo: invalid duration"},
		{[]string{"tier", "add", "bad", "--rpo", "1h", "--drill-every", "5s"}, 2, "at least a minute"},
		{[]string{"policy", "add", "p2", "--cron", "99 * * * *", "--vault", "local"}, 2, "cron expression"},
		{[]string{"policy", "add", "p3", "--every", "1h", "--vault", "nowhere"}, 2, "vault \"nowhere\""},
		{[]string{"protect", "ghost", "--policy", "hourly", "--tier", "gold"}, 8, "not found"},
		{[]string{"machine", "add", "web2", "--disk", "root=relative.raw"}, 2, "not absolute"},
		{[]string{"machine", "add", "web2", "--libvirt", "web2", "--qmp", "/run/web2.qmp"}, 2, "a libvirt domain is reached through libvirt"},
		{[]string{"restore", "--machine", "web1", "latest", "--libvirt-define"}, 2, "restore into a directory"},
		{[]string{"backup-now", "scratch"}, 2, "no backup policy"},
	} {
		r := cmd(tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("lifeboat %v: want exit %d and %q; %s", tc.args, tc.code, tc.want, r)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.token")
	os.WriteFile(bad, []byte("lbt_nope\n"), 0o600)
	if r := inProcEnv(context.Background(), nil, "machine", "list", "--server", "http://"+addr, "--token-file", bad); r.code != 3 || !strings.Contains(r.stderr, "unknown or revoked token") {
		t.Fatalf("bad token: %s", r)
	}
	if r := inProcEnv(context.Background(), nil, "machine", "list", "--server", "http://"+freeAddr(t), "--token-file", tokenFile); r.code != 7 {
		t.Fatalf("no server there: %s", r)
	}
	if r := inProcEnv(context.Background(), nil, "machine", "list", "--server", "http://"+addr); r.code != 2 || !strings.Contains(r.stderr, "no API token") {
		t.Fatalf("no token: %s", r)
	}
	srv.cmd.Process.Signal(os.Interrupt)
	if r := srv.wait(t, 30*time.Second); r.code != 0 {
		t.Fatalf("server did not stop cleanly on SIGINT: %s", r)
	}
}

// startServer runs `lifeboat server` (with its built-in agent) and waits
// until it answers; it returns the server's URL and the admin token file.
func startServer(t *testing.T, args ...string) (string, string, *proc) {
	t.Helper()
	return startServerEnv(t, nil, args...)
}

// startServerEnv is startServer with env added to the server's environment.
func startServerEnv(t *testing.T, env map[string]string, args ...string) (string, string, *proc) {
	t.Helper()
	return startServerAt(t, env, freeAddr(t), args...)
}

// startServerAt is startServerEnv listening on addr (plain HTTP: give
// --insecure-listen in args for an address that is not loopback).
func startServerAt(t *testing.T, env map[string]string, addr string, args ...string) (string, string, *proc) {
	t.Helper()
	data := t.TempDir()
	srv := startProcEnv(t, env, append([]string{"server", "--data", data, "--listen", addr, "--tick", "1s"}, args...)...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) || srv.exited() {
			t.Fatalf("server did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "http://" + addr, filepath.Join(data, "admin.token"), srv
}

// A machine on the server's own host and one on another agent's host are
// protected, backed up through the server by real agent processes into a
// real vault, and their points are in the vault and in the RPO state.
func TestServerAndAgentRunBackups(t *testing.T) {
	work := t.TempDir()
	vaultDir := filepath.Join(work, "vault")
	initVault(t, vaultDir, 0)
	web1 := filepath.Join(work, "web1.img")
	makeExt4(t, web1, 32, []fileSpec{{path: "/srv/www/index.html", size: 3 << 20, kind: 1, seed: 1}})
	db1 := filepath.Join(work, "db1.img")
	makeExt4(t, db1, 32, []fileSpec{{path: "/var/lib/db/data", size: 5 << 20, kind: 2, seed: 2}})

	// The second agent runs in a network namespace of its own, the way
	// another hypervisor host would: it reaches the server over a link,
	// not over loopback, so the server listens on the link's address.
	ns, serverAddr := "", freeAddr(t)
	var serverArgs []string
	if os.Geteuid() == 0 {
		var hostIP string
		ns, _, hostIP, _ = newNetns(t)
		serverAddr = freeAddrOn(t, hostIP)
		serverArgs = []string{"--insecure-listen"}
	} else if vmtest.Required() {
		t.Fatal("the second agent's host is a network namespace: needs root")
	}
	url, tokenFile, _ := startServerAt(t, nil, serverAddr, serverArgs...)
	remote := []string{"--server", url, "--token-file", tokenFile}
	ok := func(args ...string) result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		r := inProcEnv(ctx, nil, append(args, remote...)...)
		if r.code != 0 {
			t.Fatalf("lifeboat %v: %s", args, r)
		}
		return r
	}
	ok("tier", "add", "gold", "--rpo", "1h")
	ok("policy", "add", "daily", "--cron", "@daily", "--vault", vaultDir, "--keep-daily", "7")
	ok("machine", "add", "web1", "--disk", "root="+web1)
	ok("protect", "web1", "--policy", "daily", "--tier", "gold")
	r := ok("backup-now", "web1", "--wait")
	if !strings.Contains(r.stdout, "succeeded") {
		t.Fatalf("backup-now --wait: %s", r)
	}

	// A second host's agent, with a token of its own.
	secret := strings.TrimSpace(ok("token", "add", "hv2", "--role", "agent").stdout)
	agentToken := filepath.Join(work, "hv2.token")
	os.WriteFile(agentToken, []byte(secret+"\n"), 0o600)
	if ns != "" {
		startProcIn(t, ns, "agent", "--server", url, "--token-file", agentToken)
	} else {
		startProc(t, "agent", "--server", url, "--token-file", agentToken)
	}
	ok("machine", "add", "db1", "--agent", "hv2", "--disk", "root="+db1)
	ok("protect", "db1", "--policy", "daily", "--tier", "gold")
	ok("backup-now", "db1", "--wait")

	var jobs []map[string]any
	json.Unmarshal([]byte(ok("job", "list", "--json", "--machine", "db1").stdout), &jobs)
	backups := 0
	for _, j := range jobs {
		if j["kind"] == "backup" {
			backups++
			if j["agent"] != "hv2" || j["state"] != "succeeded" {
				t.Fatalf("db1's backup job: %v", j)
			}
		}
	}
	if backups != 1 {
		t.Fatalf("db1's jobs: %v", jobs)
	}
	// Its log, by the 12-digit ID the job list prints: the agent's lines.
	var backupID string
	for _, j := range jobs {
		if j["kind"] == "backup" {
			backupID = j["id"].(string)
		}
	}
	if r := ok("job", "list", "--machine", "db1"); !strings.Contains(r.stdout, "PROGRESS") || !strings.Contains(r.stdout, backupID[:12]) {
		t.Fatalf("job list:\n%s", r.stdout)
	}
	for _, args := range [][]string{{"job", "logs", backupID[:12]}, {"job", "logs", backupID[:12], "--follow"}} {
		if r := ok(args...); !strings.Contains(r.stdout, "backing up db1") || !strings.Contains(r.stdout, "committed") {
			t.Fatalf("lifeboat %v:\n%s", args, r.stdout)
		}
	}
	if r := inProcEnv(context.Background(), nil, append([]string{"job", "logs", "0123456789ab"}, remote...)...); r.code != 8 {
		t.Fatalf("logs of an unknown job: %s, want exit 8", r)
	}
	var ms []map[string]any
	json.Unmarshal([]byte(ok("machine", "list", "--json").stdout), &ms)
	for _, m := range ms {
		if m["rpo_state"] != "green" || m["last_point"] == nil {
			t.Fatalf("after the backups: %v", ms)
		}
	}
	// The points are in the vault, restorable like any other.
	pts := mustRun(t, "--vault", vaultDir, "points", "--json")
	for _, m := range []string{"web1", "db1"} {
		if !strings.Contains(pts.stdout, `"machine": "`+m+`"`) {
			t.Fatalf("no point of %s in the vault:\n%s", m, pts.stdout)
		}
	}
	out := filepath.Join(work, "restored.img")
	mustRun(t, "--vault", vaultDir, "restore", "--machine", "db1", "latest", "--disk", "root", "--to-file", out)
	sameContent(t, db1, out)

	// A restore through the server, on the agent's host (hv2 runs it).
	through := filepath.Join(work, "through-server")
	r = ok("restore", "--machine", "db1", "latest", "--to", through, "--wait")
	if !strings.Contains(r.stdout, "succeeded") {
		t.Fatalf("restore through the server: %s", r)
	}
	sameContent(t, db1, filepath.Join(through, "root.raw"))
	if _, err := os.Stat(filepath.Join(through, "db1-dr.json")); err != nil {
		t.Fatalf("no -dr definition from the restore through the server: %v", err)
	}
	// LIFEBOAT_SERVER and LIFEBOAT_TOKEN stand for --server and
	// --token-file when no vault is named; a vault named wins.
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	viaEnv := map[string]string{"LIFEBOAT_SERVER": url, "LIFEBOAT_TOKEN": strings.TrimSpace(string(token))}
	if r := inProcEnv(t.Context(), viaEnv, "points", "--machine", "db1"); r.code != 0 || !strings.Contains(r.stdout, "CONSISTENCY") || !strings.Contains(r.stdout, "full") {
		t.Fatalf("points with LIFEBOAT_SERVER: %s", r)
	}
	through2 := filepath.Join(work, "through-env")
	if r := inProcEnv(t.Context(), viaEnv, "restore", "--machine", "db1", "latest", "--to", through2, "--wait"); r.code != 0 || !strings.Contains(r.stdout, "succeeded") {
		t.Fatalf("restore with LIFEBOAT_SERVER: %s", r)
	}
	sameContent(t, db1, filepath.Join(through2, "root.raw"))
	viaEnv["LIFEBOAT_PASSWORD"] = testPassphrase
	if r := inProcEnv(t.Context(), viaEnv, "--vault", vaultDir, "points", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"machine": "db1"`) {
		t.Fatalf("points --vault with LIFEBOAT_SERVER set must read the vault: %s", r)
	}
	json.Unmarshal([]byte(ok("job", "list", "--json", "--machine", "db1").stdout), &jobs)
	if jobs[0]["kind"] != "restore" || jobs[0]["agent"] != "hv2" {
		t.Fatalf("db1's jobs: %v", jobs)
	}
	if r := inProcEnv(context.Background(), nil, append([]string{"restore", "--machine", "db1", "latest", "--to", "relative/dir"}, remote...)...); r.code != 2 || !strings.Contains(r.stderr, "not absolute") {
		t.Fatalf("a relative path through the server: %s", r)
	}

	// A policy with a second site: each backup is copied there.
	copyDir := filepath.Join(work, "site-b")
	mustRun(t, "--vault", copyDir, "vault", "init", "--copy-of", vaultDir)
	ok("policy", "add", "mirrored", "--cron", "@daily", "--vault", vaultDir, "--copy-to", copyDir)
	ok("machine", "add", "web2", "--disk", "root="+web1)
	ok("protect", "web2", "--policy", "mirrored", "--tier", "gold")
	ok("backup-now", "web2", "--wait")
	waitIdle(t, "web2", ok)
	var copied []map[string]any
	json.Unmarshal([]byte(mustRun(t, "--vault", copyDir, "points", "--json", "--machine", "web2").stdout), &copied)
	if len(copied) != 1 {
		t.Fatalf("web2 has %d points at the second site after a mirrored backup", len(copied))
	}

	// A policy that names no vault uses the server's own, made at its
	// first start, whose passphrase the server keeps in its data directory.
	ok("policy", "add", "nightly", "--cron", "@daily", "--keep-last", "3")
	ok("machine", "add", "app1", "--disk", "root="+web1)
	ok("protect", "app1", "--policy", "nightly", "--tier", "gold")
	ok("backup-now", "app1", "--wait")
	data := filepath.Dir(tokenFile)
	pts = mustRun(t, "--vault", filepath.Join(data, "vault"), "--password-file", filepath.Join(data, "vault.passphrase"), "points", "--json")
	if !strings.Contains(pts.stdout, `"machine": "app1"`) {
		t.Fatalf("no point of app1 in the default vault:\n%s", pts.stdout)
	}

	// Retention: after each backup a forget job keeps the policy's last 3.
	for range 4 {
		ok("backup-now", "app1", "--wait")
	}
	waitIdle(t, "app1", ok)
	var inVault []map[string]any
	json.Unmarshal([]byte(mustRun(t, "--vault", filepath.Join(data, "vault"), "--password-file", filepath.Join(data, "vault.passphrase"),
		"points", "--json", "--machine", "app1").stdout), &inVault)
	if len(inVault) != 3 {
		t.Fatalf("app1 has %d points in the vault after 5 backups under keep-last 3", len(inVault))
	}
	// Soft-deleted, not gone: the server's vault has the 14-day window.
	var deleted []map[string]any
	json.Unmarshal([]byte(mustRun(t, "--vault", filepath.Join(data, "vault"), "--password-file", filepath.Join(data, "vault.passphrase"),
		"points", "--deleted", "--json", "--machine", "app1").stdout), &deleted)
	if len(deleted) != 2 {
		t.Fatalf("app1 has %d soft-deleted points after its forget jobs, want 2", len(deleted))
	}
	// The server's index forgot them too.
	var known []map[string]any
	json.Unmarshal([]byte(ok("points", "--machine", "app1", "--json").stdout), &known)
	if len(known) != 3 {
		t.Fatalf("the server lists %d points of app1, want 3", len(known))
	}
	if r := ok("points", "--machine", "app1"); !strings.Contains(r.stdout, "CONSISTENCY") {
		t.Fatalf("points --server table:\n%s", r.stdout)
	}
	// Verify through the server: the default vault passes; a pack
	// damaged at the storage fails it and raises an alert.
	if r := ok("verify", "--vault", "default", "--read-data", "--wait"); !strings.Contains(r.stdout, "succeeded") {
		t.Fatalf("verify through the server: %s", r)
	}
	testenv.DamagePack(t, filepath.Join(data, "vault"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if r := inProcEnv(ctx, nil, append([]string{"verify", "--vault", "default", "--read-data", "--wait"}, remote...)...); r.code == 0 || !strings.Contains(r.stderr, "problem") {
		t.Fatalf("verify of a damaged vault through the server: %s", r)
	}
	var alerts []map[string]any
	json.Unmarshal([]byte(ok("alert", "list", "--json").stdout), &alerts)
	found := false
	for _, a := range alerts {
		found = found || (a["kind"] == "verify-failed" && a["subject"] == "default")
	}
	if !found {
		t.Fatalf("no verify-failed alert: %v", alerts)
	}
	// Acknowledging it: listed as acknowledged by the token's name, still open.
	var alertID string
	for _, a := range alerts {
		if a["kind"] == "verify-failed" {
			alertID = a["id"].(string)
		}
	}
	if r := ok("alert", "ack", alertID); !strings.Contains(r.stdout, "alert "+alertID+" (verify-failed on default) acknowledged by admin") {
		t.Fatalf("alert ack said: %s", r)
	}
	json.Unmarshal([]byte(ok("alert", "list", "--json").stdout), &alerts)
	acked := false
	for _, a := range alerts {
		acked = acked || (a["id"] == alertID && a["acked_by"] == "admin" && a["acked"] != nil)
	}
	if !acked {
		t.Fatalf("alert %s not acknowledged in alert list --json: %v", alertID, alerts)
	}
	if r := ok("alert", "list"); !strings.Contains(r.stdout, "ACKED BY") || !strings.Contains(r.stdout, alertID) {
		t.Fatalf("alert list table:\n%s", r.stdout)
	}
	if r := inProcEnv(ctx, nil, append([]string{"alert", "ack", "0123456789abcdef0123456789abcdef"}, remote...)...); r.code != 8 || !strings.Contains(r.stderr, "alert 0123456789abcdef0123456789abcdef") || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("alert ack of an unknown ID: %s", r)
	}
	var forgets []map[string]any
	json.Unmarshal([]byte(ok("job", "list", "--json", "--machine", "app1", "--state", "succeeded").stdout), &forgets)
	n := 0
	for _, j := range forgets {
		if j["kind"] == "forget" {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("%d forget jobs succeeded after 5 backups: %v", n, forgets)
	}
}

// waitIdle waits until a machine has no job queued or running.
func waitIdle(t *testing.T, machine string, ok func(args ...string) result) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var pending, running []map[string]any
		json.Unmarshal([]byte(ok("job", "list", "--json", "--machine", machine, "--state", "queued").stdout), &pending)
		json.Unmarshal([]byte(ok("job", "list", "--json", "--machine", machine, "--state", "running").stdout), &running)
		if len(pending)+len(running) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's jobs did not end: %v %v", machine, pending, running)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
