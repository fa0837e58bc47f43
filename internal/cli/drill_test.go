package cli_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// drillFlags boot the test guest with the counter workload, which mounts
// its ext4 disk and prints "LB counter 1" once it wrote to it, or prints
// "LB error ..." and powers off when it cannot.
func drillFlags(t *testing.T) []string {
	kernel, initrd := kernelFlags(t)[1], kernelFlags(t)[3]
	return []string{"--accel", "tcg", "--kernel", kernel, "--initrd", initrd,
		"--append", "console=ttyS0 panic=-1 mitigations=off quiet lifeboat.workload=counter", "--probe-serial", "^LB counter 1$", "--timeout", "90s"}
}

// sandboxes lists what drills leave behind: their directories, and QEMU
// processes started in one.
// Only those under tmp count: the drills of this test run with it as
// TMPDIR, so that another package's drill running at the same time (go
// test runs packages in parallel) is not taken for one left behind.
func sandboxes(t *testing.T, tmp string) []string {
	t.Helper()
	var out []string
	dirs, _ := filepath.Glob(filepath.Join(tmp, "lifeboat-drill-*"))
	out = append(out, dirs...)
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), filepath.Join(tmp, "lifeboat-drill-")) && strings.Contains(string(b), "qemu") {
			out = append(out, p)
		}
	}
	return out
}

type drillOut struct {
	OK    bool   `json:"ok"`
	RTOMS int64  `json:"rto_ms"`
	Point string `json:"point"`
	Error string `json:"error"`
	Probe string `json:"probe"`
}

// TestDrill: a drill of a good point boots it, sees the guest answer,
// records an RTO that points shows; a drill of a point whose disk had its
// first MiB zeroed (no file system left to mount) fails, says why, and
// records the failure. Neither leaves a directory or a QEMU behind, and
// neither writes to the vault anything but its result.
func TestDrill(t *testing.T) {
	vdir, img, id := vmPoint(t)
	tmp := t.TempDir()
	drill := func(args ...string) result {
		t.Helper()
		return startProcEnv(t, map[string]string{"TMPDIR": tmp}, append(args, drillFlags(t)...)...).wait(t, 3*time.Minute)
	}
	// The sandbox's own settings are refused, before anything boots.
	for _, flag := range []string{"--network=user", "--vnc", "--serial-log=" + filepath.Join(tmp, "console")} {
		r := inProc(t, "--vault", vdir, "drill", "--machine", "vm1", "latest", flag)
		if r.code != 2 || !strings.Contains(r.stderr, "a drill runs with no network, no display and its own console log") {
			t.Errorf("drill %s: want exit 2 naming the sandbox's settings, got %s", flag, r)
		}
	}
	before := sandboxes(t, tmp)
	r := drill("--vault", vdir, "--json", "drill", "--machine", "vm1", id[:8])
	var ok drillOut
	if err := json.Unmarshal([]byte(r.stdout), &ok); err != nil || r.code != 0 || !ok.OK || ok.RTOMS <= 0 || ok.Point != id {
		t.Fatalf("drill of a good point: %v\n%s", err, r)
	}
	t.Logf("drill RTO %d ms", ok.RTOMS)

	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, 1<<20), 0)
	f.Close()
	bad := parsePoint(t, mustRun(t, "--vault", vdir, "-q", "--json", "backup", "--machine", "vm1", "--disk", "root="+img)).ID
	r = drill("--vault", vdir, "--json", "drill", "--machine", "vm1", "latest")
	var failed drillOut
	if err := json.NewDecoder(strings.NewReader(r.stdout)).Decode(&failed); err != nil || r.code != 1 || failed.OK || failed.Point != bad {
		t.Fatalf("drill of an unbootable point: want exit 1 and a failed result, got %v\n%s", err, r)
	}
	for _, w := range []string{"stopped before the guest answered", "LB error"} {
		if !strings.Contains(failed.Error, w) || !strings.Contains(r.stderr, w) {
			t.Errorf("the failed drill does not say %q: %q\n%s", w, failed.Error, r.stderr)
		}
	}
	if after := sandboxes(t, tmp); len(after) != len(before) {
		t.Errorf("drills left behind: %v (before: %v)", after, before)
	}

	var pts []struct {
		ID    string    `json:"id"`
		Drill *drillOut `json:"drill"`
	}
	decode(t, mustRun(t, "--vault", vdir, "--json", "points").stdout, &pts)
	if len(pts) != 2 || pts[0].Drill == nil || !pts[0].Drill.OK || pts[0].Drill.RTOMS != ok.RTOMS || pts[1].Drill == nil || pts[1].Drill.OK {
		t.Fatalf("points --json does not show the drills: %+v", pts)
	}
	table := mustRun(t, "--vault", vdir, "points").stdout
	if !strings.Contains(table, "PROVEN") || !strings.Contains(table, "ok ") || !strings.Contains(table, "FAILED") {
		t.Errorf("the points table does not show the drills:\n%s", table)
	}
}

// TestDrillThroughServer: a drill queued through the server runs on the
// server's agent; a good point succeeds, a point whose disk was zeroed
// fails and raises a drill-failed alert on the machine, and a good drill
// afterwards resolves it.
func TestDrillThroughServer(t *testing.T) {
	work := t.TempDir()
	vaultDir := filepath.Join(work, "vault")
	initVault(t, vaultDir, 0)
	img := filepath.Join(work, "vm1.img")
	makeExt4(t, img, 32, smallFiles[:1])
	url, tokenFile, _ := startServer(t)
	remote := []string{"--server", url, "--token-file", tokenFile}
	in := func(args ...string) result {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		return inProcEnv(ctx, nil, append(args, remote...)...)
	}
	ok := func(args ...string) result {
		t.Helper()
		r := in(args...)
		if r.code != 0 {
			t.Fatalf("lifeboat %v: %s", args, r)
		}
		return r
	}
	ok("tier", "add", "gold", "--rpo", "1h")
	ok("policy", "add", "daily", "--cron", "@daily", "--vault", vaultDir)
	ok("machine", "add", "vm1", "--disk", "root="+img)
	ok("protect", "vm1", "--policy", "daily", "--tier", "gold")
	ok("backup-now", "vm1", "--wait")
	drill := append([]string{"drill", "--machine", "vm1", "--wait"}, drillFlags(t)...)
	if r := ok(drill...); !strings.Contains(r.stdout, "succeeded") {
		t.Fatalf("drill through the server: %s", r)
	}

	alerts := func() (open bool) {
		var as []map[string]any
		json.Unmarshal([]byte(ok("alert", "list", "--json").stdout), &as)
		for _, a := range as {
			if a["kind"] == "drill-failed" && a["subject"] == "vm1" && a["cleared"] == nil {
				open = true
			}
		}
		return open
	}
	if alerts() {
		t.Fatal("a drill-failed alert after a good drill")
	}
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, 1<<20), 0)
	f.Close()
	ok("backup-now", "vm1", "--wait")
	if r := in(drill...); r.code == 0 || !strings.Contains(r.stderr, "stopped before the guest answered") {
		t.Fatalf("drill of an unbootable point through the server: %s", r)
	}
	if !alerts() {
		t.Fatal("no drill-failed alert on vm1 after a failed drill")
	}
	// The good point again: the alert is resolved.
	good := mustRun(t, "--vault", vaultDir, "--json", "points")
	var pts []pointInfo
	decode(t, good.stdout, &pts)
	if r := ok(append([]string{"drill", "--machine", "vm1", pts[0].ID, "--wait"}, drillFlags(t)...)...); !strings.Contains(r.stdout, "succeeded") {
		t.Fatalf("drill of the good point: %s", r)
	}
	if alerts() {
		t.Fatal("the drill-failed alert stays after a good drill")
	}
}
