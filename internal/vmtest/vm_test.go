package vmtest

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"
)

// bootTimeout bounds one boot: ~5 s under TCG on an idle machine, more when
// the machine's two cores are shared.
const bootTimeout = 90 * time.Second

var (
	readyLine       = regexp.MustCompile(`^LB ready$`)
	counterLine     = regexp.MustCompile(`^LB counter (\d+)$`)
	readcounterLine = regexp.MustCompile(`^LB readcounter (\d+)$`)
	seqLine         = regexp.MustCompile(`^LB seq (\d+)$`)
	readseqLine     = regexp.MustCompile(`^LB readseq (-?\d+) (-?\d+)$`)
)

func waitInt(t *testing.T, ctx context.Context, vm *VM, re *regexp.Regexp) []int {
	t.Helper()
	m, err := vm.WaitLine(ctx, re)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, s := range m[1:] {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("line %q: %v", m[0], err)
		}
		out = append(out, n)
	}
	return out
}

// A counter on a fresh ext4 qcow2 disk advances one by one; after a power cut
// (SIGKILL) the disk holds at least the last value the guest reported as
// durable, and a second boot continues from it.
func TestCounterSurvivesPowerCut(t *testing.T) {
	t.Parallel()
	disk := NewExt4Disk(t, filepath.Join(t.TempDir(), "counter.qcow2"), "qcow2", 32)

	ctx, cancel := context.WithTimeout(context.Background(), 3*bootTimeout)
	defer cancel()

	start := time.Now()
	vm := Start(t, Config{Disks: []Disk{disk}, Workload: "counter"})
	if _, err := vm.WaitLine(ctx, readyLine); err != nil {
		t.Fatal(err)
	}
	t.Logf("counter VM ready %.1fs after start", time.Since(start).Seconds())
	prev := waitInt(t, ctx, vm, counterLine)[0]
	if prev != 1 {
		t.Fatalf("fresh disk: first counter is %d, want 1", prev)
	}
	for range 5 {
		n := waitInt(t, ctx, vm, counterLine)[0]
		if n != prev+1 {
			t.Fatalf("counter went from %d to %d, want +1", prev, n)
		}
		prev = n
	}
	if err := vm.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(ctx); err == nil {
		t.Fatal("qemu exited with status 0 after SIGKILL")
	}
	// Lines printed after the last one we consumed but before the kill are
	// durable too.
	last := prev
	for _, l := range vm.Lines() {
		if m := counterLine.FindStringSubmatch(l); m != nil {
			last, _ = strconv.Atoi(m[1])
		}
	}

	rd := Start(t, Config{Disks: []Disk{disk}, Workload: "readcounter"})
	got := waitInt(t, ctx, rd, readcounterLine)[0]
	if got < last {
		t.Fatalf("after power cut the disk holds counter %d, but the guest reported %d as durable", got, last)
	}
	if got > last+1 {
		t.Fatalf("after power cut the disk holds counter %d, more than one past the last reported %d", got, last)
	}
	if err := rd.Wait(ctx); err != nil {
		t.Fatalf("readcounter VM did not power off cleanly: %v", err)
	}

	// The workload continues from the value on disk.
	again := Start(t, Config{Disks: []Disk{disk}, Workload: "counter"})
	if n := waitInt(t, ctx, again, counterLine)[0]; n != got+1 {
		t.Fatalf("second boot counted %d first, want %d", n, got+1)
	}
}

// seq2 writes the same sequence number to two raw disks, vda first: after a
// power cut vda is at most one ahead of vdb and neither is behind the last
// reported number.
func TestSeq2TwoRawDisks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := NewRawDisk(t, filepath.Join(dir, "a.raw"), 8)
	b := NewRawDisk(t, filepath.Join(dir, "b.raw"), 8)
	b.NodeName, b.ID = "second", "vdsecond"

	ctx, cancel := context.WithTimeout(context.Background(), 2*bootTimeout)
	defer cancel()

	vm := Start(t, Config{Disks: []Disk{a, b}, Workload: "seq2"})
	nodes := qmpNodeNames(t, ctx, vm.QMPSocket)
	if !slices.Contains(nodes, "disk0") || !slices.Contains(nodes, "second") {
		t.Fatalf("QMP lists block nodes %v, want disk0 and second", nodes)
	}
	prev := 0
	for range 5 {
		n := waitInt(t, ctx, vm, seqLine)[0]
		if n != prev+1 {
			t.Fatalf("seq went from %d to %d, want +1", prev, n)
		}
		prev = n
	}
	if err := vm.Kill(); err != nil {
		t.Fatal(err)
	}
	vm.Wait(ctx)
	last := prev
	for _, l := range vm.Lines() {
		if m := seqLine.FindStringSubmatch(l); m != nil {
			last, _ = strconv.Atoi(m[1])
		}
	}

	rd := Start(t, Config{Disks: []Disk{a, b}, Workload: "readseq2"})
	got := waitInt(t, ctx, rd, readseqLine)
	va, vb := got[0], got[1]
	if vb < last || va < last {
		t.Fatalf("after power cut: vda %d, vdb %d; guest had reported %d on both", va, vb, last)
	}
	if va != vb && va != vb+1 {
		t.Fatalf("after power cut: vda %d, vdb %d; vda is written first, so it may lead by one at most", va, vb)
	}
	if err := rd.Wait(ctx); err != nil {
		t.Fatalf("readseq2 VM did not power off cleanly: %v", err)
	}
}

// A guest that cannot do its work says so, and WaitLine reports it at once
// instead of waiting out its context.
func TestGuestErrorEndsWait(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	vm := Start(t, Config{Workload: "no-such-workload"})
	_, err := vm.WaitLine(ctx, readyLine)
	if err == nil {
		t.Fatal("WaitLine succeeded on a guest with an unknown workload")
	}
	if ctx.Err() != nil {
		t.Fatalf("WaitLine waited out its context: %v", err)
	}
	if !regexp.MustCompile(`LB error unknown workload no-such-workload`).MatchString(err.Error()) {
		t.Fatalf("error does not carry the guest's report: %v", err)
	}
	if err := vm.Wait(ctx); err != nil {
		t.Fatalf("guest did not power off after its error: %v", err)
	}
}

// qmpNodeNames asks the VM's QMP monitor for its named block nodes, which
// proves the socket is QMP and the disks carry the configured node names.
func qmpNodeNames(t *testing.T, ctx context.Context, socket string) []string {
	t.Helper()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		t.Fatalf("connecting to QMP: %v", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	dec := json.NewDecoder(conn)
	var greeting struct {
		QMP *json.RawMessage `json:"QMP"`
	}
	if err := dec.Decode(&greeting); err != nil || greeting.QMP == nil {
		t.Fatalf("QMP greeting: %v", err)
	}
	// Answers carry "return" or "error"; events in between are skipped.
	call := func(cmd string, out any) {
		if _, err := conn.Write([]byte(`{"execute":"` + cmd + `"}`)); err != nil {
			t.Fatalf("QMP %s: %v", cmd, err)
		}
		for {
			var msg struct {
				Return json.RawMessage `json:"return"`
				Error  json.RawMessage `json:"error"`
			}
			if err := dec.Decode(&msg); err != nil {
				t.Fatalf("QMP %s: %v", cmd, err)
			}
			if msg.Error != nil {
				t.Fatalf("QMP %s: %s", cmd, msg.Error)
			}
			if msg.Return != nil {
				if err := json.Unmarshal(msg.Return, out); err != nil {
					t.Fatalf("QMP %s: %v", cmd, err)
				}
				return
			}
		}
	}
	var empty struct{}
	call("qmp_capabilities", &empty)
	var nodes []struct {
		NodeName string `json:"node-name"`
	}
	call("query-named-block-nodes", &nodes)
	var names []string
	for _, n := range nodes {
		names = append(names, n.NodeName)
	}
	return names
}
