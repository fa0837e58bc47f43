package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVanishedPointsWarned (issue 10 item 11): points deleted behind this
// host's back (a vault rolled back, its newest points removed) are named
// in a warning by points, restore, backup and copy, until this host
// forgets points itself.
func TestVanishedPointsWarned(t *testing.T) {
	work := t.TempDir()
	a, b := filepath.Join(work, "a"), filepath.Join(work, "b")
	initVault(t, a, 0)
	env := map[string]string{"LIFEBOAT_PASSWORD": testPassphrase, "LIFEBOAT_STATE_DIR": filepath.Join(work, "state")}
	run := func(args ...string) result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		r := inProcEnv(ctx, env, append([]string{"-q"}, args...)...)
		if r.code != 0 {
			t.Fatalf("lifeboat %v: %s", args, r)
		}
		return r
	}
	img := filepath.Join(work, "d.raw")
	data := make([]byte, 1<<20)
	var ids []string
	for i := 0; i < 3; i++ {
		data[i*4096] = byte(i + 1)
		os.WriteFile(img, data, 0o600)
		ids = append(ids, parsePoint(t, run("--vault", a, "--json", "backup", "--machine", "web1", "--disk", "vda="+img)).ID)
	}
	if r := run("--vault", a, "points"); strings.Contains(r.stderr, "warning") {
		t.Fatalf("warning before anything vanished: %s", r.stderr)
	}
	run("--vault", b, "vault", "init", "--copy-of", a)

	// The newest point is deleted at the storage.
	if err := os.Remove(filepath.Join(a, "points", ids[2])); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--vault", a, "points"},
		{"--vault", a, "restore", "--machine", "web1", "latest", "--to", filepath.Join(work, "restored")},
		{"--vault", b, "vault", "copy", "--from", a, "--to", b},
	} {
		r := run(args...)
		if !strings.Contains(r.stderr, "point "+ids[2][:12]+" of machine web1") || !strings.Contains(r.stderr, "is gone") {
			t.Errorf("%s: no warning naming the vanished point %s:\n%s", args[2], ids[2][:12], r.stderr)
		}
	}
	// Forgetting on this host is not a rollback: the record follows it.
	run("--vault", a, "forget", "--keep-last", "1")
	if r := run("--vault", a, "points"); strings.Contains(r.stderr, "is gone") {
		t.Fatalf("warning after this host's forget: %s", r.stderr)
	}
	// A backup records its own point; deleting it is noticed by the next.
	data[0] = 9
	os.WriteFile(img, data, 0o600)
	p := parsePoint(t, run("--vault", a, "--json", "backup", "--machine", "web1", "--disk", "vda="+img)).ID
	os.Remove(filepath.Join(a, "points", p))
	if r := run("--vault", a, "backup", "--machine", "web1", "--disk", "vda="+img); !strings.Contains(r.stderr, "point "+p[:12]) {
		t.Errorf("backup: no warning naming the vanished point %s:\n%s", p[:12], r.stderr)
	}
}
