// Package s3proc runs a real S3 server binary as a throwaway test peer:
// with its data in a temporary directory, listening on a free 127.0.0.1
// port or, for tests of network partitions, inside a network namespace.
// It is the machinery behind the harnesses s3test (versitygw) and
// miniotest (MinIO); each says in a Spec only what is particular to its
// server: the binary, its arguments and environment, how to tell it is up.
//
// Start returns a *Server that failure tests can Stop (requests then fail
// with connection errors) and Restart on the same address with the same
// data and credentials.
package s3proc

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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"lifeboat/internal/blob"
)

// Region is the region every server is configured with.
const Region = "us-east-1"

// Spec describes an S3 server binary.
type Spec struct {
	// Name is the binary's name, looked up on PATH and then in
	// $(go env GOPATH)/bin. It also names the log file and messages.
	Name string
	// Install tells how to install the binary, for the error when it is
	// missing.
	Install string
	// Args returns the arguments (after the binary) that serve l.DataDir
	// on l.Addr with l's credentials.
	Args func(l Launch) []string
	// Env returns variables added to the server's environment.
	Env func(l Launch) []string
	// DropEnv lists prefixes of the test's environment variables that
	// would reconfigure the server behind the harness's back.
	DropEnv []string
	// HealthPath, if set, is the path that answers 200 OK once the server
	// is up. If empty, any HTTP answer to "/" (an access-denied error
	// included) means it is up.
	HealthPath string
	// StartTimeout bounds the wait for the server to come up.
	StartTimeout time.Duration
}

// Launch is what a server is started with, the same on every Restart.
type Launch struct {
	Addr      string // host:port to listen on
	DataDir   string // the server's storage, an existing empty directory at first
	AccessKey string
	SecretKey string
	Region    string
}

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

// Server is a running S3 server. Stop, Addr and DataDir may be called from
// any goroutine; Restart and NewBucket fail the test on error and so must
// be called from the test's goroutine.
type Server struct {
	// Config reaches a fresh, empty bucket created by Start, with no
	// prefix. NewBucket creates more.
	Config blob.S3Config

	t       testing.TB
	spec    Spec
	opts    Options
	bin     string
	launch  Launch // Addr and DataDir are kept across Restart
	logPath string
	client  *http.Client // for the readiness check

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited
	buckets int
}

// Start starts the server spec describes, placed as opts says, for the
// test and stops it in t.Cleanup. The returned server's Config names a new
// bucket.
//
// Without the binary, Start skips the test, unless CI=true or
// LIFEBOAT_REQUIRE_S3=1 is set, in which case it fails the test: CI must
// not silently skip.
func Start(t testing.TB, spec Spec, opts Options) *Server {
	t.Helper()
	bin, err := FindBinary(spec.Name, spec.Install)
	if err != nil {
		if os.Getenv("CI") == "true" || os.Getenv("LIFEBOAT_REQUIRE_S3") == "1" {
			t.Fatalf("S3 tests are required (CI=true or LIFEBOAT_REQUIRE_S3=1) but %v", err)
		}
		t.Skipf("skipping %s test: %v", spec.Name, err)
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	dir := t.TempDir()
	s := &Server{
		t:    t,
		spec: spec,
		opts: opts,
		bin:  bin,
		launch: Launch{
			DataDir:   filepath.Join(dir, "data"),
			AccessKey: "lifeboat" + randomHex(6),
			SecretKey: randomHex(20),
			Region:    Region,
		},
		logPath: filepath.Join(dir, spec.Name+".log"),
	}
	s.client = &http.Client{Timeout: 2 * time.Second, Transport: s.transport()}
	if err := os.Mkdir(s.launch.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)

	// Another process may take the free port between our probe and the
	// server's listen: try a few ports.
	for attempt := 1; ; attempt++ {
		port := opts.Port
		if port == 0 {
			port = freePort(t, opts.Host)
		}
		s.launch.Addr = net.JoinHostPort(opts.Host, fmt.Sprint(port))
		err = s.start()
		if err == nil {
			break
		}
		if attempt == 3 || opts.Port != 0 || !addrInUse(err) {
			t.Fatalf("starting %s: %v", spec.Name, err)
		}
	}
	s.Config = s.NewBucket(t)
	return s
}

// FindBinary returns the path of the binary name, looked up on PATH and
// then in $(go env GOPATH)/bin. Its error names where it looked and, with
// install, how to install it.
func FindBinary(name, install string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	gopath := build.Default.GOPATH
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
		gopath = string(bytes.TrimSpace(out))
	}
	var tried []string
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
		tried = append(tried, p)
	}
	return "", fmt.Errorf("%s is neither on PATH nor at %s; install it with: %s",
		name, strings.Join(tried, ", "), install)
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

// addrInUse reports whether a start failed because the port was taken.
// The server's own log, which the error quotes, is the only place that
// says so.
func addrInUse(err error) bool {
	return strings.Contains(err.Error(), "address already in use")
}

// transport dials from inside the server's namespace when it has one.
func (s *Server) transport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if s.opts.Netns != "" {
		tr.DialContext = DialIn(s.opts.Netns)
	}
	return tr
}

// start runs the server and waits until it is up.
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
	defer logFile.Close() // the child has its own descriptor
	fmt.Fprintf(logFile, "--- %s starting on %s\n", time.Now().Format(time.RFC3339Nano), s.launch.Addr)

	name, args := s.bin, s.spec.Args(s.launch)
	if s.opts.Netns != "" {
		name, args = "ip", append([]string{"netns", "exec", s.opts.Netns, s.bin}, args...)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = s.env()
	cmd.Dir = filepath.Dir(s.launch.DataDir)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// `ip netns exec` execs the server in place, which keeps this.
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()

	deadline := time.Now().Add(s.spec.StartTimeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("%s exited: %s\n%s", s.spec.Name, cmd.ProcessState, s.logTail())
		default:
		}
		err := s.ready()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("%s did not answer on %s within %v: %v\n%s",
				s.spec.Name, s.launch.Addr, s.spec.StartTimeout, err, s.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cmd, s.exited = cmd, exited
	return nil
}

// env returns the test's environment without the variables the spec
// drops, plus the ones it adds.
func (s *Server) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !s.dropped(kv) {
			env = append(env, kv)
		}
	}
	if s.spec.Env != nil {
		env = append(env, s.spec.Env(s.launch)...)
	}
	return env
}

func (s *Server) dropped(kv string) bool {
	for _, prefix := range s.spec.DropEnv {
		if strings.HasPrefix(kv, prefix) {
			return true
		}
	}
	return false
}

// ready reports why the server is not up yet, or nil once it is.
func (s *Server) ready() error {
	path := s.spec.HealthPath
	if path == "" {
		path = "/"
	}
	resp, err := s.client.Get("http://" + s.launch.Addr + path)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if s.spec.HealthPath != "" && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return nil
}

func (s *Server) logTail() string {
	data, _ := os.ReadFile(s.logPath)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return s.spec.Name + " log " + s.logPath + ":\n" + string(data)
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.launch.Addr }

// DataDir is the server's storage: a test may watch objects appear under
// DataDir()/bucket/key (how depends on the server).
func (s *Server) DataDir() string { return s.launch.DataDir }

// Stop kills the server, as abruptly as a crash or a network partition:
// requests in flight fail and new connections are refused until Restart.
// Stopping a stopped server does nothing.
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

// Pause freezes the server (SIGSTOP), like a host that hangs: the kernel
// still accepts connections and takes requests, nothing answers them.
// Resume thaws it; the test's cleanup does too, so that Stop can reap it.
func (s *Server) Pause() {
	s.t.Helper()
	s.signal(syscall.SIGSTOP)
	s.t.Cleanup(s.Resume)
}

// Resume thaws a paused server (SIGCONT); it answers what queued meanwhile.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Errorf("sending %s to %s: %v", sig, s.spec.Name, err)
	}
}

// Restart starts a stopped server again on the same address with the same
// data and credentials, so existing configurations and stores keep working.
// It stops the server first if it is running.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	// The port was ours a moment ago, but another process could grab it;
	// retry briefly in case the kernel has not released it yet.
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		if err = s.start(); err == nil {
			return
		}
		if !addrInUse(err) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("restarting %s on %s: %v", s.spec.Name, s.launch.Addr, err)
}

// NewBucket creates a new, empty bucket and returns a configuration that
// reaches it (from the server's namespace, if it has one). The bucket
// lives as long as the server's data.
func (s *Server) NewBucket(t testing.TB) blob.S3Config {
	t.Helper()
	return s.newBucket(t, false)
}

// NewLockBucket is NewBucket for a bucket with S3 Object Lock enabled
// (and so versioning), with no default retention.
func (s *Server) NewLockBucket(t testing.TB) blob.S3Config {
	t.Helper()
	return s.newBucket(t, true)
}

func (s *Server) newBucket(t testing.TB, lock bool) blob.S3Config {
	t.Helper()
	s.mu.Lock()
	s.buckets++
	bucket := fmt.Sprintf("lifeboat-test-%d", s.buckets)
	s.mu.Unlock()

	l := s.launch
	client, err := minio.New(l.Addr, &minio.Options{
		Creds:        credentials.NewStaticV4(l.AccessKey, l.SecretKey, ""),
		Region:       l.Region,
		BucketLookup: minio.BucketLookupPath,
		Transport:    s.transport(),
	})
	if err != nil {
		t.Fatalf("S3 client for %s: %v", l.Addr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: l.Region, ObjectLocking: lock}); err != nil {
		t.Fatalf("creating bucket %s on %s: %v\n%s", bucket, l.Addr, err, s.logTail())
	}
	return blob.S3Config{
		Endpoint:  l.Addr,
		Bucket:    bucket,
		AccessKey: l.AccessKey,
		SecretKey: l.SecretKey,
		Region:    l.Region,
		Insecure:  true,
	}
}
