package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/blob/miniotest"
)

// netPair is two network namespaces joined by a veth pair: site A at
// 10.231.0.1, site B at 10.231.0.2, each with its own loopback.
type netPair struct {
	a, b         string // namespace names
	vethA, vethB string
}

const (
	addrA = "10.231.0.1"
	addrB = "10.231.0.2"
)

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetPair creates the namespaces (root only): the test skips when it
// cannot, unless CI=true.
func newNetPair(t *testing.T) *netPair {
	t.Helper()
	_, err := exec.LookPath("ip")
	if os.Geteuid() != 0 || err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("network namespace tests are required in CI: need root (euid %d) and ip (%v)", os.Geteuid(), err)
		}
		t.Skipf("network namespaces need root and ip (euid %d, %v)", os.Geteuid(), err)
	}
	b := make([]byte, 3)
	rand.Read(b)
	tag := hex.EncodeToString(b)
	n := &netPair{a: "lbsiteA-" + tag, b: "lbsiteB-" + tag, vethA: "lbA" + tag, vethB: "lbB" + tag}
	ipCmd(t, "netns", "add", n.a)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.a).Run() })
	ipCmd(t, "netns", "add", n.b)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.b).Run() })
	ipCmd(t, "link", "add", n.vethA, "netns", n.a, "type", "veth", "peer", "name", n.vethB, "netns", n.b)
	ipCmd(t, "-n", n.a, "addr", "add", addrA+"/24", "dev", n.vethA)
	ipCmd(t, "-n", n.b, "addr", "add", addrB+"/24", "dev", n.vethB)
	for _, ns := range []string{n.a, n.b} {
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	}
	n.link(t, true)
	return n
}

// link brings the link between the sites up or cuts it (both ends down:
// packets in flight are lost, connections hang rather than close).
func (n *netPair) link(t *testing.T, up bool) {
	t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	ipCmd(t, "-n", n.a, "link", "set", n.vethA, state)
	ipCmd(t, "-n", n.b, "link", "set", n.vethB, state)
}

// TestCopyAcrossSitesLinkCut: site A runs the source vault's S3 server and
// the copy; site B runs the copy's S3 server, in its own network namespace.
// The link is cut half way through a copy: the copy fails with a clear
// storage error within a bounded time, the copy vault verifies clean, and
// once the link is back a rerun completes and the copy restores
// byte-identical at site B.
func TestCopyAcrossSitesLinkCut(t *testing.T) {
	n := newNetPair(t)
	srvA := miniotest.StartWith(t, miniotest.Options{Netns: n.a, Host: "127.0.0.1", Port: 9000})
	srvB := miniotest.StartWith(t, miniotest.Options{Netns: n.b, Host: addrB, Port: 9000})
	v1 := "s3://" + srvA.Config.Bucket + "/site-a"
	v2 := "s3://" + srvB.Config.Bucket + "/site-b"
	base := []string{
		"LIFEBOAT_S3_ALLOW_HTTP=1", // site B is not a loopback address
		"LIFEBOAT_S3_STALL_TIMEOUT=2s",
	}
	// In site A: the source is local, the copy (plain variables) is at B.
	inA := append(base,
		"LIFEBOAT_FROM_S3_ENDPOINT=http://"+srvA.Addr(),
		"LIFEBOAT_FROM_AWS_ACCESS_KEY_ID="+srvA.Config.AccessKey,
		"LIFEBOAT_FROM_AWS_SECRET_ACCESS_KEY="+srvA.Config.SecretKey,
		"LIFEBOAT_FROM_PASSWORD=site-a-passphrase",
		"LIFEBOAT_S3_ENDPOINT=http://"+srvB.Addr(),
		"AWS_ACCESS_KEY_ID="+srvB.Config.AccessKey,
		"AWS_SECRET_ACCESS_KEY="+srvB.Config.SecretKey,
		"LIFEBOAT_PASSWORD=site-b-passphrase",
	)
	srcA := append(base,
		"LIFEBOAT_S3_ENDPOINT=http://"+srvA.Addr(),
		"AWS_ACCESS_KEY_ID="+srvA.Config.AccessKey,
		"AWS_SECRET_ACCESS_KEY="+srvA.Config.SecretKey,
		"LIFEBOAT_PASSWORD=site-a-passphrase",
	)
	inB := append(base,
		"LIFEBOAT_S3_ENDPOINT=http://"+srvB.Addr(),
		"AWS_ACCESS_KEY_ID="+srvB.Config.AccessKey,
		"AWS_SECRET_ACCESS_KEY="+srvB.Config.SecretKey,
		"LIFEBOAT_PASSWORD=site-b-passphrase",
	)
	siteA := []string{"ip", "netns", "exec", n.a}
	siteB := []string{"ip", "netns", "exec", n.b}
	must := func(env, where []string, args ...string) string {
		t.Helper()
		p := startBin(t, env, where, args...)
		if code := p.wait(t, 2*time.Minute); code != 0 {
			t.Fatalf("lifeboat %v in %v: exit %d\n%s", args, where, code, p.stderr.String())
		}
		return p.stdout.String()
	}

	dir := t.TempDir()
	disk := filepath.Join(dir, "vda.raw")
	must(srcA, siteA, "--vault", v1, "-q", "vault", "init", "--chunk-size", "64K")
	for i := 0; i < 3; i++ {
		randomDisk(t, disk, 24<<20, int64(100+i))
		must(srcA, siteA, "--vault", v1, "-q", "backup", "--machine", "db1", "--disk", "vda="+disk)
	}
	must(inA, siteA, "--vault", v2, "-q", "vault", "init", "--copy-of", v1)

	// Cut the link once the first pack has landed at site B.
	bData := filepath.Join(srvB.DataDir(), srvB.Config.Bucket, "site-b", "packs")
	p := startBin(t, inA, siteA, "--json", "vault", "copy", "--from", v1, "--to", v2)
	deadline := time.Now().Add(time.Minute)
	for !p.exited() && time.Now().Before(deadline) {
		if m, _ := filepath.Glob(filepath.Join(bData, "*", "*")); len(m) > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if p.exited() {
		t.Fatalf("the copy ended before the link was cut: %s", p.stderr.String())
	}
	n.link(t, false)
	cut := time.Now()
	code := p.wait(t, 3*time.Minute)
	took := time.Since(cut)
	t.Logf("copy after the cut: exit %d after %v: %s", code, took.Round(time.Millisecond), strings.TrimSpace(p.stderr.String()))
	if code != 7 {
		t.Fatalf("copy across a cut link: exit %d, want 7 (storage unreachable)\n%s", code, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "copy from s3://") || !strings.Contains(p.stderr.String(), srvB.Addr()) {
		t.Errorf("the error does not say which copy and which server failed: %s", p.stderr.String())
	}
	if took > 90*time.Second {
		t.Errorf("the copy took %v to give up after the cut (stall timeout 2s)", took)
	}

	// Site B alone: its vault is consistent.
	must(inB, siteB, "--vault", v2, "-q", "verify", "--read-data")

	// The link is back: the rerun completes.
	n.link(t, true)
	out := must(inA, siteA, "--json", "vault", "copy", "--from", v1, "--to", v2)
	st := decode[copyStats](t, out)
	if st.PointsCopied == 0 {
		t.Fatalf("rerun after the link came back copied nothing: %s", out)
	}
	// Site A is cut off again: site B restores on its own.
	n.link(t, false)
	must(inB, siteB, "--vault", v2, "-q", "verify", "--read-data")
	restored := filepath.Join(dir, "restored.raw")
	must(inB, siteB, "--vault", v2, "-q", "restore", "--machine", "db1", "latest", "--disk", "vda", "--to-file", restored)
	want, _ := os.ReadFile(disk)
	if got, _ := os.ReadFile(restored); !bytes.Equal(got, want) {
		t.Fatal("restore at site B differs from the disk backed up at site A")
	}
	// Count points by their machine field: a table's hexadecimal IDs can
	// themselves contain "db1".
	out = must(inB, siteB, "--vault", v2, "points", "--json")
	pts := decode[[]struct {
		ID      string `json:"id"`
		Machine string `json:"machine"`
	}](t, out)
	db1 := 0
	for _, pt := range pts {
		if pt.Machine == "db1" {
			db1++
		}
	}
	if db1 != 3 || len(pts) != 3 {
		t.Fatalf("points at site B: %d of db1, %d in all, want 3:\n%s", db1, len(pts), out)
	}
}
