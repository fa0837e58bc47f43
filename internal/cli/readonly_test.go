package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// readOnlyView bind-mounts dir read-only at a new path (as root; the
// permission bits alone do not stop root) and returns that path.
func readOnlyView(t *testing.T, dir string) string {
	t.Helper()
	ro := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "--bind", dir, ro).CombinedOutput(); err != nil {
		t.Skipf("skipping: cannot bind-mount (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", ro).Run() })
	if out, err := exec.Command("mount", "-o", "remount,ro,bind", ro).CombinedOutput(); err != nil {
		t.Fatalf("remounting %s read-only: %v: %s", ro, err, out)
	}
	if err := os.WriteFile(filepath.Join(ro, "probe"), nil, 0o600); err == nil {
		t.Fatalf("%s is writable after the read-only remount", ro)
	}
	return ro
}

// TestReadOnlyVault: a restore, and a copy, from a vault on a read-only
// mount work: their session marker cannot be written, so they warn that a
// concurrent prune could remove what they read, and go on. A backup, which
// must write, fails as storage refusing (7).
func TestReadOnlyVault(t *testing.T) {
	sv := newSmallVault(t)
	ro := readOnlyView(t, sv.dir)

	out := filepath.Join(t.TempDir(), "vda.raw")
	r := inProc(t, "--vault", ro, "restore", "--machine", "web1", sv.points[1], "--disk", "vda", "--to-file", out)
	if r.code != 0 {
		t.Fatalf("restore from a read-only vault: %s", r)
	}
	sameContent(t, sv.states[1], out)
	for _, w := range []string{"warning", "session marker", "prune", "verified"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("restore's warning does not mention %q:\n%s", w, r.stderr)
		}
	}

	cp := filepath.Join(t.TempDir(), "copy")
	mustIn(t, "--vault", cp, "-q", "vault", "init", "--copy-of", ro)
	r = inProc(t, "-q", "vault", "copy", "--from", ro, "--to", cp)
	if r.code != 0 || !strings.Contains(r.stderr, "session marker") {
		t.Fatalf("copy from a read-only vault: want success with a warning, got %s", r)
	}
	out2 := filepath.Join(t.TempDir(), "vda2.raw")
	mustIn(t, "--vault", cp, "-q", "restore", "--machine", "web1", sv.points[0], "--disk", "vda", "--to-file", out2)
	sameContent(t, sv.states[0], out2)

	r = inProc(t, "--vault", ro, "-q", "backup", "--machine", "web1", "--disk", "vda="+sv.img)
	expect(t, "backup into a read-only vault", r, 7, "read-only")
}
