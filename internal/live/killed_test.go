package live_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/live"
	"lifeboat/internal/qmp"
)

// abandonInstant leaves QEMU as a backup killed right after its snapshot
// instant leaves it: the previous bitmap disabled, the new one recording,
// the fleecing nodes and exports in place, nobody to tear them down.
func abandonInstant(t *testing.T, sock, node, prev, next string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mon, err := qmp.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "lbkill")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if _, err := qmp.Fleece(ctx, mon, []qmp.FleeceDisk{{Node: node, NewBitmap: next, PrevBitmap: prev}},
		qmp.FleeceOptions{Dir: dir, Server: qmp.UnixSocket(filepath.Join(dir, "nbd.sock")), StartServer: true}); err != nil {
		t.Fatal(err)
	}
	mon.Close() // the process "dies": no Close, no rollback
}

// After killed backups the warning says a backup was killed, not that
// QEMU restarted (it did not), and the bitmap of the latest point survives
// a failed backup so that the next one can still tell.
func TestLiveKilledBackupsBlamedRightly(t *testing.T) {
	d, v := daemonAndVault(t)
	var warnings []string
	opts := live.Options{Machine: "qsd", QMP: d.qmp, Warn: func(s string) { warnings = append(warnings, s) }}
	d.write("disk0", 0, 256<<10, 0x10)
	p1, err := live.Backup(context.Background(), v, opts)
	if err != nil {
		t.Fatal(err)
	}
	prev := diskOf(t, p1, "disk0").Tracking
	leftover := live.BitmapPrefix + v.Config().ID[:8] + "-0123456789ab"
	abandonInstant(t, d.qmp, "disk0", prev, leftover)
	d.write("disk0", 4<<20, 64<<10, 0x20)

	// The next backup fails after its instant (cancelled: it rolls back).
	ctx, cancel := context.WithCancel(context.Background())
	o := opts
	o.AfterInstant = cancel
	if _, err := live.Backup(ctx, v, o); err == nil {
		t.Fatal("cancelled backup succeeded")
	}
	said := strings.Join(warnings, "\n")
	if !strings.Contains(said, "killed") || !strings.Contains(said, leftover) || strings.Contains(said, "restarted") {
		t.Fatalf("after a killed backup, the warning says:\n%s", said)
	}

	// And the one after it still knows the bitmap stopped at a killed
	// backup's instant: QEMU never restarted.
	warnings = nil
	want := d.snapshotModel()
	p3, err := live.Backup(context.Background(), v, opts)
	if err != nil {
		t.Fatal(err)
	}
	said = strings.Join(warnings, "\n")
	if !strings.Contains(said, "killed") || strings.Contains(said, "restarted") || strings.Contains(said, "gone") {
		t.Fatalf("after a killed and a failed backup, the warning says:\n%s", said)
	}
	if pd := diskOf(t, p3, "disk0"); pd.ChangeSource != "compare" {
		t.Fatalf("after killed backups: %+v, want compare", pd)
	}
	checkRestore(t, v, p3, want)
	// The committed point replaced the unusable bitmap: only its own is left.
	assertClean(t, d.qmp, map[string]string{"disk0": diskOf(t, p3, "disk0").Tracking})

	warnings = nil
	d.write("disk0", 8<<20, 64<<10, 0x30)
	p4, err := live.Backup(context.Background(), v, opts)
	if err != nil {
		t.Fatal(err)
	}
	if pd := diskOf(t, p4, "disk0"); pd.ChangeSource != "tracking" || len(warnings) != 0 {
		t.Fatalf("tracking after recovery: %+v, warnings %q", pd, warnings)
	}
}
