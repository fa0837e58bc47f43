package replicate

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"lifeboat/internal/clock"
	"lifeboat/internal/qmp"
	"lifeboat/internal/testenv"
	"lifeboat/internal/vmtest"
)

// TestPausedGuestResumedAfterKilledRunner: a runner that paused its guest
// for a group cut and died before resuming it (kill -9 inside the pause)
// leaves a record; the next runner to connect resumes the guest. A guest
// paused by someone else (no record) stays paused.
func TestPausedGuestResumedAfterKilledRunner(t *testing.T) {
	vmtest.RequireBinary(t, "qemu-system-x86_64")
	sock := testenv.Emulator(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cfg := OpenConfig(t.TempDir())
	runner := func() *Runner {
		return &Runner{Config: cfg, Machine: Machine{Name: "vm1", QMP: sock}, Clock: clock.Real{},
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	}
	running := func(mon *qmp.Monitor) bool {
		t.Helper()
		st, err := mon.QueryStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Running
	}

	// Paused by its owner (-S): connecting leaves it paused.
	mon, err := runner().dialQMP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if running(mon) {
		t.Fatal("a guest paused by its owner was resumed")
	}
	if err := mon.Cont(ctx); err != nil {
		t.Fatal(err)
	}

	// A runner pauses it for a group cut and is killed: no resume.
	r := runner()
	if resume := r.pauseForCut(ctx, mon); resume == nil {
		t.Fatal("pauseForCut did not pause a running guest")
	}
	if running(mon) {
		t.Fatal("the guest runs after pauseForCut")
	}
	mon.Close()

	// The next runner resumes it as soon as it connects.
	mon, err = runner().dialQMP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	if !running(mon) {
		t.Fatal("the guest a killed runner paused for a group cut was left paused")
	}
	var rec pausedRecord
	if err := cfg.get("paused", "vm1", &rec); err == nil {
		t.Fatalf("the pause record outlived the resume: %+v", rec)
	}

	// A pause that ends normally leaves no record either.
	resume := runner().pauseForCut(ctx, mon)
	resume()
	if !running(mon) {
		t.Fatal("resume did not resume")
	}
	if err := cfg.get("paused", "vm1", &rec); err == nil {
		t.Fatalf("a resumed pause left its record: %+v", rec)
	}
}
