package secrets

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets.json")
	f := Open(path)
	if _, ok, err := f.Get("offsite"); ok || err != nil {
		t.Fatalf("empty file: %v %v", ok, err)
	}
	c := Credential{Password: "pw", S3: map[string]string{"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}}
	if err := f.Put("offsite", c); err != nil {
		t.Fatal(err)
	}
	if err := f.Put("bad", Credential{S3: map[string]string{"PATH": "/tmp"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("an S3 setting lifeboat does not read was kept: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", fi.Mode(), err)
	}
	got, ok, err := Open(path).Get("offsite")
	if err != nil || !ok || got.Password != "pw" || got.S3["AWS_SECRET_ACCESS_KEY"] != "s" {
		t.Fatalf("read back %+v %v %v", got, ok, err)
	}
	env := got.Getenv(func(k string) string { return "env-" + k })
	if env("AWS_ACCESS_KEY_ID") != "k" || env("AWS_REGION") != "env-AWS_REGION" {
		t.Fatal("Getenv does not put the credential first")
	}
	names, _ := f.Names()
	if len(names) != 1 || names[0] != "offsite" {
		t.Fatalf("names %v", names)
	}
	os.WriteFile(path, []byte("{not json"), 0o600)
	if _, _, err := f.Get("offsite"); err == nil {
		t.Fatal("a damaged file was read")
	}
	// A setting Put would refuse, written into the file by other means.
	os.WriteFile(path, []byte(`{"version":1,"vaults":{"offsite":{"password":"pw","s3":{"LD_PRELOAD":"/tmp/x.so"}}}}`), 0o600)
	if _, _, err := f.Get("offsite"); err == nil {
		t.Fatal("a credential holding a setting lifeboat does not keep was read")
	}
}

func TestParseEnvFile(t *testing.T) {
	got, err := ParseEnvFile([]byte("# keys\nAWS_ACCESS_KEY_ID=abc\nexport AWS_SECRET_ACCESS_KEY=\"x=y\"\n\nLIFEBOAT_S3_ENDPOINT=http://h:1\n"))
	if err != nil || got["AWS_ACCESS_KEY_ID"] != "abc" || got["AWS_SECRET_ACCESS_KEY"] != "x=y" || got["LIFEBOAT_S3_ENDPOINT"] != "http://h:1" {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"HOME=/root\n", "just a line\n"} {
		if _, err := ParseEnvFile([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
