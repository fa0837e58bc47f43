// Package s3test runs a throwaway S3 server for tests: versitygw with its
// posix backend, listening on a free 127.0.0.1 port with its data in a
// temporary directory.
//
// Start returns a *Server rather than a bare blob.S3Config so that failure
// tests can Stop the server (requests then fail with connection errors) and
// Restart it on the same address with the same data:
//
//	srv := s3test.Start(t)
//	store, err := blob.NewS3(ctx, srv.Config)
//	...
//	srv.Stop()
//	// operations on store now fail with transient errors
//	srv.Restart()
//
// The versitygw binary is looked up on PATH and then in $(go env GOPATH)/bin;
// install it with
//
//	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
//
// Without it, Start skips the test, unless CI=true or LIFEBOAT_REQUIRE_S3=1
// is set, in which case it fails the test: CI must not silently skip.
package s3test

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
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"lifeboat/internal/blob"
)

const (
	region       = "us-east-1"
	startTimeout = 30 * time.Second
)

// Server is a running versitygw. Stop and Addr may be called from any
// goroutine; Restart and NewBucket fail the test on error and so must be
// called from the test's goroutine.
type Server struct {
	// Config reaches a fresh, empty bucket created by Start, with no
	// prefix. NewBucket creates more.
	Config blob.S3Config

	t       testing.TB
	bin     string
	addr    string // 127.0.0.1:port, kept across Restart
	dataDir string // the posix backend's root, kept across Restart
	logPath string
	access  string
	secret  string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited
	buckets int
}

// Start starts a server for the test and stops it in t.Cleanup. The
// returned server's Config names a new bucket.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := findBinary()
	if err != nil {
		if os.Getenv("CI") == "true" || os.Getenv("LIFEBOAT_REQUIRE_S3") == "1" {
			t.Fatalf("S3 tests are required (CI=true or LIFEBOAT_REQUIRE_S3=1) but %v", err)
		}
		t.Skipf("skipping S3 test: %v", err)
	}
	dir := t.TempDir()
	s := &Server{
		t:       t,
		bin:     bin,
		dataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "versitygw.log"),
		access:  "lifeboat" + randomHex(6),
		secret:  randomHex(20),
	}
	if err := os.Mkdir(s.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)

	// Another process may take the free port between our probe and the
	// server's listen: try a few ports.
	for attempt := 1; ; attempt++ {
		s.addr = freePort(t)
		err = s.start()
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("starting versitygw: %v", err)
		}
	}
	s.Config = s.NewBucket(t)
	return s
}

// findBinary returns the path of versitygw.
func findBinary() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	gopath := build.Default.GOPATH
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
		gopath = string(bytes.TrimSpace(out))
	}
	var tried []string
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "versitygw")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
		tried = append(tried, p)
	}
	return "", fmt.Errorf("versitygw is neither on PATH nor at %s; install it with: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0",
		strings.Join(tried, ", "))
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// start runs versitygw and waits until it answers HTTP requests.
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
	fmt.Fprintf(logFile, "--- %s starting on %s\n", time.Now().Format(time.RFC3339Nano), s.addr)

	cmd := exec.Command(s.bin,
		"--port", s.addr,
		"--access", s.access,
		"--secret", s.secret,
		"--region", region,
		"--keep-alive", // like real S3; without it every response closes the connection
		"--quiet",
		"posix", s.dataDir)
	cmd.Env = cleanEnv()
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()

	deadline := time.Now().Add(startTimeout)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-exited:
			return fmt.Errorf("versitygw exited: %s\n%s", cmd.ProcessState, s.logTail())
		default:
		}
		// Any HTTP answer, an access-denied error included, means it is up.
		resp, err := client.Get("http://" + s.addr + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("versitygw did not answer on %s within %v: %v\n%s", s.addr, startTimeout, err, s.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cmd, s.exited = cmd, exited
	return nil
}

// cleanEnv returns the environment without the variables that would
// reconfigure versitygw behind the flags' back.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VGW_") || strings.HasPrefix(kv, "ROOT_ACCESS_KEY") ||
			strings.HasPrefix(kv, "ROOT_SECRET") || strings.HasPrefix(kv, "LOGFILE=") || strings.HasPrefix(kv, "WEBHOOK=") {
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
	return "versitygw log " + s.logPath + ":\n" + string(data)
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.addr }

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
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("restarting versitygw on %s: %v", s.addr, err)
}

// NewBucket creates a new, empty bucket and returns a configuration that
// reaches it. The bucket disappears with the server.
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
