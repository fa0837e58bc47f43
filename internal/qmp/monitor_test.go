package qmp_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/qmp"
)

func TestDialReadsGreetingAndNegotiates(t *testing.T) {
	d := startDaemon(t, disk{"d0", 16 << 20})
	m := d.dial()
	v := m.Version()
	if !v.AtLeast(7, 0) || v.AtLeast(100, 0) {
		t.Fatalf("version from greeting = %v", v)
	}
	if !slices.Contains(m.Capabilities(), "oob") {
		t.Errorf("capabilities = %v, want oob offered", m.Capabilities())
	}
	// Commands only work after qmp_capabilities: this proves Dial negotiated.
	var qv struct {
		QEMU    struct{ Major, Minor, Micro int } `json:"qemu"`
		Package string                            `json:"package"`
	}
	if err := m.Execute(testCtx(t), "query-version", nil, &qv); err != nil {
		t.Fatal(err)
	}
	if qv.QEMU.Major != v.Major || qv.QEMU.Minor != v.Minor || qv.QEMU.Micro != v.Micro || qv.Package != v.Package {
		t.Fatalf("query-version %+v disagrees with greeting %v", qv, v)
	}
	t.Logf("QEMU %v", v)
}

func TestExecuteConcurrent(t *testing.T) {
	d := startDaemon(t, disk{"d0", 16 << 20}, disk{"d1", 8 << 20})
	m := d.dial()
	ctx := testCtx(t)
	// Two commands whose replies have different shapes: a reply routed to
	// the wrong caller fails to decode or carries the wrong values.
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				if (g+i)%2 == 0 {
					var v struct {
						QEMU struct{ Major int } `json:"qemu"`
					}
					if err := m.Execute(ctx, "query-version", nil, &v); err != nil {
						errs <- err
					} else if v.QEMU.Major != m.Version().Major {
						errs <- fmt.Errorf("query-version major %d", v.QEMU.Major)
					}
				} else {
					nodes, err := m.QueryNamedBlockNodes(ctx)
					if err != nil {
						errs <- err
					} else if len(nodes) != 4 {
						errs <- fmt.Errorf("query-named-block-nodes gave %d nodes, want 4", len(nodes))
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestErrorsAreTyped(t *testing.T) {
	d := startDaemon(t, disk{"d0", 16 << 20})
	m := d.dial()
	ctx := testCtx(t)

	err := m.Execute(ctx, "no-such-command", nil, nil)
	var qe *qmp.Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Fatalf("unknown command: err = %v, want *qmp.Error CommandNotFound", err)
	}
	if !strings.Contains(err.Error(), "no-such-command") || !qmp.IsClass(err, "CommandNotFound") {
		t.Errorf("error %q does not name the command", err)
	}

	err = m.Execute(ctx, "block-dirty-bitmap-add", map[string]any{"node": "nope", "name": "b"}, nil)
	if !errors.As(err, &qe) || qe.Class != "GenericError" || !strings.Contains(qe.Desc, "nope") {
		t.Fatalf("bitmap on missing node: err = %v, want GenericError naming the node", err)
	}
	// The connection is still fine after errors.
	if _, err := m.QueryBlockJobs(ctx); err != nil {
		t.Fatal(err)
	}
}

// QEMU serves one QMP client at a time: a second client's connection is
// accepted by the kernel but QEMU sends no greeting until the first leaves.
func TestSecondDialWaitsForTheFirstClient(t *testing.T) {
	d := startDaemon(t, disk{"d0", 16 << 20})
	first := d.dial()

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := qmp.Dial(ctx, d.sock)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "another client") {
		t.Fatalf("second Dial while the first is connected: err = %v, want a deadline error naming the likely cause", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatalf("second Dial took %v, ctx allowed 500ms", time.Since(start))
	}
	// The first connection is unaffected.
	if _, err := first.QueryBlockJobs(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	first.Close()
	second := d.dial()
	if _, err := second.QueryBlockJobs(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

// A cancelled Execute returns at once; its late reply is dropped and does
// not reach a later call.
func TestExecuteCancelDropsLateReply(t *testing.T) {
	d := startDaemon(t, disk{"d0", 16 << 20})
	m := d.dial()

	d.signal(syscall.SIGSTOP) // QEMU cannot answer
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err := m.Execute(ctx, "query-version", nil, nil)
	cancel()
	d.signal(syscall.SIGCONT)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Execute with a stopped QEMU: err = %v, want deadline exceeded", err)
	}
	// The late query-version reply arrives now; this call must get its own.
	var jobs []qmp.BlockJobInfo
	if err := m.Execute(testCtx(t), "query-block-jobs", nil, &jobs); err != nil {
		t.Fatalf("call after an abandoned one: %v", err)
	}
	if len(jobs) != 0 {
		t.Fatalf("query-block-jobs = %v", jobs)
	}
}

// Killing QEMU fails every waiting call promptly, and later calls at once.
func TestConnectionLossFailsPendingCalls(t *testing.T) {
	d := startDaemon(t, disk{"d0", 16 << 20})
	m := d.dial()
	sub := m.Events()

	d.signal(syscall.SIGSTOP) // the calls below stay pending
	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() { errs <- m.Execute(testCtx(t), "query-named-block-nodes", nil, nil) }()
	}
	select {
	case err := <-errs:
		t.Fatalf("a call returned while QEMU was stopped: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	d.kill()
	deadline := time.After(2 * time.Second)
	for range n {
		select {
		case err := <-errs:
			if !errors.Is(err, qmp.ErrDisconnected) {
				t.Errorf("pending call after kill: err = %v, want ErrDisconnected", err)
			}
		case <-deadline:
			t.Fatal("pending calls did not fail within 2s of the kill")
		}
	}
	if err := m.Execute(testCtx(t), "query-version", nil, nil); !errors.Is(err, qmp.ErrDisconnected) {
		t.Fatalf("call after loss: err = %v, want ErrDisconnected", err)
	}
	if _, ok := <-sub.C; ok || !errors.Is(sub.Err(), qmp.ErrDisconnected) {
		t.Fatalf("subscription after loss: open=%v err=%v", ok, sub.Err())
	}
	select {
	case <-m.Done():
	default:
		t.Fatal("Done not closed after connection loss")
	}
	m.Close()
}

// addScratchNode adds a qcow2 node on a fresh file, as a backup target.
func addScratchNode(t *testing.T, m *qmp.Monitor, dir, name string, size int64) {
	t.Helper()
	ctx := testCtx(t)
	file := dir + "/" + name + ".qcow2"
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", file, fmt.Sprint(size))
	if err := m.BlockdevAdd(ctx, map[string]any{
		"driver": "qcow2", "node-name": name,
		"file": map[string]any{"driver": "file", "filename": file},
	}); err != nil {
		t.Fatal(err)
	}
}

func TestEventsRoutedFromBackupJob(t *testing.T) {
	d := startDaemon(t, disk{"d0", 16 << 20})
	m := d.dial()
	ctx := testCtx(t)
	addScratchNode(t, m, d.dir, "t0", 16<<20)

	jobs := m.Events("JOB_STATUS_CHANGE")
	all := m.Events()
	other := m.Events("BLOCK_EXPORT_DELETED")
	defer jobs.Close()
	defer all.Close()
	defer other.Close()

	if err := m.Transaction(ctx, qmp.BlockdevBackup(qmp.BackupOptions{
		JobID: "j1", Device: "d0", Target: "t0", Sync: "none",
	})); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"created", "running"} {
		ev, err := qmp.WaitEvent(ctx, jobs, nil)
		if err != nil {
			t.Fatal(err)
		}
		var c qmp.JobStatusChange
		if err := ev.Decode(&c); err != nil {
			t.Fatal(err)
		}
		if c.ID != "j1" || c.Status != want {
			t.Fatalf("job event %+v, want j1 %s", c, want)
		}
		if ev.Time.IsZero() || time.Since(ev.Time) > time.Minute {
			t.Errorf("event time %v", ev.Time)
		}
	}
	bj, err := m.QueryBlockJobs(ctx)
	if err != nil || len(bj) != 1 || bj[0].Device != "j1" || bj[0].Type != "backup" || bj[0].Status != "running" {
		t.Fatalf("query-block-jobs = %+v, %v", bj, err)
	}

	if err := m.BlockJobCancel(ctx, "j1", false); err != nil {
		t.Fatal(err)
	}
	// The unfiltered subscription saw BLOCK_JOB_CANCELLED for j1.
	ev, err := qmp.WaitEvent(ctx, all, func(ev qmp.Event) bool { return ev.Name == "BLOCK_JOB_CANCELLED" })
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Device string `json:"device"`
		Type   string `json:"type"`
	}
	if err := ev.Decode(&c); err != nil || c.Device != "j1" || c.Type != "backup" {
		t.Fatalf("BLOCK_JOB_CANCELLED data %s (%v)", ev.Data, err)
	}
	// A subscription for other events got nothing.
	select {
	case ev := <-other.C:
		t.Fatalf("BLOCK_EXPORT_DELETED subscription got %s", ev.Name)
	default:
	}
	if bj, err := m.QueryBlockJobs(ctx); err != nil || len(bj) != 0 {
		t.Fatalf("after cancel: query-block-jobs = %+v, %v", bj, err)
	}
}

// A subscriber that does not keep up is ended, never blocking the reader.
func TestEventOverflowEndsSubscription(t *testing.T) {
	d := startDaemon(t, disk{"d0", 16 << 20})
	m := d.dial()
	ctx := testCtx(t)
	slow := m.Subscribe(1, "JOB_STATUS_CHANGE")

	// A blockdev-create job emits five status changes; nobody reads slow.
	if err := m.BlockdevCreate(ctx, "c1", map[string]any{
		"driver": "file", "filename": d.dir + "/new.img", "size": 1 << 20,
	}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for ev := range slow.C {
		got = append(got, ev.Name)
	}
	if len(got) != 1 || !errors.Is(slow.Err(), qmp.ErrEventOverflow) {
		t.Fatalf("slow subscription: got %v then err %v, want one event then ErrEventOverflow", got, slow.Err())
	}
	// The monitor carries on.
	if _, err := m.QueryJobs(ctx); err != nil {
		t.Fatal(err)
	}
	slow.Close() // idempotent after the end
}

func TestCloseFailsWaitersAndIsIdempotent(t *testing.T) {
	d := startDaemon(t, disk{"d0", 16 << 20})
	m := d.dial()
	d.signal(syscall.SIGSTOP)
	defer d.signal(syscall.SIGCONT)
	errc := make(chan error, 1)
	go func() { errc <- m.Execute(testCtx(t), "query-version", nil, nil) }()
	time.Sleep(100 * time.Millisecond)
	m.Close()
	m.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, qmp.ErrClosed) {
			t.Fatalf("waiter after Close: %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("waiter not released by Close")
	}
	if err := m.Execute(testCtx(t), "query-version", nil, nil); !errors.Is(err, qmp.ErrClosed) {
		t.Fatalf("Execute after Close: %v", err)
	}
}
