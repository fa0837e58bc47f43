package replicate

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

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
	var se *SiteError
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
