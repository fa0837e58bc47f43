package location

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lifeboat/internal/crypto"
	"lifeboat/internal/vault"
)

// The passphrase comes from the flag's file, else LIFEBOAT_PASSWORD_FILE's,
// else LIFEBOAT_PASSWORD; a file others can read is warned about.
func TestPassphrase(t *testing.T) {
	dir := t.TempDir()
	flagFile, envFile, open := filepath.Join(dir, "flag"), filepath.Join(dir, "env"), filepath.Join(dir, "open")
	for f, mode := range map[string]os.FileMode{flagFile: 0o600, envFile: 0o600, open: 0o644} {
		if err := os.WriteFile(f, []byte(filepath.Base(f)+"-secret\n"), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(f, mode)
	}
	for _, c := range []struct {
		name, file string
		env        map[string]string
		want, warn string
		err        string
	}{
		{name: "flag file first", file: flagFile, env: map[string]string{"LIFEBOAT_PASSWORD_FILE": envFile, "LIFEBOAT_PASSWORD": "x"}, want: "flag-secret"},
		{name: "env file next", env: map[string]string{"LIFEBOAT_PASSWORD_FILE": envFile, "LIFEBOAT_PASSWORD": "x"}, want: "env-secret"},
		{name: "env last", env: map[string]string{"LIFEBOAT_PASSWORD": "x"}, want: "x"},
		{name: "readable by all", file: open, want: "open-secret", warn: "readable by every user"},
		{name: "none", err: "no passphrase: use --password-file"},
		{name: "missing flag file", file: filepath.Join(dir, "gone"), err: "reading --password-file:"},
		{name: "missing env file", env: map[string]string{"LIFEBOAT_PASSWORD_FILE": filepath.Join(dir, "gone")}, err: "reading LIFEBOAT_PASSWORD_FILE:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var warned []string
			p, err := Passphrase(c.file, "--password-file", func(k string) string { return c.env[k] }, func(s string) { warned = append(warned, s) })
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("err %v, want %q and ErrInvalid", err, c.err)
				}
				return
			}
			if err != nil || string(p) != c.want {
				t.Fatalf("passphrase %q, %v; want %q", p, err, c.want)
			}
			if (c.warn == "") != (len(warned) == 0) || c.warn != "" && !strings.Contains(warned[0], c.warn) {
				t.Fatalf("warnings %q, want %q", warned, c.warn)
			}
		})
	}
	if _, err := PassphraseFile("--new-password-file", filepath.Join(dir, "gone"), nil); !errors.Is(err, os.ErrNotExist) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("a missing file: %v", err)
	}
}

// Existing finds a vault, names a missing one, and refuses a bad URL
// before touching storage.
func TestExisting(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	getenv := func(string) string { return "" }
	if _, err := Existing(ctx, "ftp://x/y", getenv); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad scheme: %v", err)
	}
	if _, err := Existing(ctx, filepath.Join(dir, "none"), getenv); !errors.Is(err, vault.ErrNoVault) {
		t.Fatalf("no directory: %v", err)
	}
	if _, err := Existing(ctx, dir, getenv); !errors.Is(err, vault.ErrNoVault) {
		t.Fatalf("empty directory: %v", err)
	}
	store, err := Store(ctx, dir, false, getenv)
	if err != nil {
		t.Fatal(err)
	}
	cheap := vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}}
	if _, err := vault.Init(ctx, store, []byte("a long passphrase"), cheap); err != nil {
		t.Fatal(err)
	}
	if _, err := Existing(ctx, dir, getenv); err != nil {
		t.Fatalf("a vault: %v", err)
	}
	if _, err := Open(ctx, dir, getenv, []byte("a long passphrase"), cheap); err != nil {
		t.Fatalf("open: %v", err)
	}
}

// A new passphrase comes from its file, else LIFEBOAT_NEW_PASSWORD, else
// the terminal; a weak one is refused.
func TestNewPassphrase(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "new")
	if err := os.WriteFile(file, []byte("a long new passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w.Close()
	env := map[string]string{"LIFEBOAT_NEW_PASSWORD": "another long one"}
	getenv := func(k string) string { return env[k] }
	if p, err := NewPassphrase(file, getenv, r, io.Discard, nil); err != nil || string(p) != "a long new passphrase" {
		t.Fatalf("from the file: %q %v", p, err)
	}
	if p, err := NewPassphrase("", getenv, r, io.Discard, nil); err != nil || string(p) != "another long one" {
		t.Fatalf("from the variable: %q %v", p, err)
	}
	env["LIFEBOAT_NEW_PASSWORD"] = "short"
	if _, err := NewPassphrase("", getenv, r, io.Discard, nil); !errors.Is(err, vault.ErrWeakPassphrase) {
		t.Fatalf("a weak one: %v", err)
	}
	delete(env, "LIFEBOAT_NEW_PASSWORD")
	if _, err := NewPassphrase("", getenv, r, io.Discard, nil); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "no new passphrase") {
		t.Fatalf("no terminal: %v", err)
	}
	if _, err := NewPassphrase(filepath.Join(dir, "gone"), getenv, r, io.Discard, nil); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "reading --new-password-file") {
		t.Fatalf("missing file: %v", err)
	}
}

// The source of a copy has its own passphrase, else the copy's.
func TestSourcePassphrase(t *testing.T) {
	file := filepath.Join(t.TempDir(), "from")
	if err := os.WriteFile(file, []byte("source file passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"LIFEBOAT_FROM_PASSWORD": "source env passphrase"}
	getenv := func(k string) string { return env[k] }
	ours := func() ([]byte, error) { return []byte("the copy's passphrase"), nil }
	for _, c := range []struct{ file, want string }{{file, "source file passphrase"}, {"", "source env passphrase"}} {
		if p, err := SourcePassphrase(c.file, getenv, nil, ours); err != nil || string(p) != c.want {
			t.Fatalf("SourcePassphrase(%q) = %q, %v; want %q", c.file, p, err, c.want)
		}
	}
	delete(env, "LIFEBOAT_FROM_PASSWORD")
	if p, err := SourcePassphrase("", getenv, nil, ours); err != nil || string(p) != "the copy's passphrase" {
		t.Fatalf("falling back: %q, %v", p, err)
	}
	if _, err := SourcePassphrase(file+".gone", getenv, nil, ours); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "reading --from-password-file") {
		t.Fatalf("a missing file: %v", err)
	}
}

// OpenSource opens a copy's source with the source's own passphrase, else
// the copy's; a missing source or a wrong passphrase says "source", a bad
// URL is bad input.
func TestOpenSource(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	cheap := vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}}
	ours := func() ([]byte, error) { return []byte("the copy's passphrase"), nil }
	if _, err := OpenSource(ctx, "ftp://x/y", "", getenv, nil, ours, cheap); !errors.Is(err, ErrInvalid) || strings.HasPrefix(err.Error(), "source") {
		t.Fatalf("bad scheme: %v", err)
	}
	if _, err := OpenSource(ctx, dir, "", getenv, nil, ours, cheap); !errors.Is(err, vault.ErrNoVault) || !strings.HasPrefix(err.Error(), "source: ") {
		t.Fatalf("no vault: %v", err)
	}
	store, err := Store(ctx, dir, false, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vault.Init(ctx, store, []byte("the source's passphrase"), cheap); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSource(ctx, dir, "", getenv, nil, ours, cheap); err == nil || !strings.HasPrefix(err.Error(), "source: ") {
		t.Fatalf("the copy's passphrase opened the source: %v", err)
	}
	env["LIFEBOAT_FROM_PASSWORD"] = "the source's passphrase"
	if _, err := OpenSource(ctx, dir, "", getenv, nil, ours, cheap); err != nil {
		t.Fatalf("open: %v", err)
	}
}
