// Package miniotest runs a throwaway MinIO server for tests: a second S3
// implementation beside versitygw (package s3test), single drive, with its
// data in a temporary directory, listening on a free 127.0.0.1 port or, for
// tests of network partitions, inside a network namespace.
//
// Like s3test, Start returns a *Server that failure tests can Stop and
// Restart on the same address with the same data:
//
//	srv := miniotest.Start(t)
//	store, err := blob.NewS3(ctx, srv.Config)
//	...
//	srv.Stop()
//	srv.Restart()
//
// The minio binary is looked up on PATH and then in $(go env GOPATH)/bin;
// install it with (scripts/deps.sh does)
//
//	go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c
//
// Without it, Start skips the test, unless CI=true or LIFEBOAT_REQUIRE_S3=1
// is set, in which case it fails the test: CI must not silently skip.
package miniotest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"golang.org/x/sys/unix"

	"lifeboat/internal/blob"
)

// Version is the MinIO module version scripts/deps.sh installs.
const Version = "v0.0.0-20260212201848-7aac2a2c5b7c"

const (
	region       = "us-east-1"
	startTimeout = 60 * time.Second
)

// Options place the server.
type Options struct {
	// Netns, if set, runs the server inside this network namespace
	// (created beforehand with `ip netns add`; needs root). The harness
	// reaches it from inside the namespace too.
	Netns string
	// Host is the address to listen on: 127.0.0.1 if empty. In a
	// namespace, an address of one of its interfaces.
	Host string
	// Port, if set, is used instead of a free one (a fresh namespace has
	// every port free, and the harness cannot probe it from outside).
	Port int
}

// Server is a running MinIO. Stop and Addr may be called from any
// goroutine; Restart and NewBucket fail the test on error and so must be
// called from the test's goroutine.
type Server struct {
	// Config reaches a fresh, empty bucket created by Start, with no
	// prefix. NewBucket creates more.
	Config blob.S3Config

	t       testing.TB
	opts    Options
	bin     string
	addr    string // host:port, kept across Restart
	dataDir string
	logPath string
	access  string
	secret  string
	client  *http.Client

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	buckets int
}

// Start starts a server on 127.0.0.1 for the test and stops it in
// t.Cleanup. The returned server's Config names a new bucket.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith starts a server placed as opts says.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := FindBinary()
	if err != nil {
		if os.Getenv("CI") == "true" || os.Getenv("LIFEBOAT_REQUIRE_S3") == "1" {
			t.Fatalf("S3 tests are required (CI=true or LIFEBOAT_REQUIRE_S3=1) but %v", err)
		}
		t.Skipf("skipping MinIO test: %v", err)
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	dir := t.TempDir()
	s := &Server{
		t:       t,
		opts:    opts,
		bin:     bin,
		dataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "minio.log"),
		access:  "lifeboat" + randomHex(6),
		secret:  randomHex(20),
	}
	s.client = &http.Client{Timeout: 2 * time.Second, Transport: s.transport()}
	if err := os.Mkdir(s.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	for attempt := 1; ; attempt++ {
		port := opts.Port
		if port == 0 {
			port = freePort(t, opts.Host)
		}
		s.addr = net.JoinHostPort(opts.Host, fmt.Sprint(port))
		err = s.start()
		if err == nil {
			break
		}
		if attempt == 3 || opts.Port != 0 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("starting minio: %v", err)
		}
	}
	s.Config = s.NewBucket(t)
	return s
}

// FindBinary returns the path of minio.
func FindBinary() (string, error) {
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	gopath := build.Default.GOPATH
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
		gopath = string(bytes.TrimSpace(out))
	}
	var tried []string
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "minio")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
		tried = append(tried, p)
	}
	return "", fmt.Errorf("minio is neither on PATH nor at %s; install it with: go install github.com/minio/minio@%s (or scripts/deps.sh)",
		strings.Join(tried, ", "), Version)
}

func freePort(t testing.TB, host string) int {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// transport dials from inside the server's namespace when it has one.
func (s *Server) transport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if s.opts.Netns != "" {
		tr.DialContext = DialIn(s.opts.Netns)
	}
	return tr
}

// DialIn returns a dial function whose connections are made from inside
// the network namespace ns (/run/netns/ns): the socket is created on a
// thread that joins the namespace for the dial and then returns to its
// own. The connection stays in the namespace.
func DialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			c, back, err := dialFrom(ctx, ns, network, addr)
			// A thread that could not return to its namespace stays locked,
			// and the runtime ends it with this goroutine. Threads must not
			// end otherwise: a child started with Pdeathsig from a thread
			// dies with that thread.
			if back {
				runtime.UnlockOSThread()
			}
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// dialFrom dials from namespace ns on the current, locked thread, and
// reports whether the thread is back in its own namespace.
func dialFrom(ctx context.Context, ns, network, addr string) (c net.Conn, back bool, err error) {
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, true, fmt.Errorf("opening this thread's network namespace: %w", err)
	}
	defer unix.Close(orig)
	fd, err := unix.Open(filepath.Join("/run/netns", ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, true, fmt.Errorf("opening network namespace %s: %w", ns, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("entering network namespace %s: %w", ns, err)
	}
	var d net.Dialer
	c, err = d.DialContext(ctx, network, addr)
	return c, unix.Setns(orig, unix.CLONE_NEWNET) == nil, err
}

// start runs minio and waits until it reports itself live.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("already running")
	}
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "--- %s starting on %s\n", time.Now().Format(time.RFC3339Nano), s.addr)

	args := []string{"server", "--address", s.addr, "--quiet", s.dataDir}
	name := s.bin
	if s.opts.Netns != "" {
		args = append([]string{"netns", "exec", s.opts.Netns, s.bin}, args...)
		name = "ip"
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(cleanEnv(),
		"MINIO_ROOT_USER="+s.access,
		"MINIO_ROOT_PASSWORD="+s.secret,
		"MINIO_REGION="+region,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
	)
	cmd.Dir = filepath.Dir(s.dataDir)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// The kernel kills the server if the test binary dies without its
	// cleanups; `ip netns exec` execs minio in place, keeping this.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("minio exited: %s\n%s", cmd.ProcessState, s.logTail())
		default:
		}
		resp, err := s.client.Get("http://" + s.addr + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("minio did not answer on %s within %v: %v\n%s", s.addr, startTimeout, err, s.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.cmd, s.exited = cmd, exited
	return nil
}

// cleanEnv drops the variables that would reconfigure minio behind the
// harness's back.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "MINIO_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (s *Server) logTail() string {
	data, _ := os.ReadFile(s.logPath)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return "minio log " + s.logPath + ":\n" + string(data)
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.addr }

// DataDir is the server's drive: a test may watch objects appear under
// DataDir()/bucket/key (each object is a directory there).
func (s *Server) DataDir() string { return s.dataDir }

// Stop kills the server, as abruptly as a crash: requests in flight fail
// and new connections are refused until Restart. Stopping a stopped server
// does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd, s.exited = nil, nil
}

// Restart starts a stopped server again on the same address with the same
// data and credentials. It stops the server first if it is running.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		if err = s.start(); err == nil {
			return
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("restarting minio on %s: %v", s.addr, err)
}

// NewBucket creates a new, empty bucket and returns a configuration that
// reaches it (from the server's namespace, if it has one).
func (s *Server) NewBucket(t testing.TB) blob.S3Config {
	t.Helper()
	s.mu.Lock()
	s.buckets++
	bucket := fmt.Sprintf("lifeboat-test-%d", s.buckets)
	s.mu.Unlock()
	client, err := minio.New(s.addr, &minio.Options{
		Creds:        credentials.NewStaticV4(s.access, s.secret, ""),
		Region:       region,
		BucketLookup: minio.BucketLookupPath,
		Transport:    s.transport(),
	})
	if err != nil {
		t.Fatalf("S3 client for %s: %v", s.addr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: region}); err != nil {
		t.Fatalf("creating bucket %s on %s: %v\n%s", bucket, s.addr, err, s.logTail())
	}
	return blob.S3Config{
		Endpoint:  s.addr,
		Bucket:    bucket,
		AccessKey: s.access,
		SecretKey: s.secret,
		Region:    region,
		Insecure:  true,
	}
}
