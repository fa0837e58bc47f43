package server

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/catalog"
	"lifeboat/internal/crypto"
	"lifeboat/internal/location"
	"lifeboat/internal/vault"
)

// TestRunNamedVault: server --vault URL makes that existing vault the
// default instead of DATA/vault; a wrong passphrase, a URL that holds no
// vault and a server whose default vault is already another are refused
// at start, naming what was wrong, and change nothing.
func TestRunNamedVault(t *testing.T) {
	ctx := t.Context()
	cheap := vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}}
	named := filepath.Join(t.TempDir(), "named")
	store, err := location.Store(ctx, named, true, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	pass := []byte("named vault passphrase")
	if _, err := vault.Init(ctx, store, pass, cheap); err != nil {
		t.Fatal(err)
	}
	// start runs the server until it is ready, then stops it; it returns
	// Run's error when Run ends before it is ready.
	start := func(data, url string, pw []byte) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ready := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Config{DataDir: data, Listen: "127.0.0.1:0", Out: io.Discard, Tick: time.Hour,
				VaultURL: url, VaultOptions: cheap,
				Passphrase: func(string) ([]byte, error) { return pw, nil },
				Ready:      func(string) { close(ready) }})
		}()
		select {
		case <-ready:
			cancel()
			return <-done
		case err := <-done:
			return err
		}
	}
	defaultURL := func(data string) string {
		t.Helper()
		cat, err := catalog.Open(ctx, filepath.Join(data, "catalog.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer cat.Close()
		vs, err := cat.Vaults(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vs {
			if v.Name == DefaultVault {
				return v.URL
			}
		}
		return ""
	}

	data := filepath.Join(t.TempDir(), "data")
	if err := start(data, named, pass); err != nil {
		t.Fatalf("server --vault %s: %v", named, err)
	}
	if got := defaultURL(data); got != named {
		t.Fatalf("default vault = %q, want %q", got, named)
	}
	if _, err := os.Stat(filepath.Join(data, DefaultVaultDir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("DATA/vault was made beside the named vault: %v", err)
	}
	if err := start(data, named, pass); err != nil {
		t.Fatalf("second start with the same --vault: %v", err)
	}

	for _, tc := range []struct {
		name, url string
		pw        []byte
		want      string
	}{
		{"wrong passphrase", named, []byte("not the passphrase at all"), "--vault " + named},
		{"no vault there", filepath.Join(t.TempDir(), "empty"), pass, "lifeboat vault init"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			err := start(data, tc.url, tc.pw)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("start = %v, want an error with %q", err, tc.want)
			}
			if got := defaultURL(data); got != "" {
				t.Fatalf("a refused --vault left default vault %q", got)
			}
		})
	}

	// A server that made DATA/vault refuses another default later.
	data2 := filepath.Join(t.TempDir(), "data")
	if err := start(data2, "", nil); err != nil {
		t.Fatal(err)
	}
	made := defaultURL(data2)
	err = start(data2, named, pass)
	if err == nil || !strings.Contains(err.Error(), "already "+made) {
		t.Fatalf("start with another --vault = %v, want a refusal naming %s", err, made)
	}
	if got := defaultURL(data2); got != made {
		t.Fatalf("default vault changed to %q", got)
	}
}
