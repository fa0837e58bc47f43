package cli_test

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"lifeboat/internal/cli"
	"lifeboat/internal/libvirt"
	"lifeboat/internal/libvirt/libvirttest"
	"lifeboat/internal/vmtest"
)

// The libvirt commands end to end on a private libvirtd: backup --libvirt
// of a running TCG domain, libvirt list showing it protected, restore
// --libvirt-define --start defining and starting the copy, and an in-place
// restore refused while the domain runs.
func TestCLILibvirt(t *testing.T) {
	d := libvirttest.Start(t)
	dir := t.TempDir()
	disk := vmtest.NewExt4Disk(t, filepath.Join(dir, "root.qcow2"), "qcow2", 32)
	dom := d.Define(t, libvirttest.DomainConfig{Name: "lbcli", Disks: []vmtest.Disk{disk}, Agent: true, Append: []string{"lifeboat.heartbeat=1"}})
	c := d.Conn(t)
	ctx := t.Context()
	ld, err := c.Lookup(ctx, dom.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, ld); err != nil {
		t.Fatal(err)
	}
	heartbeat := regexp.MustCompile(`^LB heartbeat (\d+)$`)
	if _, err := libvirttest.WaitConsole(ctx, dom.Console, heartbeat, 0); err != nil {
		t.Fatal(err)
	}
	vaultDir := filepath.Join(dir, "vault")
	initVault(t, vaultDir, 0)

	r := run(t, "--vault", vaultDir, "backup", "--machine", "cli", "--libvirt", "nosuch", "--connect", d.URI())
	if r.code != cli.ExitNotFound || !strings.Contains(r.stderr, `domain "nosuch"`) {
		t.Fatalf("backup of a missing domain: %s", r)
	}
	r = run(t, "--vault", vaultDir, "backup", "--machine", "cli", "--libvirt", dom.Name, "--qmp", "/run/x.qmp")
	if r.code != cli.ExitUsage || !strings.Contains(r.stderr, "--libvirt") {
		t.Fatalf("--libvirt with --qmp: %s", r)
	}
	p := parsePoint(t, mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "cli", "--libvirt", dom.Name,
		"--connect", d.URI(), "--fleece-dir", filepath.Join(dir, "scratch"), "--consistency", "file"))
	if len(p.Disks) != 1 || p.Disks[0].Name != "vda" || p.Disks[0].Source != "libvirt:lbcli#vda" || p.Consistency != "file" {
		t.Fatalf("point %+v", p)
	}
	// The guest writes again after the backup: it was thawed.
	beats := len(heartbeats(t, dom.Console))
	if _, err := libvirttest.WaitConsole(ctx, dom.Console, heartbeat, beats); err != nil {
		t.Fatal(err)
	}

	// A backup that dies while the guest is frozen: its watchdog thaws it.
	ld, err = c.Lookup(ctx, dom.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Freeze(ctx, ld); err != nil {
		t.Fatal(err)
	}
	frozenAt := len(heartbeats(t, dom.Console))
	dog := exec.Command(lifeboatBin, "__thaw-watchdog", "--timeout", "5m", "--libvirt", dom.Name, "--connect", d.URI())
	stdin, err := dog.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := dog.Start(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdin, "+guest\n")
	stdin.Close() // as when the backup's process dies
	if err := dog.Wait(); err != nil {
		t.Fatalf("watchdog: %v", err)
	}
	if n, err := c.Thaw(ctx, ld); err != nil || n != 0 {
		t.Fatalf("after the watchdog, thawing thawed %d filesystems (%v): want none left frozen", n, err)
	}
	if _, err := libvirttest.WaitConsole(ctx, dom.Console, heartbeat, frozenAt); err != nil {
		t.Fatalf("the guest writes no more after the watchdog: %v", err)
	}

	var listed []struct {
		Name     string   `json:"name"`
		Running  bool     `json:"running"`
		Machines []string `json:"machines"`
		Disks    []struct {
			Target, Type, Source string
		} `json:"disks"`
	}
	r = mustRun(t, "--vault", vaultDir, "--json", "libvirt", "list", "--connect", d.URI())
	if err := json.Unmarshal([]byte(r.stdout), &listed); err != nil {
		t.Fatalf("libvirt list --json: %v\n%s", err, r)
	}
	if len(listed) != 1 || listed[0].Name != dom.Name || !listed[0].Running || strings.Join(listed[0].Machines, ",") != "cli" ||
		len(listed[0].Disks) != 1 || listed[0].Disks[0].Source != disk.Path {
		t.Fatalf("libvirt list: %+v", listed)
	}
	r = mustRun(t, "--vault", vaultDir, "libvirt", "list", "--connect", d.URI())
	if !regexp.MustCompile(`(?m)^lbcli\s+running\s+vda\(file\)\s+cli\s`).MatchString(r.stdout) {
		t.Fatalf("libvirt list table:\n%s", r)
	}

	// An agent offers the domain as a machine, with the source that
	// protects it.
	offers, _ := json.Marshal(libvirt.Offers(ctx, d.URI()))
	if !strings.Contains(string(offers), `"domain":"lbcli","running":true,"disks":["vda"],"readable":true,"source":{"connect":"`+d.URI()+`","libvirt":"lbcli"}`) {
		t.Fatalf("offers %s", offers)
	}

	r = run(t, "--vault", vaultDir, "restore", "--machine", "cli", "latest", "--in-place", "--connect", d.URI())
	if r.code == 0 || !strings.Contains(r.stderr, "is running") {
		t.Fatalf("in-place restore under a running domain: %s", r)
	}
	r = run(t, "--vault", vaultDir, "restore", "--machine", "cli", "latest", "--start")
	if r.code != cli.ExitUsage || !strings.Contains(r.stderr, "--libvirt-define") {
		t.Fatalf("--start without --libvirt-define: %s", r)
	}
	out := filepath.Join(dir, "restored")
	r = mustRun(t, "--vault", vaultDir, "restore", "--machine", "cli", "latest", "--to", out,
		"--libvirt-define", "--name", "lbcli-copy", "--start", "--connect", d.URI())
	t.Cleanup(func() { d.Remove(t, "lbcli-copy") })
	if !strings.Contains(r.stdout, "domain\tlbcli-copy\n") {
		t.Fatalf("restore --libvirt-define: %s", r)
	}
	copyDom, err := c.Lookup(ctx, "lbcli-copy")
	if err != nil {
		t.Fatal(err)
	}
	if !copyDom.Running || copyDom.Disks[0].Source != filepath.Join(out, "vda.qcow2") {
		t.Fatalf("restored domain running %v, disks %+v", copyDom.Running, copyDom.Disks)
	}
	// Stopped, the domain's disk is reverted in place to the point.
	if err := c.Destroy(ctx, ld); err != nil {
		t.Fatal(err)
	}
	vmtest.QEMU(t, "qemu-io", "-f", "qcow2", "-c", "write -P 7 1M 64k", disk.Path)
	r = mustRun(t, "--vault", vaultDir, "--json", "restore", "--machine", "cli", "latest", "--in-place", "--connect", d.URI())
	want := filepath.Join(dir, "want.raw")
	mustRun(t, "--vault", vaultDir, "restore", "--machine", "cli", "latest", "--disk", "vda", "--to-file", want)
	vmtest.QEMU(t, "qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", disk.Path, want)

	// Defining it again under the same name is refused.
	r = run(t, "--vault", vaultDir, "restore", "--machine", "cli", "latest", "--to", filepath.Join(dir, "again"),
		"--libvirt-define", "--name", "lbcli-copy", "--connect", d.URI())
	if r.code == 0 || !strings.Contains(r.stderr, "already has a domain lbcli-copy") {
		t.Fatalf("second define under one name: %s", r)
	}
}

func heartbeats(t *testing.T, console string) []string {
	t.Helper()
	data, err := os.ReadFile(console)
	if err != nil {
		t.Fatal(err)
	}
	return regexp.MustCompile(`(?m)^LB heartbeat \d+\r?$`).FindAllString(string(data), -1)
}
