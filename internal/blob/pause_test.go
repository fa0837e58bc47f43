package blob_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/s3test"
)

// headerTimeout returns the error net/http gives when a server takes the
// request and does not start its answer in time: a net.Error whose
// Timeout() is true, and also a context.DeadlineExceeded.
func headerTimeout(t *testing.T) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	hc := &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 50 * time.Millisecond}}
	_, err = hc.Get("http://" + ln.Addr().String() + "/")
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a silent server gave %v, want a header timeout", err)
	}
	return err
}

// TestRetryTransportTimeout: a server that paused past the transport's
// header timeout may answer the next attempt; only the caller's own
// context ending stops the retries.
func TestRetryTransportTimeout(t *testing.T) {
	timeout := headerTimeout(t)
	if blob.IsPermanent(timeout) {
		t.Errorf("IsPermanent(%v) = true, want a transport timeout retried", timeout)
	}
	f := blob.NewFaults(blob.NewMem())
	r := blob.NewRetry(f, 3, time.Millisecond)
	if err := r.Put(t.Context(), "config", []byte("x")); err != nil {
		t.Fatal(err)
	}
	f.FailNth(blob.OpGet, 1, timeout)
	if got, err := r.Get(t.Context(), "config"); err != nil || string(got) != "x" {
		t.Errorf("Get after one header timeout = %q, %v; want it retried", got, err)
	}
	if n := f.Calls(blob.OpGet); n != 2 {
		t.Errorf("Get took %d calls, want 2", n)
	}

	// The caller's deadline is final even when the error is a timeout.
	f.FailPrefix("", timeout)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	<-ctx.Done()
	before := f.Calls(blob.OpGet)
	if _, err := r.Get(ctx, "config"); err == nil {
		t.Error("Get with an expired context succeeded")
	}
	if n := f.Calls(blob.OpGet) - before; n > 1 {
		t.Errorf("Get with the caller's context expired made %d calls, want at most 1", n)
	}
}

// TestRetryBudget: no attempt starts after the budget, however many
// attempts are left, and the error says why it gave up.
func TestRetryBudget(t *testing.T) {
	f := blob.NewFaults(blob.NewMem())
	f.FailPrefix("", nil)
	r := blob.NewRetryPolicy(f, blob.RetryPolicy{Attempts: 1000, Backoff: 20 * time.Millisecond, Budget: 300 * time.Millisecond})
	start := time.Now()
	err := r.Put(t.Context(), "config", []byte("x"))
	d := time.Since(start)
	if !errors.Is(err, blob.ErrInjected) || !strings.Contains(err.Error(), "retry budget") {
		t.Errorf("Put failing every time = %v, want the last error and the budget named", err)
	}
	if d > 2*time.Second {
		t.Errorf("Put gave up after %v, want about the 300ms budget", d)
	}
	if n := f.Calls(blob.OpPut); n >= 1000 || n < 2 {
		t.Errorf("Put made %d attempts within the budget", n)
	}
}

// TestS3PausedServer: a versitygw frozen (SIGSTOP) for longer than the
// stall and header timeouts, then thawed, costs a read some attempts, not
// the read: the retries ride it out within their budget.
func TestS3PausedServer(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config
	cfg.StallTimeout = 500 * time.Millisecond
	cfg.RetryBudget = 20 * time.Second
	s, err := blob.OpenS3(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), "config", []byte("config")); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	thawed := make(chan struct{})
	time.AfterFunc(2*time.Second, func() { srv.Resume(); close(thawed) })
	got, err := s.Get(t.Context(), "config")
	<-thawed
	if err != nil || string(got) != "config" {
		t.Fatalf("Get across a 2s pause (stall timeout 500ms) = %q, %v; want the object", got, err)
	}
}
