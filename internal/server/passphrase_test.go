package server

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The default vault's kept passphrase is answered from the data
// directory; every other vault's, and any without a data directory, by the
// fallback.
func TestKeptPassphrase(t *testing.T) {
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, DefaultPassphraseFile), []byte("kept passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	errNone := errors.New("no passphrase")
	other := func(url string) ([]byte, error) {
		if url == "/elsewhere" {
			return []byte("process passphrase"), nil
		}
		return nil, errNone
	}
	def := filepath.Join(data, DefaultVaultDir)
	for _, c := range []struct {
		dir, url, want string
		err            error
	}{
		{data, def, "kept passphrase", nil},
		{data, def + "/", "kept passphrase", nil},
		{data, "/elsewhere", "process passphrase", nil},
		{data, "s3://b/p", "", errNone},
		{"", def, "", errNone},
	} {
		pw, err := KeptPassphrase(c.dir, other)(c.url)
		if string(pw) != c.want || !errors.Is(err, c.err) {
			t.Errorf("KeptPassphrase(%q)(%q) = %q, %v; want %q, %v", c.dir, c.url, pw, err, c.want, c.err)
		}
	}
}
