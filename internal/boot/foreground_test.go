package boot

import (
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"lifeboat/internal/recovery"
)

func TestShellQuote(t *testing.T) {
	for _, c := range []struct {
		argv []string
		want string
	}{
		{[]string{"qemu-system-x86_64", "-m", "1024"}, "qemu-system-x86_64 -m 1024"},
		{[]string{"-drive", "file=/a b.raw,format=raw"}, "-drive 'file=/a b.raw,format=raw'"},
		{[]string{"-append", "console=ttyS0 root=/dev/vda"}, "-append 'console=ttyS0 root=/dev/vda'"},
		{[]string{"it's", ""}, `'it'\''s' ''`},
		{[]string{"a$b", "x;y"}, "'a$b' 'x;y'"},
	} {
		if got := ShellQuote(c.argv); got != c.want {
			t.Errorf("ShellQuote(%q) = %s, want %s", c.argv, got, c.want)
		}
		// A shell reads it back as the same argv.
		out, err := exec.Command("sh", "-c", `set -- `+ShellQuote(c.argv)+`; for a in "$@"; do printf '%s\0' "$a"; done`).Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00"); strings.Join(got, "|") != strings.Join(c.argv, "|") {
			t.Errorf("the shell read %q back as %q", c.argv, got)
		}
	}
}

// TestRunRemovesItsRunDir: a machine that cannot start leaves no
// temporary run directory behind, and started is never called.
func TestRunRemovesItsRunDir(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	def := &recovery.Definition{Schema: recovery.DefinitionSchema, Name: "web1", CPUs: 1, MemoryMiB: 128, Firmware: "bios",
		Disks: []recovery.DefinitionDisk{{Name: "root", File: tmp + "/missing.raw", Format: "raw", Bus: "virtio"}}}
	err := Run(context.Background(), def, Options{Accel: "tcg", Network: "none"}, "", io.Discard, func(*Machine) { t.Error("started") })
	if err == nil || !strings.Contains(err.Error(), "disk root") {
		t.Fatalf("Run with a missing disk: %v", err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}
