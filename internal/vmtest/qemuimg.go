package vmtest

import (
	"os/exec"
	"strings"
	"testing"
)

// QEMU runs a QEMU tool (qemu-img, qemu-io, ...) and fails the test if it
// fails; it returns the tool's output. The tool must be on PATH
// (RequireBinary skips or fails the test first).
func QEMU(t testing.TB, tool string, args ...string) string {
	t.Helper()
	RequireBinary(t, tool)
	out, err := exec.Command(tool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Write writes the byte pattern at offset off of the image (qemu-io's
// "write -P PATTERN OFF LEN", sizes like 1M or 64k), in the image's format.
func Write(t testing.TB, image, format, pattern, off, length string) {
	t.Helper()
	QEMU(t, "qemu-io", "-f", format, "-c", "write -P "+pattern+" "+off+" "+length, image)
}

// NewQcow2 creates an empty qcow2 image of size (like "64M") at path, over
// the qcow2 image backing (a path relative to path's directory) if not "".
func NewQcow2(t testing.TB, path, size, backing string) {
	t.Helper()
	args := []string{"create", "-q", "-f", "qcow2"}
	if backing != "" {
		args = append(args, "-b", backing, "-F", "qcow2")
	}
	args = append(args, path)
	if backing == "" {
		args = append(args, size)
	}
	QEMU(t, "qemu-img", args...)
}
