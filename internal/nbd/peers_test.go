package nbd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// needBinary returns the path of an external program the test needs. It
// skips the test when the program is missing, except in CI (CI=true),
// where every peer must be installed (scripts/deps.sh) and a missing one
// fails the test.
func needBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI (install it with scripts/deps.sh): %v", name, err)
		}
		t.Skipf("skipping: %s is not installed: %v", name, err)
	}
	return p
}

// syncBuffer collects a process's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// peer is a server process started for one test.
type peer struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// startPeer starts a long-running program and kills it when the test ends.
func startPeer(t testing.TB, name string, args ...string) *peer {
	t.Helper()
	bin := needBinary(t, name)
	p := &peer{cmd: exec.Command(bin, args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop() })
	return p
}

// stop kills the process and waits for it.
func (p *peer) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Kill()
	<-p.done
}

// waitDial waits until the peer accepts connections on network/addr.
func (p *peer) waitDial(t testing.TB, network, addr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before listening on %s: %s", p.cmd.Path, addr, p.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen on %s after 15s: %v\n%s", p.cmd.Path, addr, err, p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// run runs a program to completion and returns its standard output.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	bin := needBinary(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// shortTempDir makes a directory with a short path: unix socket paths are
// limited to 108 bytes and t.TempDir's can be longer.
func shortTempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "nbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// imgMapExtent is one entry of `qemu-img map --output=json`.
type imgMapExtent struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	Data   bool  `json:"data"`
	Zero   bool  `json:"zero"`
}

// qemuImgDataExtents returns the extents qemu-img map reports as data that
// does not read as zeros, merged where adjacent.
func qemuImgDataExtents(t testing.TB, args ...string) [][2]int64 {
	t.Helper()
	out := run(t, "qemu-img", append([]string{"map", "--output=json"}, args...)...)
	var m []imgMapExtent
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("parsing qemu-img map output: %v\n%s", err, out)
	}
	var got [][2]int64
	for _, e := range m {
		if !e.Data || e.Zero {
			continue
		}
		if n := len(got); n > 0 && got[n-1][0]+got[n-1][1] == e.Start {
			got[n-1][1] += e.Length
			continue
		}
		got = append(got, [2]int64{e.Start, e.Length})
	}
	return got
}

func sockURI(sock, export string) string {
	return fmt.Sprintf("nbd+unix:///%s?socket=%s", export, sock)
}

func writeFileAt(t testing.TB, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

// sparseImage makes a sparse raw image of size bytes with random data in
// the given extents and returns its path and contents.
func sparseImage(t testing.TB, dir string, size int64, extents [][2]int64, seed int64) (string, []byte) {
	t.Helper()
	path := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	r := newRand(seed)
	for _, e := range extents {
		r.Read(want[e[0] : e[0]+e[1]])
		writeFileAt(t, path, e[0], want[e[0]:e[0]+e[1]])
	}
	return path, want
}
