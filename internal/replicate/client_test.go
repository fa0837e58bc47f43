package replicate

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/replica"
	"lifeboat/internal/testenv"
)

// The site is reached over HTTPS with its CA and its token; a wrong token,
// an unknown CA and plain HTTP to a non-loopback address are refused.
func TestSiteTLSAndToken(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := testenv.SelfSignedCert(t, dir)
	store, err := replica.Open(filepath.Join(dir, "replica"), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- store.Serve(ctx, l, replica.ServeOptions{Token: "right", CertFile: cert, KeyFile: key})
	}()
	defer func() { cancel(); <-done }()

	token := func(s string) string {
		f := filepath.Join(t.TempDir(), "token")
		os.WriteFile(f, []byte(s+"\n"), 0o600)
		return f
	}
	url := "https://" + l.Addr().String()
	spec := replica.Spec{Machine: "m1", Disks: []replica.DiskSpec{{Name: "a", Size: 1 << 20}}}

	c, err := Dial(Site{Name: "dr", URL: url, TokenFile: token("right"), CA: cert})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, spec); err != nil {
		t.Fatalf("HTTPS with the site's CA and token: %v", err)
	}
	// A machine the site does not have is ErrNotFound, as a machine this
	// host does not replicate is, and says so first.
	var se *SiteError
	if _, err := c.Status(ctx, "ghost"); !errors.Is(err, ErrNotFound) || !errors.As(err, &se) || se.Status != 404 ||
		!strings.HasPrefix(err.Error(), "not found: target site dr: ") || IsInvalid(err) {
		t.Fatalf("status of a machine the site lacks: %v", err)
	}
	if _, err := c.Register(ctx, replica.Spec{Machine: "m2"}); !IsInvalid(err) || errors.Is(err, ErrNotFound) {
		t.Fatalf("registering a machine without disks: %v, want invalid", err)
	}
	c, _ = Dial(Site{Name: "dr", URL: url, TokenFile: token("wrong"), CA: cert})
	if _, err := c.Status(ctx, "m1"); !errors.As(err, &se) || se.Status != 401 {
		t.Fatalf("wrong token: %v", err)
	}
	c, _ = Dial(Site{Name: "dr", URL: url, TokenFile: token("right")})
	if _, err := c.Status(ctx, "m1"); err == nil || errors.As(err, &se) {
		t.Fatalf("a certificate the system does not trust was accepted: %v", err)
	}
	for _, bad := range []string{"http://192.0.2.1:8443", "ftp://127.0.0.1", "127.0.0.1:8443"} {
		if err := (Site{Name: "dr", URL: bad, TokenFile: token("right")}).Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("site URL %s: %v, want ErrInvalid", bad, err)
		}
	}
	if err := (Site{Name: "dr", URL: "http://127.0.0.1:1", TokenFile: token("")}).Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty token file: %v", err)
	}
}

// A site that accepts connections but never answers (a cut link, a hung
// server) fails a cycle within RequestTimeout instead of hanging it, and a
// batch whose shipping stops moving is abandoned as ErrStalled.
func TestSiteThatNeverAnswers(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	defer func(d time.Duration) { RequestTimeout = d }(RequestTimeout)
	RequestTimeout = 200 * time.Millisecond
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("x"), 0o600)
	cfg := OpenConfig(dir)
	if err := cfg.AddSite(Site{Name: "dr", URL: "http://" + l.Addr().String(), TokenFile: token}); err != nil {
		t.Fatal(err)
	}
	r := &Runner{Config: cfg, Machine: Machine{Name: "m1", QMP: filepath.Join(dir, "none.sock"), Target: "dr"}}
	start := time.Now()
	err = r.Cycle(context.Background())
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Fatalf("cycle against a silent site: %v after %s", err, time.Since(start))
	}

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sent := &countWriter{w: io.Discard}
	sent.Write([]byte("some"))
	go watchStall(ctx, cancel, 120*time.Millisecond, sent, make(chan error, 1))
	select {
	case <-ctx.Done():
		if !errors.Is(context.Cause(ctx), ErrStalled) {
			t.Fatalf("watchdog cause: %v", context.Cause(ctx))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a send with no progress was not abandoned")
	}
}
