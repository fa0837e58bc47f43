package blob_test

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/s3test"
)

// linkProxy forwards TCP connections to a real server until it is cut:
// then it stops moving bytes in both directions, as a network link that
// drops every packet does, without closing anything.
type linkProxy struct {
	l        net.Listener
	upstream string
	cut      atomic.Bool
	wg       sync.WaitGroup
}

func newLinkProxy(t *testing.T, upstream string) *linkProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &linkProxy{l: l, upstream: upstream}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() { l.Close(); p.cut.Store(false); p.wg.Wait() })
	return p
}

func (p *linkProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.wg.Add(2)
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

func (p *linkProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		for p.cut.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		src.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			return // EOF or a closed connection: pass the close on
		}
	}
}

// TestS3StalledLink: once no byte moves on a connection, S3 requests fail
// after the stall timeout with a transient error instead of hanging for as
// long as TCP retransmits.
func TestS3StalledLink(t *testing.T) {
	srv := s3test.Start(t)
	p := newLinkProxy(t, srv.Addr())
	cfg := srv.Config
	cfg.Endpoint = p.l.Addr().String()
	cfg.StallTimeout = time.Second
	ctx := t.Context()
	s, err := blob.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("lifeboat"), 4<<20) // 32 MiB: more than the socket buffers hold
	if err := s.Put(ctx, "packs/aa/big", big); err != nil {
		t.Fatal(err)
	}

	p.cut.Store(true)
	ops := map[string]func() error{
		"Put": func() error { return s.Put(ctx, "packs/aa/other", big) },
		"Get": func() error { _, err := s.Get(ctx, "packs/aa/big"); return err },
		"NewS3": func() error {
			_, err := blob.NewS3(ctx, cfg)
			return err
		},
	}
	for name, op := range ops {
		start := time.Now()
		err := op()
		d := time.Since(start)
		switch {
		case err == nil:
			t.Errorf("%s over a cut link succeeded", name)
		case errors.Is(err, blob.ErrPermanent) || blob.IsNotExist(err):
			t.Errorf("%s over a cut link = %v: want a transient error", name, err)
		case d > 5*time.Second:
			t.Errorf("%s over a cut link took %v with a 1s stall timeout", name, d)
		}
		t.Logf("%s over a cut link failed after %v: %v", name, d.Round(time.Millisecond), err)
	}

	p.cut.Store(false)
	got, err := blob.NewRetry(s, 3, 10*time.Millisecond).Get(ctx, "packs/aa/big")
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("Get after the link is back: %v", err)
	}
}

// TestS3ConfigStallTimeoutFromEnv reads LIFEBOAT_S3_STALL_TIMEOUT.
func TestS3ConfigStallTimeoutFromEnv(t *testing.T) {
	env := map[string]string{"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "LIFEBOAT_S3_STALL_TIMEOUT": "15s"}
	cfg, err := blob.S3ConfigFrom("s3://bucket/x", func(k string) string { return env[k] })
	if err != nil || cfg.StallTimeout != 15*time.Second {
		t.Fatalf("LIFEBOAT_S3_STALL_TIMEOUT=15s: %+v, %v", cfg, err)
	}
	env["LIFEBOAT_S3_STALL_TIMEOUT"] = "soon"
	if _, err := blob.S3ConfigFrom("s3://bucket/x", func(k string) string { return env[k] }); err == nil {
		t.Fatal("LIFEBOAT_S3_STALL_TIMEOUT=soon accepted")
	}
}
