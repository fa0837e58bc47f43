package vaultserve_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/blobtest"
	"lifeboat/internal/testenv"
	"lifeboat/internal/vaultserve"
)

const token = "a-token-of-enough-length"

// serve serves a new directory store over loopback HTTP and returns a
// client for it, and the directory store itself.
func serve(t *testing.T, appendOnly bool) (*blob.Remote, *blob.Dir) {
	t.Helper()
	dir, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(vaultserve.Handler(dir, token, appendOnly, slog.New(slog.NewTextHandler(io.Discard, nil))))
	t.Cleanup(srv.Close)
	r, err := blob.NewRemote(t.Context(), blob.RemoteConfig{URL: srv.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return r, dir
}

// TestRemoteConformance: a served directory vault, through blob.Remote over
// real HTTP, meets the Store contract.
func TestRemoteConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		r, _ := serve(t, false)
		return r
	})
}

// TestAppendOnly: an append-only endpoint creates objects, accepts the same
// bytes again under a name, and refuses (permanently, so no retry) a
// delete and an overwrite with other bytes, which leave the object as it
// was; a wrong token is refused.
func TestAppendOnly(t *testing.T) {
	ctx := context.Background()
	r, dir := serve(t, true)
	if err := r.Put(ctx, "points/a", []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := r.Put(ctx, "points/a", []byte("first")); err != nil {
		t.Fatalf("putting the same bytes again: %v", err)
	}
	err := r.Put(ctx, "points/a", []byte("other"))
	if !blob.IsRefused(err) || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("overwrite = %v, want refused as append-only", err)
	}
	err = r.Delete(ctx, "points/a")
	if !blob.IsRefused(err) || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("delete = %v, want refused as append-only", err)
	}
	if data, err := dir.Get(ctx, "points/a"); err != nil || string(data) != "first" {
		t.Fatalf("after the refusals the object is %q, %v", data, err)
	}
	if _, err := r.GetRange(ctx, "points/a", 1, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetRange(ctx, "points/a", 3, 5); !errors.Is(err, blob.ErrOutOfRange) {
		t.Fatalf("range past the end = %v", err)
	}

	bad, err := blob.NewRemote(ctx, blob.RemoteConfig{URL: r.String(), Token: "not-the-token-at-all"})
	if !blob.IsRefused(err) || !strings.Contains(err.Error(), "token") || bad != nil {
		t.Fatalf("a wrong token = %v, want refused naming the token", err)
	}
}

// TestRemoteListCutShort: a listing that ends without its final line (the
// server died mid-way) is an error, not a shorter listing.
func TestRemoteListCutShort(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "5 keys/a\n")
	}))
	defer srv.Close()
	_, err := blob.NewRemote(t.Context(), blob.RemoteConfig{URL: srv.URL, Token: token})
	if err == nil || !strings.Contains(err.Error(), "cut short") {
		t.Fatalf("a listing without its end = %v", err)
	}
}

// TestRunRefusesClearTextBeyondLoopback: plain HTTP on a non-loopback
// address, or a short token, is refused before listening.
func TestRunRefusesClearTextBeyondLoopback(t *testing.T) {
	for _, cfg := range []vaultserve.Config{
		{Dir: t.TempDir(), Listen: "0.0.0.0:0", Token: token},
		{Dir: t.TempDir(), Listen: "127.0.0.1:0", Token: "short"},
	} {
		if err := vaultserve.Run(t.Context(), cfg); !errors.Is(err, vaultserve.ErrConfig) {
			t.Errorf("Run(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
}

// TestRunTokenFile: without a token Run needs --dir and --token-file, and
// refuses a file it cannot read, each as ErrConfig with a message of its
// own; a token read too short is refused as one given is.
func TestRunTokenFile(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("  short\n"), 0o600)
	missing := filepath.Join(dir, "missing")
	for _, c := range []struct {
		cfg  vaultserve.Config
		want string
	}{
		{vaultserve.Config{Dir: dir, Listen: "127.0.0.1:0"}, "vault serve needs --dir and --token-file"},
		{vaultserve.Config{TokenFile: short, Listen: "127.0.0.1:0"}, "vault serve needs --dir and --token-file"},
		{vaultserve.Config{Dir: dir, TokenFile: missing, Listen: "127.0.0.1:0"}, "--token-file: open " + missing + ": no such file or directory"},
		{vaultserve.Config{Dir: dir, TokenFile: short, Listen: "127.0.0.1:0"}, "invalid vault serve configuration: the token must have at least 16 characters"},
	} {
		if err := vaultserve.Run(t.Context(), c.cfg); !errors.Is(err, vaultserve.ErrConfig) || err.Error() != c.want {
			t.Errorf("Run(%+v) = %v, want ErrConfig %q", c.cfg, err, c.want)
		}
	}
}

// TestRunTLS: with a certificate, Run serves HTTPS on any address; a client
// trusting the certificate stores and reads through it, one that does not
// is refused by TLS.
func TestRunTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key, pool := testenv.SelfSignedCert(t, dir)
	ctx, cancel := context.WithCancel(t.Context())
	urls := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- vaultserve.Run(ctx, vaultserve.Config{Dir: t.TempDir(), Listen: "0.0.0.0:0", Token: token, AppendOnly: true,
			TLSCert: cert, TLSKey: key, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Ready: func(u string) { urls <- u }})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var url string
	select {
	case url = <-urls:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(url, "https://"))
	url = "https://127.0.0.1:" + port
	r, err := blob.NewRemote(ctx, blob.RemoteConfig{URL: url, Token: token,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Put(ctx, "config", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if data, err := r.Get(ctx, "config"); err != nil || string(data) != "{}" {
		t.Fatalf("Get over HTTPS: %q, %v", data, err)
	}
	if _, err := blob.NewRemote(ctx, blob.RemoteConfig{URL: url, Token: token}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client not trusting the certificate: %v", err)
	}
}
