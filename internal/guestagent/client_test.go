package guestagent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/vmtest"
)

const bootTimeout = 90 * time.Second

var (
	readyLine     = regexp.MustCompile(`^LB ready$`)
	mountedLine   = regexp.MustCompile(`^LB mounted /mnt$`)
	heartbeatLine = regexp.MustCompile(`^LB heartbeat (\d+)$`)
)

// bootIdle boots an idle guest with an ext4 disk mounted at /mnt, writing a
// heartbeat file every ~100 ms, and waits until it is ready.
func bootIdle(t *testing.T, ctx context.Context, extra ...string) *vmtest.VM {
	t.Helper()
	disk := vmtest.NewExt4Disk(t, filepath.Join(t.TempDir(), "data.qcow2"), "qcow2", 32)
	vm := vmtest.Start(t, vmtest.Config{
		Disks:      []vmtest.Disk{disk},
		Workload:   "idle",
		GuestAgent: true,
		Append:     append([]string{"lifeboat.heartbeat=1"}, extra...),
	})
	if _, err := vm.WaitLine(ctx, mountedLine); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.WaitLine(ctx, readyLine); err != nil {
		t.Fatal(err)
	}
	return vm
}

func heartbeats(vm *vmtest.VM) int {
	n := 0
	for _, l := range vm.Lines() {
		if heartbeatLine.MatchString(l) {
			n++
		}
	}
	return n
}

func status(t *testing.T, ctx context.Context, c *Client, want FreezeStatus) {
	t.Helper()
	got, err := c.FreezeStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("freeze status %q, want %q", got, want)
	}
}

// The real qemu-ga in a real guest: freeze stops the guest's writes until
// thaw; a freeze outlives the client that made it and can be thawed by the
// next one; a second freeze is refused without thawing the first.
func TestFreezeThawRealAgent(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*bootTimeout)
	defer cancel()
	vm := bootIdle(t, ctx)

	c, err := Dial(ctx, vm.GuestAgentSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Version == "" || !info.Supports("guest-fsfreeze-freeze") || !info.Supports("guest-fsfreeze-thaw") {
		t.Fatalf("agent info %+v: want a version and enabled freeze/thaw", info)
	}
	status(t, ctx, c, Thawed)

	// Only /mnt is freezable: the initramfs root, proc, sys and devtmpfs are not.
	n, err := c.FreezeFilesystems(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("froze %d filesystems, want 1 (/mnt)", n)
	}
	status(t, ctx, c, Frozen)
	if i, err := c.Info(ctx); err != nil || i.Supports("guest-fsfreeze-freeze") {
		t.Fatalf("while frozen the agent should disable freeze: supports=%v err=%v", i.Supports("guest-fsfreeze-freeze"), err)
	}
	if n, err := c.ThawFilesystems(ctx); err != nil || n != 1 {
		t.Fatalf("thaw: %d, %v; want 1 filesystem", n, err)
	}
	status(t, ctx, c, Thawed)
	if n, err := c.ThawFilesystems(ctx); err != nil || n != 0 {
		t.Fatalf("thaw of a thawed guest: %d, %v; want 0", n, err)
	}

	// Freeze through the helper and watch the guest's writes stop. First time
	// a few heartbeats while thawed, to know how long a frozen guest must stay
	// silent to prove something on a machine this busy.
	if _, err := vm.WaitLine(ctx, heartbeatLine); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 4 {
		if _, err := vm.WaitLine(ctx, heartbeatLine); err != nil {
			t.Fatal(err)
		}
	}
	window := max(time.Since(start), time.Second)
	t.Logf("thawed: 4 heartbeats in %v", time.Since(start).Round(time.Millisecond))
	thaw, err := c.Freeze(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer thaw(context.Background())
	status(t, ctx, c, Frozen)
	before := heartbeats(vm)
	time.Sleep(window)
	// A write that was past its block when the freeze came may finish, and
	// a line printed before the freeze may still be on its way through the
	// emulated UART; a thawed guest writes at least 4 in this window.
	if during := heartbeats(vm) - before; during > 2 {
		t.Fatalf("guest wrote %d heartbeats in %v while frozen", during, window)
	}

	// A second freeze is refused, and does not thaw the first.
	if th, err := c.Freeze(ctx, 10*time.Second); err == nil || th != nil {
		t.Fatalf("second freeze: thaw=%v err=%v; want a refusal", th != nil, err)
	} else if !strings.Contains(err.Error(), "already frozen") {
		t.Fatalf("second freeze's error does not say the guest is already frozen: %v", err)
	}
	status(t, ctx, c, Frozen)

	if err := thaw(ctx); err != nil {
		t.Fatal(err)
	}
	if err := thaw(ctx); err != nil {
		t.Fatalf("second thaw: %v", err)
	}
	status(t, ctx, c, Thawed)
	after := heartbeats(vm)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	for heartbeats(vm) < after+2 {
		if _, err := vm.WaitLine(wctx, heartbeatLine); err != nil {
			t.Fatalf("guest writes did not resume after thaw: %v", err)
		}
	}

	// QEMU serves one client at a time: a second one gets no answer.
	short, scancel := context.WithTimeout(ctx, 2*time.Second)
	defer scancel()
	if c2, err := Dial(short, vm.GuestAgentSocket); err == nil {
		c2.Close()
		t.Fatal("a second client synchronised while the first was connected")
	}

	// A client that dies holding a freeze leaves the guest frozen; the next
	// client resynchronises the stream and thaws it.
	if _, err := c.FreezeFilesystems(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c3, err := Dial(ctx, vm.GuestAgentSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	status(t, ctx, c3, Frozen)
	if n, err := c3.ThawFilesystems(ctx); err != nil || n != 1 {
		t.Fatalf("thaw by a new client: %d, %v; want 1", n, err)
	}
	status(t, ctx, c3, Thawed)

	// A call cut short by its deadline leaves its answer in flight; the next
	// call resynchronises and gets its own answer, not the stale one.
	// The agent can answer within a millisecond, so try shorter deadlines too.
	timedOut := false
	for i := range 20 {
		short, scancel := context.WithTimeout(ctx, time.Duration(1000-50*i)*time.Microsecond)
		_, err := c3.FreezeStatus(short)
		scancel()
		if errors.Is(err, context.DeadlineExceeded) {
			timedOut = true
			break
		} else if err != nil {
			t.Fatalf("call with a short deadline: %v; want a deadline error", err)
		}
	}
	if !timedOut {
		t.Fatal("short deadlines never cut a call short")
	}
	if info, err := c3.Info(ctx); err != nil || info.Version == "" {
		t.Fatalf("call after a timed-out one: %+v, %v", info, err)
	}

	// A freeze cut short on our side still completes in the guest: Freeze
	// must thaw before it returns the error.
	thaw2, err := c3.Freeze(ctx, time.Millisecond)
	if err == nil {
		thaw2(ctx)
		t.Fatal("Freeze with a 1 ms timeout succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "thawed again") {
		t.Fatalf("Freeze cut short: %v; want a deadline error that says it thawed", err)
	}
	status(t, ctx, c3, Thawed)
}

// A VM whose guest runs no agent: QEMU accepts the connection, nothing
// answers, and Dial fails when its deadline passes, saying what is missing.
func TestNoAgentFailsWithinTimeout(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	vm := bootIdle(t, ctx, "lifeboat.agent=0")

	const timeout = 2 * time.Second
	dctx, dcancel := context.WithTimeout(ctx, timeout)
	defer dcancel()
	start := time.Now()
	c, err := Dial(dctx, vm.GuestAgentSocket)
	took := time.Since(start)
	if err == nil {
		c.Close()
		t.Fatal("Dial succeeded with no agent in the guest")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "qemu-ga") {
		t.Fatalf("Dial error should be a deadline and name qemu-ga: %v", err)
	}
	if took > timeout+2*time.Second {
		t.Fatalf("Dial took %v with a %v deadline", took, timeout)
	}
	t.Logf("no agent: %v after %v", err, took.Round(time.Millisecond))

	// The VM's QMP socket given for its agent's: QMP greets unprompted, and
	// Dial says so at once instead of waiting out its deadline.
	qctx, qcancel := context.WithTimeout(ctx, 30*time.Second)
	defer qcancel()
	start = time.Now()
	if c, err := Dial(qctx, vm.QMPSocket); !errors.Is(err, ErrQMPSocket) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("Dial of a QMP socket: %v; want ErrQMPSocket", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Dial of a QMP socket took %v", took)
	}
}

// Dialling a socket that is not there fails at once, naming it.
func TestDialMissingSocket(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sock := filepath.Join(t.TempDir(), "qga.sock")
	_, err := Dial(ctx, sock)
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), sock) {
		t.Fatalf("Dial of a missing socket: %v; want a not-exist error naming %s", err, sock)
	}
}
